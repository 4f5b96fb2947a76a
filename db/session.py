"""Opening the database: WAL so searches read while an indexer writes, a busy timeout, foreign keys,
and write transactions that take the write lock up front (BEGIN IMMEDIATE) so they never deadlock.

File names need not be UTF-8 on Linux: Python gives such a name as a str with surrogate escapes,
which sqlite3 cannot encode. Such a str is stored as FS_PREFIX + its bytes percent-encoded, and
turned back into the same str when read, so paths round-trip exactly and compare equal in queries.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

from sqlalchemy import create_engine, delete, event, select, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from .schema import Base, Setting

BUSY_TIMEOUT_MS = 30_000
FS_PREFIX = "\x1bfsbytes:"


def bytes_form(path: str) -> str:
    """How a file name that is not valid UTF-8 is stored: FS_PREFIX + its bytes percent-encoded. (For a
    folder, the prefix that such names under it start with.)"""
    return FS_PREFIX + quote(path.encode("utf-8", "surrogateescape"), safe="/ ")


def _to_db(value):
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return bytes_form(value)
    return value


def _from_db(raw: bytes) -> str:
    text = raw.decode("utf-8", "surrogateescape")
    if text.startswith(FS_PREFIX):
        return unquote_to_bytes(text[len(FS_PREFIX):]).decode("utf-8", "surrogateescape")
    return text


def _params_to_db(params):
    if isinstance(params, (list, tuple)):
        if params and isinstance(params[0], (list, tuple, dict)):  # executemany
            return type(params)(_params_to_db(p) for p in params)
        return type(params)(_to_db(v) for v in params)
    if isinstance(params, dict):
        return {k: _to_db(v) for k, v in params.items()}
    return params


def _read_only_media(path: Path) -> bool:
    try:
        return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def open_db(path: str | Path, write: bool = False) -> sessionmaker[Session]:
    """A session factory for the SQLite file at `path` (":memory:" for tests). Creates the tables
    (writers). A reader of an index on read-only media (where SQLite cannot make the WAL's shared-memory
    file) opens it immutable: nobody can change it there."""
    memory = str(path) == ":memory:"
    url = "sqlite://" if memory else f"sqlite:///{Path(path)}"
    if not memory and not write and _read_only_media(Path(path).absolute()):
        url = f"sqlite:///file:{quote(str(Path(path).absolute()))}?mode=ro&immutable=1&uri=true"
    engine = create_engine(url, poolclass=StaticPool if memory else None,
                           connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let the "begin" hook below open transactions
        dbapi_conn.text_factory = _from_db
        cur = dbapi_conn.cursor()
        if write and not memory:  # (readers leave the mode alone: changing it would wait for writers)
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "before_cursor_execute", retval=True)
    def _on_execute(conn, cursor, statement, parameters, context, executemany):
        return statement, _params_to_db(parameters)

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    if write or memory:
        Base.metadata.create_all(engine)
        _add_missing_columns(engine)
    return sessionmaker(engine, expire_on_commit=False)


def delete_videos(session: Session, video_ids) -> None:
    """Delete these videos' rows and their clips' rows (the caller's transaction commits)."""
    from .schema import Clip, Video

    ids = [int(i) for i in video_ids]
    for i in range(0, len(ids), 10_000):  # (one IN list per 10,000: SQLite limits bound parameters)
        part = ids[i:i + 10_000]
        session.execute(delete(Clip).where(Clip.video_id.in_(part)))
        session.execute(delete(Video).where(Video.id.in_(part)))


def _add_missing_columns(engine) -> None:
    """Add the columns that the schema gained since the database was made (nullable ones only: old rows
    read NULL, "unknown"). SQLite's ADD COLUMN changes only the schema, so it is instant at any size."""
    with engine.begin() as conn:
        for table in Base.metadata.sorted_tables:
            have = {row[1] for row in conn.exec_driver_sql(f'PRAGMA table_info("{table.name}")')}
            for col in table.columns:
                if col.name not in have:
                    if not col.nullable:
                        raise RuntimeError(f"cannot add the non-nullable column {table.name}.{col.name} "
                                           f"to an old database")
                    conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN "{col.name}" '
                                         f'{col.type.compile(engine.dialect)}')


def has_column(session: Session, table: str, column: str) -> bool:
    """Whether the database has ``table.column`` (a reader may open a database made before it existed)."""
    return any(row[1] == column for row in session.execute(text(f'PRAGMA table_info("{table}")')))


def get_setting(session: Session, key: str, default=None):
    row = session.get(Setting, key)
    return default if row is None else row.value


def set_setting(session: Session, key: str, value) -> None:
    row = session.get(Setting, key)
    if row is None:
        session.add(Setting(key=key, value=value))
    else:
        row.value = value


def all_settings(session: Session) -> dict:
    return {s.key: s.value for s in session.scalars(select(Setting))}
