"""Reproduce docs/evaluation.md: the chiral benchmark, the CiA probe, chiral retrieval and the ablations.

    python bench/chiral_report.py --work /tmp/lift-eval          # everything (resumes what WORK holds)
    python bench/chiral_report.py --markdown-only                # re-render docs/ from docs/evaluation.json

Steps (each result lands in DOCS/evaluation.json; the markdown tables and the plots are made from it):
 1. render the synthetic chiral library (indexer.synth, fixed seed) with its labels.csv;
 2. index it: `lift-search index LIB --index IDX --backbone efficientnet-lite0 --lift fit`;
 3. `eval chiral` and `eval retrieval` on it (library calls of search/evaluate.py, same code as the CLI);
    the same for an unseen library indexed with that LiFT file;
 4. ablations from the index's cached frame features (no decoding): LiFTs retrained with lift.train.fit at
    other latent sizes, without reversal augmentation, without the chord anchor and with other seeds; each
    scored with both descriptors (the paper's concat(z_s, z_d) and our symmetrised [m | dyn]);
 5. the sanity check on real videos (--real-videos): each cut at four start/end points, each cut also
    written time-reversed (indexer.synth.write_reversed), indexed with the synthetic library's LiFT.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lift.config import TrainConfig
from search import evaluate as ev

from .ablation import LATENT_DIMS, ablate, ablation_configs, training_sequences
from .evaluation import evaluate
from .findings import with_text
from .library import index, model_file, render, timing_without_training
from .markdown import markdown
from .paper import DEFAULT_PAPER, table2
from .plots import plots
from .real import DEFAULT_REAL_VIDEOS, real_library

log = logging.getLogger(__name__)

DOCS = Path(__file__).resolve().parents[2] / "docs"


@dataclass
class Run:
    """What this run has measured so far: each benchmark's results (for the JSON) and loaded benchmark (for
    the ablation), and the timings table."""
    work: Path
    k: int
    results: dict[str, dict] = field(default_factory=dict)
    benches: dict[str, ev.Benchmark] = field(default_factory=dict)
    timings: dict[str, float | None] = field(default_factory=dict)


def synthetic_benchmark(run: Run, a: argparse.Namespace) -> Path:
    """Steps 1-3 on the main benchmark, whose LiFT the indexer trains on it; its index folder."""
    n = 10 * a.scenes * a.variants * 2
    lib, idx = run.work / f"lib{n}", run.work / f"idx{n}"
    info = render(lib, a.scenes, a.variants, a.seed)
    ix = index(lib, idx, ["--lift", "fit"] + (["--epochs", str(a.index_epochs)] if a.index_epochs else []))
    t = run.timings
    t["synthetic: render (s)"] = info["render_seconds"]
    t["synthetic: lift-search index --lift fit, total (s)"] = ix.get("seconds")
    t["synthetic: of which LiFT training (s)"] = ix["lift_training"].get("seconds")
    tm = timing_without_training(lib, idx, run.work)
    t["synthetic: index again with the trained LiFT file, no training (s)"] = tm["seconds"]
    for stage, sec in tm["stages"].items():
        t[f"  stage {stage} (s)"] = round(sec, 1)
    log.info("evaluating the synthetic benchmark")
    res, run.benches["synth"] = evaluate(idx, lib / "labels.csv", run.k)
    run.results["synth"] = {"library": info, "index": ix, "timing_fixed_lift": tm,
                            "paths": {"library": str(lib), "index": str(idx)}, **res}
    t["synthetic: eval chiral, 6 methods (s)"] = res["probe"]["seconds"]
    t["synthetic: eval retrieval, 6 methods + 5-weight engine sweep (s)"] = res["retrieval"]["seconds"]
    return idx


def unseen_benchmark(run: Run, a: argparse.Namespace, lift_file: Path) -> None:
    """Steps 1-3 on new scenes, indexed with the main benchmark's LiFT file."""
    m = 10 * a.unseen_scenes * a.variants * 2
    lib, idx = run.work / f"unseen{m}-seed{a.unseen_seed}", run.work / f"unseen{m}-seed{a.unseen_seed}-idx"
    info = render(lib, a.unseen_scenes, a.variants, a.unseen_seed)
    ix = index(lib, idx, ["--lift", str(lift_file)])
    log.info("evaluating the unseen benchmark")
    res, run.benches["unseen"] = evaluate(idx, lib / "labels.csv", run.k)
    run.results["unseen"] = {"library": info, "index": ix, "paths": {"library": str(lib), "index": str(idx)}, **res}
    run.timings[f"unseen: index {m} clips with the LiFT file (s)"] = ix.get("seconds")
    run.timings["unseen: eval chiral + retrieval (s)"] = round(res["probe"]["seconds"] + res["retrieval"]["seconds"], 1)


def real_check(run: Run, videos: Path, lift_file: Path) -> None:
    """Step 5: the cut library of the real videos, indexed with the main benchmark's LiFT file."""
    lib, idx = run.work / "real", run.work / "real-idx"
    info = real_library(videos, lib)
    ix = index(lib, idx, ["--lift", str(lift_file)])
    rb = ev.load_benchmark(idx, lib / "labels.csv")
    run.results["real"] = {"library": info, "index": ix,
                           "paths": {"library": str(lib), "index": str(idx), "videos": str(videos)},
                           "probe": ev.run_probe(rb), "retrieval": ev.run_retrieval(rb, k=run.k)}
    run.timings[f"real: index {info['clips']} clips with the LiFT file (s)"] = ix.get("seconds")


def ablation(run: Run, a: argparse.Namespace, idx: Path) -> list[dict]:
    """Step 4, on the benchmarks loaded so far; the recipe is the indexer's (its LiFT's size, TrainConfig.anchor)."""
    index_model = run.benches["synth"].engine.model
    configs = ablation_configs(_ints(a.dims), _ints(a.seeds), index_model.config.latent_dim, TrainConfig.anchor)
    rows = ablate(index_model, run.benches, training_sequences(idx), configs, a.ablation_epochs, run.k,
                  run.work / "ablation")
    run.timings["ablation: trainings, total (s)"] = round(sum(r["train_seconds"] for r in rows[2:]), 1)
    return rows


def _ints(csv: str) -> list[int]:
    return [int(x) for x in csv.split(",") if x.strip()]


def _machine() -> str:
    import torch

    return (f"{platform.machine()}, {os.cpu_count()} CPU cores (shared), torch {torch.__version__} "
            f"with {torch.get_num_threads()} threads, no GPU")


def run_report(a: argparse.Namespace, argv: list[str]) -> dict:
    """Every step; the report's data (what docs/evaluation.json holds)."""
    t_start = time.perf_counter()
    run = Run(work=Path(a.work).absolute(), k=a.k)
    run.work.mkdir(parents=True, exist_ok=True)
    idx = synthetic_benchmark(run, a)
    lift_file = model_file(idx)
    if a.unseen_scenes:
        unseen_benchmark(run, a, lift_file)
    if not a.no_real:
        if Path(a.real_videos).is_dir():
            real_check(run, Path(a.real_videos), lift_file)
        else:
            log.warning("%s is not a folder: no real-footage check (--real-videos DIR, or --no-real)",
                        a.real_videos)
    rows = ablation(run, a, idx)
    run.timings["this script, this run (s)"] = round(time.perf_counter() - t_start, 1)
    return {"generated_by": "python bench/chiral_report.py " + " ".join(argv),
            "generated_at": time.strftime("%Y-%m-%d %H:%M"), "machine": _machine(),
            "settings": {"k": a.k, "ablation_epochs": a.ablation_epochs, "seeds": _ints(a.seeds),
                         "dims": _ints(a.dims)},
            "paths": {"work": str(run.work)}, "benchmarks": run.results, "ablation": rows, "timings": run.timings,
            "paper_table2": table2(Path(a.paper))}


def render_docs(data: dict, docs: Path) -> None:
    """evaluation.md and its plots in `docs`, from the report's data."""
    with_text(data)
    docs.mkdir(parents=True, exist_ok=True)
    plots(data, docs)
    (docs / "evaluation.md").write_text(markdown(data))
    log.info("wrote %s and its plots", docs / "evaluation.md")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="chiral_report.py", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", metavar="DIR", default=str(Path(tempfile.gettempdir()) / "lift-eval"),
                    help="folder for the libraries, indexes and ablation stamps, reused by a rerun "
                         "(default: %(default)s)")
    ap.add_argument("--docs", metavar="DIR", default=str(DOCS), help="where evaluation.json/.md and the plots go "
                    "(default: this checkout's docs/)")
    ap.add_argument("--real-videos", default=str(DEFAULT_REAL_VIDEOS), metavar="DIR",
                    help="folder of real .mp4/.webm videos for the sanity check (default: %(default)s; "
                         "skipped with a warning when it is not there)")
    ap.add_argument("--paper", default=str(DEFAULT_PAPER), metavar="FILE",
                    help="the CiA paper as plain text, to check the quoted Table 2 rows against "
                         "(default: %(default)s; unchecked with a warning when it is not there)")
    ap.add_argument("--scenes", type=int, metavar="N", default=4,
                    help="scenes per group of the main benchmark (default: %(default)s)")
    ap.add_argument("--variants", type=int, metavar="N", default=2,
                    help="variants per scene of both synthetic libraries (default: %(default)s)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the main benchmark (default: %(default)s)")
    ap.add_argument("--unseen-scenes", type=int, metavar="N", default=12,
                    help="scenes per group of the unseen set, 0 to skip it (default: %(default)s)")
    ap.add_argument("--unseen-seed", type=int, metavar="SEED", default=1,
                    help="seed of the unseen set (default: %(default)s)")
    ap.add_argument("-k", type=int, default=5, help="depth of the retrieval's precision P@k (default: %(default)s)")
    ap.add_argument("--dims", metavar="D,D,...", default=",".join(str(d) for d in LATENT_DIMS),
                    help="latent dims of the ablation (default: %(default)s)")
    ap.add_argument("--seeds", metavar="S,S,...", default="0,1,2",
                    help="training seeds of the ablation rows at the index's d (default: %(default)s)")
    ap.add_argument("--ablation-epochs", type=int, metavar="N", default=100,
                    help="max epochs of each ablation training (default: %(default)s)")
    ap.add_argument("--index-epochs", type=int, metavar="N", help="pass --epochs N to `lift-search index --lift "
                    "fit` (default: the CLI's own default; for quick smoke runs)")
    ap.add_argument("--no-real", action="store_true", help="skip the real-video sanity check")
    ap.add_argument("--markdown-only", action="store_true", help="re-render the docs from DOCS/evaluation.json")
    return ap


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="[%(asctime)s] %(message)s", datefmt="%H:%M:%S")  # others: warnings only
    logging.getLogger("bench.report").setLevel(logging.INFO)  # this report's progress
    argv = sys.argv[1:] if argv is None else argv
    a = build_parser().parse_args(argv)
    docs = Path(a.docs)
    if a.markdown_only:
        render_docs(json.loads((docs / "evaluation.json").read_text()), docs)
        return 0
    data = run_report(a, argv)
    docs.mkdir(parents=True, exist_ok=True)
    (docs / "evaluation.json").write_text(json.dumps(data, indent=1) + "\n")
    render_docs(data, docs)
    return 0
