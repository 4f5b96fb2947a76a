"""Search an index: by an indexed clip or a video file, forward or reverse, appearance vs motion."""
from .engine import Clip, Hit, SearchEngine, SearchError

__all__ = ["SearchEngine", "Clip", "Hit", "SearchError"]
