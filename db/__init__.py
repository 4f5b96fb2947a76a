"""Metadata of an index in SQLite through SQLAlchemy 2: videos, clips, failures, settings."""
from .schema import Base, Clip, Failure, Setting, Video
from .session import all_settings, delete_videos, get_setting, has_column, open_db, set_setting

__all__ = ["Base", "Video", "Clip", "Failure", "Setting", "open_db", "get_setting", "set_setting", "all_settings",
           "delete_videos", "has_column"]
