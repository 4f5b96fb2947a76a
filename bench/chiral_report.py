"""Reproduce docs/evaluation.md: the chiral benchmark, the CiA probe, chiral retrieval and the ablations.

    python bench/chiral_report.py --work /tmp/lift-eval          # everything (resumes what WORK holds)
    python bench/chiral_report.py --markdown-only                # re-render docs/ from docs/evaluation.json

Steps (each result lands in docs/evaluation.json; the markdown tables and the plots are made from it):
 1. render the synthetic chiral library (indexer.synth, fixed seed) with its labels.csv;
 2. index it: `lift-search index LIB --index IDX --backbone efficientnet-lite0 --lift fit`;
 3. `eval chiral` and `eval retrieval` on it (library calls of search/evaluate.py, same code as the CLI);
 4. ablations from the index's cached frame features (no decoding): LiFTs retrained with lift.train.fit at
    latent d = 128, 192, 256, 384, without reversal augmentation, and with other seeds; each scored with
    both descriptors (the paper's concat(z_s, z_d) and our symmetrised [m | dyn]);
 5. the sanity check on the real videos of /work/shared/videos: each cut at four start/end points, each cut
    also written time-reversed (indexer.synth.write_reversed), indexed with the synthetic library's LiFT.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from indexer import FIT_ANCHOR  # noqa: E402
from search import evaluate as ev  # noqa: E402

DOCS = ROOT / "docs"
PAPER = Path("/work/shared/seeds/chirality-in-action-paper.txt")
REAL_VIDEOS = Path("/work/shared/videos")
REAL_CUTS = ((0.0, 1.0), (0.0, 0.75), (0.25, 1.0), (0.125, 0.875))  # (start, end) fractions; 0, 1 train
LATENT_DIMS = (128, 192, 256, 384)
MAIN_D = 192  # the CLI's default --latent-dim

# Table 2 of the paper, rows quoted verbatim (line as in the paper's text; parsed columns)
PAPER_TABLE2 = [
    ("Chance - - - 50.0 50.0 50.0", ("Chance", "-", "-", "-", "50.0", "50.0", "50.0")),
    ("CLIP [63] ViT-B/16 Average 512 53.5 63.4 54.7",
     ("CLIP", "ViT-B/16", "Average", "512", "53.5", "63.4", "54.7")),
    ("CLIP [63] ViT-B/16 Concat. 8192 71.6 71.6 67.7",
     ("CLIP", "ViT-B/16", "Concat.", "8192", "71.6", "71.6", "67.7")),
    ("DINOv2 [54] ViT-S/14 Concat. 6144 79.7 74.1 65.8",
     ("DINOv2", "ViT-S/14", "Concat.", "6144", "79.7", "74.1", "65.8")),
    ("VideoMAE [77] ViT-L/16x16x2 Average 1024 80.3 70.5 59.1",
     ("VideoMAE", "ViT-L/16x16x2", "Average", "1024", "80.3", "70.5", "59.1")),
    ("VideoJEPA [5] ViT-L/16x16x2 Average 1024 80.4 67.4 56.4",
     ("VideoJEPA", "ViT-L/16x16x2", "Average", "1024", "80.4", "67.4", "56.4")),
    ("VideoMAE [77] ViT-L/16x16x2 Time concat. 8192 85.7 75.0 66.1",
     ("VideoMAE", "ViT-L/16x16x2", "Time concat.", "8192", "85.7", "75.0", "66.1")),
    ("LiFT (Ours) ViT-S/14 Learned 768 86.6 75.5 69.5",
     ("LiFT (Ours)", "ViT-S/14", "Learned", "768", "86.6", "75.5", "69.5")),
]


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ---- 1-2: the benchmark library and its index ----------------------------------------------------
def render(lib: Path, scenes: int, variants: int, seed: int) -> dict:
    from indexer.synth import GROUPS, render_library

    params = {"scenes_per_group": scenes, "variants": variants, "seed": seed, "groups": len(GROUPS),
              "size": "160x120", "fps": 12}
    stamp = lib / "params.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("params") == params:
        return json.loads(stamp.read_text())
    t0 = time.perf_counter()
    clips = render_library(lib, n_scenes_per_group=scenes, variants=variants, seed=seed, progress=False)
    info = {"params": params, "clips": len(clips), "render_seconds": round(time.perf_counter() - t0, 1),
            "command": f"python -m indexer.synth {lib} --scenes {scenes} --variants {variants} --seed {seed}"}
    stamp.write_text(json.dumps(info, indent=1))
    return info


def _lift_setting(idx: Path) -> dict:
    from db import get_setting, open_db

    with open_db(idx / "index.db")() as s:
        return get_setting(s, "lift") or {}


def index(lib: Path, idx: Path, extra: list[str]) -> dict:
    """`lift-search index LIB --index IDX --backbone efficientnet-lite0 EXTRA`, timed (once: stamped)."""
    stamp = idx / "index_report.json"
    if stamp.is_file():
        return json.loads(stamp.read_text())
    cmd = ["lift-search", "index", str(lib), "--index", str(idx), "--backbone", "efficientnet-lite0", *extra]
    info = {"command": " ".join(cmd)}
    if (idx / "index.db").is_file():  # built before this script stamped it: keep it, record what it says
        lift = _lift_setting(idx)
        info.update({"seconds": None, "stages": {}, "note": "index found already built; its LiFT's training "
                     "time is from the model's provenance", "lift": {k: v for k, v in lift.items()
                                                                     if k != "provenance"},
                     "lift_training": lift.get("provenance", {})})
    else:
        log("running " + " ".join(cmd))
        t0 = time.perf_counter()
        run = subprocess.run([*cmd, "--json"], capture_output=True, text=True)
        if run.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
        report = json.loads(run.stdout)
        info.update({"wall_seconds": round(time.perf_counter() - t0, 1), "seconds": round(report["seconds"], 1),
                     "stages": report["stages"], "clips": report["clips_total"], "failed": report["failed"],
                     "failures": report["failures"],
                     "lift": {k: v for k, v in report["lift"].items() if k != "provenance"},
                     "lift_training": report["lift"].get("provenance", {})})
    stamp.write_text(json.dumps(info, indent=1))
    return info


def model_file(idx: Path) -> Path:
    from indexer.library import IndexDir

    return IndexDir(idx).model_path(_lift_setting(idx)["hash"])


def timing_without_training(lib: Path, idx: Path, work: Path) -> dict:
    """Index the library again into a scratch folder with the finished LiFT file: decode, backbone,
    describe and store, without training (the training time is in the model's provenance)."""
    stamp = work / f"{lib.name}-timing.json"
    if stamp.is_file():
        return json.loads(stamp.read_text())
    scratch = work / f"{idx.name}-timing"
    shutil.rmtree(scratch, ignore_errors=True)
    info = index(lib, scratch, ["--lift", str(model_file(idx))])
    shutil.rmtree(scratch, ignore_errors=True)
    stamp.write_text(json.dumps(info, indent=1))
    return info


# ---- 3: the evaluations ------------------------------------------------------------------------
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


def resampled_probe(bench: ev.Benchmark, scene: np.ndarray, reps: int = 30, test_share: float = 0.3,
                    seed: int = 0) -> dict:
    """The CiA probe of every method over `reps` random splits by scene (in each group, round(test_share x
    scenes) of them test): mean and standard error of the mean. One fixed split rests on a few test scenes;
    this says how much of a difference between methods is the split's luck."""
    rng = np.random.default_rng(seed)
    g = bench.group
    splits = []
    for _ in range(reps):
        test = set()
        for grp in sorted(set(g.tolist())):
            scenes = sorted(set(scene[g == grp].tolist()))
            test |= set(rng.choice(scenes, max(1, round(test_share * len(scenes))), replace=False).tolist())
        splits.append(np.where(np.isin(scene, list(test)), "test", "train"))
    out = {}
    for m in ev.methods(bench.engine.model):
        desc = m.fn(bench.seqs)
        acc = [ev.probe_accuracy(desc, g, bench.cls, sp)["accuracy"] for sp in splits]
        out[m.key] = {"mean": float(np.mean(acc)), "se": float(np.std(acc, ddof=1) / np.sqrt(reps))}
    return {"reps": reps, "test_share": test_share, "seed": seed, "methods": out}


def evaluate(idx: Path, labels: Path, k: int) -> tuple[dict, ev.Benchmark]:
    bench = ev.load_benchmark(idx, labels, need_splits=True)
    t0 = time.perf_counter()
    probe = ev.run_probe(bench)
    probe["seconds"] = round(time.perf_counter() - t0, 2)
    t0 = time.perf_counter()
    retrieval = ev.run_retrieval(bench, k=k)
    retrieval["seconds"] = round(time.perf_counter() - t0, 2)
    # the engine's rankings vs the engine's formula applied in numpy to the stored descriptors
    stored = bench.engine.store.vectors(bench.clip_ids)
    agree = {}
    for w in ev.MOTION_WEIGHTS:
        fwd, rev = ev.engine_rankings(bench, 1, w)
        mine = np.concatenate([ev.lift_rank(stored, w, False, 1), ev.lift_rank(stored, w, True, 1)])
        agree[str(w)] = float(np.mean([list(a[:1]) == list(b[:1]) for a, b in zip(fwd + rev, mine)]))
    res = {"probe": probe, "retrieval": retrieval,
           "checks": {"top1_agreement_engine_vs_numpy": agree,
                      "max_abs_diff_stored_vs_recomputed": float(np.abs(ev.lift_sym(bench.engine.model, bench.seqs)
                                                                        - stored).max()),
                      "load_seconds": round(bench.seconds, 2)}}
    scene = scenes_of(labels, bench)
    if scene is not None:
        res["direction_consistency"] = direction_consistency(stored, bench, scene)
        res["probe_resampled"] = resampled_probe(bench, scene)
    return res, bench


# ---- 4: ablations from the cached features -------------------------------------------------------
def training_sequences(idx: Path) -> np.ndarray:
    """The clips the indexer trained its LiFT on, in its order (pipeline._library_sequences)."""
    from db import open_db
    from indexer.library import IndexDir
    from indexer.pipeline import _library_sequences

    d = IndexDir(idx)
    return _library_sequences(d, open_db(d.db), [])


def score_model(model, benches: dict[str, ev.Benchmark], k: int) -> dict:
    """Both descriptors of `model` on each benchmark: probe, retrieval, and how z_d flips under reversal."""
    out = {}
    for key, bench in benches.items():
        g, cl, sp = bench.group, bench.cls, bench.split
        flipped = np.ascontiguousarray(bench.seqs[:, ::-1])
        sym = ev.lift_sym(model, bench.seqs)
        raw, raw_rev = ev.lift_raw(model, bench.seqs), ev.lift_raw(model, flipped)
        d = model.config.latent_dim
        out[key] = {"probe_raw": ev.probe_accuracy(raw, g, cl, sp)["accuracy"],
                    "probe_sym": ev.probe_accuracy(sym, g, cl, sp)["accuracy"],
                    "retrieval_sym": {k_: v for k_, v in ev.lift_retrieval(sym, g, cl, k, 0.5).items()
                                      if k_ != "per_group"},
                    "retrieval_raw": {k_: v for k_, v in ev.exact_retrieval(raw, raw_rev, g, cl, k).items()
                                      if k_ != "per_group"},
                    # cos(z_d(x), z_d(reversed x)): -1 when z_d flips exactly with the arrow of time
                    "zd_cos_reversal": float(np.mean(np.sum(ev.l2n(raw[:, d:]) * ev.l2n(raw_rev[:, d:]), 1)))}
    return out


def ablate(index_model, benches: dict[str, ev.Benchmark], train_seqs: np.ndarray, configs: list[dict],
           epochs: int, k: int, cache: Path) -> list[dict]:
    from lift import LiftConfig
    from lift.train import TrainConfig, fit

    prov = index_model.config.provenance
    rows = [{"name": "index model", "source": "the index's own LiFT (lift-search index --lift fit)",
             "latent_dim": index_model.config.latent_dim, "reverse_augment": prov["train_config"]["reverse_augment"],
             "anchor": prov["train_config"].get("anchor", 0.0),
             "seed": prov["train_config"]["seed"], "max_epochs": prov["train_config"]["epochs"],
             "epochs_run": prov["epochs_run"], "train_seconds": prov["seconds"],
             "best_val_loss": prov["best_val_loss"], "dims": index_model.descriptor_dim,
             "results": score_model(index_model, benches, k)}]
    import copy

    import torch
    other = copy.deepcopy(index_model)  # the same weights with / without the descriptor whitening
    if other.config.whiten:
        other.config.whiten = False
        rows.append({**rows[0], "name": "index model, no whitening", "source": "the index's own LiFT with "
                     "LiftConfig.whiten off", "results": score_model(other, benches, k)})
    else:
        other.calibrate(train_seqs)
        rows.append({**rows[0], "name": "index model, whitened", "source": "the index's own LiFT with "
                     "LiFT.calibrate on its training clips", "results": score_model(other, benches, k)})

    from lift import LiFT

    torch.manual_seed(0)
    untrained = LiFT(LiftConfig(feature_dim=train_seqs.shape[-1], latent_dim=MAIN_D, feature_norm=True)).eval()
    flat = torch.as_tensor(train_seqs.reshape(-1, train_seqs.shape[-1]))
    untrained.feature_mean.copy_(flat.mean(0))
    untrained.feature_std.copy_(flat.std(0).clamp_min(1e-3))
    rows.append({"name": "untrained (random init)", "source": "LiFT(LiftConfig(...)) with torch seed 0, input "
                 "standardisation from the training features, no training", "latent_dim": MAIN_D,
                 "reverse_augment": None, "seed": 0, "max_epochs": 0, "epochs_run": 0, "train_seconds": 0.0,
                 "best_val_loss": None, "dims": untrained.descriptor_dim,
                 "results": score_model(untrained, benches, k)})
    cache.mkdir(parents=True, exist_ok=True)
    for c in configs:
        on = c.get("train", "synth")  # which benchmark's clips the LiFT is fitted on (self-supervised)
        if on not in benches:
            continue
        seqs = train_seqs if on == "synth" else benches[on].seqs
        name = f"d{c['latent_dim']}_aug{int(c['reverse_augment'])}_seed{c['seed']}_ep{epochs}" + (
            "" if on == "synth" else f"_fit{on}") + f"_anchor{c['anchor']:g}"
        stamp = cache / f"{name}.json"
        if stamp.is_file():
            rows.append(json.loads(stamp.read_text()))
            continue
        log(f"ablation {name}: training on {len(seqs)} cached clips")
        cfg = LiftConfig(feature_dim=seqs.shape[-1], latent_dim=c["latent_dim"],
                         backbone=index_model.config.backbone, feature_norm=True)
        tc = TrainConfig(epochs=epochs, reverse_augment=c["reverse_augment"], seed=c["seed"],
                         anchor=c["anchor"], progress=False)
        t0 = time.perf_counter()
        model, hist = fit(seqs, cfg, tc)
        row = {**c, "train": on, "name": name, "source": f"retrained from the cached features of the {on} "
               f"benchmark's {len(seqs)} clips (lift.train.fit)",
               "max_epochs": epochs, "epochs_run": len(hist["val_loss"]),
               "train_seconds": round(time.perf_counter() - t0, 1), "best_val_loss": float(min(hist["val_loss"])),
               "dims": model.descriptor_dim, "results": score_model(model, benches, k)}
        stamp.write_text(json.dumps(row, indent=1))
        log(f"  {name}: {row['train_seconds']} s, " + ", ".join(
            f"{b}: probe sym {_pct(r['probe_sym'])} chiral sym {_pct(r['retrieval_sym']['chiral_top1'])}"
            for b, r in row["results"].items()))
        rows.append(row)
    return rows


# ---- 5: real videos ----------------------------------------------------------------------------
def read_frames(path: Path) -> tuple[np.ndarray, float]:
    """All frames (RGB) with OpenCV, which reads every shared video (decord rejects most VP9 frames of
    76198.webm); cropped to even sizes for the mp4v writer."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f[..., ::-1])
    cap.release()
    x = np.stack(frames)
    h, w = x.shape[1] // 2 * 2, x.shape[2] // 2 * 2
    return np.ascontiguousarray(x[:, :h, :w]), fps


def real_library(out: Path) -> dict:
    from indexer.synth import write_reversed, write_video

    labels = out / "labels.csv"
    if labels.is_file():
        return json.loads((out / "params.json").read_text())
    rows, sources = [], []
    for src in sorted(REAL_VIDEOS.iterdir()):
        if src.suffix not in (".mp4", ".webm"):
            continue
        frames, fps = read_frames(src)
        sources.append({"file": src.name, "frames": len(frames), "fps": fps, "size": list(frames.shape[1:3])})
        for v, (a, b) in enumerate(REAL_CUTS):
            cut = frames[int(round(a * len(frames))):int(round(b * len(frames)))]
            fwd = write_video(out / src.stem / f"cut{v}_forward.mp4", cut, fps)
            rev = write_reversed(fwd, out / src.stem / f"cut{v}_reversed.mp4", fps)  # its exact reversal
            for path, cls in ((fwd, "forward"), (rev, "reversed")):
                rows.append({"video": str(path.relative_to(out)), "group": src.stem, "class": cls,
                             "split": "train" if v < 2 else "test", "variant": v})
    with open(labels, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["video", "group", "class", "split", "variant"])
        w.writeheader()
        w.writerows(rows)
    info = {"sources": sources, "cuts": REAL_CUTS, "clips": len(rows)}
    (out / "params.json").write_text(json.dumps(info, indent=1))
    return info


# ---- the report --------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _table(head: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _cells(r: dict, k: int) -> list[str]:
    return [_pct(r["forward_top1"]), _pct(r["reverse_top1"]), _pct(r["chiral_top1"]), _pct(r["both_top1"]),
            _pct(r[f"forward_p@{k}"]), _pct(r[f"reverse_p@{k}"])]


def _rhead(k: int) -> list[str]:
    return ["fwd top-1", "rev top-1", "chiral", "both", f"fwd P@{k}", f"rev P@{k}"]


def best_baseline(probe: dict) -> dict:
    """The baseline method with the highest probe accuracy in an `ev.run_probe` result."""
    return max((m for m in probe["methods"] if m["kind"] == "baseline"), key=lambda m: m["accuracy"])


def recipe_rows(data: dict) -> list[dict]:
    """The ablation's LiFTs retrained on the main benchmark's clips with the index model's chord anchor (no
    index model, no untrained model, no other training library, no other anchor weight)."""
    anchor = data["ablation"][0].get("anchor", 0.0)
    return [r for r in data["ablation"] if r.get("max_epochs") and not r["name"].startswith("index model")
            and r.get("train", "synth") == "synth" and r.get("anchor", 0.0) == anchor]


def headline(data: dict) -> dict:
    """The numbers the acceptance criteria ask about, on the main synthetic benchmark."""
    b = data["benchmarks"]["synth"]
    probe = {m["key"]: m for m in b["probe"]["methods"]}
    ret = {m["key"]: m for m in b["retrieval"]["methods"]}
    sweep = {s["motion"]: s for s in b["retrieval"]["engine_sweep"]}
    best = best_baseline(b["probe"])
    lift = probe["lift_sym"]
    return {"mean_pooling_chiral_top1": ret["mean"]["chiral_top1"], "mean_pooling_both_top1": ret["mean"]["both_top1"],
            "mean_pooling_reverse_top1": ret["mean"]["reverse_top1"],
            "lift_probe": lift["accuracy"], "lift_raw_probe": probe["lift_raw"]["accuracy"],
            "best_baseline": best["name"], "best_baseline_probe": best["accuracy"],
            "concat_over_lift_dims": probe["concat"]["dims"] / lift["dims"],
            "lift_engine_w0.5": {k: v for k, v in sweep[0.5].items() if k != "per_group"}}


def markdown(data: dict) -> str:
    k = data["settings"]["k"]
    B = data["benchmarks"]
    syn, uns = B["synth"], B.get("unseen")
    h = data["headline"]
    out: list[str] = []
    add = out.append
    add("# Evaluation: chiral actions, and where lift-search's time-awareness comes from\n")
    add(f"*Generated by `{data['generated_by']}` ({data['generated_at']}) from `docs/evaluation.json`; the "
        f"tables are not edited by hand.* Machine: {data['machine']}.\n")
    add("Two questions:\n\n"
        "1. **Chirality-in-Action (CiA) linear probe**, the paper's protocol (`lift-search eval chiral`): given "
        "one descriptor per video, can a linear classifier tell an action from its time reversal?\n"
        "2. **Chiral retrieval** (`lift-search eval retrieval`): is a clip's top search result the same action "
        "(forward), and is its *reverse* query's top result the opposite action (reverse)?\n")
    w05 = h["lift_engine_w0.5"]
    add("**Summary** (main synthetic benchmark, LiFT trained on it by the indexer):\n")
    add(f"- LiFT search at the default motion weight 0.5: forward top-1 **{_pct(w05['forward_top1'])} %**, "
        f"reverse top-1 **{_pct(w05['reverse_top1'])} %** (mean {_pct(w05['chiral_top1'])} %; both right for "
        f"{_pct(w05['both_top1'])} % of the clips).")
    add(f"- Mean pooling is time-blind: its forward and reverse queries rank identically, so it is never right "
        f"on both (both = {_pct(h['mean_pooling_both_top1'])} %) and its forward+reverse mean is "
        f"{_pct(h['mean_pooling_chiral_top1'])} %, chance. (Its reverse top-1 alone, "
        f"{_pct(h['mean_pooling_reverse_top1'])} %, is high only because a clip's nearest neighbour in appearance "
        f"is its own mirror twin; see *Chance* below.)")
    best = h["best_baseline_probe"]
    test_scenes = syn["probe"]["test"] / (2 * syn["library"]["params"]["variants"]) / syn["probe"]["groups"]
    resampled = (f", and the same probe over {syn['probe_resampled']['reps']} random splits there"
                 if "probe_resampled" in syn else "")
    verdict = "; ".join(f"{name} {'reaches' if acc >= best else 'does not reach'} it"
                        for name, acc in (("ours", h["lift_probe"]), ("the paper's", h["lift_raw_probe"])))
    add(f"- CiA probe: LiFT (ours, [m | dyn]) {_pct(h['lift_probe'])} %, the paper's concat(z_s, z_d) "
        f"{_pct(h['lift_raw_probe'])} %, best baseline ({h['best_baseline']}) {_pct(best)} %; "
        f"concatenation is {h['concat_over_lift_dims']:.0f}x larger than LiFT's descriptor. Of the two LiFT "
        f"descriptors, {verdict} on this split, which has {test_scenes:g} test scene(s) per group (see *How "
        f"precise*{resampled}).")
    if uns:
        up = {m["key"]: m for m in uns["probe"]["methods"]}
        ub = best_baseline(uns["probe"])
        retrained = recipe_rows(data)
        spread = "; ".join(
            f"{'synthetic' if b == 'synth' else 'unseen'} {_pct(min(r['results'][b]['probe_sym'] for r in retrained))}"
            f"-{_pct(max(r['results'][b]['probe_sym'] for r in retrained))} %" for b in ("synth", "unseen")) \
            if retrained else "-"
        add(f"- The main benchmark's probe rests on one test scene per group (see *How precise*). On the unseen "
            f"set ({uns['probe']['test']} test videos): LiFT {_pct(up['lift_sym']['accuracy'])} %, best baseline "
            f"({ub['name']}) {_pct(ub['accuracy'])} %. The {len(retrained)} LiFTs retrained in section 3 (other "
            f"seeds and sizes, same clips) score probe sym {spread}.")
    rs = {k: B[k]["probe_resampled"] for k in ("synth", "unseen") if k in B and "probe_resampled" in B[k]}
    if rs:
        def versus(r: dict) -> str:
            m, names = r["methods"], {x["key"]: x["name"] for x in syn["probe"]["methods"]}
            base = max((k for k in m if k in {"middle", "mean", "first_last", "concat"}), key=lambda k: m[k]["mean"])
            f = lambda k: f"{_pct(m[k]['mean'])} +/- {_pct(m[k]['se'])} %"
            return (f"LiFT (ours) {f('lift_sym')}, the paper's {f('lift_raw')}, best baseline ({names[base]}) "
                    f"{f(base)}")
        add(f"- The same probe averaged over {next(iter(rs.values()))['reps']} random splits by scene (mean +/- "
            f"standard error), the fairer comparison: " + "; ".join(
                f"{'synthetic' if k == 'synth' else 'unseen'}: {versus(r)}" for k, r in rs.items()) + ".")
    add("")

    # -- the benchmark
    add("## The benchmarks\n")
    p = syn["library"]["params"]
    add(f"**synthetic** (`indexer.synth`, seed {p['seed']}): {p['groups']} chiral groups (left/right, up/down, "
        f"towards/away, appear/disappear, open/close, fill/empty, rotate cw/ccw, more/fewer, zoom in/out, pan "
        f"left/right) x {p['scenes_per_group']} scenes (background photo, object, colour, texture, path, all drawn "
        f"from the seed) x {p['variants']} variants (each with its own duration of 2-4 s, easing, start and end "
        f"point, and holds) x 2 directions = **{syn['library']['clips']} clips**, {p['size']} at {p['fps']} fps. "
        f"The two classes of a (scene, variant) are frame-exact time reversals of each other: only the order of "
        f"the frames tells them apart. Splits are by scene (about 30 % of a group's scenes are test): "
        f"{syn['probe']['train']} train / {syn['probe']['test']} test videos. Every video is one clip of "
        f"T = {syn['probe']['frames_per_clip']} frames with {syn['probe']['feature_dim']}-d "
        f"`{syn['probe']['backbone']}` features; the indexer trains the LiFT (d = "
        f"{syn['index']['lift']['latent_dim']}, reversal-augmented) on the library itself (`--lift fit`).\n")
    if uns:
        q = uns["library"]["params"]
        add(f"**unseen** (seed {q['seed']}, {q['scenes_per_group']} scenes per group, {uns['library']['clips']} "
            f"clips, {uns['probe']['train']} train / {uns['probe']['test']} test): new scenes indexed with the "
            f"synthetic benchmark's LiFT file (`--lift PATH`), which never saw them. With "
            f"{uns['probe']['test'] / syn['probe']['test']:.0f}x the main benchmark's test clips "
            f"({uns['probe']['test'] // uns['probe']['groups']} instead of {syn['probe']['test'] // syn['probe']['groups']} "
            f"per group) and more training scenes for the probe, its probe numbers are less noisy.\n")
    add("Reproduce:\n\n```bash\n" + "\n".join([
        syn["library"]["command"],
        syn["index"]["command"],
        f"lift-search eval chiral --index {syn['paths']['index']} --labels {syn['paths']['library']}/labels.csv --json probe.json",
        f"lift-search eval retrieval --index {syn['paths']['index']} --labels {syn['paths']['library']}/labels.csv -k {k} --json retrieval.json",
        *([uns["library"]["command"], uns["index"]["command"]] if uns else []),
        f"python bench/chiral_report.py --work {data['paths']['work']}   # all of this report (resumes), ablations included",
    ]) + "\n```\n")

    # -- probe
    add("## 1. CiA linear probe (our Table 2)\n")
    add("Per chiral group, `sklearn.linear_model.RidgeClassifier()` (default alpha) is fitted on the train split's "
        "descriptors and scored on the test split; the mean over groups is reported (chance 50 %). All descriptors "
        "come from the same cached frame features.\n")
    um = {m["key"]: m for m in uns["probe"]["methods"]} if uns else {}
    add(_table(["method", "dims", "synthetic (%)"] + (["unseen (%)"] if uns else []),
               [[m["name"], m["dims"], _pct(m["accuracy"])] + ([_pct(um[m["key"]]["accuracy"])] if uns else [])
                for m in syn["probe"]["methods"]]) + "\n")
    precision = []
    for key, title in (("synth", "synthetic"), ("unseen", "unseen")):
        if key in B:
            per_scene = 2 * B[key]["library"]["params"]["variants"]  # clips of a scene: variants x 2 classes
            scenes, groups = B[key]["probe"]["test"] // per_scene, B[key]["probe"]["groups"]
            precision.append(f"the {title} test split holds {B[key]['probe']['test']} videos from {scenes} scenes "
                             f"({scenes / groups:g} per group), so one scene moves a group's score by up to "
                             f"{100 / (scenes / groups):.0f} points and the mean by {100 / scenes:.1f}")
    add("**How precise.** A test scene's clips (its variants, each beside its exact time reversal) tend to be "
        "right or wrong together: " + "; ".join(precision) + ". Differences of a few points are noise; the seed "
        "spread in section 3 shows how far retraining alone moves LiFT.\n")
    rs = {key: B[key]["probe_resampled"] for key in ("synth", "unseen") if key in B and "probe_resampled" in B[key]}
    if rs:
        first = next(iter(rs.values()))
        add(f"The same probe over {first['reps']} random splits by scene (in each group {first['test_share']:.0%} of "
            f"the scenes test, the rest train; numpy seed {first['seed']}), mean +/- standard error of the mean: "
            f"how the methods compare once the luck of one split is averaged out. (Not the CiA protocol, which "
            f"fixes the split; the LiFT is the index's own.)\n")
        add(_table(["method"] + [f"{'synthetic' if key == 'synth' else key} (%)" for key in rs],
                   [[m["name"]] + [f"{100 * r['methods'][m['key']]['mean']:.1f} +/- {100 * r['methods'][m['key']]['se']:.1f}"
                                   for r in rs.values()] for m in syn["probe"]["methods"]]) + "\n")
    for key, title in (("synth", "synthetic"), ("unseen", "unseen")):
        if key not in B:
            continue
        ms = B[key]["probe"]["methods"]
        add(f"Per group, {title} (accuracy %, test split):\n")
        add(_table(["group"] + [m["key"] for m in ms],
                   [[g] + [_pct(m["per_group"][g]) for m in ms] for g in ms[0]["per_group"]]) + "\n")
    add("For context only, rows of the paper's Table 2 (chiral accuracy %, features of DINOv2 and of video "
        "models on the real CiA splits of SSv2, EPIC-Kitchens and Charades), quoted as printed. **Not comparable** "
        "with the numbers above: other videos, other backbones, other descriptor sizes; ours is a small synthetic "
        "benchmark whose classes are exact time reversals, with ImageNet efficientnet-lite0 features.\n")
    add(_table(["Model", "Architecture", "Pooling", "D", "SSv2", "EPIC", "Charades"],
               [list(r["columns"]) for r in data["paper_table2"]]) + "\n")

    # -- retrieval
    add("## 2. Chiral retrieval\n")
    add(f"Every labelled clip queries the others. **fwd top-1**: the top result has the query's group and class. "
        f"**rev top-1**: the top result of the reverse query has the query's group and the opposite class. "
        f"**chiral**: the mean of the two; **both**: the share of clips with both right; P@{k}: precision of the "
        f"top {k} (a group holds {syn['library']['clips'] // p['groups']} clips, so a clip has "
        f"{syn['library']['clips'] // p['groups'] // 2 - 1} same-class and {syn['library']['clips'] // p['groups'] // 2} "
        f"opposite-class partners). Baselines, and LiFT's descriptors for comparison, are searched by exact "
        f"cosine similarity with the descriptor of the time-reversed frames as the reverse query; the sweep goes "
        f"through `SearchEngine.search_clip` (score = (1 - w) cos(static) + w cos(+/- motion)).\n")
    add("**Chance.** A time-blind descriptor (mean pooling; LiFT at motion weight 0, whose static half is exactly "
        "symmetric in time) gives the reverse query the forward query's ranking, so at most one of the two can be "
        "right for any clip: *both* is 0 and *chiral* at most 50 %. Which one it gets right is an accident of "
        "the data: here a clip's nearest neighbour in appearance is usually its mirror twin (same scene and "
        "variant, opposite class), so time-blind methods have a high rev top-1 and a low fwd top-1.\n")
    for key, title in (("synth", "synthetic"), ("unseen", "unseen")):
        if key not in B:
            continue
        r = B[key]["retrieval"]
        add(f"**{title}** ({r['clips']} clips):\n")
        add(_table(["method (exact cosine search)", "dims"] + _rhead(k),
                   [[m["name"], m["dims"], *_cells(m, k)] for m in r["methods"]]) + "\n")
        add(_table(["LiFT via SearchEngine, motion weight"] + _rhead(k),
                   [[s["motion"], *_cells(s, k)] for s in r["engine_sweep"]]) + "\n")
        at = {s["motion"]: s for s in r["engine_sweep"]}[0.5]
        weak = {g: x for g, x in at["per_group"].items() if x["chiral_top1"] < 1.0}
        if weak:
            add(f"Groups below 100 % at w = 0.5 ({title}):\n")
            add(_table(["group"] + _rhead(k), [[g, *_cells(x, k)] for g, x in weak.items()]) + "\n")
    c = syn["checks"]
    add("Consistency: the engine's top-1 equals the engine's formula applied in numpy to the stored vectors for "
        + ", ".join(f"w = {w}: {_pct(v)} %" for w, v in c["top1_agreement_engine_vs_numpy"].items())
        + f" of the queries; stored and recomputed descriptors differ by at most "
          f"{c['max_abs_diff_stored_vs_recomputed']:.1e}.\n")
    add("![LiFT and baselines](eval_methods.png)\n\n![motion-weight sweep](eval_motion_sweep.png)\n")

    # -- ablations
    add("## 3. Where the time-awareness comes from\n")
    st = data["settings"]
    add(f"LiFTs retrained with `lift.train.fit` on the synthetic index's cached frame features (the indexer's own "
        f"training set and recipe, but at most {st['ablation_epochs']} epochs to fit the shared 2-core machine; "
        f"no decoding), each scored with both descriptors: *raw* = the paper's concat(z_s, z_d) (retrieval: exact "
        f"cosine, reverse query = descriptor of the reversed frames), *sym* = our [m | dyn] (retrieval: the "
        f"engine's formula at w = 0.5). The first row is the index's own LiFT (up to "
        f"{data['ablation'][0]['max_epochs']} epochs). z_d cos = mean cos(z_d(x), z_d(reversed x)), -1 when z_d "
        f"flips exactly with the arrow of time. Rows ending in `_fitunseen` are fitted (self-supervised, as `--lift "
        f"fit` would) on the unseen library's own clips, three times as many as the synthetic benchmark's: for "
        f"them the synthetic benchmark is the unseen one. `_anchorW` is the weight of the chord anchor "
        f"(`TrainConfig(anchor=W)`: W x (1 - cos(z_d, chord(x) @ P)), chord(x) the last minus the first of the "
        f"L2-normalised frames, P the top-d principal directions of the training clips' chords); `_anchor0` is the "
        f"paper's loss.\n")
    benches = [b for b in ("synth", "unseen") if b in B]
    for bkey in benches:
        add(f"**{'synthetic' if bkey == 'synth' else 'unseen'}**:\n")
        add(_table(["model", "d", "rev. aug.", "seed", "epochs", "train s", "probe raw", "probe sym", "chiral raw",
                    "chiral sym", "both sym", "z_d cos"],
                   [[r["name"], r["latent_dim"], {True: "yes", False: "no"}.get(r["reverse_augment"], "-"), r["seed"],
                     r["epochs_run"],
                     r["train_seconds"], _pct(r["results"][bkey]["probe_raw"]), _pct(r["results"][bkey]["probe_sym"]),
                     _pct(r["results"][bkey]["retrieval_raw"]["chiral_top1"]),
                     _pct(r["results"][bkey]["retrieval_sym"]["chiral_top1"]),
                     _pct(r["results"][bkey]["retrieval_sym"]["both_top1"]),
                     f"{r['results'][bkey]['zd_cos_reversal']:+.3f}"] for r in data["ablation"]]) + "\n")
    add("![ablation](eval_ablation.png)\n")
    for line in data["findings"]:
        add(f"- {line}")
    add("")
    dc = {b: B[b].get("direction_consistency") for b in benches}
    if all(dc.values()):
        add("**Why the probe and retrieval disagree.** Mean cosine between the motion halves (dyn) of two clips of "
            "the same class, from the same scene and from different scenes (the index's LiFT). Retrieval compares a "
            "clip with the clips of its own scene, so it needs only the first to be high; a linear probe trained on "
            "some scenes and tested on others needs the second. Where the cross-scene cosine is near 0 (or "
            "negative), the 'direction' LiFT encodes is specific to the scene's appearance (efficientnet-lite0 is an "
            "ImageNet classifier; its pooled features move differently when different objects move the same way).\n")
        groups = list(dc["synth"])
        head = ["group"] + [f"{'synthetic' if b == 'synth' else 'unseen'}: {w}" for b in benches
                            for w in ("same scene", "cross scene")]
        probe_sym = {b: {m["key"]: m for m in B[b]["probe"]["methods"]}["lift_sym"]["per_group"] for b in benches}
        head += [f"probe sym {'synthetic' if b == 'synth' else 'unseen'}" for b in benches]
        add(_table(head, [[g] + [f"{dc[b][g][w]:+.2f}" if dc[b][g][w] is not None else "-" for b in benches
                                 for w in ("same_scene", "cross_scene")] + [_pct(probe_sym[b][g]) for b in benches]
                          for g in groups]) + "\n")

    # -- real
    if B.get("real"):
        r = B["real"]
        add("## 4. Sanity check on real footage\n")
        add("The three videos of `/work/shared/videos` (" + ", ".join(
            f"{s['file']}: {s['frames']} frames at {s['fps']:g} fps" for s in r["library"]["sources"]) +
            f"), each cut at {len(r['library']['cuts'])} start/end points "
            f"{', '.join(f'{a:g}-{b:g}' for a, b in r['library']['cuts'])} (fractions of its length; the first two "
            f"cuts train, the last two test), and each cut also written as its exact time reversal with "
            f"`indexer.synth.write_reversed`: 3 groups (one per video) x 2 classes (forward, reversed) x 4 cuts = "
            f"{r['library']['clips']} clips, indexed with the synthetic benchmark's LiFT (never trained on real "
            f"footage). A reverse query should find a reversed cut of the same video.\n")
        add("```bash\n" + r["index"]["command"] + "\n"
            f"lift-search eval retrieval --index {r['paths']['index']} --labels {r['paths']['library']}/labels.csv\n```\n")
        add(_table(["method", "dims", "probe (%)"] + _rhead(k),
                   [[m["name"], m["dims"], _pct(pm["accuracy"]), *_cells(m, k)]
                    for m, pm in zip(r["retrieval"]["methods"], r["probe"]["methods"])]) + "\n")
        add(_table(["LiFT via SearchEngine, motion weight"] + _rhead(k),
                   [[s["motion"], *_cells(s, k)] for s in r["retrieval"]["engine_sweep"]]) + "\n")
        add("With 4 test clips per group the probe moves in steps of 25 points per group; it is shown for "
            "completeness.\n")

    # -- timings
    add("## Timings\n")
    add(_table(["step", "seconds"], [[k_, v] for k_, v in data["timings"].items()]) + "\n")
    add("The 2 CPU cores were shared with other jobs throughout, so these are upper bounds. Indexing time is "
        "dominated by the LiFT training of `--lift fit` (here up to "
        f"{data['ablation'][0]['max_epochs']} epochs); extracting features, describing and storing take a few "
        "minutes.\n")

    # -- format
    add("## The labels CSV\n")
    add("```\n" + ev.CSV_HELP + "```\n")
    add("A video with several clips (longer than the index's `--max-single`, 6 s by default) contributes its first "
        "clip only, so every labelled video counts once. Before anything is computed the rows are checked against "
        "the protocol and the index, and every problem is reported in one message: missing columns, empty fields, "
        "unknown splits, a video listed twice, a file that does not exist, a file that is not in the index (or "
        "failed to index, with the reason), a group with one class or more than two, and, for the probe, a group "
        "without test rows or without train rows of both classes.\n")
    return "\n".join(out)


def findings(data: dict) -> list[str]:
    """Observations computed from the numbers, so the text cannot go stale."""
    abl = recipe_rows(data)
    out = []
    untrained = [r for r in data["ablation"] if r["name"].startswith("untrained")]
    for r in untrained:
        out.append("An untrained LiFT (random weights, d = %d) already gives %s: the symmetrised descriptor "
                   "negates its motion half under time reversal by construction, so any encoder that is not "
                   "blind to frame order separates a clip from its reversal; training makes that motion half "
                   "consistent between different clips of the same action." % (r["latent_dim"], "; ".join(
                       f"{'synthetic' if b == 'synth' else b}: probe sym {_pct(x['probe_sym'])} %, chiral sym "
                       f"{_pct(x['retrieval_sym']['chiral_top1'])} % (raw {_pct(x['retrieval_raw']['chiral_top1'])} %)"
                       for b, x in r["results"].items())))

    def avg(rows, bench, f):
        return float(np.mean([f(r["results"][bench]) for r in rows])) if rows else float("nan")

    for bench in [b for b in ("synth", "unseen") if b in data["benchmarks"]]:
        title = "synthetic" if bench == "synth" else "unseen"
        aug = [r for r in abl if r["latent_dim"] == MAIN_D and r["reverse_augment"]]
        noaug = [r for r in abl if r["latent_dim"] == MAIN_D and not r["reverse_augment"]]
        if aug and noaug:
            out.append(f"Reversal augmentation ({title}, d = {MAIN_D}, mean over seeds "
                       f"{sorted({r['seed'] for r in aug})}): probe sym {_pct(avg(aug, bench, lambda x: x['probe_sym']))} % "
                       f"with vs {_pct(avg(noaug, bench, lambda x: x['probe_sym']))} % without, probe raw "
                       f"{_pct(avg(aug, bench, lambda x: x['probe_raw']))} % vs {_pct(avg(noaug, bench, lambda x: x['probe_raw']))} %; "
                       f"chiral retrieval sym {_pct(avg(aug, bench, lambda x: x['retrieval_sym']['chiral_top1']))} % vs "
                       f"{_pct(avg(noaug, bench, lambda x: x['retrieval_sym']['chiral_top1']))} %, raw "
                       f"{_pct(avg(aug, bench, lambda x: x['retrieval_raw']['chiral_top1']))} % vs "
                       f"{_pct(avg(noaug, bench, lambda x: x['retrieval_raw']['chiral_top1']))} %; z_d cos "
                       f"{avg(aug, bench, lambda x: x['zd_cos_reversal']):+.2f} vs {avg(noaug, bench, lambda x: x['zd_cos_reversal']):+.2f}.")
        if aug:
            out.append(f"Symmetrised vs raw descriptor ({title}, d = {MAIN_D}, with augmentation): probe "
                       f"{_pct(avg(aug, bench, lambda x: x['probe_sym']))} % vs {_pct(avg(aug, bench, lambda x: x['probe_raw']))} %, "
                       f"chiral retrieval {_pct(avg(aug, bench, lambda x: x['retrieval_sym']['chiral_top1']))} % vs "
                       f"{_pct(avg(aug, bench, lambda x: x['retrieval_raw']['chiral_top1']))} %, both-right "
                       f"{_pct(avg(aug, bench, lambda x: x['retrieval_sym']['both_top1']))} % vs "
                       f"{_pct(avg(aug, bench, lambda x: x['retrieval_raw']['both_top1']))} %.")
            if len(aug) > 1:
                out.append(f"Seed spread ({title}, d = {MAIN_D}): probe sym "
                           f"{', '.join(_pct(r['results'][bench]['probe_sym']) for r in aug)} %, chiral sym "
                           f"{', '.join(_pct(r['results'][bench]['retrieval_sym']['chiral_top1']) for r in aug)} % "
                           f"(seeds {', '.join(str(r['seed']) for r in aug)}).")
        dims = sorted({r["latent_dim"] for r in abl if r["reverse_augment"]})
        if len(dims) > 1:
            out.append(f"Latent dimension ({title}, with augmentation): " + "; ".join(
                f"d = {d}: probe sym {_pct(avg([r for r in abl if r['latent_dim'] == d and r['reverse_augment']], bench, lambda x: x['probe_sym']))} %, "
                f"chiral sym {_pct(avg([r for r in abl if r['latent_dim'] == d and r['reverse_augment']], bench, lambda x: x['retrieval_sym']['chiral_top1']))} %"
                for d in dims) + ".")
    anchor = data["ablation"][0].get("anchor", 0.0)
    anchored = [r for r in abl if r["latent_dim"] == MAIN_D and r["reverse_augment"]]
    plain = [r for r in data["ablation"] if r.get("max_epochs") and r.get("train", "synth") == "synth"
             and r.get("anchor") == 0 and r["latent_dim"] == MAIN_D and r["reverse_augment"]
             and r["seed"] in {a["seed"] for a in anchored}]
    if anchor and anchored and plain:
        out.append(f"Chord anchor (weight {anchor:g}, the indexer's default; d = {MAIN_D}, with augmentation, mean "
                   f"over seeds {sorted({r['seed'] for r in anchored})}), with vs without (the paper's loss): " + "; ".join(
                       f"{'synthetic' if b == 'synth' else b}: probe sym {_pct(avg(anchored, b, lambda x: x['probe_sym']))} "
                       f"% vs {_pct(avg(plain, b, lambda x: x['probe_sym']))} %, chiral sym "
                       f"{_pct(avg(anchored, b, lambda x: x['retrieval_sym']['chiral_top1']))} % vs "
                       f"{_pct(avg(plain, b, lambda x: x['retrieval_sym']['chiral_top1']))} %"
                       for b in anchored[0]["results"]) + ". Without it, z_d's direction for one action changes "
                   "from scene to scene (the reconstruction does not care), which a probe trained on other scenes "
                   "cannot use; the anchor pulls z_d towards the frames' net change (last minus first) in the library's "
                   "principal chord directions, a code that is shared between scenes.")
    for aug in (True, False):  # library size: the same recipe fitted on the larger unseen library
        big = [r for r in data["ablation"] if r.get("train") == "unseen" and r["reverse_augment"] == aug]
        small = [r for r in abl if big and r["latent_dim"] == big[0]["latent_dim"]
                 and r["reverse_augment"] == aug and r["seed"] == big[0]["seed"]]
        if big and small and "unseen" in big[0]["results"]:
            b, s_ = big[0]["results"]["unseen"], small[0]["results"]["unseen"]
            out.append(f"Library size (unseen benchmark, d = {big[0]['latent_dim']}, "
                       f"{'with' if aug else 'without'} reversal augmentation, seed {big[0]['seed']}): fitted on "
                       f"its own clips instead of the synthetic benchmark's, probe sym {_pct(b['probe_sym'])} % vs "
                       f"{_pct(s_['probe_sym'])} %, probe raw {_pct(b['probe_raw'])} % vs {_pct(s_['probe_raw'])} %, "
                       f"chiral sym {_pct(b['retrieval_sym']['chiral_top1'])} % vs "
                       f"{_pct(s_['retrieval_sym']['chiral_top1'])} %.")
    sweep = {s["motion"]: s for s in data["benchmarks"]["synth"]["retrieval"]["engine_sweep"]}
    out.append(f"Motion weight (synthetic): w = 0 (appearance only, exactly time-symmetric) gives chiral "
               f"{_pct(sweep[0.0]['chiral_top1'])} % with both = {_pct(sweep[0.0]['both_top1'])} %; w = 1 (motion only) "
               f"{_pct(sweep[1.0]['chiral_top1'])} %; w = 0.5 {_pct(sweep[0.5]['chiral_top1'])} %. The arrow of time "
               f"lives in the dynamic half; the static half finds the scene, and the two together are needed.")
    return out


# ---- plots -------------------------------------------------------------------------------------
def plots(data: dict, docs: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    syn = data["benchmarks"]["synth"]
    probe, ret = syn["probe"], syn["retrieval"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    ms = probe["methods"]
    ax = axes[0]
    x = np.arange(len(ms))
    ax.bar(x - 0.2, [100 * m["accuracy"] for m in ms], 0.4, label="synthetic",
           color=["#888888" if m["kind"] == "baseline" else "#d1495b" for m in ms])
    if "unseen" in data["benchmarks"]:
        um = {m["key"]: m for m in data["benchmarks"]["unseen"]["probe"]["methods"]}
        ax.bar(x + 0.2, [100 * um[m["key"]]["accuracy"] for m in ms], 0.4, label="unseen", color="#cccccc",
               edgecolor=["#888888" if m["kind"] == "baseline" else "#d1495b" for m in ms], hatch="//")
    ax.set_xticks(x, [f"{m['key']}\n{m['dims']}-d" for m in ms], fontsize=8)
    ax.axhline(50, ls="--", c="k", lw=0.8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("CiA linear probe (mean over groups; chance 50 %)")
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    rows = ret["methods"] + [{**s, "key": f"engine\nw={s['motion']}"} for s in ret["engine_sweep"] if s["motion"] == 0.5]
    x = np.arange(len(rows))
    for j, (key, lab, c) in enumerate((("forward_top1", "fwd top-1", "#30638e"),
                                       ("reverse_top1", "rev top-1", "#edae49"),
                                       ("both_top1", "both right", "#d1495b"))):
        ax.bar(x + (j - 1) * 0.27, [100 * r[key] for r in rows], 0.27, label=lab, color=c)
    ax.set_xticks(x, [r["key"] for r in rows], fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_title("chiral retrieval, synthetic (exact search; LiFT engine)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(docs / "eval_methods.png", dpi=110)
    plt.close(fig)

    k = data["settings"]["k"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    sw = ret["engine_sweep"]
    w = [s["motion"] for s in sw]
    for key, lab, style in (("forward_top1", "fwd top-1", "o-"), ("reverse_top1", "rev top-1", "s-"),
                            ("both_top1", "both right", "^-"), (f"forward_p@{k}", f"fwd P@{k}", "o:"),
                            (f"reverse_p@{k}", f"rev P@{k}", "s:")):
        ax.plot(w, [100 * s[key] for s in sw], style, label=lab)
    ax.set_xlabel("motion weight w (0: appearance only, 1: motion only)")
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title("LiFT via SearchEngine.search_clip (synthetic)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(docs / "eval_motion_sweep.png", dpi=110)
    plt.close(fig)

    abl = recipe_rows(data)
    untrained = [r for r in data["ablation"] if r["name"].startswith("untrained")]
    benches = [b for b in ("synth", "unseen") if b in data["benchmarks"]]
    metrics = (("CiA probe accuracy", lambda x: x["probe_sym"], lambda x: x["probe_raw"]),
               ("chiral retrieval: fwd and rev top-1 both right", lambda x: x["retrieval_sym"]["both_top1"],
                lambda x: x["retrieval_raw"]["both_top1"]))
    fig, axes = plt.subplots(len(benches), 2, figsize=(12, 4 * len(benches)), squeeze=False)
    for bi, bench in enumerate(benches):
        for ax, (title, fs, fr) in zip(axes[bi], metrics):
            for f, lab, c in ((fs, "sym [m|dyn]", "#d1495b"), (fr, "raw (z_s, z_d)", "#30638e")):
                for aug, marker, ls in ((True, "o", "-"), (False, "x", "")):
                    rows = [r for r in abl if r["reverse_augment"] == aug]
                    ds = sorted({r["latent_dim"] for r in rows})
                    if not ds:
                        continue
                    ys = [100 * np.mean([f(r["results"][bench]) for r in rows if r["latent_dim"] == d]) for d in ds]
                    ax.plot(ds, ys, marker + ls, c=c, ms=8, label=f"{lab}, {'with' if aug else 'without'} reversal aug.")
                for r in untrained:
                    ax.axhline(100 * f(r["results"][bench]), c=c, ls=":", lw=1, label=f"{lab}, untrained (random init)")
            ax.axhline(50 if "probe" in title else 0, c="k", ls="--", lw=0.6)
            if "probe" in title:  # the bar LiFT has to reach
                best = best_baseline(data["benchmarks"][bench]["probe"])
                ax.axhline(100 * best["accuracy"], c="#2e8b57", ls="-.", lw=1,
                           label=f"best baseline: {best['name']} ({best['dims']}-d)")
            ax.set_xticks(LATENT_DIMS)
            ax.set_xlabel("latent dimension d")
            ax.set_ylim(-2, 105)
            ax.set_title(f"{title} ({'synthetic' if bench == 'synth' else bench})")
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(docs / "eval_ablation.png", dpi=110)
    plt.close(fig)


def with_text(data: dict) -> dict:
    """Add the numbers and sentences derived from the runs (headline, findings) that the docs show."""
    data["headline"] = headline(data)
    data["findings"] = findings(data)
    return data


def render_docs(data: dict, docs: Path) -> None:
    with_text(data)
    docs.mkdir(parents=True, exist_ok=True)
    plots(data, docs)
    (docs / "evaluation.md").write_text(markdown(data))
    log(f"wrote {docs / 'evaluation.md'} and its plots")


# ---- main --------------------------------------------------------------------------------------
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/lift-eval", help="folder for the libraries and indexes (reused)")
    ap.add_argument("--docs", default=str(DOCS), help="where evaluation.json/.md and the plots go")
    ap.add_argument("--scenes", type=int, default=4, help="scenes per group of the main benchmark")
    ap.add_argument("--variants", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unseen-scenes", type=int, default=12, help="scenes per group of the unseen set (0: skip)")
    ap.add_argument("--unseen-seed", type=int, default=1)
    ap.add_argument("-k", type=int, default=5)
    ap.add_argument("--dims", default=",".join(str(d) for d in LATENT_DIMS), help="latent dims of the ablation")
    ap.add_argument("--seeds", default="0,1,2", help="training seeds of the d=192 ablation rows")
    ap.add_argument("--ablation-epochs", type=int, default=100, help="max epochs of each ablation training")
    ap.add_argument("--index-epochs", type=int, help="pass --epochs N to `lift-search index --lift fit` "
                    "(default: the CLI's own default; for quick smoke runs)")
    ap.add_argument("--no-real", action="store_true", help="skip the real-video sanity check")
    ap.add_argument("--markdown-only", action="store_true", help="re-render the docs from DOCS/evaluation.json")
    a = ap.parse_args(argv)
    docs = Path(a.docs)
    if a.markdown_only:
        render_docs(json.loads((docs / "evaluation.json").read_text()), docs)
        return 0

    work = Path(a.work).absolute()
    work.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    timings: dict[str, float | None] = {}
    benches: dict[str, ev.Benchmark] = {}
    results: dict[str, dict] = {}

    # the main benchmark: a LiFT trained on it
    n = 10 * a.scenes * a.variants * 2
    lib, idx = work / f"lib{n}", work / f"idx{n}"
    info = render(lib, a.scenes, a.variants, a.seed)
    ix = index(lib, idx, ["--lift", "fit"] + (["--epochs", str(a.index_epochs)] if a.index_epochs else []))
    timings["synthetic: render (s)"] = info["render_seconds"]
    timings["synthetic: lift-search index --lift fit, total (s)"] = ix.get("seconds")
    timings["synthetic: of which LiFT training (s)"] = ix["lift_training"].get("seconds")
    tm = timing_without_training(lib, idx, work)
    timings["synthetic: index again with the trained LiFT file, no training (s)"] = tm["seconds"]
    for stage, sec in tm["stages"].items():
        timings[f"  stage {stage} (s)"] = round(sec, 1)
    log("evaluating the synthetic benchmark")
    res, benches["synth"] = evaluate(idx, lib / "labels.csv", a.k)
    results["synth"] = {"library": info, "index": ix, "timing_fixed_lift": tm,
                        "paths": {"library": str(lib), "index": str(idx)}, **res}
    timings["synthetic: eval chiral, 6 methods (s)"] = res["probe"]["seconds"]
    timings["synthetic: eval retrieval, 6 methods + 5-weight engine sweep (s)"] = res["retrieval"]["seconds"]
    lift_file = model_file(idx)

    if a.unseen_scenes:
        m = 10 * a.unseen_scenes * a.variants * 2
        ulib, uidx = work / f"unseen{m}-seed{a.unseen_seed}", work / f"unseen{m}-seed{a.unseen_seed}-idx"
        uinfo = render(ulib, a.unseen_scenes, a.variants, a.unseen_seed)
        uix = index(ulib, uidx, ["--lift", str(lift_file)])
        log("evaluating the unseen benchmark")
        res, benches["unseen"] = evaluate(uidx, ulib / "labels.csv", a.k)
        results["unseen"] = {"library": uinfo, "index": uix, "paths": {"library": str(ulib), "index": str(uidx)}, **res}
        timings[f"unseen: index {m} clips with the LiFT file (s)"] = uix.get("seconds")
        timings["unseen: eval chiral + retrieval (s)"] = round(res["probe"]["seconds"] + res["retrieval"]["seconds"], 1)

    if not a.no_real and REAL_VIDEOS.is_dir():
        rlib, ridx = work / "real", work / "real-idx"
        rinfo = real_library(rlib)
        rix = index(rlib, ridx, ["--lift", str(lift_file)])
        rb = ev.load_benchmark(ridx, rlib / "labels.csv")
        results["real"] = {"library": rinfo, "index": rix, "paths": {"library": str(rlib), "index": str(ridx)},
                           "probe": ev.run_probe(rb), "retrieval": ev.run_retrieval(rb, k=a.k)}
        timings[f"real: index {rinfo['clips']} clips with the LiFT file (s)"] = rix.get("seconds")

    seeds = [int(x) for x in a.seeds.split(",") if x.strip()]
    dims = [int(x) for x in a.dims.split(",") if x.strip()]
    A = FIT_ANCHOR  # the indexer's recipe: reversal augmentation and the chord anchor
    configs = [{"latent_dim": d, "reverse_augment": True, "seed": seeds[0], "anchor": A} for d in dims]
    configs += [{"latent_dim": MAIN_D, "reverse_augment": True, "seed": s, "anchor": A} for s in seeds[1:]]
    configs += [{"latent_dim": MAIN_D, "reverse_augment": False, "seed": s, "anchor": A} for s in seeds]
    # without the chord anchor: the paper's loss (with reversal augmentation)
    configs += [{"latent_dim": MAIN_D, "reverse_augment": True, "seed": s, "anchor": 0.0} for s in seeds]
    # library size: the same recipe fitted on the (3x larger) unseen library itself, as `--lift fit` would
    configs += [{"latent_dim": MAIN_D, "reverse_augment": True, "seed": seeds[0], "anchor": A, "train": "unseen"}]
    ablation = ablate(benches["synth"].engine.model, benches, training_sequences(idx), configs,
                      a.ablation_epochs, a.k, work / "ablation")
    timings["ablation: trainings, total (s)"] = round(sum(r["train_seconds"] for r in ablation[2:]), 1)
    timings["this script, this run (s)"] = round(time.perf_counter() - t_start, 1)

    # the paper's text has non-breaking spaces in places: compare with all whitespace as plain spaces
    paper_text = re.sub(r"\s", " ", PAPER.read_text()) if PAPER.is_file() else None
    table2 = []
    for line, cols in PAPER_TABLE2:
        if paper_text is not None and line not in paper_text:
            raise SystemExit(f"quoted row not found verbatim in {PAPER}: {line}")
        table2.append({"line": line, "columns": cols})
    import torch

    data = {"generated_by": "python bench/chiral_report.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "generated_at": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), torch {torch.__version__} "
                       f"with {torch.get_num_threads()} threads, no GPU",
            "settings": {"k": a.k, "ablation_epochs": a.ablation_epochs, "seeds": seeds, "dims": dims},
            "paths": {"work": str(work)}, "benchmarks": results, "ablation": ablation, "timings": timings,
            "paper_table2": table2}
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "evaluation.json").write_text(json.dumps(data, indent=1) + "\n")
    render_docs(data, docs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
