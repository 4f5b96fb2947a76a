"""The vector store: a FAISS index keyed by clip ids, in a file only we write.

File layout: MAGIC, an 8-byte little-endian header length, a JSON header (format, dim, count, kind,
sha256 of the payload), then the payload (faiss.serialize_index bytes). A file without our magic or
with a wrong checksum or dimension is refused before FAISS parses a byte of it. Writes are atomic
(lift.files.atomic_write).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import faiss
import numpy as np

from lift.errors import LiftSearchError
from lift.files import atomic_write

from .testpoint import testpoint

MAGIC = b"LIFTSEARCH-FAISS\n"
FORMAT = 1


class StoreError(LiftSearchError, ValueError):
    """A vector file that is not ours, damaged, or of the wrong shape."""


def new_index(dim: int, kind: str = "flat") -> faiss.Index:
    """Exact inner-product search ("flat") or HNSW ("hnsw", approximate), both keyed by clip id."""
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        return faiss.IndexIDMap2(faiss.IndexHNSWFlat(dim, 32, faiss.METRIC_INNER_PRODUCT))
    raise StoreError(f"unknown index kind {kind!r}: use 'flat' or 'hnsw'")


class VectorStore:
    def __init__(self, dim: int, kind: str = "flat", index: faiss.Index | None = None,
                 meta: dict | None = None):
        self.dim, self.kind = dim, kind
        self.index = index if index is not None else new_index(dim, kind)
        self.meta = dict(meta or {})  # e.g. the hash of the LiFT weights that made the vectors

    # ---- contents ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.index.ntotal

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self.index.id_map).astype(np.int64)

    def add(self, ids, vectors) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(ids) != len(vectors):
            raise StoreError(f"expected ({len(ids)}, {self.dim}) vectors, got {vectors.shape}")
        if len(ids):
            self.index.add_with_ids(vectors, ids)

    def remove(self, ids) -> int:
        ids = np.ascontiguousarray(list(ids), dtype=np.int64)
        if not len(ids):
            return 0
        if self.kind == "hnsw":  # HNSW cannot delete: rebuild without them
            keep = np.setdiff1d(self.ids(), ids)
            vectors = self.vectors(keep)
            self.index = new_index(self.dim, self.kind)
            self.add(keep, vectors)
            return len(ids)
        return int(self.index.remove_ids(faiss.IDSelectorBatch(ids)))

    def vectors(self, ids) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64)
        if not len(ids):
            return np.zeros((0, self.dim), np.float32)
        return np.stack([self.index.reconstruct(int(i)) for i in ids]).astype(np.float32)

    def search(self, queries, k: int, allowed=None) -> tuple[np.ndarray, np.ndarray]:
        """(Q, dim) -> scores (Q, k), ids (Q, k); id -1 where fewer than k vectors exist. ``allowed``: only
        these ids may be returned (a FAISS ID selector: exact, whatever the share of the library)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        params = None
        if allowed is not None:
            params = faiss.SearchParameters(sel=faiss.IDSelectorBatch(np.asarray(allowed, dtype=np.int64)))
        return self.index.search(queries, min(k, max(len(self), 1)), params=params)

    # ---- file --------------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        path = Path(path)
        payload = faiss.serialize_index(self.index).tobytes()
        header = json.dumps({"format": FORMAT, "dim": self.dim, "kind": self.kind, "count": len(self),
                             "meta": self.meta, "sha256": hashlib.sha256(payload).hexdigest()}).encode()
        with atomic_write(path, exclusive=True) as f:  # the caller holds the indexer lock
            f.write(MAGIC + len(header).to_bytes(8, "little") + header)
            f.write(payload[:len(payload) // 2])
            f.flush()
            testpoint("faiss-write")  # tests crash here: half a file written
            f.write(payload[len(payload) // 2:])

    @classmethod
    def load(cls, path: str | Path, dim: int) -> "VectorStore":
        path = Path(path)
        data = path.read_bytes()
        if not data.startswith(MAGIC):
            raise StoreError(f"{path} was not written by lift-search (no header): refusing to load it.")
        n = int.from_bytes(data[len(MAGIC):len(MAGIC) + 8], "little")
        start = len(MAGIC) + 8
        try:
            header = json.loads(data[start:start + n])
        except ValueError:
            raise StoreError(f"{path} has a damaged header.") from None
        payload = data[start + n:]
        if header.get("format") != FORMAT or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            raise StoreError(f"{path} is damaged (checksum mismatch) or of an unknown format.")
        if header.get("dim") != dim:
            raise StoreError(f"{path} holds {header.get('dim')}-d vectors; this index expects {dim}-d.")
        index = faiss.deserialize_index(np.frombuffer(payload, dtype=np.uint8))
        if index.d != dim or index.ntotal != header.get("count"):
            raise StoreError(f"{path} does not match its own header (dim or count).")
        return cls(dim, header.get("kind", "flat"), index, header.get("meta"))
