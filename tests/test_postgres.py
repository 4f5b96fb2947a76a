"""An index whose metadata lives in PostgreSQL (`lift-search index --db postgresql://...`): the same index
as with SQLite, commands that need only --index, credentials never in the index folder, indexes sharing
one database in schemas of their own, and a database that refuses writes. Skipped where
LIFT_SEARCH_TEST_PG is unset (start a server with tests/pg_server.sh). The index, search, concurrency and
kill tests run on PostgreSQL as well (their `db_url` fixture)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import select, text

from db import Video, delete_videos, open_db
from indexer.library import IndexDir
from indexer.pipeline import IndexWriteError, run_index
from search import SearchEngine
from tests.helpers import copy_index, differences, small_options, snapshot

ROOT = Path(__file__).resolve().parent.parent


def test_postgres_index_equals_the_sqlite_index(small_index, small_index_pg):
    """The same library indexed with the same options into SQLite and into PostgreSQL: the same clips
    (same ids), bit-identical vectors, the same LiFT, failures, settings, listings and search results."""
    lite, pg = snapshot(small_index), snapshot(small_index_pg)
    assert pg["problems"] == [] and differences(lite, pg, atol=0) == []
    assert pg["clip_ids"] == lite["clip_ids"] and len(pg["vectors"]) == 16
    a, b = SearchEngine.open(small_index), SearchEngine.open(small_index_pg)
    assert a.clips() == b.clips() and a.failures() == b.failures()
    for c in a.clips():
        for reverse in (False, True):
            hits_a, hits_b = (e.search_clip(c.clip_id, k=5, reverse=reverse, motion=0.7) for e in (a, b))
            assert [h.to_dict() for h in hits_a] == [h.to_dict() for h in hits_b]
    sa, sb = a.status(), b.status()
    for key in ("videos", "clips", "failures", "vectors", "backbone_record", "sampling", "dim", "roots"):
        assert sa[key] == sb[key], key
    assert sa["lift"]["hash"] == sb["lift"]["hash"]
    assert sa["metadata"] == str(small_index / "index.db")
    assert sb["metadata"].startswith("postgresql://") and "(schema lift_idx_" in sb["metadata"]
    assert not (small_index_pg / "index.db").exists()


def _cli(args: list[str], env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "search.cli", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_commands_need_only_the_index_and_the_password_stays_out_of_it(small_index_pg, tmp_path):
    password = os.environ.get("PGPASSWORD")
    if not password:
        pytest.skip("needs the test server's password in PGPASSWORD (tests/pg_server.sh prints it)")
    for f in small_index_pg.rglob("*"):  # no file of the index folder holds the password
        assert not f.is_file() or password.encode() not in f.read_bytes(), f
    url = IndexDir(small_index_pg).db.url
    assert json.loads((small_index_pg / "metadata.json").read_text())["url"] == url.render_as_string()
    clip = SearchEngine.open(small_index_pg).clips()[0].clip_id
    search = ["search", "--index", str(small_index_pg), "--clip", str(clip), "-k", "3", "--json"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HOME": str(tmp_path)}  # (no ~/.pgpass of the user's)
    env.pop("PGPASSFILE", None)

    out = _cli(search, env)  # the password from the environment
    assert out.returncode == 0, out.stderr
    assert len(json.loads(out.stdout)) == 3
    out = _cli(["status", "--index", str(small_index_pg), "--json"], env)
    assert out.returncode == 0 and json.loads(out.stdout)["clips"] == 16, out.stderr

    del env["PGPASSWORD"]  # none given: one clear line, no traceback
    out = _cli(search, env)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "cannot connect to the metadata database postgresql://" in out.stderr
    assert "PGPASSWORD or ~/.pgpass" in out.stderr

    pgpass = tmp_path / ".pgpass"  # the password from ~/.pgpass
    pgpass.write_text(f"{url.host}:{url.port}:*:{url.username}:{password}\n")
    pgpass.chmod(0o600)
    out = _cli(search, env)
    assert out.returncode == 0 and len(json.loads(out.stdout)) == 3, out.stderr


def test_an_index_keeps_its_database(small_index, small_index_pg, small_library, pg_url, tmp_path, capsys):
    from search.cli import main

    library, _ = small_library
    lite, pg = copy_index(small_index, tmp_path / "lite"), copy_index(small_index_pg, tmp_path / "pg")
    other_db = IndexDir(pg).db.url.set(database="postgres").render_as_string()
    for index, db in ((lite, pg_url), (pg, other_db), (pg, f"sqlite:///{tmp_path / 'pg' / 'index.db'}")):
        assert main(["index", str(library), "--index", str(index), "--db", db, "--json"]) == 2
        err = capsys.readouterr().err
        assert "keeps its metadata in" in err and "only chooses where a new index keeps it" in err, err
    assert differences(snapshot(small_index_pg), snapshot(pg), atol=0) == []
    assert not (pg / "index.db").exists() and not (lite / "metadata.json").exists()


def test_indexes_share_one_database_each_in_its_own_schema(small_index_pg, tmp_path):
    copy = copy_index(small_index_pg, tmp_path / "copy")
    a, b = IndexDir(small_index_pg).db, IndexDir(copy).db
    assert a.url == b.url and a.schema != b.schema and a.lock_key != b.lock_key
    sessions = open_db(b, write=True)
    with sessions.begin() as s:  # the copy loses a video's rows (as if a run was killed after deleting them)
        delete_videos(s, [s.scalars(select(Video.id).order_by(Video.id)).first()])
    sessions.kw["bind"].dispose()
    assert len(SearchEngine.open(copy).clips()) == 15  # repaired on open: the stray vectors dropped
    assert len(SearchEngine.open(small_index_pg).clips()) == 16 and not snapshot(small_index_pg)["problems"]


def test_a_database_that_refuses_writes_stops_the_run_cleanly(small_index_pg, small_library, tmp_path):
    index = copy_index(small_index_pg, tmp_path / "idx")
    db = IndexDir(index).db
    sessions = open_db(db, write=True)
    with sessions.begin() as s:
        s.execute(text(f'REVOKE INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{db.schema}" FROM CURRENT_USER'))
    sessions.kw["bind"].dispose()
    library, _ = small_library
    with pytest.raises(IndexWriteError, match="cannot write the index at .*permission denied for table"):
        run_index([library], index, small_options())
    engine = SearchEngine.open(index)  # searches keep working
    assert len(engine.search_clip(engine.clips()[0].clip_id, k=3)) == 3
