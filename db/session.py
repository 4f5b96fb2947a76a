"""Opening the database: WAL so searches read while an indexer writes, a busy timeout, foreign keys,
and write transactions that take the write lock up front (BEGIN IMMEDIATE) so they never deadlock."""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, event, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from .schema import Base, Setting

BUSY_TIMEOUT_MS = 30_000


def open_db(path: str | Path, write: bool = False) -> sessionmaker[Session]:
    """A session factory for the SQLite file at `path` (":memory:" for tests). Creates the tables."""
    memory = str(path) == ":memory:"
    url = "sqlite://" if memory else f"sqlite:///{Path(path)}"
    engine = create_engine(url, poolclass=StaticPool if memory else None,
                           connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let the "begin" hook below open transactions
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
        cur.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    if write or memory:
        Base.metadata.create_all(engine)
    return sessionmaker(engine, expire_on_commit=False)


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
