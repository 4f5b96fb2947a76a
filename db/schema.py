"""Tables. A clip's primary key is also its id in the FAISS index.

Every text column is :class:`FsText`: file names need not be UTF-8 on Linux (Python gives such a name as a
str with surrogate escapes, which neither sqlite3 nor PostgreSQL can store), so such a str is stored as
FS_PREFIX + its bytes percent-encoded and turned back into the same str when read: paths round-trip
exactly and compare equal in queries, on both backends. On PostgreSQL text sorts by bytes (collation "C"),
as it does in SQLite, so listings come in the same order on both.
"""
from __future__ import annotations

from datetime import datetime, timezone
from urllib.parse import quote, unquote_to_bytes

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

FS_PREFIX = "\x1bfsbytes:"


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def bytes_form(path: str) -> str:
    """How a file name that is not valid UTF-8 is stored: FS_PREFIX + its bytes percent-encoded. (For a
    folder, the prefix that such names under it start with.)"""
    return FS_PREFIX + quote(path.encode("utf-8", "surrogateescape"), safe="/ ")


def to_db_text(value: str | None) -> str | None:
    """A str as stored: itself, or its bytes_form if it is not valid UTF-8."""
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return bytes_form(value)
    return value


def from_db_text(value: str | None) -> str | None:
    if value is not None and value.startswith(FS_PREFIX):
        return unquote_to_bytes(value[len(FS_PREFIX):]).decode("utf-8", "surrogateescape")
    return value


class FsText(TypeDecorator):
    """Text that may hold a non-UTF-8 file name (see the module's docstring)."""

    impl = String
    cache_ok = True

    def load_dialect_impl(self, dialect):
        return dialect.type_descriptor(String(collation="C") if dialect.name == "postgresql" else String())

    def process_bind_param(self, value, dialect):
        return to_db_text(value)

    def process_result_value(self, value, dialect):
        return from_db_text(value)


class Base(DeclarativeBase):
    type_annotation_map = {str: FsText}


class Video(Base):
    __tablename__ = "videos"
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(unique=True, index=True)  # absolute, as scanned
    root: Mapped[str]                                           # the indexed folder it lies in
    size: Mapped[int] = mapped_column(BigInteger)
    mtime: Mapped[float] = mapped_column(Float)
    content_hash: Mapped[str] = mapped_column(index=True)
    n_frames: Mapped[int] = mapped_column(Integer)
    fps: Mapped[float] = mapped_column(Float)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    features: Mapped[str]  # cache file, relative to the index directory
    # how its frames were read (indexer.decode.READ_MODES): "seek", or "sequential" for a file whose
    # seeks land on wrong frames; NULL: indexed before this was recorded. Deferred, so that a database
    # made before the column existed still reads (writers add missing columns, see db.session)
    read_mode: Mapped[str | None] = mapped_column(nullable=True, deferred=True)
    indexed_at: Mapped[datetime] = mapped_column(default=utcnow)
    clips: Mapped[list["Clip"]] = relationship(back_populates="video", cascade="all, delete-orphan",
                                               order_by="Clip.start_s")

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps if self.fps else 0.0


class Clip(Base):
    __tablename__ = "clips"
    id: Mapped[int] = mapped_column(primary_key=True)
    video_id: Mapped[int] = mapped_column(ForeignKey("videos.id", ondelete="CASCADE"), index=True)
    ordinal: Mapped[int] = mapped_column(Integer)       # position of the clip in its video
    start_s: Mapped[float] = mapped_column(Float)
    end_s: Mapped[float] = mapped_column(Float)
    frame_indices: Mapped[list] = mapped_column(JSON)
    video: Mapped[Video] = relationship(back_populates="clips")


class Failure(Base):
    __tablename__ = "failures"
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(unique=True)
    size: Mapped[int] = mapped_column(BigInteger, default=-1)
    mtime: Mapped[float] = mapped_column(Float, default=0.0)
    reason: Mapped[str]
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Setting(Base):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(primary_key=True)
    value: Mapped[dict | list | str | int | float | None] = mapped_column(JSON)
