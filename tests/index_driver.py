"""A small indexer driver for the kill-and-resume tests (not a test module).

    python tests/index_driver.py serve

is a fork server: it imports torch and loads the backbone once, then reads one JSON job a line from
stdin ({"roots": [...], "index": DIR, "opts": {...}, "env": {...}, "out": FILE, "log": FILE}), forks a
child that runs `run_index` exactly as the CLI does, and answers {"pid": N} as soon as the child
runs, then {"status": "exit 0" | "signal SIGKILL" | ...} when the child is gone. The test SIGKILLs the
child at the moment it likes; every run starts from the same clean parent, without paying for imports.
The child writes its IndexReport (or the error) as JSON to "out" and its log to "log".
"""
from __future__ import annotations

import json
import os
import signal
import sys
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def options(spec: dict):
    from lift.config import IndexOptions, Sampling, TrainConfig

    spec = dict(spec)
    sampling = Sampling(frames_per_clip=spec.pop("frames_per_clip", 8))
    train = TrainConfig(latent_dim=32, epochs=spec.pop("epochs", 10), progress=False)
    base = dict(backbone="efficientnet-lite0", lift="fit", workers=1, device="cpu",
                progress=False, checkpoint_videos=3, batch_frames=24, sampling=sampling, train=train)
    return IndexOptions(**{**base, **spec})


def child(job: dict) -> int:
    import logging

    from indexer.pipeline import run_index

    fd = os.open(job["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", force=True)
    os.environ.update(job.get("env", {}))
    try:
        report = run_index(job["roots"], job["index"], options(job.get("opts", {})))
        result, code = {"ok": True, "report": report.to_dict()}, 0
    except Exception as e:
        traceback.print_exc()
        result, code = {"ok": False, "error": f"{type(e).__name__}: {e}"}, 1
    Path(job["out"]).write_text(json.dumps(result))
    return code


def serve() -> None:
    import torch

    torch.set_num_threads(1)  # no thread pool before fork; the same numerics in every run
    from indexer import pipeline
    from lift import load_backbone

    backbone = load_backbone("efficientnet-lite0", device="cpu")
    pipeline.load_backbone = lambda *a, **k: backbone  # shared by the forked runs (read-only)
    print(json.dumps({"ready": True}), flush=True)
    while line := sys.stdin.readline():
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = child(job)
            finally:
                os._exit(code)
        print(json.dumps({"pid": pid}), flush=True)
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # ended, but not reaped: the pid stays its own
        print(json.dumps({"ended": True}), flush=True)
        sys.stdin.readline()  # until the test has read that (and killed nothing else by that pid)
        _, status = os.waitpid(pid, 0)
        how = (f"signal {signal.Signals(os.WTERMSIG(status)).name}" if os.WIFSIGNALED(status)
               else f"exit {os.WEXITSTATUS(status)}")
        print(json.dumps({"status": how}), flush=True)


# ---- the test side -------------------------------------------------------------------------------
TEMP_PATTERNS = ("**/*.tmp", "**/*.tmp.npz", "**/incoming.safetensors", "**/*.part")


def make_library(root: Path, groups=("left_right", "up_down", "towards_away", "open_close", "rotate"),
                 crash: bool = True) -> Path:
    """len(groups) * 2 synthetic clips, plus an empty file, random bytes and (with the decoder hook on)
    a file whose decoder segfaults."""
    import shutil

    from indexer.synth import render_library

    clips = render_library(root, n_scenes_per_group=1, variants=1, groups=list(groups), seed=0, progress=False)
    (root / "labels.csv").unlink()
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.mp4").write_bytes(b"")
    (bad / "random.mp4").write_bytes(__import__("numpy").random.default_rng(0).bytes(20_000))
    if crash:
        shutil.copy(clips[0].path, bad / "x__segfault__.mp4")
    return root


def good_videos(root: Path, under: str = "") -> list[Path]:
    """The synthetic videos under `root` (or its folder `under`), whatever format synth writes: all
    files with a video extension outside bad/."""
    from indexer.scan import VIDEO_EXTENSIONS

    return sorted(p for p in (root / under).rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_EXTENSIONS
                  and "bad" not in p.relative_to(root).parts)


class Driver:
    """The fork server, seen from the test: `run` one indexing job, optionally SIGKILLed at `kill_at`
    seconds; returns (how it ended, its result dict or None, the test points it passed)."""

    def __init__(self, work: Path, prefix: tuple = ()):
        """`prefix`: a command to run the server under (e.g. setpriv, to take root's powers away)."""
        import subprocess

        self.work, self.n = Path(work), 0
        self.work.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen([*prefix, sys.executable, str(Path(__file__).resolve()), "serve"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        if not self._read():
            raise RuntimeError("the index driver did not start")

    def _read(self) -> dict | None:
        """One answer line, read unbuffered (so that select() on the pipe tells whether one is there)."""
        line = b""
        while not line.endswith(b"\n"):
            byte = self.proc.stdout.read(1)
            if not byte:
                return None
            line += byte
        return json.loads(line)

    def _send(self, text: str) -> None:
        self.proc.stdin.write(text.encode() + b"\n")

    def start(self, roots, index, points: str = "decoder", opts: dict | None = None) -> dict:
        """Start one run; returns its handle for `wait`."""
        self.n += 1
        out, trace = self.work / f"out{self.n}.json", self.work / f"trace{self.n}"
        job = {"roots": [str(r) for r in roots], "index": str(index), "opts": opts or {},
               "out": str(out), "log": str(self.work / f"log{self.n}"),
               "env": {"LIFT_SEARCH_TEST_POINTS": points, "LIFT_SEARCH_TEST_TRACE": str(trace)}}
        self._send(json.dumps(job))
        job["pid"] = self._read()["pid"]
        job["t0"] = __import__("time").monotonic()
        return job

    def finished(self, timeout: float = 0.0) -> bool:
        """Has the run started last ended (its status is waiting to be read)?"""
        import select

        return bool(select.select([self.proc.stdout], [], [], timeout)[0])

    def wait(self, job: dict, kill_at: float | None = None):
        """(how it ended, its result or None, the test points it passed, seconds); SIGKILLed at
        `kill_at` seconds after its start if it is still running then."""
        import time

        if kill_at is not None and not self.finished(max(0.0, job["t0"] + kill_at - time.monotonic())):
            os.kill(job["pid"], signal.SIGKILL)  # alive or a zombie: the server reaps it only on "reap"
        self._read()  # {"ended": true}
        self._send("reap")
        status = self._read()["status"]
        seconds = time.monotonic() - job["t0"]
        out, trace = Path(job["out"]), Path(job["env"]["LIFT_SEARCH_TEST_TRACE"])
        result = json.loads(out.read_text()) if out.exists() else None
        passed = trace.read_text().split() if trace.exists() else []
        return status, result, passed, seconds

    def run(self, roots, index, kill_at: float | None = None, points: str = "decoder", opts: dict | None = None):
        return self.wait(self.start(roots, index, points, opts), kill_at)

    def close(self) -> None:
        import subprocess

        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


RESULTS = Path(__file__).resolve().parent.parent / "bench" / "results" / "reliability.json"


def record(section: str, figures: dict, force: bool = False) -> None:
    """Merge `figures` into bench/results/reliability.json (slow tests always; others when
    LIFT_SEARCH_RECORD=1, so that a default test run leaves the tree alone); always print them."""
    print(json.dumps({section: figures}, indent=1, default=str))
    if not (force or os.environ.get("LIFT_SEARCH_RECORD")):
        return
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    RESULTS.write_text(json.dumps({**old, section: figures}, indent=1, default=str) + "\n")


def snapshot(index: Path) -> dict:
    """What an index holds, keyed so that two runs compare: (video path, start_s, end_s) -> vector, and
    every check of its soundness (FAISS ids == database ids, no duplicates, no temp files, one model)."""
    from sqlalchemy import select

    from db import Clip, Failure, Video, open_db
    from db.session import all_settings
    from indexer.library import IndexDir
    from indexer.store import VectorStore

    idx = IndexDir(index)
    sessions = open_db(idx.db)
    try:
        with sessions() as s:
            settings = all_settings(s)
            rows = s.execute(select(Clip.id, Video.path, Clip.start_s, Clip.end_s).join(Video)).all()
            failures = sorted(s.scalars(select(Failure.path)))
            videos = sorted(s.scalars(select(Video.path)))
    finally:
        sessions.kw["bind"].dispose()
    store = VectorStore.load(idx.vectors, settings["dim"])
    ids = store.ids()
    problems = []
    if len(ids) != len(set(ids.tolist())):
        problems.append("duplicate ids in FAISS")
    db_ids = {r[0] for r in rows}
    if set(ids.tolist()) != db_ids:
        problems.append(f"FAISS and database disagree: {len(db_ids - set(ids.tolist()))} missing vectors, "
                        f"{len(set(ids.tolist()) - db_ids)} orphans")
    if store.meta.get("lift_hash") != settings["lift"]["hash"]:
        problems.append("vectors made by another LiFT than the index's")
    temp = sorted(str(p.relative_to(idx.root)) for pattern in TEMP_PATTERNS for p in idx.root.glob(pattern))
    if temp:
        problems.append(f"temp files left: {temp}")
    models = sorted(p.name for p in idx.models.iterdir())
    if models != [settings["lift"]["hash"] + ".safetensors"]:
        problems.append(f"models folder holds {models}")
    keys = [(path, round(a, 6), round(b, 6)) for _, path, a, b in rows]
    if len(set(keys)) != len(keys):
        problems.append("duplicate clips in the database")
    vectors = dict(zip(keys, store.vectors([r[0] for r in rows]))) if rows else {}
    return {"vectors": vectors, "failures": failures, "videos": videos, "model": settings["lift"]["hash"],
            "problems": problems, "clip_ids": sorted(db_ids)}


def differences(ref: dict, got: dict, atol: float = 1e-5) -> list[str]:
    import numpy as np

    out = list(got["problems"])
    if set(ref["vectors"]) != set(got["vectors"]):
        out.append(f"clips differ: {len(set(ref['vectors']) - set(got['vectors']))} missing, "
                   f"{len(set(got['vectors']) - set(ref['vectors']))} extra")
    else:
        worst = max((float(np.abs(ref["vectors"][k] - got["vectors"][k]).max()) for k in ref["vectors"]), default=0)
        if worst > atol:
            out.append(f"vectors differ by up to {worst:.2e}")
    for key in ("failures", "videos", "model"):
        if ref[key] != got[key]:
            out.append(f"{key} differ: {ref[key]} != {got[key]}")
    return out


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    elif sys.argv[1:2] == ["run"]:  # one run in this process: run JOB_JSON
        sys.exit(child(json.loads(sys.argv[2])))
    else:
        sys.exit(__doc__)
