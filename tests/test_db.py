"""The metadata database itself, on SQLite and (where a server is given, tests/pg_server.sh) PostgreSQL:
lossless non-UTF-8 text in every text column, byte order, 64-bit sizes, JSON settings; where an index's
metadata lives (URLs, passwords, schemas); one clear error for a server that cannot be used."""
from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from db import Database, Failure, MetadataDbError, Video, get_setting, open_db, set_setting
from db.location import new_schema
from db.schema import to_db_text
from indexer.library import IndexDir


@pytest.fixture
def scratch(db_url, tmp_path) -> Database:
    """An empty database: a SQLite file, or a new schema in this session's PostgreSQL database."""
    return Database.sqlite(tmp_path / "x.db") if db_url is None else Database(Database.parse(db_url).url,
                                                                               new_schema(tmp_path))


def test_text_round_trips_exactly_and_sorts_by_bytes(scratch):
    names = ["/v/caf\udce9.mp4", "/v/\udcff\udcfe.mp4", "/v/b.mp4", "/v/B.mp4", "/v/\u00e9t\u00e9.mp4",
             "/v/a b.mp4", "/v/%41.mp4", "/v/\U0001f600.mp4"]
    root = "/v\udcff"
    sessions = open_db(scratch, write=True)
    with sessions.begin() as s:
        for i, name in enumerate(names):
            s.add(Video(path=name, root=root, size=5_000_000_000 + i, mtime=1712345678.123456, content_hash="h",
                        n_frames=1, fps=1.0, width=1, height=1, features="f"))
            s.add(Failure(path=name, reason=f"broken symlink (-> {name}.target)"))
        set_setting(s, "roots", [root])
    reader = open_db(scratch)
    with reader() as s:
        assert list(s.scalars(select(Video.path).order_by(Video.path))) == sorted(names, key=to_db_text)
        row = s.scalar(select(Video).where(Video.path == names[1]))  # found by its exact (non-UTF-8) name
        assert (row.root, row.size, row.mtime) == (root, 5_000_000_001, 1712345678.123456)
        assert set(s.scalars(select(Video.path).where(Video.path.in_(names[:3])))) == set(names[:3])
        assert {f.path: f.reason for f in s.scalars(select(Failure))} == {n: f"broken symlink (-> {n}.target)"
                                                                          for n in names}
        assert get_setting(s, "roots") == [root]
    for f in (reader, sessions):
        f.kw["bind"].dispose()


def test_where_metadata_lives(tmp_path):
    idx = IndexDir(tmp_path / "idx")
    assert idx.db == Database.sqlite(tmp_path / "idx" / "index.db") and not idx.exists()
    with pytest.raises(MetadataDbError, match="must not hold a password: .* PGPASSWORD or ~/.pgpass"):
        idx.choose_db("postgresql://me:secret@db.example:5432/videos")
    with pytest.raises(MetadataDbError, match="not mysql"):
        idx.choose_db("mysql://me@db.example/videos")
    with pytest.raises(MetadataDbError, match="wants a database URL"):
        idx.choose_db("db.example")
    assert not idx.exists()  # nothing recorded by a refusal
    assert idx.choose_db(f"sqlite:///{idx.sqlite}") == idx.db and not idx.metadata_file.exists()  # the default
    idx.root.mkdir()
    chosen = idx.choose_db("postgres://me@db.example:5432/videos")  # libpq's spelling
    assert idx.exists() and idx.db == chosen and chosen.schema.startswith("lift_idx_")
    assert json.loads(idx.metadata_file.read_text()) == {"url": "postgresql://me@db.example:5432/videos",
                                                         "schema": chosen.schema}
    assert str(chosen.engine_url()).startswith("postgresql+psycopg://")
    assert idx.choose_db("postgresql://me@db.example:5432/videos") == chosen  # repeating it is fine
    for other in ("postgresql://me@db.example:5432/other", f"sqlite:///{idx.sqlite}"):
        with pytest.raises(MetadataDbError, match="only chooses where a new index keeps it"):
            idx.choose_db(other)
    assert IndexDir(tmp_path / "idx2").choose_db("postgresql://me@db.example/videos").schema != chosen.schema
    idx.metadata_file.write_text('{"url": "postgresql://me:secret@db.example/videos", "schema": "lift_x"}')
    with pytest.raises(MetadataDbError, match="metadata.json: a database URL .* must not hold a password"):
        idx.db
    idx.metadata_file.write_text('{"url": "postgresql://me@db.example/videos", "schema": "x; DROP TABLE y"}')
    with pytest.raises(MetadataDbError, match="metadata.json: not a lift-search schema name"):
        idx.db
    idx.metadata_file.write_text('{"schema": "lift_x"}')
    with pytest.raises(MetadataDbError, match="metadata.json is damaged"):
        idx.db


def test_an_unusable_server_is_one_clear_error(pg_url, tmp_path, monkeypatch):
    url = Database.parse(pg_url).url
    with pytest.raises(MetadataDbError, match=r"cannot connect to the metadata database .*PGPASSWORD or ~/\.pgpass"):
        open_db(Database(url.set(port=1), "lift_x"))
    with pytest.raises(MetadataDbError, match="holds no lift-search tables"):
        open_db(Database(url, new_schema(tmp_path)))  # a reader of a schema no writer made yet
    monkeypatch.setenv("PGPASSWORD", "wrong")
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(MetadataDbError, match="password authentication failed"):
        open_db(Database(url, "lift_x"), write=True)
