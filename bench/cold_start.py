"""Cold start: how long each command takes as a whole new process, from exec to exit.

    python bench/cold_start.py --index /tmp/demo/index              # `lift-search demo --out /tmp/demo` builds it
    python bench/cold_start.py --index IDX --runs 9 --video-runs 2

Each command runs as `python -m search.cli ...` (what the `lift-search` script does), `--runs` times,
interleaved (command A, B, C, A, B, C, ...) because the machine may be shared; the table shows the
median and the range. `serve` is timed from exec to the first `GET /health` that answers 200. The
floor, `python -c "import numpy, faiss, sqlalchemy.orm"`, is what any command that opens an index
pays for its libraries; each command's "over floor" is its median minus the floor's. One extra run of
each with `-X importtime` tells which heavy libraries it imports. Prints a table; writes JSON (default
bench/results/cold_start.json).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "timm", "torchvision", "onnxruntime", "cv2", "fastapi", "streamlit", "sklearn", "matplotlib")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def run_once(argv: list[str], importtime: bool = False) -> tuple[float, str]:
    """(seconds from exec to exit, stderr)."""
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), *argv]
    t = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - t
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({r.returncode}):\n{r.stderr[-2000:]}")
    return seconds, r.stderr


def serve_once(index: str, importtime: bool = False) -> tuple[float, str]:
    """(seconds from exec to the first 200 from /health, stderr)."""
    port = free_port()
    cmd = [sys.executable, *(["-X", "importtime"] if importtime else []), "-m", "search.cli", "serve",
           "--index", index, "--port", str(port)]
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"serve exited ({proc.returncode}):\n{proc.stderr.read()[-2000:]}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    if r.status == 200:
                        seconds = time.perf_counter() - t
                        break
            except OSError:
                time.sleep(0.02)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    return seconds, err


def heavy_imports(stderr: str) -> list[str]:
    """The HEAVY top-level packages an `-X importtime` run imported."""
    names = {line.split("|")[-1].strip() for line in stderr.splitlines() if line.startswith("import time:")}
    return [m for m in HEAVY if m in names]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--index", required=True, help="an index folder (the demo's: lift-search demo --out DIR)")
    p.add_argument("--runs", type=int, default=7, help="runs of each model-free command (default %(default)s)")
    p.add_argument("--video-runs", type=int, default=2,
                   help="runs of `search VIDEO` (loads torch and the backbone; default %(default)s; 0: skip)")
    p.add_argument("--out", default=str(REPO / "bench" / "results" / "cold_start.json"))
    a = p.parse_args()

    sys.path.insert(0, str(REPO))
    from search import SearchEngine

    engine = SearchEngine.open(a.index)
    clip = engine.clip_page(0, 1)[0]
    n_clips = engine.count()
    cli = ["-m", "search.cli"]
    commands = {
        "floor: import numpy, faiss, sqlalchemy.orm": (["-c", "import numpy, faiss, sqlalchemy.orm"], a.runs),
        "python -c pass": (["-c", "pass"], a.runs),
        "lift-search --help": ([*cli, "--help"], a.runs),
        f"lift-search search --clip {clip.clip_id}": ([*cli, "search", "--index", a.index, "--clip", str(clip.clip_id)],
                                                      a.runs),
        "lift-search status": ([*cli, "status", "--index", a.index], a.runs),
        "lift-search serve (to /health OK)": (None, a.runs),
        "lift-search search VIDEO": ([*cli, "search", "--index", a.index, clip.video_path], a.video_runs),
    }
    times: dict[str, list[float]] = {name: [] for name in commands}
    for i in range(max(n for _, n in commands.values())):
        for name, (argv, n) in commands.items():
            if i < n:
                times[name].append(serve_once(a.index)[0] if argv is None else run_once(argv)[0])
        print(f"round {i + 1} done", file=sys.stderr)
    imports = {name: heavy_imports(serve_once(a.index, True)[1] if argv is None else run_once(argv, True)[1])
               for name, (argv, n) in commands.items() if n}

    floor = statistics.median(times["floor: import numpy, faiss, sqlalchemy.orm"])
    rows = []
    for name, ts in times.items():
        if not ts:
            continue
        med = statistics.median(ts)
        rows.append({"command": name, "runs": len(ts), "median_s": round(med, 3), "min_s": round(min(ts), 3),
                     "max_s": round(max(ts), 3), "over_floor_s": round(med - floor, 3),
                     "heavy_imports": imports.get(name, [])})
    load = os.getloadavg()
    res = {"index": a.index, "clips": n_clips, "cpus": os.cpu_count(), "loadavg_1_5_15": [round(x, 2) for x in load],
           "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"), "rows": rows}

    print(f"\n{n_clips}-clip index {a.index}; {os.cpu_count()} CPUs, load average {load[0]:.1f}\n")
    print("| command | median s | min-max s | over floor s | heavy imports |")
    print("|---|---:|---:|---:|---|")
    for r in rows:
        print(f"| `{r['command']}` | {r['median_s']:.2f} | {r['min_s']:.2f}-{r['max_s']:.2f} | "
              f"{r['over_floor_s']:+.2f} | {', '.join(r['heavy_imports']) or '-'} |")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"\nwrote {a.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
