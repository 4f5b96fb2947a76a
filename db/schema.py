"""Tables. A clip's primary key is also its id in the FAISS index."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class Video(Base):
    __tablename__ = "videos"
    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(String, unique=True, index=True)  # absolute, as scanned
    root: Mapped[str] = mapped_column(String)                          # the indexed folder it lies in
    size: Mapped[int] = mapped_column(Integer)
    mtime: Mapped[float] = mapped_column(Float)
    content_hash: Mapped[str] = mapped_column(String, index=True)
    n_frames: Mapped[int] = mapped_column(Integer)
    fps: Mapped[float] = mapped_column(Float)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    features: Mapped[str] = mapped_column(String)  # cache file, relative to the index directory
    # how its frames were read (indexer.decode.READ_MODES): "seek", or "sequential" for a file whose
    # seeks land on wrong frames; NULL: indexed before this was recorded. Deferred, so that a database
    # made before the column existed still reads (writers add missing columns, see db.session)
    read_mode: Mapped[str | None] = mapped_column(String, nullable=True, deferred=True)
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
    path: Mapped[str] = mapped_column(String, unique=True)
    size: Mapped[int] = mapped_column(Integer, default=-1)
    mtime: Mapped[float] = mapped_column(Float, default=0.0)
    reason: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Setting(Base):
    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[dict | list | str | int | float | None] = mapped_column(JSON)
