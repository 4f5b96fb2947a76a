"""The project's one base exception.

Everything a user can act on (a bad argument, a missing file or weights, an index built with other
settings, a full disk) raises a subclass of :class:`LiftSearchError`; the CLI prints its message as one
line. Any other exception is a bug and keeps its traceback. Subclasses that once derived from a builtin
(ValueError, RuntimeError, FileNotFoundError) still do, so existing ``except`` clauses keep working.
"""
from __future__ import annotations


class LiftSearchError(Exception):
    """An error whose message tells the user what is wrong and what to do."""


class UsageError(LiftSearchError, ValueError):
    """A bad argument or input file (the message says which)."""


class IndexNotFoundError(LiftSearchError, FileNotFoundError):
    """No lift-search index at the given folder."""


class EmptyIndexError(LiftSearchError):
    """The index exists but holds no vectors yet (nothing indexed, or its first run has not finished)."""


class BackboneError(LiftSearchError, RuntimeError):
    """A backbone cannot be built: unknown name, missing weights, unusable device, other weights than recorded."""


class CheckpointError(LiftSearchError, ValueError):
    """A LiFT checkpoint that cannot be used; the message says why and what to do."""
