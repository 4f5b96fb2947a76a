"""Metadata of an index through SQLAlchemy 2: videos, clips, failures, settings; in SQLite (the file in the
index folder) or PostgreSQL (location.py says where, session.py how it is opened)."""
from .location import Database, MetadataDbError
from .schema import Base, Clip, Failure, Setting, Video
from .session import all_settings, clip_rows, in_parts, delete_videos, get_setting, has_column, open_db, set_setting, write_refused

__all__ = ["Base", "Video", "Clip", "Failure", "Setting", "Database", "MetadataDbError", "open_db", "get_setting",
           "set_setting", "all_settings", "clip_rows", "in_parts", "delete_videos", "has_column", "write_refused"]
