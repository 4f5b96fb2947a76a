"""Where an index's metadata lives: the SQLite file in its folder (the default) or a database named by a
SQLAlchemy URL (``lift-search index --db postgresql://user@host:port/dbname``).

A folder whose metadata lives elsewhere records where in ``IDX/metadata.json`` (indexer.library.IndexDir):
the URL without its password, and on PostgreSQL the index's own schema, so that several indexes can share
one database and ``search``, ``status`` and ``ui`` need only ``--index``. Passwords come from the
environment (``PGPASSWORD``) or ``~/.pgpass``, which libpq reads; never from a file in the index folder.
"""
from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from lift.errors import LiftSearchError

BACKENDS = ("sqlite", "postgresql")
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")  # what new_schema makes (no quoting needed anywhere)
PG_DRIVER = "psycopg"  # psycopg 3: `pip install lift-search[postgres]`


class MetadataDbError(LiftSearchError, RuntimeError):
    """The metadata database cannot be used: a bad or unsupported URL, a URL other than the index's own,
    a server that cannot be reached or refuses the login."""


@dataclass(frozen=True)
class Database:
    url: URL                   # never holds a password
    schema: str | None = None  # PostgreSQL: the index's own schema in that database

    def __post_init__(self):
        if self.url.password is not None:
            raise MetadataDbError("a database URL for lift-search must not hold a password: the index folder "
                                  "records the URL, and each machine that writes or searches the index gives "
                                  "the password itself, in PGPASSWORD or ~/.pgpass")
        if self.schema is not None and not SCHEMA_NAME.fullmatch(self.schema):
            raise MetadataDbError(f"not a lift-search schema name: {self.schema!r}")

    @classmethod
    def sqlite(cls, path: str | Path) -> "Database":
        """The SQLite file at `path` (":memory:" for tests)."""
        return cls(URL.create("sqlite") if str(path) == ":memory:" else
                   URL.create("sqlite", database=str(Path(path).absolute())))

    @classmethod
    def parse(cls, text: str, schema: str | None = None) -> "Database":
        """A database from a URL as a user writes it (postgres:// is read as postgresql://; a relative
        SQLite path is made absolute). One with a password is refused."""
        url = _url(text)
        if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            url = url.set(database=str(Path(url.database).absolute()))
        return cls(url, schema)

    @property
    def backend(self) -> str:
        return self.url.get_backend_name()

    @property
    def path(self) -> Path | None:
        """The SQLite file (None: in memory, or not SQLite)."""
        memory = self.url.database in (None, "", ":memory:")
        return Path(self.url.database) if self.backend == "sqlite" and not memory else None

    @property
    def lock_key(self) -> int:
        """A 64-bit key for PostgreSQL advisory locks, one per index (its schema)."""
        name = f"lift-search:{self.url.database}:{self.schema}"
        return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)

    def engine_url(self) -> URL:
        """The URL SQLAlchemy connects to: PostgreSQL through psycopg 3 unless a driver is named."""
        if self.url.drivername == "postgresql":
            return self.url.set(drivername=f"postgresql+{PG_DRIVER}")
        return self.url

    def record(self) -> dict:
        """What IDX/metadata.json holds (no password: the URL never has one)."""
        return {"url": self.url.render_as_string(hide_password=False), "schema": self.schema}

    def same_server_and_database(self, other: "Database") -> bool:
        return self.engine_url() == other.engine_url()

    def __str__(self) -> str:
        if self.path is not None:
            return str(self.path)
        where = self.url.render_as_string(hide_password=True)
        return f"{where} (schema {self.schema})" if self.schema else where


def new_schema(index_root: Path) -> str:
    """A PostgreSQL schema for a new index: its folder's name (letters, digits, _) and 8 random hex digits,
    so that two folders of the same name never share one."""
    slug = re.sub(r"[^a-z0-9_]+", "_", index_root.name.lower()).strip("_")[:40] or "index"
    return f"lift_{slug}_{secrets.token_hex(4)}"


def _url(text: str) -> URL:
    if "://" not in text:
        raise MetadataDbError(f"--db wants a database URL such as postgresql://user@host:5432/dbname, not {text!r}")
    if text.startswith(("postgres://", "postgres+")):  # libpq's spelling; SQLAlchemy knows only postgresql
        text = "postgresql" + text[len("postgres"):]
    try:
        url = make_url(text)
    except ArgumentError as e:
        raise MetadataDbError(f"not a database URL: {e}") from None
    if url.get_backend_name() not in BACKENDS:
        raise MetadataDbError(f"lift-search keeps metadata in {' or '.join(BACKENDS)}, not "
                              f"{url.get_backend_name()} ({url.render_as_string(hide_password=True)})")
    return url
