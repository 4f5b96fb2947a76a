"""How lift-search's vector search parameters were chosen (lift.config.StoreConfig), by measurement.

    python bench/ann_tune.py --index DIR      # DIR: an index built by bench/scale.py (e.g. 1M clips)

On the index's own vectors (LiFT descriptors of realistic feature tracks, see bench/scale.py) and the
engine's queries (forward, reverse, motion 0.25/0.5/0.75 of random clips, k = 10):

A. exact vs IVF by library size (random subsets): single-query p50 of exact brute force, and of the IVF
   index `--ann auto` would train (StoreConfig defaults), with its recall: where exact stops being cheap
   (-> exact_max);
B. at the full size, the IVF codes (SQ8, PQ96, PQ64, PQ48), lists probed and candidates re-scored:
   recall@10 of the worst query mode and p50 (-> codes, nprobe, candidates);
C. the memory each code needs at 10M vectors (-> sq8_max_bytes: the 10M search process must stay < 2 GB).

Recall is tie-aware (a clip counts when its exact score reaches the exact 10th best). Single queries on
`--threads` threads (default 2). Prints tables, writes JSON (default bench/results/ann_tune.json).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.scale import MODES  # noqa: E402

log = logging.getLogger("bench.ann_tune")


def queries(vecs: np.ndarray) -> dict[str, np.ndarray]:
    h = vecs.shape[1] // 2
    return {mode: np.concatenate([(1 - w) * vecs[:, :h], w * (-vecs[:, h:] if rev else vecs[:, h:])], 1)
            for mode, (rev, w) in MODES.items()}


def recall(got_scores: np.ndarray, truth_scores: np.ndarray) -> float:
    kth = truth_scores[:, -1:] - 1e-5
    return float(((got_scores >= kth) & np.isfinite(got_scores)).sum(1).mean() / truth_scores.shape[1])


def exact_top(q: np.ndarray, vecs: np.ndarray, k: int, rows: int = 65_536) -> np.ndarray:
    """The exact k best scores (Q, k), descending, by brute force in chunks."""
    best = np.full((len(q), 0), -np.inf, np.float32)
    for lo in range(0, len(vecs), rows):
        s = np.concatenate([best, q @ vecs[lo:lo + rows].T], 1)
        best = -np.partition(-s, k - 1, axis=1)[:, :k]
    return -np.sort(-best, axis=1)


def timed(fn, qs: np.ndarray) -> tuple[float, np.ndarray]:
    """(p50 ms of fn on single queries, scores (Q, k))."""
    lat, out = [], []
    for q in qs:
        t0 = time.perf_counter()
        out.append(fn(q[None])[0])
        lat.append(time.perf_counter() - t0)
    return float(np.percentile(np.array(lat) * 1000, 50)), np.concatenate(out)


def by_size(vecs: np.ndarray, ids: np.ndarray, sizes: list[int], k: int) -> list[dict]:
    from indexer.store import VectorStore
    from lift.config import StoreConfig

    rows = []
    rng = np.random.default_rng(0)
    for n in sizes:
        pick = np.sort(rng.choice(len(ids), size=n, replace=False))
        row = {"n": n}
        with tempfile.TemporaryDirectory() as tmp:
            store = VectorStore(Path(tmp) / "v", vecs.shape[1], mode="ivf", config=StoreConfig())
            store.add(ids[pick], vecs[pick])
            store.commit()
            qs = queries(vecs[pick[:100]])
            truth = {m: store.search(q, k, exact=True)[0] for m, q in qs.items()}
            row["exact_p50_ms"], _ = timed(lambda q: store.search(q, k, exact=True)[0], qs["forward"])
            t0 = time.perf_counter()
            store.maintain()
            row["ivf_train_s"] = round(time.perf_counter() - t0, 1)
            row["ivf"] = store.describe()["index"]
            store.load_ann()
            rec = {}
            for m, q in qs.items():
                p50, got = timed(lambda x: store.search(x, k)[0], q)
                rec[m] = recall(got, truth[m])
                row.setdefault("ivf_p50_ms", p50)
            row["ivf_recall_min"] = min(rec.values())
        log.info("size %s", row)
        rows.append(row)
    return rows


def codes_grid(vecs: np.ndarray, ids: np.ndarray, qv: np.ndarray, k: int, codes: list[str], nprobes: list[int],
               candidates: list[int]) -> list[dict]:
    """Every code type trained on one sample (the same coarse lists), then every nprobe x candidates."""
    import faiss

    from indexer import ann
    from lift.config import StoreConfig

    cfg = StoreConfig()
    base = ann.choose(len(ids), vecs.shape[1], cfg)
    rng = np.random.default_rng(cfg.seed)
    sample = vecs[np.sort(rng.choice(len(vecs), size=min(len(vecs), cfg.train_max), replace=False))]
    qs = queries(qv)  # (the query clip itself is not excluded: every method sees it alike)
    truth = {m: exact_top(q, vecs, k) for m, q in qs.items()}
    out = []
    for code in codes:
        params = dataclasses.replace(base, codes=code)
        t0 = time.perf_counter()
        template, params = ann.train(sample, params, cfg.seed)
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        codes_arr = ann.encode(template, vecs)
        encode_s = time.perf_counter() - t0
        index = ann.searchable(faiss.serialize_index(template).tobytes(), lambda: [(codes_arr, ids)], params)
        for nprobe in nprobes:
            for n_cand in candidates:
                p = dataclasses.replace(params, nprobe=nprobe)

                def search(q):
                    cand = ann.search(index, p, q, n_cand)[0]
                    cand = cand[cand >= 0]
                    rows = np.searchsorted(ids, cand)
                    s = vecs[rows] @ q[0]
                    top = np.argsort(-s)[:k]
                    return np.pad(s[top], (0, k - len(top)), constant_values=-np.inf)[None]

                rec, p50s = {}, []
                for m, q in qs.items():
                    p50, got = timed(search, q)
                    rec[m] = recall(got, truth[m])
                    p50s.append(p50)
                row = {"codes": code, "factory": p.factory(), "nprobe": nprobe, "candidates": n_cand,
                       "recall": {m: round(r, 4) for m, r in rec.items()}, "recall_min": round(min(rec.values()), 4),
                       "p50_ms": round(float(np.median(p50s)), 3), "train_s": round(train_s, 1),
                       "encode_s": round(encode_s, 1), "code_bytes": template.sa_code_size()}
                log.info("%s", row)
                out.append(row)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--index", type=Path, required=True)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--sizes", default="10000,25000,50000,100000,200000")
    ap.add_argument("--codes", default="SQ8,PQ96,PQ64,PQ48")
    ap.add_argument("--nprobe", default="8,16,32,64")
    ap.add_argument("--candidates", default="64,128,256,512")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ann_tune.json")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import faiss

    from db import get_setting, open_db
    from indexer.library import IndexDir
    from indexer.store import VectorStore

    faiss.omp_set_num_threads(a.threads)
    idx = IndexDir(a.index)
    with open_db(idx.db)() as s:
        dim = get_setting(s, "dim")
    store = VectorStore.open(idx.vectors, dim)
    ids = store.ids()
    vecs = store.vectors(ids)  # (N, dim) in memory
    rng = np.random.default_rng(1)
    qv = vecs[rng.choice(len(ids), size=a.queries, replace=False)]
    result = {"index": str(a.index), "vectors": len(ids), "dim": dim, "queries_per_mode": a.queries, "threads": a.threads,
              "date": time.strftime("%Y-%m-%d %H:%M")}
    result["by_size"] = by_size(vecs, ids, [int(x) for x in a.sizes.split(",") if int(x) < len(ids)], 10)
    result["codes"] = codes_grid(vecs, ids, qv, 10, a.codes.split(","), [int(x) for x in a.nprobe.split(",")],
                                 [int(x) for x in a.candidates.split(",")])
    result["memory_at_10M_mb"] = {c: round(10_000_000 * (r["code_bytes"] + 8) / 2**20)
                                  for c, r in {r["codes"]: r for r in result["codes"]}.items()}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(result, indent=1) + "\n")
    print("| n | exact p50 ms | IVF | IVF p50 ms | IVF recall (worst mode) |\n|---:|---:|---|---:|---:|")
    for r in result["by_size"]:
        print(f"| {r['n']:,} | {r['exact_p50_ms']:.2f} | {r['ivf']} | {r['ivf_p50_ms']:.2f} | {r['ivf_recall_min']:.3f} |")
    print("\n| codes | nprobe | candidates | recall (worst mode) | p50 ms |\n|---|---:|---:|---:|---:|")
    for r in result["codes"]:
        print(f"| {r['codes']} | {r['nprobe']} | {r['candidates']} | {r['recall_min']:.3f} | {r['p50_ms']:.2f} |")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
