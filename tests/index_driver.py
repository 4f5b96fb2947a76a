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
    """The runs' options: tests.helpers.small_options, smaller still (8 frames a clip, 3 videos a checkpoint),
    updated by `spec` (plus "epochs", "frames_per_clip" and "merge_factor"). The vector store is searched
    through an IVF index (forced: the library is tiny) and merges every 2 segments, so that the runs write
    segments, merge them and train the IVF index as large libraries do."""
    from lift.config import Sampling, StoreConfig, TrainConfig
    from tests.helpers import small_options

    spec = dict(spec)
    sampling = Sampling(frames_per_clip=spec.pop("frames_per_clip", 8))
    train = TrainConfig(latent_dim=32, epochs=spec.pop("epochs", 10), progress=False)
    store = StoreConfig(merge_factor=spec.pop("merge_factor", 2))
    return small_options(**{"checkpoint_videos": 3, "batch_frames": 24, "sampling": sampling, "train": train,
                            "ann": "ivf", "store": store, **spec})


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

    def start(self, roots, index, points: str = "decoder", opts: dict | None = None, env: dict | None = None) -> dict:
        """Start one run (``env``: more environment variables for it); returns its handle for `wait`."""
        self.n += 1
        out, trace = self.work / f"out{self.n}.json", self.work / f"trace{self.n}"
        job = {"roots": [str(r) for r in roots], "index": str(index), "opts": opts or {},
               "out": str(out), "log": str(self.work / f"log{self.n}"),
               "env": {**(env or {}), "LIFT_SEARCH_TEST_POINTS": points, "LIFT_SEARCH_TEST_TRACE": str(trace)}}
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

    def run(self, roots, index, kill_at: float | None = None, points: str = "decoder", opts: dict | None = None,
            env: dict | None = None):
        return self.wait(self.start(roots, index, points, opts, env), kill_at)

    def close(self) -> None:
        import subprocess

        self.proc.stdin.close()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    elif sys.argv[1:2] == ["run"]:  # one run in this process: run JOB_JSON
        sys.exit(child(json.loads(sys.argv[2])))
    else:
        sys.exit(__doc__)
