"""`run_index` with Ray (`--ray`): the same index as the local runner, whatever dies.

One local Ray cluster serves the whole test session (tests/conftest.py `ray_cluster`, 2 CPUs). The default set
compares a Ray run with a local one on a library of synthetic and corrupt files (one of which segfaults its
decoder); the slow set SIGKILLs the driver mid-run and runs it again, and kills Ray worker processes (a decoder
actor and the embedder actor) in the middle of a run. The tests that use the index driver ask for it before the
cluster, so that its process is started without the cluster's environment, as in a full run where other tests
started it: each run is given what joining the cluster needs (RAY_TEST_ENV).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from indexer.library import IndexDir
from indexer.pipeline import run_index
from tests.helpers import RAY_TEST_ENV, differences, good_videos, make_library, snapshot
from tests.index_driver import options

REPO = Path(__file__).resolve().parents[1]
GROUPS = ("left_right", "up_down", "open_close")  # 6 good videos (two checkpoints of 3) + 3 bad files


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    """The first good video (in the first decoder call, with the three bad files) decodes 3 s late: the videos
    after it reach the driver before it does."""
    root = make_library(tmp_path_factory.mktemp("ray") / "videos", groups=GROUPS)
    first = good_videos(root)[0]
    first.rename(first.with_name(f"{first.stem}__slow__{first.suffix}"))
    return root


@pytest.fixture(scope="module")
def reference(driver, library, tmp_path_factory) -> dict:
    """The local runner's index of the library (the index driver's options)."""
    index = tmp_path_factory.mktemp("ref") / "idx"
    status, result, _, _ = driver.run([library], index)
    assert status == "exit 0" and result["ok"], result
    snap = snapshot(index)
    assert not snap["problems"] and len(snap["vectors"]) == 6 and len(snap["failures"]) == 3
    modes = recorded(index)["read_modes"]
    assert len(modes) == 6 and set(modes.values()) <= {"seek", "sequential"}, modes
    return {"snapshot": snap, "failures": result["report"]["failures"], "recorded": recorded(index),
            "read_modes": result["report"]["read_modes"]}


def recorded(index: Path) -> dict:
    """What a run records beside the clips: each video's read mode (seek or sequential) and the backbone record."""
    from sqlalchemy import select

    from db import Video, get_setting, open_db
    from indexer.library import IndexDir

    sessions = open_db(IndexDir(index).db)
    try:
        with sessions() as s:
            modes = {Path(p).name: m for p, m in s.execute(select(Video.path, Video.read_mode))}
            return {"read_modes": modes, "backbone_record": get_setting(s, "backbone_record")}
    finally:
        sessions.kw["bind"].dispose()


def reasons(failures: list[dict]) -> dict:
    return {Path(f["path"]).name: f["reason"] for f in failures}


def test_ray_gives_the_local_runner_s_index(driver, ray_cluster, library, reference, db_url, tmp_path):
    """A driver process of its own joins the cluster by its address (so the workers get this checkout's code
    through the job's runtime_env) with the decoder hook on: x__segfault__.mp4 crashes its decoder. With
    db_url a PostgreSQL database (`--db`), the driver writes the metadata there: what a cluster's driver does;
    the index equals the local runner's SQLite one."""
    index, opts = tmp_path / "idx", {"ray": ray_cluster, "db": db_url}
    status, result, _, _ = driver.run([library], index, opts=opts, env=RAY_TEST_ENV)
    assert status == "exit 0" and result["ok"], result
    report = result["report"]
    assert IndexDir(index).db.backend == ("sqlite" if db_url is None else "postgresql")
    got = snapshot(index)
    assert differences(reference["snapshot"], got) == []  # clips, vectors to 1e-5, failures, LiFT
    assert got["clip_id_of"] == reference["snapshot"]["clip_id_of"]  # in the same order: videos come back as
    assert recorded(index) == reference["recorded"]                   # embedded, the driver orders them  # each video's read mode, the backbone record
    assert report["read_modes"] == reference["read_modes"] and sum(report["read_modes"].values()) == 6
    assert reasons(report["failures"]) == reasons(reference["failures"])  # the same reasons, word for word
    assert reasons(report["failures"])["x__segfault__.mp4"] == "decoder crashed (signal SIGSEGV)"
    assert report["backbone"]["ray"]["layout"] == "decode+embed" and report["stages"]["backbone"] > 0
    status, result, _, _ = driver.run([library], index, opts=opts, env=RAY_TEST_ENV)  # nothing new: nothing decoded
    assert status == "exit 0" and result["report"]["decoded"] == 0 and result["report"]["unchanged"] == 6
    assert differences(reference["snapshot"], snapshot(index)) == []


def test_actors_ask_for_cpus_a_node_has():
    """The decoding actors' CPUs: a share of the cluster's, whole above 1, never more than its largest node has
    (such an actor would never be scheduled: the run would wait for ever)."""
    from indexer.ray_runner import actor_cpus

    assert actor_cpus(2, 2, workers=2, embedders=2, split=False) == 1.0          # this machine: 2 actors of 1 CPU
    assert actor_cpus(2, 2, workers=1, embedders=1, split=False) == 2.0
    assert actor_cpus(2, 2, workers=4, embedders=4, split=False) == 0.5
    assert actor_cpus(24, 8, workers=2, embedders=2, split=False) == 8.0         # 3 nodes of 8: not 12
    assert actor_cpus(10, 10, workers=3, embedders=3, split=False) == 3.0        # whole numbers above 1
    assert actor_cpus(2, 2, workers=2, embedders=1, split=True) == 0.5           # decoders beside one embedder
    assert actor_cpus(64, 16, workers=8, embedders=4, split=True) == 1.0         # at most one each


def test_a_run_that_fails_while_ray_connects_leaves_ray(tmp_path):
    """With --ray the driver loads its backbone while it connects to Ray (`--ray auto` may be starting a cluster):
    a backbone that cannot be loaded fails the run as it does without Ray, and the run leaves Ray (a cluster it
    started stops)."""
    code = """
import sys, ray
from indexer.pipeline import run_index
from lift.config import IndexOptions
from lift.errors import BackboneError
try:
    run_index([sys.argv[1]], sys.argv[2], IndexOptions(backbone="efficientnet-lite0", backbone_weights=sys.argv[3],
                                                       ray="auto", ray_cpus=1, progress=False))
except BackboneError as e:
    print("refused:", e)
print("connected after the run:", ray.is_initialized())
"""
    (tmp_path / "videos").mkdir()
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "videos"), str(tmp_path / "idx"),
                          str(tmp_path / "missing.pth")], capture_output=True, text=True, cwd=REPO,
                         env={**os.environ, **RAY_TEST_ENV}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "refused: backbone weights file not found" in out.stdout, out.stdout
    assert "connected after the run: False" in out.stdout


def test_a_ray_worker_killed_while_caching_features_leaves_no_temp_file(library, reference, ray_cluster, tmp_path,
                                                                        monkeypatch):
    """A Ray embedder killed in the middle of writing a video's features leaves its temp file in the index folder
    (Ray restarts the actor and retries the batch, which writes the features anew): the driver removes it when the
    stream ends. Here the Ray stage is the local one plus such a leftover, so that the moment of the kill is exact
    (the slow test below kills a real actor, mid-write or not as it happens)."""
    import indexer.ray_runner
    from indexer.pipeline import extract_features

    index = tmp_path / "idx"
    leftover = IndexDir(index).features / "0123456789abcdef.npz.5eed5eed.tmp"

    def stage_with_a_killed_writer(todo, *args):
        ready = extract_features(todo, *args)
        leftover.write_bytes(b"half a file")  # what np.savez had written when the actor was killed
        return ready

    monkeypatch.setattr(indexer.ray_runner, "extract_features_ray", stage_with_a_killed_writer)
    monkeypatch.setenv("LIFT_SEARCH_TEST_POINTS", "decoder")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the reference's driver runs (LiFT training differs by ~1e-6 with other counts)
    try:
        run_index([library], index, options({"ray": "auto"}))
    finally:
        torch.set_num_threads(threads)
    assert not leftover.exists()
    assert differences(reference["snapshot"], snapshot(index)) == []


@pytest.mark.slow
def test_a_killed_driver_resumes_without_decoding_anything_twice(driver, ray_cluster, library, reference, tmp_path):
    from db import Failure, open_db

    index, opts = tmp_path / "idx", {"ray": ray_cluster}  # a driver process of its own, joining the cluster
    status, result, passed, _ = driver.run([library], index, points="decoder,feature-cached=kill@3", opts=opts,
                                         env=RAY_TEST_ENV)
    assert status == "signal SIGKILL" and passed[-1] == "feature-cached", (status, passed, result)
    deadline = time.monotonic() + 60  # Ray kills the dead driver's actors: one may cache a video until it does
    while any("ray::MapWorker(" in cmd for _, cmd in processes().values()) and time.monotonic() < deadline:
        time.sleep(0.1)
    cached = len(list(IndexDir(index).features.glob("*.npz")))
    sessions = open_db(IndexDir(index).db)
    with sessions() as s:
        failed = s.query(Failure).count()
    sessions.kw["bind"].dispose()
    assert cached >= 3
    status, result, _, _ = driver.run([library], index, opts=opts, env=RAY_TEST_ENV)
    assert status == "exit 0" and result["ok"], result
    assert result["report"]["decoded"] == 9 - cached - failed  # what was cached or recorded is not decoded again
    assert differences(reference["snapshot"], snapshot(index)) == []


def processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process."""
    out = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                ppid = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            out[int(d.name)] = (ppid, cmd)
    return out


def ray_workers(stage: str, decoding: bool) -> list[int]:
    """Pids of the Ray worker processes of a Ray Data stage (their process title names the class); ``decoding``:
    only those whose DecodePool process runs (so their tasks are flowing)."""
    procs = processes()
    actors = [pid for pid, (_, cmd) in procs.items() if cmd.startswith("ray::") and f"(MapBatches({stage}))" in cmd]
    if decoding:
        actors = [a for a in actors if any(pp == a and "_worker_entry" in cmd for pp, cmd in procs.values())]
    return actors


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["decode+embed", "split"])
def test_ray_workers_killed_mid_run_cost_nothing(layout, ray_cluster, library, reference, tmp_path, monkeypatch):
    """An actor is SIGKILLed as soon as it decodes, then an actor that embeds once features are cached: Ray
    restarts them and retries their tasks; the index is the local runner's, with no failure but the 3 bad files.
    In both layouts of indexer/ray_runner.py: the CPU nodes' (actors that decode and embed) and the GPU nodes'
    (decoders -> embedders), here on CPU actors."""
    import indexer.ray_runner

    monkeypatch.setattr(indexer.ray_runner, "SPLIT_ON_CPU", layout == "split")
    monkeypatch.setenv("LIFT_SEARCH_TEST_POINTS", "decoder")
    index, killed = tmp_path / "idx", []
    kills = ([("DecodeActor", "decoding"), ("EmbedActor", "cached")] if layout == "split" else
             [("DecodeEmbedActor", "decoding"), ("DecodeEmbedActor", "cached")])

    def killer():  # in turn: an actor as soon as it decodes, one that embeds once a video's features are cached
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and len(killed) < len(kills):
            stage, when = kills[len(killed)]
            ready = when == "decoding" or list((index / "features").glob("*.npz"))
            if ready and (pids := ray_workers(stage, decoding=when == "decoding")):
                os.kill(pids[0], signal.SIGKILL)
                killed.append((stage, when))
            time.sleep(0.02)

    t = threading.Thread(target=killer, daemon=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the reference's driver runs (LiFT training differs by ~1e-6 with other counts)
    try:
        t.start()
        report = run_index([library], index, options({"ray": "auto"}))  # this process's Ray session, as it is
    finally:
        torch.set_num_threads(threads)
        t.join()
    assert killed == kills and report.backbone["ray"]["layout"] == layout, killed
    assert differences(reference["snapshot"], snapshot(index)) == []
    assert reasons(report.failures) == reasons(reference["failures"])
