"""`lift-search eval`: the Chirality-in-Action (CiA) linear probe and a chiral retrieval benchmark.

Both commands read a labels CSV and an index, and work from the index's cached per-frame features
(IDX/features/*.npz): nothing is decoded again.

The labels CSV (UTF-8, one row per video; other columns are ignored):

    video  path of the video file, relative to the CSV's folder or absolute; it must be indexed
    group  its chiral group (a pair of opposite actions, e.g. "open_close")
    class  its action, one of the group's two classes (e.g. "open" or "close")
    split  "train" or "test" (used by the probe; retrieval uses every row)
    scene  optional: the scene the clip was filmed in (any string). With it, retrieval also reports
           *cross-scene* results, where a query's own scene is left out of its results

Each video contributes its *first clip* (the whole video when it is no longer than the index's
`max_single` seconds, as every clip of the synthetic benchmark is); further windows of longer videos are
not used, so that every labelled video counts once.

`eval chiral` (the CiA protocol of the paper, Sec. 3): for each group, a
`sklearn.linear_model.RidgeClassifier()` (default alpha) fitted on the train split's descriptors is
scored on the test split; the result is the mean accuracy over groups. It is run on the LiFT
descriptors (the paper's concat(z_s, z_d) from `LiFT.encode` and our time-symmetrised `LiFT.describe`)
and on four baselines computed from the same cached frame features.

`eval retrieval`: every labelled clip is a query. Forward: is the top result (the query excluded) of
the query's group and class? Reverse: is the top result of a reverse query of the query's group and
the *opposite* class? Plus precision@k of both. LiFT is searched through `SearchEngine.search_clip`
(the engine's own scoring, at each motion weight of a sweep); a baseline's reverse query is the
descriptor of the time-reversed frame sequence, searched by exact inner product of L2-normalised
descriptors. Results that are not labelled first clips (unlabelled videos, later windows) are skipped.
A time-blind descriptor (mean pooling; LiFT at motion weight 0) gives its forward and reverse queries
the same ranking, so for each clip at most one of the two can be right: its "chiral" score, the mean of
the forward and reverse top-1, is at most 50 %, the chance level of telling an action from its reversal.

With a `scene` column, the same is measured *across scenes*: the query's own scene (itself, its other
takes and their reversals) is left out of its results, so the top result must be the same action in a
scene the query never showed (forward), or the opposite action there (reverse). Chance is about one
over the number of (group, class) pairs.
"""
from __future__ import annotations

import csv
import logging
import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from lift.errors import LiftSearchError

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("video", "group", "class", "split")
SCENE_COLUMN = "scene"  # optional
SPLITS = ("train", "test")
MOTION_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 1.0)
MAX_PROBLEMS_SHOWN = 40

CSV_HELP = """\
labels CSV: a header row with at least the columns video,group,class,split (others are ignored):
  video  path of the video, relative to the CSV's folder or absolute; it must be in the index
  group  chiral group: a pair of opposite actions (exactly two classes per group)
  class  the video's action, one of its group's two classes
  split  train | test  (each group needs train rows of both classes and at least one test row)
  scene  optional: the clip's scene; retrieval then also reports cross-scene top-1 (own scene left out)
Each video counts once, by its first clip. `python -m indexer.synth DIR` writes such a CSV.
"""


class LabelError(LiftSearchError, ValueError):
    """The labels CSV does not fit the protocol or the index; the message lists every problem."""

    def __init__(self, source: str, problems: Sequence[str]):
        self.problems = list(problems)
        shown = self.problems[:MAX_PROBLEMS_SHOWN]
        more = len(self.problems) - len(shown)
        text = f"{len(self.problems)} problem(s) with {source}:\n" + "\n".join(f"  - {p}" for p in shown)
        if more:
            text += f"\n  ... and {more} more"
        super().__init__(text)


# ---- labels ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Label:
    video: str  # absolute, normalised path
    group: str
    cls: str
    split: str
    line: int   # line number in the CSV (the header is line 1)
    scene: str | None = None  # the optional scene column


def _norm(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(path))


def read_labels(csv_path: str | Path) -> list[Label]:
    """Parse a labels CSV; raises LabelError listing every malformed row (not only the first)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise LabelError(str(csv_path), [f"no labels CSV at {csv_path}"])
    base = csv_path.absolute().parent
    with open(csv_path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise LabelError(str(csv_path), [
                f"missing column(s) {', '.join(missing)}: the header must name {','.join(REQUIRED_COLUMNS)} "
                f"(found: {','.join(header) or 'no header'})"])
        reader.fieldnames = header
        columns = REQUIRED_COLUMNS + ((SCENE_COLUMN,) if SCENE_COLUMN in header else ())
        problems, labels, seen = [], [], {}
        for line, row in enumerate(reader, start=2):
            values = {c: (row.get(c) or "").strip() for c in columns}
            if not any(values.values()) and not any((v or "").strip() for v in row.values() if isinstance(v, str)):
                continue  # a blank line
            empty = [c for c, v in values.items() if not v]
            if empty:
                problems.append(f"line {line}: empty {', '.join(empty)}")
                continue
            split = values["split"].lower()
            if split not in SPLITS:
                problems.append(f"line {line}: unknown split {values['split']!r} (use train or test)")
                continue
            video = _norm(base / values["video"])
            if video in seen:
                problems.append(f"line {line}: {values['video']} is listed again (first on line {seen[video]})")
                continue
            seen[video] = line
            labels.append(Label(video, values["group"], values["class"], split, line, values.get(SCENE_COLUMN)))
    if problems:
        raise LabelError(str(csv_path), problems)
    if not labels:
        raise LabelError(str(csv_path), ["no rows: the CSV names no videos"])
    return labels


def check_groups(labels: Sequence[Label], need_splits: bool = True) -> list[str]:
    """Problems of the groups: each needs exactly two classes and, for the probe, train rows of both
    classes and at least one test row."""
    problems = []
    by_group: dict[str, list[Label]] = defaultdict(list)
    for lab in labels:
        by_group[lab.group].append(lab)
    for g, rows in sorted(by_group.items()):
        classes = sorted({r.cls for r in rows})
        if len(classes) == 1:
            problems.append(f"group {g!r} has only one class ({classes[0]!r}): a chiral group needs its two "
                            f"opposite classes")
            continue
        if len(classes) > 2:
            problems.append(f"group {g!r} has {len(classes)} classes ({', '.join(classes)}): a chiral group has "
                            f"exactly two")
            continue
        if not need_splits:
            continue
        train = [r for r in rows if r.split == "train"]
        if not train:
            problems.append(f"group {g!r} has no train rows")
        elif len({r.cls for r in train}) < 2:
            problems.append(f"group {g!r}: its train rows are all of class {train[0].cls!r}; the probe needs "
                            f"both classes to train on")
        if not any(r.split == "test" for r in rows):
            problems.append(f"group {g!r} has no test rows")
    return problems


# ---- the benchmark: labels matched to the index's cached features --------------------------------
@dataclass
class Benchmark:
    labels: list[Label]
    seqs: np.ndarray       # (N, T, D) per-frame features of each video's first clip
    clip_ids: np.ndarray   # (N,) the id of that clip in the index
    engine: object         # the SearchEngine over the index (its LiFT is engine.model)
    seconds: float = 0.0   # time to load

    @property
    def group(self) -> np.ndarray:
        return np.array([lab.group for lab in self.labels])

    @property
    def cls(self) -> np.ndarray:
        return np.array([lab.cls for lab in self.labels])

    @property
    def split(self) -> np.ndarray:
        return np.array([lab.split for lab in self.labels])

    @property
    def scene(self) -> np.ndarray | None:
        """Each clip's scene, or None when the labels CSV has no scene column."""
        if any(lab.scene is None for lab in self.labels):
            return None
        return np.array([lab.scene for lab in self.labels])

    def summary(self) -> dict:
        return {"index": str(self.engine.idx.root), "videos": len(self.labels),
                "groups": len(set(self.group)), "train": int((self.split == "train").sum()),
                "test": int((self.split == "test").sum()), "frames_per_clip": int(self.seqs.shape[1]),
                "feature_dim": int(self.seqs.shape[2]), "pooled_dim": int(self.engine.model.config.global_dim),
                "backbone": self.engine.settings.get("backbone"),
                "lift": {k: v for k, v in (self.engine.settings.get("lift") or {}).items() if k != "provenance"}}


def load_benchmark(index: str | Path, labels_csv: str | Path, need_splits: bool = True,
                   device: str = "cpu", engine=None) -> Benchmark:
    """Match a labels CSV to an index; raises LabelError naming every row or group that does not fit."""
    from sqlalchemy import select

    from db import Failure, Video
    from indexer.library import VideoFeatures

    from .engine import SearchEngine

    start = time.perf_counter()
    labels = read_labels(labels_csv)
    problems = check_groups(labels, need_splits)
    engine = engine or SearchEngine.open(index, device=device)
    with engine.sessions() as s:
        videos = {v.path: v for v in s.scalars(select(Video))}
        failed = {f.path: f.reason for f in s.scalars(select(Failure))}
        real = {os.path.realpath(p): v for p, v in videos.items()}
        valid = engine.served_ids()
        found = []
        for lab in labels:
            v = videos.get(lab.video) or real.get(os.path.realpath(lab.video))
            if v is None:
                if not os.path.exists(lab.video):
                    problems.append(f"line {lab.line}: video file not found: {lab.video}")
                elif lab.video in failed:
                    problems.append(f"line {lab.line}: {lab.video} is not in the index: indexing it failed "
                                    f"({failed[lab.video]})")
                else:
                    problems.append(f"line {lab.line}: {lab.video} is not in the index {engine.idx.root} "
                                    f"(index its folder with `lift-search index DIR --index {engine.idx.root}`)")
                continue
            clips = sorted(v.clips, key=lambda c: c.ordinal)
            if not clips or clips[0].id not in valid:
                problems.append(f"line {lab.line}: {lab.video} has no searchable clip in the index "
                                f"(re-run `lift-search index` to repair it)")
                continue
            found.append((lab, v.features, clips[0].id))
    if problems:
        raise LabelError(str(labels_csv), problems)
    seqs = np.stack([VideoFeatures.load(engine.idx.root / feats).clip_sequences()[0] for _, feats, _ in found])
    return Benchmark([lab for lab, _, _ in found], seqs.astype(np.float32),
                     np.array([cid for _, _, cid in found]), engine, time.perf_counter() - start)


# ---- descriptors -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Method:
    key: str
    name: str
    fn: Callable[[np.ndarray], np.ndarray]  # (N, T, D) frame features -> (N, dims) descriptors
    kind: str = "baseline"                  # "baseline" | "lift"


def _batched(fn, x: np.ndarray, batch: int = 256) -> np.ndarray:
    return np.concatenate([fn(x[i:i + batch]) for i in range(0, len(x), batch)])


def lift_raw(model, x: np.ndarray) -> np.ndarray:
    """The paper's descriptor: concat(z_s, z_d) from LiFT.encode."""
    def run(b):
        z_s, z_d = model.encode(np.ascontiguousarray(b))
        return np.concatenate([z_s.cpu().numpy(), z_d.cpu().numpy()], 1)
    return _batched(run, x)


def lift_sym(model, x: np.ndarray) -> np.ndarray:
    """Ours: the time-symmetrised [m | dyn] of LiFT.describe (what the index stores)."""
    return _batched(lambda b: model.describe(np.ascontiguousarray(b)).cpu().numpy(), x)


BASELINES = (
    Method("middle", "single middle frame", lambda x: x[:, x.shape[1] // 2]),
    Method("mean", "mean pooling", lambda x: x.mean(1)),
    Method("first_last", "first + last frames", lambda x: np.concatenate([x[:, 0], x[:, -1]], 1)),
    Method("concat", "concatenation (T*D)", lambda x: x.reshape(len(x), -1)),
    Method("chord", "chord (last - first frame)", lambda x: l2n(x[:, -1]) - l2n(x[:, 0])),
)


def total_flow(model, x: np.ndarray) -> np.ndarray:
    """The feature flow of `model` (lift.model.FeatureFlow) summed over each clip: where each cell's content
    went, (N, 2 * cells); no training involved, and exactly negated by time reversal."""
    import torch

    g = model.config.global_dim
    with torch.no_grad():
        return _batched(lambda b: model.prepare(torch.as_tensor(np.array(b, np.float32)))[..., g:].sum(1).numpy(), x)


def methods(model) -> list[Method]:
    """The baselines on the frames' pooled features, the total feature flow when `model` computes flow, then
    LiFT's two descriptors from `model`."""
    g = model.config.global_dim
    pooled = [Method(m.key, m.name, (lambda fn: lambda x: fn(x[..., :g]))(m.fn)) for m in BASELINES]
    if model.flow is not None:
        pooled.append(Method("flow", "total feature flow (cells)", lambda x: total_flow(model, x)))
    return [*pooled,
            Method("lift_raw", "LiFT concat(z_s, z_d) (paper)", lambda x: lift_raw(model, x), "lift"),
            Method("lift_sym", "LiFT symmetrised [m | dyn] (ours)", lambda x: lift_sym(model, x), "lift")]


# ---- the CiA linear probe ----------------------------------------------------------------------
def probe_accuracy(desc: np.ndarray, group: Sequence[str], cls: Sequence[str], split: Sequence[str]) -> dict:
    """Per group: RidgeClassifier() fitted on the train rows, accuracy on the test rows; and their mean."""
    from sklearn.linear_model import RidgeClassifier

    group, cls, split = np.asarray(group), np.asarray(cls), np.asarray(split)
    per_group = {}
    for g in sorted(set(group.tolist())):
        tr, te = (group == g) & (split == "train"), (group == g) & (split == "test")
        clf = RidgeClassifier().fit(desc[tr], cls[tr])
        per_group[g] = float(clf.score(desc[te], cls[te]))
    return {"accuracy": float(np.mean(list(per_group.values()))), "per_group": per_group}


def run_probe(bench: Benchmark, model=None, which: Sequence[Method] | None = None) -> dict:
    """The CiA protocol for every method, in one go from the cached features."""
    model = model or bench.engine.model
    rows = []
    for m in which or methods(model):
        t0 = time.perf_counter()
        desc = m.fn(bench.seqs)
        res = probe_accuracy(desc, bench.group, bench.cls, bench.split)
        rows.append({"key": m.key, "name": m.name, "kind": m.kind, "dims": int(desc.shape[1]), **res,
                     "seconds": round(time.perf_counter() - t0, 3)})
    return {"protocol": "CiA linear probe: per chiral group, sklearn RidgeClassifier() (default alpha) "
                        "fitted on the train split, accuracy on the test split; mean over groups",
            **bench.summary(), "chance": 0.5, "methods": rows}


# ---- retrieval ---------------------------------------------------------------------------------
def l2n(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def rank_exact(db: np.ndarray, queries: np.ndarray, k: int, scene: np.ndarray | None = None) -> np.ndarray:
    """(N, k) indices into db of each query's best k by inner product, query i's own row excluded; with
    `scene` (N,), every row of query i's scene is excluded too (cross-scene search), and k is cut to what
    the query with the fewest other-scene rows can fill. Ties keep database order (a stable sort), so
    identical queries give identical rankings."""
    scores = queries @ db.T
    np.fill_diagonal(scores, -np.inf)
    allowed = len(db) - 1
    if scene is not None:
        scene = np.asarray(scene)
        same = scene[:, None] == scene[None, :]
        scores[same] = -np.inf
        allowed = int(len(db) - same.sum(1).max())
    return np.argsort(-scores, axis=1, kind="stable")[:, :max(0, min(k, allowed))]


def retrieval_metrics(fwd: Sequence[Sequence[int]], rev: Sequence[Sequence[int]],
                      group: Sequence[str], cls: Sequence[str], k: int) -> dict:
    """From ranked result lists (indices of labelled clips, the query excluded): forward top-1 (same group
    and class), reverse top-1 (same group, opposite class), their mean ("chiral"), the share of clips
    with both right, precision@k of both, and the same per group."""
    group, cls = np.asarray(group), np.asarray(cls)
    f1, r1, fp, rp = [], [], [], []
    for i, (f, r) in enumerate(zip(fwd, rev)):
        f, r = np.asarray(f[:k], int), np.asarray(r[:k], int)
        same_f = (group[f] == group[i]) & (cls[f] == cls[i])
        opp_r = (group[r] == group[i]) & (cls[r] != cls[i])
        f1.append(bool(len(f) and same_f[0]))
        r1.append(bool(len(r) and opp_r[0]))
        fp.append(same_f.sum() / k)
        rp.append(opp_r.sum() / k)
    f1, r1, fp, rp = map(np.asarray, (f1, r1, fp, rp))

    def agg(mask) -> dict:
        return {"forward_top1": float(f1[mask].mean()), "reverse_top1": float(r1[mask].mean()),
                "chiral_top1": float((f1[mask].mean() + r1[mask].mean()) / 2),
                "both_top1": float((f1 & r1)[mask].mean()),
                f"forward_p@{k}": float(fp[mask].mean()), f"reverse_p@{k}": float(rp[mask].mean())}

    out = agg(np.ones(len(group), bool))
    out["per_group"] = {g: agg(group == g) for g in sorted(set(group.tolist()))}
    return out


def exact_retrieval(desc: np.ndarray, desc_rev: np.ndarray, group, cls, k: int,
                    scene: np.ndarray | None = None) -> dict:
    """Baseline retrieval: cosine similarity; the reverse query is the time-reversed clip's descriptor.
    With `scene`, results from the query's own scene are left out (cross-scene retrieval)."""
    db = l2n(desc)
    return retrieval_metrics(rank_exact(db, db, k, scene), rank_exact(db, l2n(desc_rev), k, scene), group, cls, k)


def lift_rank(desc: np.ndarray, motion: float, reverse: bool, k: int, scene: np.ndarray | None = None) -> np.ndarray:
    """The engine's scoring on [m | dyn] descriptors in numpy: (1 - w) cos(m) + w cos(+/- dyn)."""
    d = desc.shape[1] // 2
    q = np.concatenate([(1 - motion) * desc[:, :d], motion * (-desc[:, d:] if reverse else desc[:, d:])], 1)
    return rank_exact(desc.astype(np.float64), q.astype(np.float64), k, scene)


def lift_retrieval(desc: np.ndarray, group, cls, k: int, motion: float = 0.5,
                   scene: np.ndarray | None = None) -> dict:
    return retrieval_metrics(lift_rank(desc, motion, False, k, scene), lift_rank(desc, motion, True, k, scene),
                             group, cls, k)


Rankings = tuple[list[list[int]], list[list[int]]]  # forward, reverse: each labelled clip's top-k (row numbers)


def engine_rankings(bench: Benchmark, k: int, motion: float, scene: np.ndarray | None = None) -> Rankings:
    """Each labelled clip's forward and reverse top-k among the labelled clips, via SearchEngine.search_clip
    (other hits, e.g. unlabelled videos, are skipped; the request grows until k labelled hits come back).
    With `scene` (one per labelled clip), hits from the query's own scene are skipped too."""
    everywhere, across = _engine_rankings(bench, k, motion, scene)
    return everywhere if scene is None else across


def _engine_rankings(bench: Benchmark, k: int, motion: float,
                     scene: np.ndarray | None) -> tuple[Rankings, Rankings | None]:
    """engine_rankings without and (with `scene`) with the query's own scene, from the same searches."""
    engine = bench.engine
    where = {int(c): i for i, c in enumerate(bench.clip_ids)}
    total = len(engine.store)
    everywhere, across = ([], []), None if scene is None else ([], [])
    for q, cid in enumerate(bench.clip_ids):
        need = min(k, len(where) - 1)
        need_across = 0 if scene is None else min(k, int((scene != scene[q]).sum()))
        for way, reverse in enumerate((False, True)):
            ask = min(total, k + 8)
            while True:
                hits = engine.search_clip(int(cid), k=ask, reverse=reverse, motion=motion)
                idx = [where[h.clip_id] for h in hits if h.clip_id in where]
                other = [] if scene is None else [j for j in idx if scene[j] != scene[q]]
                if (len(idx) >= need and len(other) >= need_across) or ask >= total:
                    break
                ask = min(total, ask * 4)
            everywhere[way].append(idx[:k])
            if across is not None:
                across[way].append(other[:k])
    return everywhere, across


def run_retrieval(bench: Benchmark, k: int = 5, weights: Sequence[float] = MOTION_WEIGHTS, model=None,
                  which: Sequence[Method] | None = None) -> dict:
    """Baselines and LiFT's descriptors by exact search, and the engine's motion-weight sweep; with a
    scene column, each also across scenes (the query's own scene left out of its results)."""
    model = model or bench.engine.model
    g, c, scene = bench.group, bench.cls, bench.scene
    rows = []
    flipped = np.ascontiguousarray(bench.seqs[:, ::-1])
    for m in which or methods(model):
        t0 = time.perf_counter()
        desc, desc_rev = m.fn(bench.seqs), m.fn(flipped)
        row = {"key": m.key, "name": m.name, "kind": m.kind, "dims": int(desc.shape[1]),
               "search": "exact cosine; reverse query = descriptor of the reversed frames",
               **exact_retrieval(desc, desc_rev, g, c, k)}
        if scene is not None:
            row["cross_scene"] = exact_retrieval(desc, desc_rev, g, c, k, scene)
        rows.append({**row, "seconds": round(time.perf_counter() - t0, 3)})
    sweep = []
    for w in weights:
        t0 = time.perf_counter()
        everywhere, across = _engine_rankings(bench, k, w, scene)
        row = {"motion": float(w), **retrieval_metrics(*everywhere, g, c, k)}
        if across is not None:
            row["cross_scene"] = retrieval_metrics(*across, g, c, k)
        sweep.append({**row, "seconds": round(time.perf_counter() - t0, 3)})
    n_pairs = len({(a, b) for a, b in zip(g.tolist(), c.tolist())})
    return {"protocol": f"chiral retrieval: each labelled clip queries the others; forward top-1 = same group "
                        f"and class, reverse top-1 = same group and opposite class; precision@{k}"
                        + ("; cross_scene: the same with the query's own scene left out of its results"
                           if scene is not None else ""),
            **bench.summary(), "k": k, "clips": len(bench.labels),
            "scenes": None if scene is None else len(set(scene.tolist())),
            "cross_scene_chance": None if scene is None else 1 / n_pairs,
            "methods": rows, "engine_sweep": sweep}


# ---- printing ----------------------------------------------------------------------------------
def _pct(x: float) -> str:
    return f"{100 * x:5.1f}"


def format_probe(res: dict, per_group: bool = True) -> str:
    lines = [f"CiA linear probe on {res['index']}: {res['videos']} videos in {res['groups']} groups "
             f"({res['train']} train / {res['test']} test), {res['frames_per_clip']} frames x "
             f"{res['feature_dim']}-d {res['backbone']} features; chance 50.0",
             f"{'method':<36} {'dims':>6}  {'accuracy':>8}"]
    for m in res["methods"]:
        lines.append(f"{m['name']:<36} {m['dims']:>6}  {_pct(m['accuracy']):>8}")
    if per_group:
        groups = list(res["methods"][0]["per_group"])
        lines += ["", "per group (accuracy %):", f"{'group':<20}" + "".join(f"{m['key']:>11}" for m in res["methods"])]
        for gname in groups:
            lines.append(f"{gname:<20}" + "".join(f"{_pct(m['per_group'][gname]):>11}" for m in res["methods"]))
    return "\n".join(lines)


def format_retrieval(res: dict, per_group: bool = True) -> str:
    k = res["k"]
    head = f"{'fwd top-1':>9} {'rev top-1':>9} {'chiral':>7} {'both':>6} {f'fwd P@{k}':>8} {f'rev P@{k}':>8}"

    def cells(r: dict) -> str:
        return (f"{_pct(r['forward_top1']):>9} {_pct(r['reverse_top1']):>9} {_pct(r['chiral_top1']):>7} "
                f"{_pct(r['both_top1']):>6} {_pct(r[f'forward_p@{k}']):>8} {_pct(r[f'reverse_p@{k}']):>8}")

    def section(pick) -> list[str]:
        lines = [f"{'method (exact cosine search)':<36} {'dims':>6} " + head]
        for m in res["methods"]:
            lines.append(f"{m['name']:<36} {m['dims']:>6} " + cells(pick(m)))
        lines += ["", "LiFT via SearchEngine.search_clip, motion-weight sweep:", f"{'motion weight':<43} " + head]
        for s in res["engine_sweep"]:
            lines.append(f"{s['motion']:<43} " + cells(pick(s)))
        if per_group and res["engine_sweep"]:
            best = max(res["engine_sweep"], key=lambda s: pick(s)["chiral_top1"])
            lines += ["", f"per group, LiFT engine at motion weight {best['motion']}:", f"{'group':<43} " + head]
            for gname, r in pick(best)["per_group"].items():
                lines.append(f"{gname:<43} " + cells(r))
        return lines

    lines = [f"chiral retrieval on {res['index']}: {res['clips']} labelled clips in {res['groups']} groups; "
             f"chiral = mean of fwd and rev top-1 (a time-blind descriptor scores at most 50.0)",
             *section(lambda r: r)]
    if res.get("scenes") is not None:
        lines += ["", f"ACROSS SCENES ({res['scenes']} scenes): the query's own scene is left out of its results; "
                  f"chance about {_pct(res['cross_scene_chance']).strip()} (one of the group x class pairs)",
                  *section(lambda r: r["cross_scene"])]
    return "\n".join(lines)
