"""The approximate index of a large vector store: FAISS IVF, its parameters chosen by size.

Only *candidates* come from here: the store re-scores them against the exact stored vectors, so the
scores a search returns are exact and only recall is approximate. The parameters (coarse lists, codes,
lists probed, candidates re-scored) follow the library's size, autofaiss style; the numbers that chose
them are in docs/benchmarks.md ("Vector search at scale").

The index lives in the store as a *template* (the trained coarse quantizer and codec, no vectors) plus,
per segment, the FAISS "standalone" codes of its rows (coarse list number + PQ/SQ code, `sa_encode`), so
that a checkpoint encodes only its own rows and a search process rebuilds the searchable index from
the codes (`searchable`) without re-encoding anything.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import faiss
import numpy as np

from lift.config import StoreConfig

from .segments import StoreError


@dataclass(frozen=True)
class AnnParams:
    nlist: int          # coarse lists (k-means centroids)
    quantizer: str      # "flat" or "HNSW32": how a query finds its nearest lists
    codes: str          # FAISS code of each vector: "SQ8" (1 byte a dimension) or "PQ<m>" (m bytes)
    nprobe: int         # lists scanned per query
    candidates: int     # candidates re-scored exactly per query (at least; k * 4 for larger k)
    norm: float = 1.0   # typical norm of the stored vectors: queries are scaled to it (L2 search)

    def factory(self) -> str:
        quantizer = "" if self.quantizer == "flat" else f"_{self.quantizer}"
        return f"IVF{self.nlist}{quantizer},{self.codes}"

    def to_dict(self) -> dict:
        return asdict(self)


def choose(n: int, dim: int, cfg: StoreConfig) -> AnnParams:
    """Parameters for `n` vectors of `dim` dimensions: nlist the power of two at or below 4 sqrt(n) (and at
    most one list per 39 vectors, FAISS's minimum to train a centroid); SQ8 codes while they fit
    `cfg.sq8_max_bytes`, else PQ with `dim / cfg.pq_dims` bytes; an HNSW coarse quantizer from
    `cfg.hnsw_min_lists` lists."""
    nlist = _pow2(min(4 * math.sqrt(n), n / 39))
    codes = "SQ8" if n * dim <= cfg.sq8_max_bytes else f"PQ{pq_bytes(dim, cfg.pq_dims)}"
    quantizer = "HNSW32" if nlist >= cfg.hnsw_min_lists else "flat"
    nprobe = min(nlist, max(1, round(cfg.nprobe_fraction * nlist), cfg.nprobe_min))
    return AnnParams(nlist, quantizer, codes, nprobe, cfg.candidates)


def train_size(n: int, params: AnnParams, cfg: StoreConfig) -> int:
    """How many vectors train the index: `cfg.train_max`, or 39 per list if that is more, at most all."""
    return min(n, max(cfg.train_max, 39 * params.nlist))


def _pow2(x: float) -> int:
    return 2 ** max(0, int(math.log2(max(1.0, x))))


def pq_bytes(dim: int, dims_per_byte: int) -> int:
    """The PQ code size m for `dim` dimensions: dim / dims_per_byte, rounded to a divisor of dim."""
    m = max(1, dim // dims_per_byte)
    while dim % m:
        m -= 1
    return m


def train(sample: np.ndarray, params: AnnParams, seed: int = 0) -> tuple[faiss.Index, AnnParams]:
    """An empty, trained IVF index for vectors like `sample` (n, dim) float32, and the params with the
    sample's mean norm recorded. The coarse centroids are k-means of the sample (FAISS, seeded)."""
    sample = np.ascontiguousarray(sample, dtype=np.float32)
    n, dim = sample.shape
    if n < 1:
        raise StoreError("cannot train an approximate index on no vectors")
    index = faiss.index_factory(dim, params.factory(), faiss.METRIC_L2)
    ivf = faiss.extract_index_ivf(index)
    km = faiss.Kmeans(dim, params.nlist, niter=10, seed=seed, verbose=False,
                      max_points_per_centroid=max(39, n // params.nlist + 1))
    km.train(sample)
    ivf.quantizer.add(km.centroids)  # a trained quantizer holding nlist centroids: train() skips k-means
    ivf.cp.seed = seed
    index.train(sample)
    norm = float(np.linalg.norm(sample, axis=1).mean())
    return index, AnnParams(**{**params.to_dict(), "norm": round(norm, 6)})


def encode(index: faiss.Index, vectors: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """The standalone codes (n, sa_code_size) uint8 of `vectors`."""
    vectors = np.asarray(vectors)
    size = index.sa_code_size()
    out = np.empty((len(vectors), size), np.uint8)
    for i in range(0, len(vectors), chunk):
        out[i:i + chunk] = index.sa_encode(np.ascontiguousarray(vectors[i:i + chunk], dtype=np.float32))
    return out


def list_numbers(codes: np.ndarray, width: int) -> np.ndarray:
    """The coarse list number (n,) int64 of each standalone code: its first `width` bytes, little-endian."""
    lists = np.zeros(len(codes), np.int64)
    for b in range(width):
        lists |= codes[:, b].astype(np.int64) << (8 * b)
    return lists


def checked_list_numbers(index: faiss.Index, codes: np.ndarray) -> np.ndarray:
    """The coarse list numbers of `codes`, refusing codes of the wrong width or whose list numbers lie
    outside the index (a damaged codes file)."""
    ivf = faiss.extract_index_ivf(index)
    if codes.ndim != 2 or codes.shape[1] != index.sa_code_size():
        raise StoreError(f"codes of width {codes.shape[1:]} do not fit this index ({index.sa_code_size()} bytes)")
    numbers = list_numbers(codes, ivf.coarse_code_size())
    if len(numbers) and int(numbers.max()) >= ivf.nlist:
        raise StoreError("a codes file of the vector store is damaged (list number out of range)")
    return numbers


def searchable(template: bytes, parts, params: AnnParams) -> faiss.Index:
    """The template filled with the rows `parts()` yields, (codes (n, s) uint8, ids (n,) int64) at a time,
    ready to search.

    What `add_sa_codes` does, with each inverted list allocated once at its final size rather than grown by
    doubling (which kept ~160 MB of spare capacity on the 10M-clip index, and more while a list moved). So
    `parts` is called twice: to count each list's rows, then to fill the lists part by part."""
    index = faiss.deserialize_index(np.frombuffer(template, np.uint8))
    ivf = faiss.extract_index_ivf(index)
    width = ivf.coarse_code_size()
    counts = np.zeros(ivf.nlist, np.int64)
    for codes, ids in _chunks(parts()):
        counts += np.bincount(checked_list_numbers(index, codes), minlength=ivf.nlist)
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    for l in np.nonzero(counts)[0].tolist():
        lists.resize(l, int(counts[l]))
    filled = np.zeros(ivf.nlist, np.int64)
    for codes, ids in _chunks(parts()):
        numbers = list_numbers(codes, width)
        order = np.argsort(numbers, kind="stable")
        codes = np.ascontiguousarray(codes[order, width:])                   # (n, code_size): a list's rows together
        ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64)[order])
        bounds = np.searchsorted(numbers[order], np.arange(ivf.nlist + 1))
        for l in np.nonzero(np.diff(bounds))[0].tolist():
            a, b = int(bounds[l]), int(bounds[l + 1])
            lists.update_entries(l, int(filled[l]), b - a, faiss.swig_ptr(ids[a:b]), faiss.swig_ptr(codes[a:b]))
            filled[l] += b - a
    index.ntotal = ivf.ntotal = int(counts.sum())
    ivf.nprobe = params.nprobe
    if params.quantizer.startswith("HNSW"):
        faiss.downcast_index(ivf.quantizer).hnsw.efSearch = max(64, 2 * params.nprobe)
    return index


def _chunks(parts, rows: int = 65536):
    """The (codes, ids) of `parts` a few MB at a time: the sorting's temporary arrays stay small whatever
    the size of a segment (2M rows in a 10M-clip store)."""
    for codes, ids in parts:
        for lo in range(0, len(ids), rows):
            yield codes[lo:lo + rows], ids[lo:lo + rows]


def search(index: faiss.Index, params: AnnParams, queries: np.ndarray, n: int,
           allowed: np.ndarray | None = None, fraction: float = 1.0) -> np.ndarray:
    """Candidate ids (Q, n) for `queries` (-1 where fewer). `allowed`: only these ids (a FAISS selector);
    `fraction`: the share of the store they make up, by which more lists are probed, so that a
    restricted search finds as many allowed candidates as an open one."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    norms = np.linalg.norm(q, axis=1, keepdims=True)
    q = q * (params.norm / np.maximum(norms, 1e-12))  # on the stored vectors' sphere: L2 ranks as cosine
    nprobe = params.nprobe
    kw = {}
    if allowed is not None:
        nprobe = min(params.nlist, math.ceil(params.nprobe / max(fraction, 1e-6)))
        kw["params"] = faiss.SearchParametersIVF(sel=faiss.IDSelectorBatch(np.ascontiguousarray(allowed, np.int64)),
                                                 nprobe=nprobe)
    _, ids = index.search(q, n, **kw)
    return ids
