"""The files of a vector store (indexer/store.py): array files and the manifest.

An *array file* holds named numpy arrays behind a header of ours, so that it can be memory-mapped:

    MAGIC, an 8-byte little-endian header length, a JSON header
    ({"format", "kind", "arrays": {name: {"dtype", "shape", "offset"}}, "payload_bytes"}),
    zero padding to a multiple of 64, then the payload (each array 64-byte aligned).

The SHA-256 of the payload is computed while the file is written and recorded in the manifest, which
is the authority on which files make the store: opening a store checks each file's magic, header and
exact size (cheap); `ArrayFile.verify` hashes the payload (at compaction, which reads it all anyway, and
for `lift-search status --verify`). A file we did not write is refused before any of it is used.

The manifest (``manifest.json``) is one small JSON document with its own checksum, replaced atomically:
a store is exactly what its manifest lists, so a crash at any moment leaves the previous store whole.
"""
from __future__ import annotations

import hashlib
import json
import mmap
import os
import weakref
from pathlib import Path

import numpy as np

from lift.errors import LiftSearchError
from lift.files import atomic_write

from .testpoint import testpoint

MAGIC = b"LIFTSEARCH-ARRAYS\n"
FORMAT = 1
ALIGN = 64
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 2  # (1: the single vectors.faiss file of lift-search <= 0.1)
_CHUNK = 1 << 24  # bytes hashed / written per step


class StoreError(LiftSearchError, ValueError):
    """A vector file that is not ours, damaged, or of the wrong shape."""


def _pad(n: int) -> int:
    return -n % ALIGN


def _chunks(part):
    """The bytes of one part of an array, in pieces: an ndarray (or a memory map), or an object with a
    `chunks()` method yielding arrays (e.g. a segment's rows without its deleted ones)."""
    for c in (part.chunks() if hasattr(part, "chunks") else [part]):
        data = np.ascontiguousarray(c).reshape(-1).view(np.uint8)
        for i in range(0, len(data), _CHUNK):
            yield data[i:i + _CHUNK]


def write_arrays(path: Path, kind: str, arrays: dict, point: str | None = None) -> dict:
    """Write `arrays` to `path`, atomically. Each value is an array, or a list of parts (arrays, or objects
    with `dtype`, `shape` and `chunks()`) concatenated along axis 0, streamed to the file. Returns the
    manifest entry {"file", "bytes", "sha256"}. `point`: a test point reached with half the payload written."""
    layout, parts, offset = {}, {}, 0
    for name, value in arrays.items():
        chunks = value if isinstance(value, list) else [value]
        dtype, tail = np.dtype(chunks[0].dtype), tuple(chunks[0].shape[1:])
        if any(np.dtype(c.dtype) != dtype or tuple(c.shape[1:]) != tail for c in chunks):
            raise StoreError(f"parts of array {name!r} differ in dtype or shape")
        shape = [sum(c.shape[0] for c in chunks), *tail]
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        layout[name] = {"dtype": dtype.str, "shape": shape, "offset": offset}
        parts[name] = (chunks, nbytes)
        offset += nbytes + _pad(nbytes)
    header = json.dumps({"format": FORMAT, "kind": kind, "arrays": layout, "payload_bytes": offset}).encode()
    head = MAGIC + len(header).to_bytes(8, "little") + header
    head += b"\0" * _pad(len(head))
    digest, written = hashlib.sha256(), 0
    with atomic_write(path, exclusive=True) as f:  # the caller holds the indexer lock
        f.write(head)
        if point and offset == 0:
            testpoint(point)
        for name, (chunks, nbytes) in parts.items():
            for piece in (p for c in chunks for p in _chunks(c)):
                digest.update(piece)
                f.write(piece)
                if point and written < offset // 2 <= written + len(piece):
                    f.flush()
                    testpoint(point)  # tests crash here: half the payload written
                written += len(piece)
            pad = b"\0" * _pad(nbytes)
            digest.update(pad)
            f.write(pad)
            written += len(pad)
        if written != offset:  # (before the rename: the file is not kept)
            raise StoreError(f"wrote {written} bytes of {path.name}, expected {offset}")
    return {"file": path.name, "bytes": len(head) + offset, "sha256": digest.hexdigest()}


class ArrayFile:
    """A read-only view of an array file: arrays are memory-mapped, not read."""

    def __init__(self, path: Path, kind: str, entry: dict | None = None):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            start = f.read(len(MAGIC) + 8)
            if not start.startswith(MAGIC):
                raise StoreError(f"{self.path} was not written by lift-search (no header): refusing to use it.")
            n = int.from_bytes(start[len(MAGIC):], "little")
            if not 2 <= n <= 1 << 20:
                raise StoreError(f"{self.path} has a damaged header.")
            try:
                header = json.loads(f.read(n))
            except ValueError:
                raise StoreError(f"{self.path} has a damaged header.") from None
            size = os.fstat(f.fileno()).st_size
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else None
            self._fd = os.dup(f.fileno())  # for read_rows (the file stays readable if a commit deletes it)
            weakref.finalize(self, os.close, self._fd)
        head = len(MAGIC) + 8 + n
        self.payload_start = head + _pad(head)
        self.header = header
        if header.get("format") != FORMAT or header.get("kind") != kind:
            raise StoreError(f"{self.path} is not a lift-search {kind} file of a known format.")
        if size != self.payload_start + header.get("payload_bytes", -1):
            raise StoreError(f"{self.path} is damaged: {size} bytes, its header says "
                             f"{self.payload_start + header.get('payload_bytes', 0)}.")
        if entry is not None and entry.get("bytes") not in (None, size):
            raise StoreError(f"{self.path} is not the file the manifest lists (size differs).")
        self.entry = entry
        self.arrays: dict[str, np.ndarray] = {}
        for name, spec in header["arrays"].items():
            dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
            count = int(np.prod(shape, dtype=np.int64))
            if spec["offset"] + count * dtype.itemsize > header["payload_bytes"]:
                raise StoreError(f"{self.path} is damaged: array {name!r} runs past the end of the file.")
            self.arrays[name] = (np.frombuffer(self._map, dtype, count, self.payload_start + spec["offset"])
                                 .reshape(shape) if count else np.zeros(shape, dtype))

    def __getitem__(self, name: str) -> np.ndarray:
        return self.arrays[name]

    def read_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Rows `rows` (ascending) of the array `name`, read with pread rather than through the mapping. A
        search re-scores a few hundred rows scattered over gigabytes, and each page fault on a mapping maps
        ~64 KB around the page (the kernel's fault-around): a 10M-clip search process grew by ~1 GB of mapped
        file every 64 queries. Read this way, no page of the file stays in the process."""
        arr = self.arrays[name]
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows),) + arr.shape[1:], arr.dtype)
        if not len(rows):
            return out
        if int(rows[0]) < 0 or int(rows[-1]) >= len(arr):
            raise StoreError(f"{self.path}: rows {int(rows[0])}..{int(rows[-1])} outside its {len(arr)}")
        size = out.itemsize * int(np.prod(arr.shape[1:], dtype=np.int64))  # bytes a row
        start = self.payload_start + self.header["arrays"][name]["offset"]
        runs = np.flatnonzero(np.diff(rows, prepend=-2) != 1).tolist() + [len(rows)]  # consecutive rows: one read
        view = memoryview(out).cast("B")
        for a, b in zip(runs[:-1], runs[1:]):
            if os.preadv(self._fd, [view[a * size:b * size]], start + int(rows[a]) * size) != (b - a) * size:
                raise StoreError(f"{self.path} is shorter than its header says")
        return out

    def drop_pages(self) -> None:
        """Let the kernel unmap the pages read so far from this process (they stay in the page cache; the
        next read maps them again): a search process's resident memory does not grow with what it has read."""
        if self._map is not None:
            self._map.madvise(mmap.MADV_DONTNEED)

    def verify(self) -> None:
        """Hash the payload and compare it with the manifest's record (raises StoreError)."""
        if self.entry is None:
            return
        digest = hashlib.sha256()
        end = self.payload_start + self.header["payload_bytes"]
        for i in range(self.payload_start, end, _CHUNK):
            digest.update(self._map[i:min(i + _CHUNK, end)])
        if digest.hexdigest() != self.entry["sha256"]:
            raise StoreError(f"{self.path} is damaged (checksum mismatch).")


# ---- the manifest --------------------------------------------------------------------------------
def _digest(doc: dict) -> str:
    body = {k: v for k, v in doc.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def write_manifest(folder: Path, doc: dict) -> None:
    doc = {**doc, "sha256": _digest(doc)}
    with atomic_write(folder / MANIFEST, exclusive=True) as f:
        f.write(json.dumps(doc, indent=1, sort_keys=True).encode())


def read_manifest(folder: Path) -> dict | None:
    """The manifest of the store in `folder`, or None where there is none (raises StoreError if damaged)."""
    path = folder / MANIFEST
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(raw)
    except ValueError:
        raise StoreError(f"{path} was not written by lift-search or is damaged.") from None
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT or doc.get("sha256") != _digest(doc):
        raise StoreError(f"{path} was not written by lift-search or is damaged (checksum mismatch).")
    return doc


def referenced(doc: dict | None) -> set[str]:
    """The file names a manifest refers to."""
    if not doc:
        return set()
    names = {s["file"] for s in doc["segments"]} | {s["codes"]["file"] for s in doc["segments"] if s.get("codes")}
    names |= {x["file"] for x in (doc.get("tombstones"), doc.get("ann")) if x}
    return names
