"""What `--ray` costs on one machine: the local pipeline against the Ray runner, on the same library, in one run.

    python bench/ray_overhead.py              # 175 videos, 3 rounds: ~10 min on a 2-core machine
    python bench/ray_overhead.py --videos 35  # the mixed library once: where Ray's fixed start-up dominates
    python bench/ray_overhead.py --videos 700 --rounds 2   # ~20 min
    python bench/ray_overhead.py --quick      # 2 rounds of a smaller library

Each round indexes the library three ways, into fresh index folders, with the same fixed LiFT file (describe
only, no training). The library: index_throughput.py's mixed library (35 videos: real footage up to 1080p and
synthetic clips), its videos over and over up to ``--videos`` (default 175), each copy byte-distinct so that
each is decoded and embedded. A library, not a handful of clips, is what --ray is for; its fixed start-up
(seconds: worker processes, actors) is what the smaller runs show, in the "after first features" column.
The ways:

- local:       ``run_index`` as `lift-search index` runs it;
- ray (cold):  ``run_index(..., ray="auto")`` in a process without Ray: the run starts a local cluster
               (``ray_cpus`` = this machine's CPUs), runs, and shuts it down: what `--ray auto` costs a user;
- ray (warm):  the same on a cluster already running, which has run a Ray Data job before (a cluster's first
               Ray Data job creates its four detached helper actors, once), as a user's running cluster is:
               what a run costs on a cluster that is up, actors (decoding, the backbone:
               indexer.ray_runner) still started per run.

The ways alternate within each round, each of them first, second and third in turn (the machine is shared and
noisy); the overhead is the median over rounds of the per-round ratio ray / local, for the whole run and for the
run after its first features (its rate, start-up aside). Every Ray run's index is checked against the local one (same clips, vectors to 1e-5). Prints a table; writes JSON (default bench/results/ray_overhead.json).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# the runs of one machine's bench join its own local cluster: no token to hand around (Ray >= 2.5x enables
# token authentication for clusters that ray.init starts; a real cluster keeps its own setting)
ENV = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
sys.path[:0] = [str(REPO), str(REPO / "bench")]

import index_throughput as it  # noqa: E402  (the library and the fixed LiFT)

log = logging.getLogger("bench")
WAYS = ("local", "ray (cold)", "ray (warm)")  # in this order in every round
DEFAULT_VIDEOS = 175  # the mixed library 5 times over


def one_run(way: str, library: Path, index: Path, lift: Path, workers: int, address: str | None = None) -> dict:
    """One run in a fresh process (so that "cold" really starts without Ray, and no run warms the next)."""
    code = f"""
import json, sys, time, logging
sys.path[:0] = [{str(REPO)!r}]
logging.basicConfig(level=logging.WARNING)
from indexer.pipeline import run_index
from lift.config import IndexOptions
way = {way!r}
if way == "ray (warm)":
    import ray
    ray.init(address={address!r}, logging_level=logging.WARNING)  # the bench's running cluster
t0 = time.perf_counter()
r = run_index([{str(library)!r}], {str(index)!r}, IndexOptions(backbone="{it.BACKBONE}", lift={str(lift)!r}, device="cpu",
              workers={workers}, progress=False, ray=None if way == "local" else "auto", pooling="global"))
print(json.dumps({{"seconds": time.perf_counter() - t0, "videos": r.new, "failed": r.failed, "clips": r.clips_added,
                  "stages": r.stages}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV)
    if out.returncode:
        raise RuntimeError(f"{way} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def larger_library(videos: Path, root: Path, n: int) -> Path:
    """``n`` videos under ``root``: copy k of each of ``videos``' files in turn, in folder copy-k (reused if
    there); copies are byte-distinct (index_throughput._copy_distinct), so each is decoded and embedded."""
    files = sorted(p for p in videos.rglob("*") if p.is_file() and p.suffix != ".csv")
    if n < len(files):
        raise SystemExit(f"--videos {n}: the library has {len(files)} videos already")
    for i in range(n):
        k, j = divmod(i, len(files))
        src = files[j]
        dst = root / f"copy-{k}" / src.relative_to(videos)
        if not dst.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            it._copy_distinct(src, dst, k)
    return root


class Cluster:
    """A local Ray cluster held by a process of ours for the "warm" runs (they join it by its address), which
    first runs a small Ray Data job, as a running cluster has: Ray Data creates its helper actors (stats, usage,
    autoscaling coordinator, actor locations: detached) at a cluster's first job, ~5 CPU-s on 2 cores. Closing
    its stdin shuts it down (no `ray stop`, which would stop every Ray on a shared machine). Its workers
    run at the bench's priority, as those of the cluster a cold run starts (worker_niceness 0: see
    indexer.ray_runner.connect), so that local and Ray runs compete alike with other jobs on the machine."""

    def __init__(self, cpus: int):
        code = ("import logging, sys, ray, ray.data; ray.init(num_cpus=int(sys.argv[1]), include_dashboard=False, "
                "logging_level=logging.WARNING, _system_config={'worker_niceness': 0}); "
                "ray.data.DataContext.get_current().enable_progress_bars = False; "
                "ray.data.range(4).map_batches(Same, compute=ray.data.ActorPoolStrategy(size=1)).materialize(); "
                "print(ray.get_runtime_context().gcs_address, flush=True); sys.stdin.read(); ray.shutdown()")
        code = "class Same:\n    def __call__(self, batch):\n        return batch\n" + code
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(cpus)], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=ENV)
        self.address = self.proc.stdout.readline().strip()
        if not self.address:
            raise RuntimeError("the Ray cluster did not start")

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(120)


def after_start(run: dict) -> float:
    """A run's seconds once its first features are cached: the rate at which it indexes, start-up aside (the
    stage "first features (start-up)" counts from the run's start: the driver's backbone, Ray's connection or
    cluster, the actors or decoder processes, the first videos)."""
    return run["seconds"] - run["stages"]["first features (start-up)"]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="the smaller library, 2 rounds")
    ap.add_argument("--rounds", type=int, help="rounds of (local, ray cold, ray warm); default 3, 2 with --quick")
    ap.add_argument("--library", type=Path, help="index this folder instead of building one")
    ap.add_argument("--videos", type=int, help=f"the mixed library's videos in turn, each copy byte-distinct (so "
                    f"none is a cached duplicate), up to this many videos (default {DEFAULT_VIDEOS}; 35: the mixed "
                    "library once; not with --quick)")
    ap.add_argument("--workers", type=int, default=2, help="decoder processes (local) / decoder actors (Ray)")
    ap.add_argument("--work", type=Path, help="scratch folder (default: a temporary one, removed)")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "ray_overhead.json")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    rounds = args.rounds or (2 if args.quick else 3)
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="lift-ray-bench-")
    work = Path(args.work or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    from tests.helpers import differences, snapshot

    try:
        if args.library:
            library, n_videos = args.library.resolve(), None
        else:
            name = "library-quick" if args.quick else "library"
            manifest = it.build_library(work / name, args.quick, [it.SHARED_VIDEOS, it.FOOTAGE_CACHE])
            library, n_videos = work / name / "videos", len(manifest)
            videos = None if args.quick else args.videos or DEFAULT_VIDEOS
            if videos and videos != n_videos:
                library, n_videos = larger_library(library, work / f"{name}-{videos}", videos), videos
        lift = work / "lift-lite0.safetensors"
        if not lift.exists():
            it.make_lift(lift, it.lite0_model(None, pretrained=False).num_features)
        one_run("local", library, work / "warmup", lift, args.workers)  # ONNX export, page cache
        shutil.rmtree(work / "warmup")
        runs = {w: [] for w in WAYS}
        for r in range(rounds):
            ref, order = None, WAYS[r % 3:] + WAYS[:r % 3]  # each way first, second and third in turn
            for way in order:
                index = work / f"idx-{r}-{WAYS.index(way)}"
                cluster = Cluster(os.cpu_count()) if way == "ray (warm)" else None  # up only for its run, so
                try:  # that a cold run starts its own
                    res = one_run(way, library, index, lift, args.workers, cluster and cluster.address)
                finally:
                    if cluster is not None:
                        cluster.close()
                snap = snapshot(index)
                if ref is None:
                    ref = snap
                else:
                    res["differences"] = differences(ref, snap)
                    assert not res["differences"], res["differences"]
                shutil.rmtree(index)
                runs[way].append(res)
                log.info("round %d %s: %.1f s", r + 1, way, res["seconds"])
    finally:
        if tmp is not None:
            tmp.cleanup()

    local = [x["seconds"] for x in runs["local"]]
    local_after = [after_start(x) for x in runs["local"]]
    summary = {}
    for way in WAYS:
        secs = [x["seconds"] for x in runs[way]]
        ratios = [s / l for s, l in zip(secs, local)]
        stages = {k: statistics.median(x["stages"].get(k, 0.0) for x in runs[way])
                  for k in sorted({k for x in runs[way] for k in x["stages"]})}
        after = [after_start(x) for x in runs[way]]
        summary[way] = {"seconds_median": statistics.median(secs), "seconds": secs,
                        "ratio_to_local_median": statistics.median(ratios), "ratios": ratios,
                        "after_start_median": statistics.median(after),
                        "after_start_ratio_median": statistics.median(a / b for a, b in zip(after, local_after)),
                        "stages_median": stages}
    result = {"benchmark": "ray_overhead", "created": time.strftime("%Y-%m-%d %H:%M:%S"),
              "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                          "load_avg_at_end": os.getloadavg()},
              "settings": {"rounds": rounds, "workers": args.workers, "quick": args.quick, "ray_cpus": os.cpu_count()},
              "library": {"videos": n_videos or runs["local"][0]["videos"], "clips": runs["local"][0]["clips"]},
              "summary": summary, "runs": runs, "wall_seconds": time.perf_counter() - started}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float))
    print_report(result)
    print(f"\nJSON: {args.out}")
    return result


def print_report(r: dict) -> None:
    print(f"\nLibrary: {r['library']['videos']} videos, {r['library']['clips']} clips; {r['machine']['cpus']} CPUs; "
          f"{r['settings']['rounds']} rounds; load average at the end {r['machine']['load_avg_at_end']}\n")
    rows = [[way, f"{v['seconds_median']:.1f}", " ".join(f"{s:.1f}" for s in v["seconds"]),
             f"{100 * (v['ratio_to_local_median'] - 1):+.0f}%", f"{v['stages_median']['first features (start-up)']:.1f}",
             f"{v['after_start_median']:.1f}",
             f"{100 * (v['after_start_ratio_median'] - 1):+.0f}%"] for way, v in r["summary"].items()]
    print(it._table(rows, ["run", "seconds (median)", "per round", "vs local", "first features after",
                           "after first features", "vs local"]))
    print("(vs local: median over rounds of the ratio to the round's local run; first features after: the start-up, "
          "seconds from the run's start until the first video's features were cached (the driver's backbone, for "
          "Ray the connection or the cluster's start and the actors); after first features: the run less its "
          "start-up, i.e. the rate at which it indexes)")
    print()
    keys = sorted({k for v in r["summary"].values() for k in v["stages_median"]})
    rows = [[k, *(f"{r['summary'][w]['stages_median'].get(k, 0.0):.1f}" for w in r["summary"])] for k in keys]
    print(it._table(rows, ["stage (median s)", *r["summary"]]))


if __name__ == "__main__":
    main()
