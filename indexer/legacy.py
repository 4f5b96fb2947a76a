"""The vectors of an index made by lift-search 0.1: one file, vectors.faiss, read to migrate it.

Layout: MAGIC, an 8-byte little-endian header length, a JSON header (format 1, dim, count, kind, meta,
sha256 of the payload), then the payload (faiss.serialize_index bytes of an IndexIDMap2). A file without
our magic, with a wrong checksum or another dimension is refused before FAISS parses a byte of it. The
next index run moves its vectors into segments (indexer/store.py) and deletes it.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import faiss
import numpy as np

from .segments import StoreError

MAGIC = b"LIFTSEARCH-FAISS\n"
FORMAT = 1


def _header(data: bytes, path: Path) -> tuple[dict, int]:
    if not data.startswith(MAGIC):
        raise StoreError(f"{path} was not written by lift-search (no header): refusing to load it.")
    n = int.from_bytes(data[len(MAGIC):len(MAGIC) + 8], "little")
    start = len(MAGIC) + 8
    try:
        return json.loads(data[start:start + n]), start + n
    except ValueError:
        raise StoreError(f"{path} has a damaged header.") from None


def legacy_digest(path: Path) -> str | None:
    """The payload checksum its header records (reads the header only), or None if it is not ours."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    try:
        return _header(head, path)[0].get("sha256")
    except StoreError:
        return None


def load_legacy(path: Path, dim: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """(ids (n,), vectors (n, dim) float32, meta) of a lift-search 0.1 vectors.faiss file."""
    data = Path(path).read_bytes()
    header, start = _header(data, path)
    payload = data[start:]
    if header.get("format") != FORMAT or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise StoreError(f"{path} is damaged (checksum mismatch) or of an unknown format.")
    if header.get("dim") != dim:
        raise StoreError(f"{path} holds {header.get('dim')}-d vectors; this index expects {dim}-d.")
    index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
    if index.d != dim or index.ntotal != header.get("count"):
        raise StoreError(f"{path} does not match its own header (dim or count).")
    if not hasattr(index, "id_map"):
        raise StoreError(f"{path} is not an index of clip ids.")
    ids = faiss.vector_to_array(index.id_map).astype(np.int64)
    vectors = index.index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, dim), np.float32)
    return ids, np.asarray(vectors, np.float32), dict(header.get("meta") or {})


def save_legacy(path: Path, ids, vectors, meta: dict) -> None:
    """Write a file as lift-search 0.1 did (for tests of the migration)."""
    dim = np.asarray(vectors).shape[1]
    index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if len(ids):
        index.add_with_ids(np.ascontiguousarray(vectors, np.float32), np.ascontiguousarray(ids, np.int64))
    payload = faiss.serialize_index(index).tobytes()
    header = json.dumps({"format": FORMAT, "dim": dim, "kind": "flat", "count": index.ntotal, "meta": meta,
                         "sha256": hashlib.sha256(payload).hexdigest()}).encode()
    Path(path).write_bytes(MAGIC + len(header).to_bytes(8, "little") + header + payload)
