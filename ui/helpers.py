"""Plain helpers of the app, kept out of Streamlit so they are easy to test: checking what the browser
sends (a clip id, an upload), private temp files for uploads, display text. (Filtering and paging the
library are queries of the search engine: SearchEngine.clip_page / count.)"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Iterator, Sequence

from lift.errors import LiftSearchError

VIDEO_TYPES = ("mp4", "avi", "mov", "mkv", "webm")  # upload types, as st.file_uploader wants them
MAX_CLIP_ID = 10**12
# codecs that Chromium, Firefox and Safari all play (fourcc as OpenCV reports it, lower case)
BROWSER_CODECS = {"avc1", "avc3", "h264", "x264", "vp80", "vp08", "vp90", "vp09", "av01"}


class InputError(LiftSearchError, ValueError):
    """Something the browser sent is refused; the message says why, for the user."""


def parse_clip_id(value) -> int:
    """A clip id from a query parameter or a widget: a plain whole number, nothing else."""
    text = value[-1] if isinstance(value, list) and value else value
    text = str(text).strip() if text is not None else ""
    if not re.fullmatch(r"[0-9]{1,13}", text, flags=re.ASCII) or not 0 < int(text) < MAX_CLIP_ID:
        raise InputError(f"{quote(text)} is not a clip id: a clip is chosen by its number (like ?clip=12), "
                         "never by a file name or path")
    return int(text)


def check_upload(name: str, size: int, max_bytes: int) -> str:
    """The file type of an upload (its lower-case extension, with the dot) if it may be used as a query.
    The name is only looked at for its extension: it is never used as a path."""
    suffix = PurePath(str(name).replace("\\", "/")).suffix.lower()
    if suffix.lstrip(".") not in VIDEO_TYPES:
        raise InputError(f"{quote(name)} is not a video this app accepts: upload one of "
                         f"{', '.join('.' + t for t in VIDEO_TYPES)}")
    if size <= 0:
        raise InputError(f"{quote(name)} is empty")
    if size > max_bytes:
        raise InputError(f"{quote(name)} is {size / 2**20:.1f} MB; the limit is {max_bytes / 2**20:.0f} MB")
    return suffix


@contextmanager
def private_copy(data: bytes, suffix: str) -> Iterator[Path]:
    """Write an upload to a new private folder (mode 0700) under a generated name; removed afterwards."""
    if suffix.lstrip(".") not in VIDEO_TYPES:
        raise InputError(f"unsupported video type {quote(suffix)}")
    folder = Path(tempfile.mkdtemp(prefix="lift-search-query-"))
    try:
        path = folder / f"query.{suffix.lstrip('.')}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def browser_codec(path: str | Path) -> tuple[bool, str]:
    """(whether browsers can play the file's video codec, the codec's fourcc); reads the header only.
    Unknown codecs count as playable, so the browser gets to try."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        code = int(cap.get(cv2.CAP_PROP_FOURCC)) if cap.isOpened() else 0
    finally:
        cap.release()
    fourcc = code.to_bytes(4, "little").decode("latin-1").strip("\x00 ").lower() if code > 0 else ""
    return (not fourcc or fourcc in BROWSER_CODECS), fourcc


# ---- library listing ------------------------------------------------------------------------------
def display_name(path: str, roots: Sequence[str]) -> str:
    """A clip's file relative to the indexed folder holding it (with that folder's name in front)."""
    p = Path(path)
    for r in roots:
        root = Path(r)
        if p.is_relative_to(root):
            return str(Path(root.name) / p.relative_to(root))
    return p.name


def folder_of(path: str, roots: Sequence[str]) -> str:
    return str(Path(display_name(path, roots)).parent)


# ---- text ---------------------------------------------------------------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|:~$])")


def md(text) -> str:
    """Text shown literally inside Streamlit markdown (file names can hold *, _, [, :red[...] and so on)."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def quote(text, limit: int = 60) -> str:
    """A value the user sent, shortened and made inert for a message."""
    s = "".join(ch if ch.isprintable() else "?" for ch in str(text))
    s = s if len(s) <= limit else s[: limit - 1] + "…"
    return f"“{md(s)}”"


def seconds(start: float, end: float) -> str:
    return f"{start:.1f}–{end:.1f} s"
