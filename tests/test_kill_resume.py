"""Kill the indexer anywhere (SIGKILL), run it again, and get exactly the index of an uninterrupted run.

Slow (CI): random moments across whole runs, the narrow moments by name (indexer.testpoint), kills of
the rerun itself (mid-repair), and kills of an incremental run (additions, a change, a deletion). The
runs write the vector store as they do at scale: a segment per checkpoint, merges every 2 segments
(compaction), a segment rewritten without its deleted rows, an IVF index trained and its codes written
(tests/index_driver.py forces both on this tiny library). Each trial ends with an uninterrupted run;
its index must equal the reference run's: the same clips, the same vectors (to 1e-5), the same LiFT
weights (training is deterministic), vector ids == database ids, every vector file listed by the
manifest and matching its checksum, no duplicates, no temp files, one model file. Figures go to
bench/results/reliability.json. It runs with the metadata in SQLite and, where a server is given
(tests/pg_server.sh), in PostgreSQL (`db_url`).
"""
from __future__ import annotations

import random
import shutil
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.helpers import copy_index, differences, good_videos, make_library, record, snapshot

pytestmark = pytest.mark.slow

N_RANDOM = 20  # random kill moments across first runs (at least)

# the last test point passed -> the phase a kill interrupted
PHASES = {None: "start-up, scan, repair", "start": "start-up, scan, repair", "reconciled-db": "start-up, scan, repair",
          "removed-vectors": "removing deleted videos", "decode-start": "decoding + backbone",
          "feature-cached": "decoding + backbone", "fit-start": "LiFT fit", "model-saved": "LiFT model commit",
          "db-committed": "between the DB commit and the vector commit",
          "vectors-write": "segment write (half a file)", "vectors-saved": "after a vector commit (manifest written)",
          "compact-write": "merging segments (half a file)", "compacted": "merge committed, old files not yet deleted",
          "ann-write": "IVF index write (half a file)", "done": "after the run (exiting)"}

# kills by name: (the points spec of the first run, of the rerun or None)
TARGETED = [
    ("decode-start=kill+0.3,decoder", None),
    ("feature-cached=kill@4,decoder", None),
    ("fit-start=kill+{fit},decoder", None),  # {fit}: 40 % into the reference run's training
    ("model-saved=kill,decoder", None),
    ("db-committed=kill,decoder", None),
    ("db-committed=kill@3,decoder", "reconciled-db=kill,decoder"),  # and the repair itself killed
    ("vectors-write=kill,decoder", None),
    ("vectors-write=kill@2,decoder", "vectors-write=kill,decoder"),
    ("vectors-saved=kill@2,decoder", None),
    ("ann-write=kill,decoder", None),
    ("compact-write=kill,decoder", "compact-write=kill,decoder"),  # a merge killed, and its rerun's too
    ("compacted=kill,decoder", None),
]


def phase(passed: list[str]) -> str:
    return PHASES.get(passed[-1] if passed else None, passed[-1] if passed else "start-up")


def test_kill_anywhere_and_resume(driver, db_url, tmp_path):
    rng = random.Random(20240601)
    library = make_library(tmp_path / "videos")
    t0 = time.perf_counter()

    status, result, _, full_s = driver.run([library], tmp_path / "ref", opts={"db": db_url})
    assert status == "exit 0" and result["ok"], result
    fit_s = max(0.02, 0.4 * result["report"]["lift"]["provenance"]["seconds"])
    ref = snapshot(tmp_path / "ref")
    assert not ref["problems"] and len(ref["vectors"]) == 10 and len(ref["failures"]) == 3
    # training is deterministic: a second uninterrupted run gives the same weights, bit for bit
    status, _, _, _ = driver.run([library], tmp_path / "ref2", opts={"db": db_url})
    assert status == "exit 0" and not differences(ref, snapshot(tmp_path / "ref2"), atol=0.0)

    kills, phases, trials, runs = 0, Counter(), [], 0

    def trial(name: str, index: Path, plan: list, reference: dict, roots=(library,), opts=None):
        """`plan`: per run, (kill_at seconds or None, points spec); then one run without a kill."""
        nonlocal kills, runs
        opts = {"db": db_url, **(opts or {})}  # (a new index's --db; an existing one's may repeat it)
        log = []
        for kill_at, points in plan:
            status, result, passed, _ = driver.run(roots, index, kill_at=kill_at, points=points, opts=opts)
            runs += 1
            if status == "signal SIGKILL":
                kills += 1
                phases[phase(passed)] += 1
                log.append(phase(passed))
            else:
                assert status == "exit 0" and result["ok"], (name, status, result)
                log.append("finished")
        status, result, _, _ = driver.run(roots, index, opts=opts)  # one uninterrupted run finishes
        runs += 1
        assert status == "exit 0" and result["ok"], (name, status, result)
        diff = differences(reference, snapshot(index))
        trials.append({"trial": name, "kills": log, "ok": not diff})
        assert not diff, (name, log, diff)

    # random moments in a first run from scratch; now and then the rerun is killed too
    i = 0
    while kills < N_RANDOM:
        plan = [(rng.uniform(0.02, full_s), "decoder")]
        if rng.random() < 0.3:
            plan.append((rng.uniform(0.02, full_s / 2), "decoder"))
        trial(f"random-{i}", tmp_path / f"r{i}", plan, ref)
        i += 1
    random_kills = kills

    for j, (first, second) in enumerate(TARGETED):
        first = first.format(fit=round(fit_s, 3))
        plan = [(None, first)] + ([(None, second)] if second else [])
        trial(f"targeted-{first.split(',')[0]}" + (f"+{second.split(',')[0]}" if second else ""),
              tmp_path / f"t{j}", plan, ref)

    # an incremental run: one video deleted, one changed, two added; killed at random and by name
    inc_lib = tmp_path / "inc"
    shutil.copytree(library, inc_lib)
    status, _, _, _ = driver.run([inc_lib], tmp_path / "incbase", opts={"db": db_url})
    assert status == "exit 0"
    good = good_videos(inc_lib)
    extra = make_library(tmp_path / "extra", groups=("more_fewer",), crash=False)
    good[0].unlink()                                   # deleted
    shutil.copy2(good[2], good[1])                     # changed content
    for k, f in enumerate(good_videos(extra)):
        shutil.copy2(f, inc_lib / f"new{k}{f.suffix}")  # added
    copy_index(tmp_path / "incbase", tmp_path / "incref")
    status, result, _, inc_s = driver.run([inc_lib], tmp_path / "incref")
    assert status == "exit 0" and result["report"]["removed"] == 1 and result["report"]["new"] == 2
    inc_ref = snapshot(tmp_path / "incref")
    assert not inc_ref["problems"]
    for j, plan in enumerate([[(None, "removed-vectors=kill,decoder")],
                              [(None, "vectors-write=kill,decoder")],
                              [(None, "compact-write=kill,decoder")],  # the rewrite of a segment with deleted rows
                              [(rng.uniform(0.02, inc_s), "decoder")],
                              [(rng.uniform(0.02, inc_s), "decoder")],
                              [(rng.uniform(0.02, inc_s), "decoder")]]):
        copy_index(tmp_path / "incbase", tmp_path / f"inc{j}")
        trial(f"incremental-{j}", tmp_path / f"inc{j}", plan, inc_ref, roots=(inc_lib,))

    # --refit with other training: a new LiFT, every stored clip re-described, killed on the way
    refit = {"refit": True, "epochs": 12}
    copy_index(tmp_path / "ref", tmp_path / "refitref")
    status, result, _, refit_s = driver.run([library], tmp_path / "refitref", opts=refit)
    assert status == "exit 0" and result["report"]["lift"]["hash"] != ref["model"]
    refit_ref = snapshot(tmp_path / "refitref")
    for j, plan in enumerate([[(None, "model-saved=kill,decoder")], [(None, "vectors-write=kill,decoder")],
                              [(rng.uniform(0.02, refit_s), "decoder")]]):
        copy_index(tmp_path / "ref", tmp_path / f"refit{j}")
        trial(f"refit-{j}", tmp_path / f"refit{j}", plan, refit_ref, opts=refit)

    record("kill_resume" if db_url is None else "kill_resume_postgresql", {
            "kills_survived": kills, "random_kills": random_kills, "trials": len(trials), "index_runs": runs,
            "trials_equal_to_uninterrupted": sum(t["ok"] for t in trials),
            "kills_by_phase": dict(phases.most_common()),
            "library": {"good_videos": len(ref["vectors"]), "bad_files": len(ref["failures"])},
            "uninterrupted_run_s": round(full_s, 2), "seconds": round(time.perf_counter() - t0, 1),
            "tolerance": 1e-5, "same_lift_weights_every_time": True,
    }, force=True)
    missed = [t["trial"] for t in trials if t["trial"].startswith("targeted") and "kill+" not in t["trial"]
              and t["kills"][0] == "finished"]
    assert not missed, f"named kill points never reached: {missed}"
