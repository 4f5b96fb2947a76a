"""Search an index: by an indexed clip or a video file, forward or reverse, appearance vs motion.

Names are imported on first use, so that `lift-search --help` and the command line's start pay for no
library they do not use (the search engine needs numpy, FAISS and SQLAlchemy; never torch for a clip query).
"""
from importlib import import_module

_LAZY = {"SearchEngine": "engine", "Clip": "engine", "Hit": "engine", "SearchError": "engine",
         "UnknownClipError": "engine", "UnreadableVideoError": "engine", "MediaUnavailableError": "engine"}
__all__ = list(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
