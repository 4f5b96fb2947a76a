"""Step 3: `eval chiral` and `eval retrieval` on an index (the library calls of search/evaluate.py, the same
code as the CLI), with consistency checks and, where the labels name scenes, two scene-level analyses."""
from __future__ import annotations

import csv
import os
import time
from pathlib import Path

import numpy as np

from search import evaluate as ev


def scenes_of(labels: Path, bench: ev.Benchmark) -> np.ndarray | None:
    """The optional `scene` column of a labels CSV, in the benchmark's order."""
    with open(labels, newline="") as fh:
        rows = list(csv.DictReader(fh))
    if not rows or "scene" not in rows[0]:
        return None
    by_video = {os.path.normpath(os.path.join(labels.parent, r["video"])): r["scene"] for r in rows}
    return np.array([by_video[lab.video] for lab in bench.labels])


def direction_consistency(desc: np.ndarray, bench: ev.Benchmark, scene: np.ndarray) -> dict:
    """Per group: mean cosine between the motion halves (dyn) of two clips of the same class, from the same
    scene and from different scenes. A linear probe needs the cross-scene one to be high; retrieval of the
    same scene's clips needs only the same-scene one."""
    d = desc.shape[1] // 2
    dyn = ev.l2n(desc[:, d:])
    out = {}
    g, c = bench.group, bench.cls
    for grp in sorted(set(g.tolist())):
        same, cross = [], []
        for cl in sorted(set(c[g == grp].tolist())):
            idx = np.flatnonzero((g == grp) & (c == cl))
            cos = dyn[idx] @ dyn[idx].T
            for a in range(len(idx)):
                for b in range(a + 1, len(idx)):
                    (same if scene[idx[a]] == scene[idx[b]] else cross).append(cos[a, b])
        out[grp] = {"same_scene": float(np.mean(same)) if same else None,
                    "cross_scene": float(np.mean(cross)) if cross else None}
    return out


def random_scene_splits(group: np.ndarray, scene: np.ndarray, reps: int, test_share: float,
                        rng: np.random.Generator) -> list[np.ndarray]:
    """`reps` train/test splits by scene: in each group, round(test_share x scenes) of them (at least one)
    test."""
    splits = []
    for _ in range(reps):
        test = set()
        for grp in sorted(set(group.tolist())):
            scenes = sorted(set(scene[group == grp].tolist()))
            test |= set(rng.choice(scenes, max(1, round(test_share * len(scenes))), replace=False).tolist())
        splits.append(np.where(np.isin(scene, list(test)), "test", "train"))
    return splits


def resampled_probe(bench: ev.Benchmark, scene: np.ndarray, reps: int = 30, test_share: float = 0.3,
                    seed: int = 0) -> dict:
    """The CiA probe of every method over `reps` random splits by scene: mean and standard error of the
    mean. One fixed split rests on a few test scenes; this says how much of a difference between methods is
    the split's luck."""
    splits = random_scene_splits(bench.group, scene, reps, test_share, np.random.default_rng(seed))
    out = {}
    for m in ev.methods(bench.engine.model):
        desc = m.fn(bench.seqs)
        acc = [ev.probe_accuracy(desc, bench.group, bench.cls, sp)["accuracy"] for sp in splits]
        out[m.key] = {"mean": float(np.mean(acc)), "se": float(np.std(acc, ddof=1) / np.sqrt(reps))}
    return {"reps": reps, "test_share": test_share, "seed": seed, "methods": out}


def engine_checks(bench: ev.Benchmark) -> dict:
    """The engine's rankings vs the engine's formula applied in numpy to the stored descriptors, and the
    stored descriptors vs those recomputed from the cached features."""
    stored = bench.engine.store.vectors(bench.clip_ids)
    agree = {}
    for w in ev.MOTION_WEIGHTS:
        fwd, rev = ev.engine_rankings(bench, 1, w)
        mine = np.concatenate([ev.lift_rank(stored, w, False, 1), ev.lift_rank(stored, w, True, 1)])
        agree[str(w)] = float(np.mean([list(a[:1]) == list(b[:1]) for a, b in zip(fwd + rev, mine)]))
    recomputed = ev.lift_sym(bench.engine.model, bench.seqs)
    return {"top1_agreement_engine_vs_numpy": agree,
            "max_abs_diff_stored_vs_recomputed": float(np.abs(recomputed - stored).max()),
            "load_seconds": round(bench.seconds, 2)}


def evaluate(idx: Path, labels: Path, k: int) -> tuple[dict, ev.Benchmark]:
    """Probe, retrieval and checks of one labelled index; the loaded benchmark for the ablation."""
    bench = ev.load_benchmark(idx, labels, need_splits=True)
    t0 = time.perf_counter()
    probe = ev.run_probe(bench)
    probe["seconds"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    retrieval = ev.run_retrieval(bench, k=k)
    retrieval["seconds"] = round(time.perf_counter() - t0, 2)
    res = {"probe": probe, "retrieval": retrieval, "checks": engine_checks(bench)}
    scene = scenes_of(labels, bench)
    if scene is not None:
        stored = bench.engine.store.vectors(bench.clip_ids)
        res["direction_consistency"] = direction_consistency(stored, bench, scene)
        res["probe_resampled"] = resampled_probe(bench, scene)
    return res, bench
