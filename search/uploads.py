"""Uploaded query videos, checked the same way by the app (ui/) and the HTTP API (search/api.py).

An upload's name is only looked at for its extension, never used as a path: the bytes go to a new
private folder under a generated name (`private_copy`), which is removed afterwards. `query_file` does
both and names the upload, not the temp file, in any error about the file's content.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import BinaryIO, Iterator

from lift.errors import LiftSearchError

from .engine import SearchError

VIDEO_TYPES = ("mp4", "avi", "mov", "mkv", "webm")  # accepted upload types (extensions, lower case)
MEDIA_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "mov": "video/quicktime", "mkv": "video/x-matroska",
               "avi": "video/x-msvideo"}  # for serving them


class InputError(LiftSearchError, ValueError):
    """Something a client sent (an upload, a parameter) is refused; the message says why, for the user."""


class UploadTooLargeError(InputError):
    """An upload over the size limit."""


class UnsupportedUploadError(InputError):
    """An upload that is not a video we can use: wrong type, or its content does not decode."""


def quote(text, limit: int = 60) -> str:
    """A value the user sent, shortened and with unprintable characters replaced, for a message."""
    s = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    s = s if len(s) <= limit else s[: limit - 1] + "…"
    return f"“{s}”"


def check_upload(name: str, size: int, max_bytes: int) -> str:
    """The file type of an upload (its lower-case extension, with the dot) if it may be used as a query.
    The name is only looked at for its extension: it is never used as a path."""
    suffix = PurePath(str(name).replace("\\", "/")).suffix.lower()
    if suffix.lstrip(".") not in VIDEO_TYPES:
        raise UnsupportedUploadError(f"{quote(name)} is not a video this server accepts: upload one of "
                                     f"{', '.join('.' + t for t in VIDEO_TYPES)}")
    if size <= 0:
        raise InputError(f"{quote(name)} is empty")
    if size > max_bytes:
        raise UploadTooLargeError(f"{quote(name)} is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB")
    return suffix


@contextmanager
def private_copy(data: bytes | BinaryIO, suffix: str) -> Iterator[Path]:
    """Write an upload (bytes, or a binary file read from its current position) to a new private folder
    (mode 0700) under a generated name; removed afterwards."""
    if suffix.lstrip(".") not in VIDEO_TYPES:
        raise UnsupportedUploadError(f"unsupported video type {quote(suffix)}")
    folder = Path(tempfile.mkdtemp(prefix="lift-search-query-"))
    try:
        path = folder / f"query.{suffix.lstrip('.')}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, (bytes, bytearray, memoryview)):
                f.write(data)
            else:
                shutil.copyfileobj(data, f)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def query_file(data: bytes | BinaryIO, name: str, size: int, max_bytes: int) -> Iterator[Path]:
    """`check_upload`, then `private_copy`: the path of the upload's private copy. A SearchError raised
    inside the block that names that copy (the engine could not decode it, ...) is raised again, of the
    same class, naming the upload instead."""
    suffix = check_upload(name, size, max_bytes)
    with private_copy(data, suffix) as path:
        try:
            yield path
        except SearchError as e:
            if str(path) not in str(e):
                raise
            raise type(e)(str(e).replace(str(path), quote(name))) from None
