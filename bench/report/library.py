"""Steps 1-2: render a synthetic chiral library and index it with the `lift-search` CLI (each step stamped
in its folder, so a rerun resumes)."""
from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
from pathlib import Path

log = logging.getLogger(__name__)


def render(lib: Path, scenes: int, variants: int, seed: int) -> dict:
    """The synthetic library (indexer.synth, fixed seed) with its labels.csv; rendered once."""
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


def lift_setting(idx: Path) -> dict:
    """The index's `lift` setting (its LiFT's config, hash and provenance)."""
    from db import get_setting, open_db

    with open_db(idx / "index.db")() as s:
        return get_setting(s, "lift") or {}


def _without_provenance(lift: dict) -> dict:
    return {k: v for k, v in lift.items() if k != "provenance"}


def _run_index(cmd: list[str]) -> dict:
    """Run `lift-search index ... --json`; its report, timed."""
    log.info("running %s", " ".join(cmd))
    t0 = time.perf_counter()
    run = subprocess.run([*cmd, "--json"], capture_output=True, text=True)
    if run.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {run.returncode}):\n{run.stderr[-3000:]}")
    report = json.loads(run.stdout)
    return {"wall_seconds": round(time.perf_counter() - t0, 1), "seconds": round(report["seconds"], 1),
            "stages": report["stages"], "clips": report["clips_total"], "failed": report["failed"],
            "failures": report["failures"], "lift": _without_provenance(report["lift"]),
            "lift_training": report["lift"].get("provenance", {})}


def index(lib: Path, idx: Path, extra: list[str]) -> dict:
    """`lift-search index LIB --index IDX --backbone efficientnet-lite0 EXTRA`, timed (once: stamped)."""
    stamp = idx / "index_report.json"
    if stamp.is_file():
        return json.loads(stamp.read_text())
    cmd = ["lift-search", "index", str(lib), "--index", str(idx), "--backbone", "efficientnet-lite0", *extra]
    info = {"command": " ".join(cmd)}
    if (idx / "index.db").is_file():  # built before this script stamped it: keep it, record what it says
        lift = lift_setting(idx)
        info.update({"seconds": None, "stages": {}, "note": "index found already built; its LiFT's training "
                     "time is from the model's provenance", "lift": _without_provenance(lift),
                     "lift_training": lift.get("provenance", {})})
    else:
        info.update(_run_index(cmd))
    stamp.write_text(json.dumps(info, indent=1))
    return info


def model_file(idx: Path) -> Path:
    """The LiFT file of an index."""
    from indexer.library import IndexDir

    return IndexDir(idx).model_path(lift_setting(idx)["hash"])


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
