"""Stage 1: find the videos under the indexed folders and fingerprint them."""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from lift.errors import UsageError

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv",
                    ".3gp", ".ts", ".mts", ".ogv"}


@dataclass(frozen=True)
class ScannedFile:
    path: str      # absolute path as found (symlinks are not resolved, so names stay the user's)
    root: str      # the indexed folder it was found under
    size: int      # -1 when it cannot be stat'ed (broken link, unreadable)
    mtime: float


def scan(roots: list[str | Path]) -> list[ScannedFile]:
    """Every file with a video extension under `roots`, sorted by path; never follows directory links
    out of the tree. Directories named like videos, broken links and the like are returned too, with
    size -1, so that the decoder records why they were skipped."""
    found: dict[str, ScannedFile] = {}
    for root in roots:
        root = Path(root).absolute()
        if not root.is_dir():
            raise UsageError(f"not a folder: {root}")
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in filenames + [d for d in dirnames if Path(d).suffix.lower() in VIDEO_EXTENSIONS]:
                if Path(name).suffix.lower() not in VIDEO_EXTENSIONS:
                    continue
                path = os.path.join(dirpath, name)
                try:
                    st = os.stat(path)
                    size, mtime = (st.st_size if os.path.isfile(path) else -1), st.st_mtime
                except OSError:
                    size, mtime = -1, 0.0
                found.setdefault(path, ScannedFile(path, str(root), size, mtime))
    return [found[p] for p in sorted(found)]


def content_hash(path: str | Path) -> str:
    """blake2b of the whole file (fast; read in 1 MiB chunks)."""
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
