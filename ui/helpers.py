"""Plain helpers of the app, kept out of Streamlit so they are easy to test: checking a clip id the
browser sends, display text. Uploads are checked by search.uploads (shared with the HTTP API); filtering
and paging the library are queries of the search engine (SearchEngine.clip_page / count)."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Sequence

from search import uploads
from search.uploads import InputError

MAX_CLIP_ID = 10**12
# codecs that Chromium, Firefox and Safari all play (fourcc as OpenCV reports it, lower case)
BROWSER_CODECS = {"avc1", "avc3", "h264", "x264", "vp80", "vp08", "vp90", "vp09", "av01"}


def parse_clip_id(value) -> int:
    """A clip id from a query parameter or a widget: a plain whole number, nothing else."""
    text = value[-1] if isinstance(value, list) and value else value
    text = str(text).strip() if text is not None else ""
    if not re.fullmatch(r"[0-9]{1,13}", text, flags=re.ASCII) or not 0 < int(text) < MAX_CLIP_ID:
        raise InputError(f"{quote(text)} is not a clip id: a clip is chosen by its number (like ?clip=12), "
                         "never by a file name or path")
    return int(text)


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
    """A value the user sent, shortened and made inert for a message shown as markdown."""
    return md(uploads.quote(text, limit))


def seconds(start: float, end: float) -> str:
    return f"{start:.1f}–{end:.1f} s"
