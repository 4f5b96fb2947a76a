"""Writing a file all or nothing: the one atomic-write helper of the project."""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

SAFETENSORS_META_KEY = "lift"  # where a lift-search .safetensors file holds its LiftConfig (lift.checkpoint)
TEMP_SUFFIX = ".tmp"  # every temp file ends so; an index run removes those a killed writer left


def fsync_dir(path: str | Path) -> None:
    """Make a rename or a new file in folder ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | Path, mode: int = 0o644, exclusive: bool = False) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes ``path`` when the block ends without error.

    The data goes to a fresh temp file beside ``path``, created with O_EXCL | O_NOFOLLOW (a leftover or a
    planted link is never written through), is fsynced, renamed over ``path`` and the folder fsynced:
    readers see the old file or the new one, never half of one. The temp file has a unique name ending in
    ``.tmp``, so that concurrent writers never share one; a caller that holds a lock on ``path`` says
    ``exclusive=True`` and gets the plain name ``PATH.tmp`` (a leftover of a killed writer is replaced).
    On any error (a full disk, an interrupt) the temp file is removed and ``path`` is left as it was."""
    path = Path(path)
    tmp = path.with_name(path.name + (TEMP_SUFFIX if exclusive else f".{uuid.uuid4().hex[:8]}{TEMP_SUFFIX}"))
    if exclusive:
        tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def safetensors_metadata(path: str | Path) -> dict | None:
    """The ``__metadata__`` of a safetensors file (read from its JSON header only: no tensor, no torch), or
    None when the file is not a safetensors file (e.g. a pickle)."""
    with open(path, "rb") as f:
        head = f.read(8)
        n = int.from_bytes(head, "little") if len(head) == 8 else 0
        if not 2 <= n < 100_000_000:
            return None
        raw = f.read(n)
    try:
        header = json.loads(raw)
    except ValueError:
        return None
    return (header.get("__metadata__") or {}) if isinstance(header, dict) else None


def shown_path(path: str) -> str:
    """A file name as JSON or Parquet text can carry it: bytes that are not UTF-8 (surrogate escapes) as \\xNN."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
