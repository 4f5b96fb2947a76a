"""Metadata of an index in SQLite through SQLAlchemy 2: videos, clips, failures, settings."""
from .schema import Base, Clip, Failure, Setting, Video
from .session import open_db, get_setting, set_setting

__all__ = ["Base", "Video", "Clip", "Failure", "Setting", "open_db", "get_setting", "set_setting"]
