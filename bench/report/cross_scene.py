"""Across scenes: is a clip's best match *from another scene* the same action, and its reverse query's the
opposite one? The levers that raise it, each on its own, with seeds.

    python -m bench.report.cross_scene --work /tmp/lift-xscene            # everything (resumes what WORK holds)
    python -m bench.report.cross_scene --work /tmp/lift-xscene --recipes pooled --seeds 0,1

Steps (each stamped in WORK, so a rerun resumes; results in bench/results/cross_scene.json and .png, the
markdown tables printed for docs/benchmarks.md):
 1. render two chiral libraries (indexer.synth, 10 groups x 6 scenes x 2 variants x 2 directions): "fit"
    (seed 0) and "unseen" (seed 1: scenes no LiFT here ever sees);
 2. their frame features, decoded and embedded as the indexer does (efficientnet-lite0, "global+cells"
    pooling, whose first 1280 dims are the "global" pooling's features exactly);
 3. per recipe (RECIPES) and seed: a LiFT fitted with lift.train.fit on "fit" as `--lift fit` fits one
    (lift.train.lift_config), scored on both libraries with the engine's formula in numpy: cross-scene
    forward / reverse top-1 per motion weight (per group too), same-scene chiral top-1, the CiA probe on the
    fixed split (per group) and its mean over random splits by scene;
 4. descriptors that learn nothing (chord, first + last, mean pooling; the total feature flow), likewise.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from lift.config import MOTION_WEIGHT, TrainConfig
from search import evaluate as ev

from .format import pct, table
from .library import render

RESULTS = Path(__file__).resolve().parents[1] / "results"
LIBRARIES = {"fit": 0, "unseen": 1}      # library -> indexer.synth seed
SCENES, VARIANTS = 6, 2
WEIGHTS = (0.5, 0.75, 1.0)
SPLITS = 30                              # random splits by scene for the probe's mean
# recipe -> (pooling, TrainConfig fields over lift-search's defaults), each lever set explicitly
RECIPES: dict[str, tuple[str, dict]] = {
    "pooled": ("global", {"motion_pin": 0.0}),
    "pooled + pinned motion": ("global", {"motion_pin": 1.0}),
    "cells (flow)": ("global+cells", {"motion_pin": 0.0}),
    "cells (flow) + pinned motion": ("global+cells", {"motion_pin": 1.0}),  # the default recipe
}
RECIPE_TEXT = {
    "pooled": "the default recipe before issue 18: pooled features (1280-d), chord anchor (weight 10)",
    "pooled + pinned motion": "pooled, plus the pinned motion path (`--motion-pin 1`: z_d += sqrt(d) unit(chord @ "
                              "basis))",
    "cells (flow)": "`--pooling global+cells`: LiFT also reads the feature flow of a 14 x 14 map of the frame "
                    "(its total joins the anchor's target)",
    "cells (flow) + pinned motion": "`--pooling global+cells --motion-pin 1`: the default recipe",
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


@dataclass
class Library:
    """A rendered library's frame features (N, T, D) in the order of its labels, and the labels."""

    seqs: np.ndarray
    group: np.ndarray
    cls: np.ndarray
    split: np.ndarray
    scene: np.ndarray


# ---- 1-2: libraries and their features -------------------------------------------------------------------
def features(lib: Path, out: Path) -> Library:
    """Step 2: each labelled video's first clip, (N, T, D) "global+cells" features (cached in `out`)."""
    labels = ev.read_labels(lib / "labels.csv")
    if not out.is_file():
        import torch

        from indexer.decode import DecodePool
        from lift.backbones import load_backbone
        from lift.config import Sampling

        log(f"frame features of {lib} ({len(labels)} videos)")
        backbone = load_backbone("efficientnet-lite0", pooling="global+cells")
        seqs = {}
        with torch.inference_mode(), DecodePool(workers=1, timeout_s=120, short_side=backbone.preprocess.resize,
                                                sampling=Sampling()) as pool:
            for d in pool.imap([lab.video for lab in labels]):
                if d.error or not d.plans:
                    raise SystemExit(f"cannot decode {d.path}: {d.error}")
                seqs[d.path] = backbone.encode_frames(d.clip_frames(d.plans[0]))
        tmp = out.with_suffix(".tmp.npy")
        np.save(tmp, np.stack([seqs[lab.video] for lab in labels]).astype(np.float32))
        tmp.rename(out)
    return Library(np.load(out, mmap_mode="r"), *(np.array([getattr(lab, k) for lab in labels])
                                                 for k in ("group", "cls", "split", "scene")))


def pooled_part(seqs: np.ndarray) -> np.ndarray:
    from lift.backbones import LITE0_CELLS

    return np.asarray(seqs[..., :seqs.shape[-1] - LITE0_CELLS.dim])


# ---- 3-4: scores -----------------------------------------------------------------------------------------
def split_by_scene(lib: Library, rng: np.random.Generator, share: float = 0.3) -> np.ndarray:
    """In each group, round(share x its scenes) of them (at least one) test, the rest train."""
    test = set()
    for grp in sorted(set(lib.group.tolist())):
        scenes = sorted(set(lib.scene[lib.group == grp].tolist()))
        test |= set(rng.choice(scenes, max(1, round(share * len(scenes))), replace=False).tolist())
    return np.where(np.isin(lib.scene, list(test)), "test", "train")


def probes(desc: np.ndarray, lib: Library) -> dict:
    """The CiA probe on the fixed split (per group), and its mean over SPLITS random splits by scene."""
    rng = np.random.default_rng(0)
    accs = [ev.probe_accuracy(desc, lib.group, lib.cls, split_by_scene(lib, rng))["accuracy"] for _ in range(SPLITS)]
    fixed = ev.probe_accuracy(desc, lib.group, lib.cls, lib.split)
    return {"probe": fixed["accuracy"], "probe_per_group": fixed["per_group"], "probe_splits": float(np.mean(accs)),
            "probe_splits_se": float(np.std(accs, ddof=1) / np.sqrt(SPLITS))}


def _both_ways(cross: dict) -> dict:
    return {"cross_forward": cross["forward_top1"], "cross_reverse": cross["reverse_top1"],
            "cross_per_group": {g: (r["forward_top1"] + r["reverse_top1"]) / 2 for g, r in cross["per_group"].items()}}


def score_lift(desc: np.ndarray, lib: Library) -> dict:
    """[m | dyn] descriptors scored with the engine's formula, per motion weight; and the probes."""
    weights = {}
    for w in sorted({*WEIGHTS, MOTION_WEIGHT}):
        same = ev.lift_retrieval(desc, lib.group, lib.cls, 5, w)
        weights[str(w)] = {**_both_ways(ev.lift_retrieval(desc, lib.group, lib.cls, 5, w, lib.scene)),
                           "same_chiral": same["chiral_top1"], "same_both": same["both_top1"],
                           "same_per_group": {g: r["chiral_top1"] for g, r in same["per_group"].items()}}
    return {"weights": weights, **probes(desc, lib)}


def score_plain(desc: np.ndarray, desc_rev: np.ndarray, lib: Library) -> dict:
    """A descriptor that learns nothing, by exact cosine search (reverse query: the reversed frames')."""
    same = ev.exact_retrieval(desc, desc_rev, lib.group, lib.cls, 5)
    return {"dims": int(desc.shape[1]), **_both_ways(ev.exact_retrieval(desc, desc_rev, lib.group, lib.cls, 5,
                                                                       lib.scene)),
            "same_chiral": same["chiral_top1"], **probes(desc, lib)}


def baselines(lib: Library) -> dict:
    """The evaluation's baselines on the pooled features, and the total feature flow of the cells."""
    from lift.backbones import LITE0_CELLS
    from lift.model import LiFT, LiftConfig

    flow = LiFT(LiftConfig(feature_dim=lib.seqs.shape[-1], flow_grid=LITE0_CELLS.grid,
                           flow_channels=LITE0_CELLS.channels))  # FeatureFlow has no parameters
    x = pooled_part(lib.seqs)
    fns = {m.name: m.fn for m in ev.BASELINES if m.key in ("chord", "first_last", "mean")}
    out = {name: score_plain(fn(x), fn(np.ascontiguousarray(x[:, ::-1])), lib) for name, fn in fns.items()}
    total = ev.total_flow(flow, np.asarray(lib.seqs))
    out["total feature flow (cells)"] = score_plain(total, -total, lib)  # exactly negated by reversal (tested)
    return out


def fit_recipe(name: str, seed: int, seqs: np.ndarray):
    """A LiFT fitted on `seqs` by recipe `name`, as `lift-search index --lift fit` with its options fits one."""
    from lift.backbones import LITE0_CELLS
    from lift.train import fit, lift_config

    pooling, fields = RECIPES[name]
    tc = replace(TrainConfig(progress=False, seed=seed), **fields)
    x = np.asarray(seqs) if pooling == "global+cells" else pooled_part(seqs)
    t0 = time.perf_counter()
    model, hist = fit(x, lift_config(x.shape[-1], tc, LITE0_CELLS if pooling == "global+cells" else None), tc)
    return model, {"epochs_run": len(hist["val_loss"]), "train_seconds": round(time.perf_counter() - t0, 1)}


def lever(name: str, seed: int, libs: dict[str, Library], stamp: Path) -> dict:
    """Step 3 for one recipe and seed (stamped)."""
    if not stamp.is_file():
        log(f"lever {name!r}, seed {seed}: fitting on {len(libs['fit'].seqs)} clips")
        model, info = fit_recipe(name, seed, libs["fit"].seqs)
        pooling = RECIPES[name][0]
        res = {lib: score_lift(ev.lift_sym(model, np.asarray(data.seqs) if pooling == "global+cells"
                                           else pooled_part(data.seqs)), data) for lib, data in libs.items()}
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(json.dumps({"recipe": name, "seed": seed, "pooling": pooling, "train": RECIPES[name][1],
                                     "dims": model.descriptor_dim, **info, "results": res}, indent=1))
    return json.loads(stamp.read_text())


# ---- the summary, tables and figure --------------------------------------------------------------------
def summary(data: dict) -> dict:
    """recipe -> library -> column -> [value per seed]."""
    out = {}
    for name in data["recipes"]:
        rows = [r for r in data["levers"] if r["recipe"] == name]
        out[name] = {}
        for lib in LIBRARIES:
            res = [r["results"][lib] for r in rows]
            col = {"seeds": [r["seed"] for r in rows],
                   "same": [r["weights"][str(MOTION_WEIGHT)]["same_chiral"] for r in res],
                   "same_1.0": [r["weights"]["1.0"]["same_chiral"] for r in res],
                   "probe": [r["probe"] for r in res], "probe_splits": [r["probe_splits"] for r in res],
                   "probe_zero_groups": [sum(v == 0 for v in r["probe_per_group"].values()) for r in res]}
            for w in WEIGHTS:
                col[f"fwd_{w}"] = [r["weights"][str(w)]["cross_forward"] for r in res]
                col[f"rev_{w}"] = [r["weights"][str(w)]["cross_reverse"] for r in res]
            out[name][lib] = col
    return out


def _ms(values: list[float]) -> str:
    """Mean (and standard deviation over seeds), in percent."""
    v = np.array(values, float)
    return "-" if not len(v) else pct(v.mean()) + (f" ± {100 * v.std(ddof=1):.1f}" if len(v) > 1 else "")


def markdown(data: dict) -> str:
    s = summary(data)
    lines = []
    for lib in LIBRARIES:
        head = ["recipe", "seeds"] + [f"cross fwd / rev, w {w}" for w in WEIGHTS] + [
            f"same-scene chiral, w {MOTION_WEIGHT} / 1", "probe fixed / splits", "probe groups at 0 %"]
        rows = []
        for name in data["recipes"]:
            c = s[name][lib]
            rows.append([name, ",".join(map(str, c["seeds"]))]
                        + [f"{_ms(c[f'fwd_{w}'])} / {_ms(c[f'rev_{w}'])}" for w in WEIGHTS]
                        + [f"{_ms(c['same'])} / {_ms(c['same_1.0'])}", f"{_ms(c['probe'])} / {_ms(c['probe_splits'])}",
                           max(c["probe_zero_groups"])])
        lines += [f"**{lib}** ({data['libraries'][lib]['clips']} clips, {data['libraries'][lib]['scenes']} scenes):",
                  "", table(head, rows), ""]
    head = ["descriptor (learns nothing)", "dims"] + [f"{lib}: cross fwd / rev, same, probe splits"
                                                      for lib in LIBRARIES]
    rows = [[name, data["baselines"]["fit"][name]["dims"]]
            + [f"{pct(b['cross_forward'])} / {pct(b['cross_reverse'])}, {pct(b['same_chiral'])}, "
               f"{pct(b['probe_splits'])}" for b in (data["baselines"][lib][name] for lib in LIBRARIES)]
            for name in data["baselines"]["fit"]]
    lines += [table(head, rows), ""]
    groups = sorted(data["levers"][0]["results"]["fit"]["probe_per_group"])
    head = ["group"] + [f"{lib}: {name}" for lib in LIBRARIES for name in data["recipes"]]
    rows = [[g] + [pct(np.mean([r["results"][lib]["weights"]["1.0"]["cross_per_group"][g]
                                for r in data["levers"] if r["recipe"] == name]))
                   for lib in LIBRARIES for name in data["recipes"]] for g in groups]
    lines += ["Per group, cross-scene top-1 (mean of fwd and rev) at motion weight 1, mean over seeds:", "",
              table(head, rows)]
    return "\n".join(lines)


def figure(data: dict, path: Path) -> None:
    """Cross-scene top-1 (mean of fwd and rev) per recipe and motion weight, mean and spread over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = summary(data)
    fig, axes = plt.subplots(1, len(LIBRARIES), figsize=(12, 4.2), sharey=True)
    width = 0.8 / len(data["recipes"])
    for ax, lib in zip(axes, LIBRARIES):
        for i, name in enumerate(data["recipes"]):
            c = s[name][lib]
            vals = [100 * (np.array(c[f"fwd_{w}"]) + np.array(c[f"rev_{w}"])) / 2 for w in WEIGHTS]
            x = np.arange(len(WEIGHTS)) + (i - (len(data["recipes"]) - 1) / 2) * width
            ax.bar(x, [v.mean() for v in vals], width, yerr=[v.std(ddof=1) if len(v) > 1 else 0 for v in vals],
                   label=f"{name} ({len(c['seeds'])} seeds)", capsize=3)
        ax.axhline(100 * data["libraries"][lib]["chance"], color="#888888", ls=":", lw=1, label="chance")
        ax.axhline(50, color="#d1495b", ls="--", lw=1, label="goal (issue 18)")
        ax.set_xticks(np.arange(len(WEIGHTS)), [f"motion weight {w}" for w in WEIGHTS])
        ax.set_title(f"{lib}: best hit from another scene is the same action")
        ax.set_ylim(0, 100)
    axes[0].set_ylabel("cross-scene top-1, mean of fwd and rev (%)")
    axes[0].legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---- the run -------------------------------------------------------------------------------------------
def run(work: Path, recipes: list[str], seeds: list[int] | None, out: Path) -> dict:
    """Steps 1-4; seeds None: the levers' stamps that WORK holds, whatever their seeds (nothing is fitted)."""
    import torch

    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    libs, info = {}, {}
    for lib, seed in LIBRARIES.items():
        params = render(work / lib, SCENES, VARIANTS, seed)
        libs[lib] = features(work / lib, work / f"features_{lib}.npy")
        info[lib] = {"seed": seed, "command": params["command"], "clips": len(libs[lib].group),
                     "scenes": len(set(libs[lib].scene.tolist())),
                     "chance": 1 / len({(g, c) for g, c in zip(libs[lib].group, libs[lib].cls)})}
    data = {"libraries": info, "recipes": recipes, "recipe_text": {r: RECIPE_TEXT[r] for r in recipes},
            "baselines": {lib: baselines(b) for lib, b in libs.items()}}
    if seeds is None:
        stamps = [json.loads(f.read_text()) for f in sorted((work / "levers").glob("*.json"))]
        data["levers"] = sorted((r for r in stamps if r["recipe"] in recipes),
                                key=lambda r: (recipes.index(r["recipe"]), r["seed"]))
        data["recipes"] = [r for r in recipes if any(x["recipe"] == r for x in data["levers"])]
    else:
        data["levers"] = [lever(name, seed, libs, work / "levers" / f"{name.replace(' ', '_')}_seed{seed}.json")
                          for name in recipes for seed in seeds]
    data.update(command=f"python -m bench.report.cross_scene --work {work} --recipes '{','.join(recipes)}' "
                        + ("--stamped-only" if seeds is None else f"--seeds {','.join(map(str, seeds))}"),
                date=time.strftime("%Y-%m-%d %H:%M"), seconds=round(time.perf_counter() - t0, 1),
                machine=f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), torch {torch.__version__}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "cross_scene.json").write_text(json.dumps(data, indent=1) + "\n")
    figure(data, out / "cross_scene.png")
    return data


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=Path("/tmp/lift-xscene"), help="libraries, features, stamps")
    ap.add_argument("--recipes", default=",".join(RECIPES), help="comma-separated, of: " + "; ".join(RECIPES))
    ap.add_argument("--seeds", default="0,1,2", help="comma-separated seeds of each recipe (default %(default)s)")
    ap.add_argument("--stamped-only", action="store_true",
                    help="fit nothing: report the levers' stamps WORK holds (whatever their seeds)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="where cross_scene.json and .png go")
    a = ap.parse_args(argv)
    recipes = [r.strip() for r in a.recipes.split(",")]
    if unknown := [r for r in recipes if r not in RECIPES]:
        ap.error(f"unknown recipe(s) {unknown}; known: {list(RECIPES)}")
    seeds = None if a.stamped_only else [int(s) for s in a.seeds.split(",")]
    print(markdown(run(a.work, recipes, seeds, a.out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
