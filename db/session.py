"""Opening an index's metadata database, with the same guarantees on SQLite and PostgreSQL:

* readers never wait and never block a writer, and a read transaction sees one snapshot throughout
  (SQLite: WAL; PostgreSQL: MVCC, REPEATABLE READ, read-only transactions);
* write transactions are serialised up front, so a read-then-write never loses an update and never
  fails half-way with "database is locked" (SQLite: BEGIN IMMEDIATE; PostgreSQL: READ COMMITTED after a
  transaction-level advisory lock keyed by the index, `pg_advisory_xact_lock`, taken first in every
  write transaction: each statement after it sees every earlier writer's commit);
* a writer waits up to BUSY_TIMEOUT_MS for another (SQLite's busy timeout, PostgreSQL's lock_timeout).

Non-UTF-8 file names are handled by the column type (schema.FsText), the same on both.
"""
from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import create_engine, delete, event, inspect, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import StaticPool

from .location import Database, MetadataDbError
from .schema import Base, Setting

BUSY_TIMEOUT_MS = 30_000
TABLES = ("videos", "clips", "failures", "settings")
# PostgreSQL errors that mean "this database refuses writes": disk full, a read-only transaction
# (a hot standby), no privilege
PG_WRITE_REFUSED = {"53100": "disk full", "25006": "read-only", "42501": "permission denied"}


def open_db(where: Database | str | Path, write: bool = False) -> sessionmaker[Session]:
    """A session factory for an index's metadata: a Database (IndexDir.db), or the path of a SQLite file
    (":memory:" for tests). Writers create the tables (and on PostgreSQL the index's schema)."""
    db = where if isinstance(where, Database) else Database.sqlite(where)
    engine = _sqlite_engine(db, write) if db.backend == "sqlite" else _postgres_engine(db, write)
    return sessionmaker(engine, expire_on_commit=False)


def _read_only_media(path: Path) -> bool:
    try:
        return bool(os.statvfs(path.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _sqlite_engine(db: Database, write: bool) -> Engine:
    """WAL so searches read while an indexer writes; BEGIN IMMEDIATE for writers. A reader of an index on
    read-only media (where SQLite cannot make the WAL's shared-memory file) opens it immutable: nobody can
    change it there."""
    path = db.path
    memory = path is None
    url = db.url
    if not memory and not write and _read_only_media(path):
        url = f"sqlite:///file:{quote(str(path))}?mode=ro&immutable=1&uri=true"
    engine = create_engine(url, poolclass=StaticPool if memory else None,
                           connect_args={"timeout": BUSY_TIMEOUT_MS / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # let the "begin" hook below open transactions
        cur = dbapi_conn.cursor()
        if write and not memory:  # (readers leave the mode alone: changing it would wait for writers)
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
        with engine.begin() as conn:
            _add_missing_columns(conn)
    return engine


def _postgres_engine(db: Database, write: bool) -> Engine:
    """The index's schema first on the search path; writers READ COMMITTED behind the index's advisory
    lock, readers REPEATABLE READ and read-only. Connects once now, so that an unreachable server or a
    refused login is one clear error here rather than a traceback later."""
    # a writer that dies with its machine holds the advisory lock only until the server's TCP keepalives
    # notice (here ~2 min; the kernel default would be hours); a killed process's socket closes at once
    options = [f"-c lock_timeout={BUSY_TIMEOUT_MS}", "-c tcp_keepalives_idle=60", "-c tcp_keepalives_interval=10",
               "-c tcp_keepalives_count=6"]
    if db.schema:
        options.append(f"-c search_path={db.schema}")
    if not write:
        options.append("-c default_transaction_read_only=on")
    try:
        engine = create_engine(db.engine_url(), isolation_level="READ COMMITTED" if write else "REPEATABLE READ",
                               pool_pre_ping=True,  # a server restarted under a long-lived search engine
                               connect_args={"options": " ".join(options), "application_name": "lift-search"})
    except ModuleNotFoundError as e:
        raise MetadataDbError(f"PostgreSQL needs the psycopg driver ({e.name} is missing): "
                              f"pip install 'lift-search[postgres]'") from None

    if write:
        @event.listens_for(engine, "begin")
        def _on_begin(conn):
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({db.lock_key})")

    try:
        if write:
            with engine.begin() as conn:  # (under the lock: two first runs never race to create)
                if db.schema and conn.exec_driver_sql(
                        f"SELECT 1 FROM pg_namespace WHERE nspname = '{db.schema}'").scalar() is None:
                    conn.exec_driver_sql(f'CREATE SCHEMA "{db.schema}"')
                Base.metadata.create_all(conn)
                _add_missing_columns(conn)
        else:
            with engine.connect() as conn:
                found = conn.exec_driver_sql("SELECT " + ", ".join(f"to_regclass('{t}')" for t in TABLES)).one()
            missing = [t for t, oid in zip(TABLES, found) if oid is None]
            if missing:
                raise MetadataDbError(f"the metadata database {db} holds no lift-search tables ({', '.join(missing)}"
                                      f" missing): the index's first `lift-search index` run has not started "
                                      f"writing, or its schema was dropped")
    except DBAPIError as e:  # the server is unreachable or refuses the login, the role lacks a privilege
        engine.dispose()
        connecting = getattr(e.orig, "sqlstate", None) is None  # (libpq's connection errors have no SQLSTATE)
        raise MetadataDbError(f"cannot {'connect to' if connecting else 'use'} the metadata database {db}: "
                              f"{_first_line(e.orig)}" + (". Passwords come from PGPASSWORD or ~/.pgpass, never "
                                                          "from the index folder" if connecting else "")) from None
    return engine


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def write_refused(e: DBAPIError) -> bool:
    """Is `e` the database refusing a write (disk full, read-only, no permission), rather than a bug?"""
    code = getattr(e.orig, "sqlstate", None)
    if code is not None:  # PostgreSQL
        return code in PG_WRITE_REFUSED
    return any(m in str(e.orig) for m in ("disk is full", "readonly", "disk I/O", "unable to open"))


def _add_missing_columns(conn) -> None:
    """Add the columns that the schema gained since the database was made (nullable ones only: old rows
    read NULL, "unknown"). ADD COLUMN of a nullable column changes only the schema (SQLite, PostgreSQL),
    so it is instant at any size."""
    for table in Base.metadata.sorted_tables:
        have = {c["name"] for c in inspect(conn).get_columns(table.name)}
        for col in table.columns:
            if col.name not in have:
                if not col.nullable:
                    raise RuntimeError(f"cannot add the non-nullable column {table.name}.{col.name} to an old database")
                conn.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN "{col.name}" '
                                     f'{col.type.compile(conn.dialect)}')


def has_column(session: Session, table: str, column: str) -> bool:
    """Whether the database has ``table.column`` (a reader may open a database made before it existed)."""
    return any(c["name"] == column for c in inspect(session.connection()).get_columns(table))


def in_parts(values, size: int = 10_000):
    """`values` (a list) in slices small enough for one SQL `IN (...)` (SQLite limits bound parameters)."""
    for i in range(0, len(values), size):
        yield values[i:i + size]


def delete_videos(session: Session, video_ids) -> None:
    """Delete these videos' rows and their clips' rows (the caller's transaction commits)."""
    from .schema import Clip, Video

    for part in in_parts([int(i) for i in video_ids]):
        session.execute(delete(Clip).where(Clip.video_id.in_(part)))
        session.execute(delete(Video).where(Video.id.in_(part)))


# the driver's mark of a positional parameter, by DB-API paramstyle (SQLite: qmark; psycopg, pymysql: (py)format)
_MARKS = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def clip_rows(bind: Engine, ids) -> dict[int, tuple[int, str, float, float]]:
    """{clip id: (id, video path, start_s, end_s)} of these clips; ids without a row are left out.

    Every search runs this on its candidates, so it runs on the driver's own cursor: SQLAlchemy's statement
    machinery took three times the query itself (0.70 against 0.24 ms for 41 clips of 1M, SQLite); a dialect
    whose paramstyle is not in _MARKS gets the same query through SQLAlchemy."""
    from .schema import Clip, Video, from_db_text

    ids = [int(i) for i in ids]
    mark = _MARKS.get(bind.dialect.paramstyle)
    out = {}
    with bind.connect() as c:
        for part in in_parts(ids):
            if mark is None:
                rows = c.execute(select(Clip.id, Video.path, Clip.start_s, Clip.end_s).join(Video, Clip.video_id == Video.id)
                                 .where(Clip.id.in_(part))).all()
            else:
                cur = c.connection.dbapi_connection.cursor()
                try:
                    cur.execute(f"SELECT c.id, v.path, c.start_s, c.end_s FROM {Clip.__tablename__} c JOIN "
                                f"{Video.__tablename__} v ON c.video_id = v.id WHERE c.id IN ({', '.join([mark] * len(part))})",
                                part)
                    rows = [(r[0], from_db_text(r[1]), r[2], r[3]) for r in cur.fetchall()]
                finally:
                    cur.close()
            out.update((r[0], tuple(r)) for r in rows)
    return out


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
