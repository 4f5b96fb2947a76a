"""The vector store: clip descriptors keyed by clip id, in immutable segments that a manifest lists.

    IDX/vectors/manifest.json   what the store is: its segments, tombstones and approximate index, the
                                LiFT that made the vectors, live count / highest id / id sum; replaced
                                atomically, with its own checksum
    IDX/vectors/seg-N.arr       a segment: ids (n,) int64 ascending and vectors (n, dim) float32, written
                                once (a checkpoint's new clips, or a merge of segments) and memory-mapped
    IDX/vectors/tomb-N.arr      ids deleted from segments that still hold them (tombstones)
    IDX/vectors/ann-N.arr       the trained IVF template (indexer/ann.py), when the store is searched
                                approximately, and codes-N.arr: one segment's IVF codes for it

A commit writes what changed (the new segment, the tombstones, the new segment's IVF codes), then the
manifest; files no manifest lists any more are deleted after it (a reader that mapped them keeps its
mapping; one that opens meanwhile retries). So writes cost what changed, not the library's size, and a
crash at any moment leaves the previous store whole. `maintain` merges segments of one size class
(`merge_factor` at a time, so a vector is rewritten about log_F(N) times in all), rewrites segments
holding many deleted rows, and trains the IVF index once the store is large enough (`--ann auto`).

Searches return exact scores: small stores are searched exactly, large ones through the IVF index,
whose candidates are re-scored against the stored vectors; only recall is approximate. The candidates'
rows are read with pread (ArrayFile.read_rows), not through the mapping: a search process's memory is its
IVF index, whatever the size of the vectors files (10M clips: 1.4 GB peak RSS for 16 GB of vectors).
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path

import faiss
import numpy as np

from lift.config import ANN_MODES, StoreConfig
from lift.files import TEMP_SUFFIX

from . import ann
from .segments import MANIFEST_FORMAT, ArrayFile, StoreError, read_manifest, referenced, write_arrays, write_manifest
from .testpoint import testpoint

log = logging.getLogger(__name__)

__all__ = ["VectorStore", "StoreError"]

_OPEN_TRIES = 5  # a reader that finds a listed file gone (a writer replaced the manifest) reads it again
_CHUNK_ROWS = 131_072  # rows scored per step of an exact search
_FILE_PREFIXES = ("seg-", "tomb-", "codes-", "ann-")
_BATCH = 8  # fewer queries than this are scored with numpy's BLAS on one thread (see _one_blas_thread)
_blas = None


def _one_blas_thread():
    """numpy's BLAS on one thread, for a few queries' products: OpenBLAS's worker threads spin while they wait,
    so on a busy machine a (5000 x 384) matrix-vector product took 20 ms with 2 threads and 0.1 ms with one
    (measured, load average 8 on 2 cores); a single query gains nothing from a second thread anyway."""
    global _blas
    if _blas is None:
        from threadpoolctl import ThreadpoolController

        _blas = ThreadpoolController()
    return _blas.limit(limits=1, user_api="blas")


@dataclass
class Segment:
    ids: np.ndarray                  # (n,) int64, ascending
    vectors: np.ndarray              # (n, dim) float32; memory-mapped once written
    entry: dict | None = None        # its manifest entry once written (file, bytes, sha256, rows, id range/sum)
    codes: np.ndarray | None = None  # (n, code bytes) uint8: its rows' IVF codes, when the store has an IVF
    codes_entry: dict | None = None
    dead: np.ndarray | None = None   # (n,) bool: rows deleted since it was written (tombstones)
    files: list = field(default_factory=list)  # the ArrayFiles it maps (for verify)
    n_dead: int = 0                  # dead.sum(), kept up to date by kill()

    @property
    def live(self) -> int:
        return len(self.ids) - self.n_dead

    def kill(self, rows: np.ndarray) -> None:
        """Mark these rows deleted (a new mask: a reader sharing the old one is not affected)."""
        self.dead = np.zeros(len(self.ids), bool) if self.dead is None else self.dead.copy()
        self.dead[rows] = True
        self.n_dead = int(self.dead.sum())

    def rows(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of these rows (ascending): read from the segment's file once written (ArrayFile.read_rows)."""
        return self.files[0].read_rows("vectors", rows) if self.files else np.asarray(self.vectors[rows])

    def alive(self) -> np.ndarray | slice:
        return slice(None) if self.dead is None else ~self.dead

    def rows_of(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(positions in `ids` found alive here, their rows)."""
        if not len(self.ids) or not len(ids):
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        pos = np.minimum(np.searchsorted(self.ids, ids), len(self.ids) - 1)
        ok = self.ids[pos] == ids
        if self.dead is not None:
            ok &= ~self.dead[pos]
        return np.nonzero(ok)[0], pos[ok]


class VectorStore:
    """Descriptors keyed by clip id. `VectorStore.open` reads a store (memory-mapped); a writable one
    (the indexer, holding the index lock) changes it by `add` / `remove` then `commit`."""

    def __init__(self, folder: str | Path, dim: int, meta: dict | None = None,
                 config: StoreConfig = StoreConfig(), mode: str = "auto", writable: bool = True):
        if mode not in ANN_MODES:
            raise StoreError(f"unknown vector search mode {mode!r}: use one of {', '.join(ANN_MODES)}")
        self.folder, self.dim, self.config, self.mode = Path(folder), int(dim), config, mode
        self.meta = dict(meta or {})  # e.g. the hash of the LiFT weights that made the vectors
        self.writable = writable
        self.segments: list[Segment] = []
        self._buffer: list[tuple[np.ndarray, np.ndarray]] = []  # added rows not yet in a segment
        self._tombstones = np.zeros(0, np.int64)  # committed
        self._ann: dict | None = None  # {"entry", "params": AnnParams, "template": bytes}
        self._ann_index = None         # the searchable IVF index, built on first use
        self._ann_lock = threading.Lock()
        self._doc: dict | None = None  # the manifest this store was read from / last committed
        self._next_file = 1
        self._legacy: Path | None = None  # a vectors.faiss read into this store, deleted once migrated
        self._legacy_path: Path | None = None

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def open(cls, folder: str | Path, dim: int, config: StoreConfig = StoreConfig(), writable: bool = False,
             legacy: str | Path | None = None) -> "VectorStore":
        """The store in `folder` (`legacy`: the single vectors.faiss file of an older index, read when there
        is no manifest; a writable store migrates it at its first commit). Refuses files we did not write
        and vectors of another dimension. A writable store first deletes what a crash left behind."""
        folder = Path(folder)
        for _ in range(_OPEN_TRIES):
            doc = read_manifest(folder)
            store = cls(folder, dim, config=config, writable=writable)
            store._legacy_path = Path(legacy) if legacy is not None else None
            try:
                if doc is not None:
                    store._load(doc)
                elif legacy is not None and Path(legacy).exists():
                    store._load_legacy(Path(legacy))
                break
            except FileNotFoundError:  # a writer committed and removed a file it listed: read again
                continue
        else:
            raise StoreError(f"the vector store at {folder} keeps changing under this reader; try again")
        if writable:
            store._clean()
        return store

    def _load(self, doc: dict) -> None:
        if doc.get("dim") != self.dim:
            raise StoreError(f"{self.folder} holds {doc.get('dim')}-d vectors; this index expects {self.dim}-d.")
        self._doc, self.meta, self.mode = doc, dict(doc.get("meta") or {}), doc.get("ann_mode", "auto")
        self._next_file = doc["next_file"]
        if doc.get("ann"):
            af = ArrayFile(self.folder / doc["ann"]["file"], "ann", doc["ann"])
            af.verify()  # FAISS parses it: every byte is checked first
            self._ann = {"entry": doc["ann"], "params": ann.AnnParams(**doc["ann"]["params"]),
                         "template": af["index"].tobytes(), "trained_on": doc["ann"]["trained_on"]}
        for entry in doc["segments"]:
            af = ArrayFile(self.folder / entry["file"], "segment", entry)
            ids, vectors = np.array(af["ids"]), af["vectors"]  # ids in memory, vectors mapped
            if len(ids) != entry["rows"] or vectors.shape != (entry["rows"], self.dim):
                raise StoreError(f"{af.path} does not match the manifest (rows or dimension).")
            seg = Segment(ids, vectors, entry, files=[af])
            if self._ann and entry.get("codes"):
                cf = ArrayFile(self.folder / entry["codes"]["file"], "codes", entry["codes"])
                if len(cf["codes"]) != len(ids):
                    raise StoreError(f"{cf.path} does not match its segment (rows).")
                seg.codes, seg.codes_entry = cf["codes"], entry["codes"]
                seg.files.append(cf)
            elif self._ann:
                raise StoreError(f"{self.folder}: segment {entry['file']} has no IVF codes: the manifest is damaged.")
            self.segments.append(seg)
        if doc.get("tombstones"):
            tf = ArrayFile(self.folder / doc["tombstones"]["file"], "tombstones", doc["tombstones"])
            self._tombstones = np.array(tf["ids"])
            self._mark_dead(self._tombstones)

    def _load_legacy(self, path: Path) -> None:
        from .legacy import load_legacy

        ids, vectors, meta = load_legacy(path, self.dim)
        self.meta, self._legacy = meta, path
        if len(ids):
            self.add(ids, vectors)

    def _clean(self) -> None:
        """Delete the store's files the manifest does not list (a crashed writer's, or replaced ones) and temp
        files (the caller holds the lock). A reader that mapped one keeps its mapping."""
        if not self.folder.is_dir():
            return
        keep = referenced(self._doc)
        for f in self.folder.iterdir():
            if f.is_file() and f.name not in keep and (f.name.startswith(_FILE_PREFIXES) or f.name.endswith(TEMP_SUFFIX)):
                f.unlink(missing_ok=True)
        if self._doc is not None and self._legacy is None:
            self._remove_migrated_legacy()

    def _uncommitted(self) -> bool:
        """Rows added or removed, or segment files written, since the last commit?"""
        listed = referenced(self._doc)
        dead = sum(len(s.ids) - s.live for s in self.segments)
        return (bool(self._buffer) or any(s.entry is None or s.entry["file"] not in listed for s in self.segments)
                or dead != len(self._tombstones))

    def _remove_migrated_legacy(self) -> None:
        from .legacy import legacy_digest

        legacy, done = self._legacy_path, self._doc.get("migrated_from")
        if legacy is not None and legacy.exists() and done and legacy_digest(legacy) == done:
            legacy.unlink()  # its vectors are in the segments since the migration: a crash left it behind

    def fresh(self, dim: int, meta: dict) -> "VectorStore":
        """An empty store that replaces this one at its first commit (e.g. a new LiFT, every vector made again)."""
        new = VectorStore(self.folder, dim, meta, self.config, self.mode, self.writable)
        new._doc, new._next_file = self._doc, self._next_file  # (never reuses a listed file's name)
        new._legacy, new._legacy_path = self._legacy, self._legacy_path
        return new

    # ---- contents ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return sum(s.live for s in self.segments) + sum(len(i) for i, _ in self._buffer)

    @property
    def committed(self) -> bool:
        """Has this store a manifest on disk (is it what a search engine would open)?"""
        return self._doc is not None

    @property
    def kind(self) -> str:
        """How searches are served now: "ivf" (approximate candidates, exact scores) or "exact"."""
        return "ivf" if self._ann is not None else "exact"

    def stats(self) -> tuple[int, int, int]:
        """(live vectors, highest live id or 0, sum of live ids): cheap, to compare with the database."""
        self._seal()
        count = len(self)
        high = max((int(s.ids[s.alive()][-1]) for s in self.segments if s.live), default=0)
        total = sum(int(s.entry["id_sum"]) if s.entry else int(s.ids.sum()) for s in self.segments)
        total -= sum(int(s.ids[s.dead].sum()) for s in self.segments if s.dead is not None)
        return count, high, total

    def ids(self) -> np.ndarray:
        """Every live id, ascending."""
        self._seal()
        parts = [s.ids[s.alive()] for s in self.segments]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, np.int64)

    def add(self, ids, vectors) -> None:
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or vectors.shape[1] != self.dim or len(ids) != len(vectors):
            raise StoreError(f"expected ({len(ids)}, {self.dim}) vectors, got {vectors.shape}")
        if len(np.unique(ids)) != len(ids) or self._present(ids).any():
            raise StoreError("these ids are in the store already (a clip id is never reused)")
        if len(ids):
            self._buffer.append((ids, vectors))
        if sum(len(i) for i, _ in self._buffer) >= self.config.segment_rows:
            self._seal()
            self._write_new_segments()  # a bulk build: in files as it goes, listed at the next commit

    def remove(self, ids) -> int:
        """Delete these ids (those present); returns how many. Takes effect in this store at once, on disk
        at the next commit."""
        ids = np.unique(np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids, dtype=np.int64))
        if not len(ids):
            return 0
        self._seal()
        removed = 0
        for seg in self.segments:
            _, rows = seg.rows_of(ids)
            if not len(rows):
                continue
            removed += len(rows)
            if seg.entry is None:  # not written yet: the rows just go
                keep = np.ones(len(seg.ids), bool)
                keep[rows] = False
                seg.ids, seg.vectors = seg.ids[keep], seg.vectors[keep]
                seg.codes = seg.codes[keep] if seg.codes is not None else None
            else:
                seg.kill(rows)
        self.segments = [s for s in self.segments if len(s.ids) or s.entry is not None]
        return removed

    def vectors(self, ids) -> np.ndarray:
        """The stored vectors (n, dim) float32 of these ids, in their order (StoreError for an absent id)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        found, out = self.lookup(ids)
        if not found.all():
            raise StoreError(f"no vector for id {int(ids[~found][0])} in this store")
        return out

    def lookup(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(found (n,) bool, vectors (n, dim) float32, zero where not found) of these ids."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        self._seal()
        out = np.zeros((len(ids), self.dim), np.float32)
        found = np.zeros(len(ids), bool)
        for seg in self.segments:
            if not len(seg.ids):
                continue
            inside = np.nonzero((ids >= seg.ids[0]) & (ids <= seg.ids[-1]) & ~found)[0]
            where, rows = seg.rows_of(ids[inside])
            if len(rows):
                order = np.argsort(rows)  # read the file in order
                dst = inside[where][order]
                out[dst] = seg.rows(rows[order])
                found[dst] = True
        return found, out

    def _present(self, ids: np.ndarray) -> np.ndarray:
        present = np.zeros(len(ids), bool)
        for seg in self.segments:
            present[seg.rows_of(ids)[0]] = True
        for buf, _ in self._buffer:
            present |= np.isin(ids, buf)
        return present

    def _mark_dead(self, tombstones: np.ndarray) -> None:
        for seg in self.segments:
            _, rows = seg.rows_of(tombstones)
            if len(rows):
                seg.kill(rows)

    # ---- search --------------------------------------------------------------------------------
    def search(self, queries, k: int, allowed=None, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """The k best of `queries` (Q, dim) by inner product: (scores (Q, k), ids (Q, k)), id -1 where fewer.
        Scores are always exact (computed from the stored vectors). `allowed`: search only these ids (exactly
        while they are no more than `exact_max`, as a store that small is searched; else through the IVF
        index with a selector, probing as many more lists as the ids are a smaller share of the store).
        `exact`: brute force even where the store has an approximate index."""
        q = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        allowed = None if allowed is None else np.unique(np.asarray(list(allowed) if not isinstance(
            allowed, np.ndarray) else allowed, dtype=np.int64))
        self._seal()
        if len(q) < _BATCH:
            with _one_blas_thread():
                found = self._search(q, k, allowed, exact)
        else:
            found = self._search(q, k, allowed, exact)
        if self._ann is not None and exact:
            self._drop_pages()  # a forced scan of a large store mapped every page (re-scoring maps none: read_rows)
        return found

    def _drop_pages(self) -> None:
        for seg in self.segments:
            for f in seg.files:  # vectors and ids; IVF codes (read once, into the searchable index)
                f.drop_pages()

    def _search(self, q: np.ndarray, k: int, allowed: np.ndarray | None, exact: bool):
        if allowed is not None and self._ann is not None and len(allowed) <= self.config.exact_max:
            return self._rescore(q, np.broadcast_to(allowed, (len(q), len(allowed))), k)  # as few as a small store
        if exact or self._ann is None:
            return self._exact(q, k, allowed)
        n = max(self._ann["params"].candidates, 4 * k)
        fraction = len(allowed) / max(len(self), 1) if allowed is not None else 1.0
        cand = ann.search(self._searchable(), self._ann["params"], q, n, allowed, fraction)
        uncoded = [s for s in self.segments if s.codes is None]  # (only a writer's new rows)
        if uncoded:
            extra = self._exact(q, n, allowed, uncoded)[1]
            cand = np.concatenate([cand, extra], axis=1)
        return self._rescore(q, cand, k)

    def _rescore(self, q: np.ndarray, cand: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        scores = np.full((len(q), k), -np.inf, np.float32)
        ids = np.full((len(q), k), -1, np.int64)
        for i in range(len(q)):
            c = np.unique(cand[i][cand[i] >= 0])
            found, vecs = self.lookup(c)
            c, s = c[found], vecs[found] @ q[i]
            top = np.argsort(-s, kind="stable")[:k]
            scores[i, :len(top)], ids[i, :len(top)] = s[top], c[top]
        return scores, ids

    def _exact(self, q: np.ndarray, k: int, allowed: np.ndarray | None, segments=None):
        best_s = np.full((len(q), 0), -np.inf, np.float32)
        best_i = np.zeros((len(q), 0), np.int64)
        for seg in self.segments if segments is None else segments:
            for lo in range(0, len(seg.ids), _CHUNK_ROWS):
                ids = seg.ids[lo:lo + _CHUNK_ROWS]
                s = q @ np.asarray(seg.vectors[lo:lo + _CHUNK_ROWS]).T          # (Q, n)
                if seg.dead is not None:
                    s[:, seg.dead[lo:lo + _CHUNK_ROWS]] = -np.inf
                if allowed is not None:
                    s[:, ~np.isin(ids, allowed, assume_unique=True)] = -np.inf
                if s.shape[1] > k:
                    part = np.argpartition(-s, k - 1, axis=1)[:, :k]
                    s, sel = np.take_along_axis(s, part, 1), ids[part]
                else:
                    sel = np.broadcast_to(ids, s.shape)
                best_s, best_i = np.concatenate([best_s, s], 1), np.concatenate([best_i, sel], 1)
        order = np.argsort(-best_s, axis=1, kind="stable")[:, :k]
        scores, ids = np.take_along_axis(best_s, order, 1), np.take_along_axis(best_i, order, 1)
        ids = np.where(np.isfinite(scores), ids, -1)
        pad = k - scores.shape[1]
        if pad > 0:
            scores = np.pad(scores, ((0, 0), (0, pad)), constant_values=-np.inf)
            ids = np.pad(ids, ((0, 0), (0, pad)), constant_values=-1)
        return scores.astype(np.float32), ids

    def _searchable(self):
        with self._ann_lock:
            if self._ann_index is None:
                coded = [s for s in self.segments if s.codes is not None]

                def parts():
                    for s in coded:
                        yield s.codes[s.alive()], s.ids[s.alive()]
                        for f in s.files:  # read (its codes are in the index now): its pages need not stay mapped
                            f.drop_pages()

                self._ann_index = ann.searchable(self._ann["template"], parts, self._ann["params"])
            return self._ann_index

    def load_ann(self) -> None:
        """Build the in-memory approximate index now rather than at the first search."""
        if self._ann is not None:
            self._searchable()

    # ---- writing -------------------------------------------------------------------------------
    def _seal(self) -> None:
        """Turn the buffered rows into one (not yet written) segment."""
        if not self._buffer:
            return
        ids = np.concatenate([i for i, _ in self._buffer])
        vectors = np.concatenate([v for _, v in self._buffer])
        self._buffer = []
        order = np.argsort(ids, kind="stable")
        seg = Segment(ids[order], vectors[order])
        if self._ann is not None:
            seg.codes = ann.encode(self._template(), seg.vectors)
        self.segments.append(seg)

    def _name(self, prefix: str) -> Path:
        name = f"{prefix}-{self._next_file:06d}.arr"
        self._next_file += 1
        return self.folder / name

    def _write_segment(self, seg: Segment, parts=None, point: str = "vectors-write") -> None:
        """Write `seg` (its rows, or `parts`: lists of arrays per column) and its codes."""
        self._require_writable()
        self.folder.mkdir(parents=True, exist_ok=True)
        parts = parts or {"ids": seg.ids, "vectors": seg.vectors}
        entry = write_arrays(self._name("seg"), "segment", parts, point=point)
        seg.entry = {**entry, "rows": len(seg.ids), "min_id": int(seg.ids[0]) if len(seg.ids) else 0,
                     "max_id": int(seg.ids[-1]) if len(seg.ids) else 0, "id_sum": int(seg.ids.sum())}
        # from now on the rows are read from the file, memory-mapped: a writer's memory does not grow with
        # what it has written (a bulk build of 10M clips held 15 GB of written vectors)
        af = ArrayFile(self.folder / seg.entry["file"], "segment", seg.entry)
        seg.ids, seg.vectors, seg.files = af["ids"], af["vectors"], [af]
        if seg.codes is not None:
            seg.codes_entry = write_arrays(self._name("codes"), "codes", {"codes": seg.codes})
            cf = ArrayFile(self.folder / seg.codes_entry["file"], "codes", seg.codes_entry)
            seg.codes = cf["codes"]
            seg.files.append(cf)

    def _write_new_segments(self) -> None:
        for seg in self.segments:
            if seg.entry is None:
                self._write_segment(seg)

    def commit(self) -> None:
        """Write what changed since the last commit, then the manifest (then delete what it no longer lists)."""
        self._require_writable()
        self._seal()
        self._write_new_segments()
        self.folder.mkdir(parents=True, exist_ok=True)
        tomb = self._tombstones_now()
        doc = self._manifest(tomb)
        write_manifest(self.folder, doc)
        self._committed(doc, tomb)
        testpoint("vectors-saved")

    def _tombstones_now(self) -> dict | None:
        dead = [s.ids[s.dead] for s in self.segments if s.dead is not None and s.dead.any()]
        dead = np.sort(np.concatenate(dead)) if dead else np.zeros(0, np.int64)
        old = (self._doc or {}).get("tombstones")
        if np.array_equal(dead, self._tombstones) and (old is not None or not len(dead)):
            return old
        if not len(dead):
            return None
        return {**write_arrays(self._name("tomb"), "tombstones", {"ids": dead}), "count": len(dead)}

    def _manifest(self, tomb: dict | None) -> dict:
        count, high, total = self.stats()
        segments = [{**s.entry, **({"codes": s.codes_entry} if s.codes_entry else {})} for s in self.segments]
        doc = {"format": MANIFEST_FORMAT, "dim": self.dim, "meta": self.meta, "ann_mode": self.mode,
               "next_file": self._next_file, "segments": segments, "tombstones": tomb,
               "ann": self._ann["entry"] if self._ann else None,
               "live": {"count": count, "max_id": high, "id_sum": total},
               "generation": (self._doc or {}).get("generation", 0) + 1}
        if self._legacy is not None:
            from .legacy import legacy_digest

            doc["migrated_from"] = legacy_digest(self._legacy)
        elif self._doc and self._doc.get("migrated_from"):
            doc["migrated_from"] = self._doc["migrated_from"]
        return doc

    def _committed(self, doc: dict, tomb: dict | None) -> None:
        self._doc = doc
        self._tombstones = np.sort(np.concatenate([s.ids[s.dead] for s in self.segments if s.dead is not None]
                                                  or [np.zeros(0, np.int64)]))
        self._clean()
        if self._legacy is not None:
            self._legacy.unlink(missing_ok=True)  # migrated: its vectors are in the segments now
            self._legacy = None

    def rollback(self) -> None:
        """Forget what was added or removed since the last commit (e.g. after a failed one)."""
        self._require_writable()
        back = VectorStore.open(self.folder, self.dim, self.config, writable=True, legacy=self._legacy_path)
        if back._doc is None and self._doc is None:
            back.meta, back.mode = self.meta, self.mode
        for name in ("meta", "mode", "segments", "_buffer", "_tombstones", "_ann", "_ann_index", "_doc",
                     "_next_file", "_legacy"):
            setattr(self, name, getattr(back, name))

    def _require_writable(self) -> None:
        if not self.writable:
            raise StoreError("this vector store was opened for reading")

    # ---- upkeep: merging segments, the approximate index ---------------------------------------
    def maintain(self) -> dict:
        """Merge segments, rewrite those with many deleted rows, train (or drop) the IVF index as the store's
        size and mode ask; commits what it changed. Returns what it did."""
        self._require_writable()
        if self._uncommitted():
            self.commit()  # (a merge's commit must not leave new rows or written files out)
        done = {"merged": 0, "purged": 0, "ann": None}
        while plan := self._merge_plan():
            done["merged" if len(plan) > 1 else "purged"] += len(plan)
            self._merge(plan)
        n = len(self)
        want = self.mode == "ivf" or (self.mode == "auto" and n > self.config.exact_max)
        if self._ann is not None and (not want and (self.mode == "flat" or n < self.config.exact_max // 2)):
            self._ann = None
            for s in self.segments:
                s.codes = s.codes_entry = None
            done["ann"] = "dropped"
            self.commit()
        elif want and n and (self._ann is None or n > self.config.retrain_growth * self._ann["trained_on"]):
            self._train()
            done["ann"] = self._ann["params"].factory()
        if self._doc is None or self._doc.get("ann_mode") != self.mode:
            self.commit()  # (a new mode is kept even when nothing else changed)
        return done

    def _merge_plan(self) -> list[int] | None:
        """The segments to merge next (their positions), or None. A segment with many deleted rows is
        rewritten alone; otherwise `merge_factor` segments of one size class (live rows, by powers of the
        merge factor), the smallest class first: at most merge_factor - 1 segments per class remain, and a
        vector is rewritten about once per class it climbs."""
        segs, f = self.segments, max(2, self.config.merge_factor)
        for i, s in enumerate(segs):
            if len(s.ids) and len(s.ids) - s.live >= self.config.purge_dead_fraction * len(s.ids):
                return [i]
        by_level: dict[int, list[int]] = {}
        for i, s in enumerate(segs):
            by_level.setdefault(int(math.log(max(s.live, 1), f) + 1e-9), []).append(i)
        for level in sorted(by_level):
            if len(by_level[level]) >= f:
                return by_level[level][:f]  # the oldest f of the class
        return None

    def _merge(self, picked: list[int]) -> None:
        """Write the live rows of the `picked` segments as one segment (ids ascending; streamed, a chunk of
        rows at a time), then commit: the manifest lists it instead of them (none if every row was deleted)."""
        parts = [self.segments[i] for i in picked]
        for p in parts:
            for af in p.files:
                af.verify()  # read in full anyway: a damaged file is not copied on
        merged = _Merged(parts)
        new = []
        if len(merged.ids):
            seg = Segment(merged.ids, np.zeros((0, self.dim), np.float32))
            self._write_segment(seg, {"ids": merged.ids, "vectors": [merged.column("vectors")]}, point="compact-write")
            if self._ann is not None:
                seg.codes_entry = write_arrays(self._name("codes"), "codes", {"codes": [merged.column("codes")]})
                cf = ArrayFile(self.folder / seg.codes_entry["file"], "codes", seg.codes_entry)
                seg.codes = cf["codes"]
                seg.files.append(cf)
            new = [seg]
        at = min(picked)
        self.segments = ([s for i, s in enumerate(self.segments[:at]) if i not in picked] + new
                         + [s for i, s in enumerate(self.segments) if i >= at and i not in picked])
        write_manifest(self.folder, doc := self._manifest(self._tombstones_now()))
        testpoint("compacted")
        self._committed(doc, doc["tombstones"])

    def _train(self) -> None:
        """Train the IVF index on a sample of the store, encode every segment for it, commit."""
        n, cfg = len(self), self.config
        self._seal()
        params = ann.choose(n, self.dim, cfg)
        sample = self._sample(ann.train_size(n, params, cfg), cfg.seed)
        log.info("training the approximate index %s on %d of %d vectors", params.factory(), len(sample), n)
        index, params = ann.train(sample, params, cfg.seed)
        template = faiss.serialize_index(index)
        self.folder.mkdir(parents=True, exist_ok=True)
        entry = write_arrays(self._name("ann"), "ann", {"index": template}, point="ann-write")
        self._ann = {"entry": {**entry, "params": params.to_dict(), "trained_on": n}, "params": params,
                     "template": template.tobytes(), "trained_on": n, "index": index}
        for seg in self.segments:
            seg.codes = ann.encode(index, seg.vectors)
            if seg.entry is not None:  # (written now; a new segment's go with it at the commit)
                seg.codes_entry = write_arrays(self._name("codes"), "codes", {"codes": seg.codes})
                cf = ArrayFile(self.folder / seg.codes_entry["file"], "codes", seg.codes_entry)
                seg.codes, seg.files = cf["codes"], seg.files[:1] + [cf]
        self._ann_index = None
        self.commit()

    def _template(self):
        if "index" not in self._ann:
            self._ann["index"] = faiss.deserialize_index(np.frombuffer(self._ann["template"], np.uint8))
        return self._ann["index"]

    def _sample(self, n: int, seed: int) -> np.ndarray:
        """n live vectors drawn without replacement over all segments (seeded)."""
        live = [np.nonzero(s.alive() if s.dead is not None else np.ones(len(s.ids), bool))[0] for s in self.segments]
        total = sum(len(r) for r in live)
        pick = np.sort(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False))
        out, start = [], 0
        for seg, rows in zip(self.segments, live):
            mine = pick[(pick >= start) & (pick < start + len(rows))] - start
            if len(mine):
                out.append(np.asarray(seg.vectors[rows[mine]], np.float32))
            start += len(rows)
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    # ---- reporting -----------------------------------------------------------------------------
    def describe(self) -> dict:
        """How the store serves searches and what it holds on disk (for `lift-search status`)."""
        out = {"search": self.kind, "mode": self.mode, "vectors": len(self), "segments": len(self.segments),
               "tombstones": int(sum(len(s.ids) - s.live for s in self.segments)),
               "bytes": sum((s.entry or {}).get("bytes", 0) + (s.codes_entry or {}).get("bytes", 0)
                            for s in self.segments)}
        if self._ann is not None:
            p = self._ann["params"]
            out.update(index=p.factory(), nprobe=p.nprobe, candidates=p.candidates, trained_on=self._ann["trained_on"])
            out["bytes"] += self._ann["entry"]["bytes"]
        return out

    def verify(self) -> None:
        """Hash every file of the store against the manifest (StoreError on the first mismatch)."""
        for seg in self.segments:
            for af in seg.files:
                af.verify()


class _Merged:
    """The live rows of several segments in ascending id order: `ids`, and each column (vectors, codes) as a
    part for write_arrays that gathers its rows a chunk at a time (a merge never holds a segment in memory)."""

    def __init__(self, parts: list[Segment]):
        self.parts = parts
        rows = [np.flatnonzero(p.alive()) if p.dead is not None else np.arange(len(p.ids)) for p in parts]
        ids = np.concatenate([p.ids[r] for p, r in zip(parts, rows)])
        order = np.argsort(ids, kind="stable")        # (a plain concatenation where the id ranges follow)
        self.ids = ids[order]
        self.source = np.repeat(np.arange(len(parts), dtype=np.int32), [len(r) for r in rows])[order]
        self.row = np.concatenate(rows)[order]

    def column(self, name: str) -> "_Column":
        return _Column(self, name)


class _Column:
    """One column (vectors or codes) of a merge, as write_arrays streams it: dtype, shape, chunks()."""

    def __init__(self, merged: _Merged, name: str):
        self.merged, self.name = merged, name
        first = getattr(merged.parts[0], name)
        self.dtype, self.shape = first.dtype, (len(merged.ids), *first.shape[1:])

    def chunks(self, step: int = 65_536):
        m = self.merged
        for lo in range(0, len(m.ids), step):
            src, row = m.source[lo:lo + step], m.row[lo:lo + step]
            out = np.empty((len(src), *self.shape[1:]), self.dtype)
            for p, part in enumerate(m.parts):
                mine = src == p
                if mine.any():
                    out[mine] = getattr(part, self.name)[row[mine]]  # ascending rows: a forward read
            yield out
