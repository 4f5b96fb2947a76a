"""One indexer per index: an flock on IDX/indexer.lock, released by the kernel when the holder dies,
so a killed run never leaves a lock behind. The file names the holder for the refusal message."""
from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path

from lift.errors import LiftSearchError


class IndexLocked(LiftSearchError, RuntimeError):
    """Another indexer holds the index."""


def _describe(raw: bytes) -> str:
    """'pid 123 on host h, since 2024-01-01 12:00:00' from the lock file's contents."""
    try:
        h = json.loads(raw)
        return f"pid {h['pid']} on host {h['host']}, since {h['since']}"
    except (ValueError, KeyError, TypeError):
        return raw.decode(errors="replace").strip() or "holder unknown: it is still starting"


class IndexLock:
    def __init__(self, index_dir: str | Path):
        self.path = Path(index_dir) / "indexer.lock"
        self.fd: int | None = None

    def acquire(self) -> "IndexLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(fd, 4096, 0))
            os.close(fd)
            raise IndexLocked(f"another indexer is running on {self.path.parent} ({holder}); "
                              f"wait for it to finish or stop it.") from None
        try:  # who holds it, for the refusal message; the lock holds without it (e.g. a full disk)
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                      "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        except OSError:
            pass
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.ftruncate(self.fd, 0)
            except OSError:
                pass
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
