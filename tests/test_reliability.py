"""Reliability, fast set: targeted SIGKILLs and resume, the engine's own agreement check and repair,
stale temp files, clip ids never reused, a full or read-only disk, hostile checkpoints and vector files.

Runs go through tests/index_driver.py (a fork server: one import of torch for all runs, each run a
process of its own that the test may SIGKILL). The 20-kill loop is tests/test_kill_resume.py (slow).
Every index here keeps its metadata in SQLite and, where a server is given (tests/pg_server.sh), in
PostgreSQL (the `db_url` fixture): the same crash rules hold on both.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import delete, select

from db import Clip, Video, open_db
from indexer.library import IndexDir
from indexer.lock import IndexLock
from indexer.store import StoreError, VectorStore
from search import SearchEngine, SearchError
from tests.conftest import slow_on_postgresql
from tests.helpers import copy_index, differences, good_videos, make_library, snapshot

GROUPS = ("left_right", "up_down", "open_close")  # 6 good videos: two checkpoints of 3


@pytest.fixture(scope="module")
def library(tmp_path_factory) -> Path:
    return make_library(tmp_path_factory.mktemp("rel") / "videos", groups=GROUPS)


@pytest.fixture(scope="module")
def reference(driver, library, db_url, tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted run (not to be modified: copy it)."""
    index = tmp_path_factory.mktemp("ref") / "idx"
    status, result, _, _ = driver.run([library], index, opts={"db": db_url})
    assert status == "exit 0" and result["ok"], result
    snap = snapshot(index)
    assert not snap["problems"] and len(snap["vectors"]) == 6 and len(snap["failures"]) == 3
    return index, snap


@pytest.fixture(scope="module")
def crashed(driver, library, db_url, tmp_path_factory) -> Path:
    """An index killed between a database commit and its FAISS save: the first checkpoint's 3 videos
    are whole, the second's rows are committed without vectors (not to be modified: copy it)."""
    index = tmp_path_factory.mktemp("crashed") / "idx"
    status, _, passed, _ = driver.run([library], index, points="decoder,db-committed=kill@2", opts={"db": db_url})
    assert status == "signal SIGKILL" and passed[-1] == "db-committed"
    return index


def db_clip_ids(index: Path) -> set[int]:
    sessions = open_db(IndexDir(index).db)
    with sessions() as s:
        ids = set(s.scalars(select(Clip.id)))
    sessions.kw["bind"].dispose()
    return ids


# ---- kills at named moments, and the resume -------------------------------------------------------
def test_targeted_kills_resume_to_the_uninterrupted_index(driver, library, reference, crashed, tmp_path):
    _, ref = reference
    index = copy_index(crashed, tmp_path / "idx")
    status, _, passed, _ = driver.run([library], index, points="decoder,vectors-write=kill")  # half a segment
    assert status == "signal SIGKILL" and passed[-1] == "vectors-write"
    assert list((index / "vectors").glob("seg-*.tmp"))  # what a crash leaves ...
    status, result, _, _ = driver.run([library], index)
    assert status == "exit 0" and result["report"]["repaired"]["requeued_videos"] == 3
    assert differences(ref, snapshot(index)) == []  # ... is gone, and the index is the reference's
    assert result["report"]["stages"].get("backbone", 0) == 0  # nothing decoded twice


def test_engine_hides_out_of_step_ids_while_an_indexer_holds_the_lock(crashed, tmp_path):
    index = copy_index(crashed, tmp_path / "idx")
    in_db, snap_store = db_clip_ids(index), VectorStore.open(IndexDir(index).vectors, 64)
    missing = in_db - set(snap_store.ids().tolist())
    assert len(missing) == 3 and len(snap_store) == 3
    with IndexLock(index):  # "an indexer is running": no repair, but nothing out of step is served
        engine = SearchEngine.open(index)
        served = {c.clip_id for c in engine.clips()}
        assert served == set(snap_store.ids().tolist())
        for cid in served:
            hits = engine.search_clip(cid, k=10)
            assert hits and not {h.clip_id for h in hits} & missing
        for cid in missing:
            with pytest.raises(SearchError):
                engine.search_clip(cid)
    assert db_clip_ids(index) == in_db  # untouched


@slow_on_postgresql
def test_engine_repairs_on_open_and_the_next_run_requeues(driver, library, reference, crashed, tmp_path):
    _, ref = reference
    index = copy_index(crashed, tmp_path / "idx")
    engine = SearchEngine.open(index)  # no indexer running: it repairs
    assert db_clip_ids(index) == set(engine.store.ids().tolist()) == {c.clip_id for c in engine.clips()}
    assert len(engine.clips()) == 3
    status, result, _, _ = driver.run([library], index)
    assert status == "exit 0" and result["report"]["new"] == 3
    assert differences(ref, snapshot(index)) == []


def test_orphan_vectors_are_never_served_and_are_dropped(reference, tmp_path):
    index = copy_index(reference[0], tmp_path / "idx")
    sessions = open_db(IndexDir(index).db, write=True)
    with sessions.begin() as s:  # rows gone, vectors left: as if deleted by a run that then died
        victim = s.scalars(select(Video).order_by(Video.id)).first()
        orphan_ids = {c.id for c in victim.clips}
        s.execute(delete(Clip).where(Clip.video_id == victim.id))
        s.execute(delete(Video).where(Video.id == victim.id))
    sessions.kw["bind"].dispose()
    with IndexLock(index):
        engine = SearchEngine.open(index)
        assert orphan_ids <= set(engine.store.ids().tolist())  # still in the file ...
        served = {c.clip_id for c in engine.clips()}
        assert not served & orphan_ids  # ... never served
        assert all(not {h.clip_id for h in engine.search_clip(c, k=10)} & orphan_ids for c in served)
    engine = SearchEngine.open(index)
    assert not set(engine.store.ids().tolist()) & orphan_ids
    assert not snapshot(index)["problems"]


@slow_on_postgresql
def test_stale_temp_files_of_a_killed_run_are_removed(driver, library, reference, tmp_path):
    _, ref = reference
    index = copy_index(reference[0], tmp_path / "idx")
    planted = [index / "vectors.faiss.tmp", index / "features" / "0123.npz.tmp.npz",
               index / "models" / "incoming.safetensors", index / "models" / "incoming.safetensors.tmp",
               index / "vectors" / "seg-999999.arr.tmp", index / "vectors" / "seg-999998.arr",  # unlisted
               index / "vectors" / "manifest.json.tmp"]
    for f in planted:
        f.write_bytes(b"half a file")
    status, _, _, _ = driver.run([library], index)
    assert status == "exit 0" and not any(f.exists() for f in planted)
    assert differences(ref, snapshot(index)) == []


@slow_on_postgresql
def test_clip_ids_are_never_reused(driver, library, db_url, tmp_path):
    """An engine opened before a run still holds the vectors of clips the run deletes: a new clip must
    not take one of their ids, or that engine would show the new clip for an old vector."""
    videos = tmp_path / "videos"
    shutil.copytree(library, videos)
    index = tmp_path / "idx"
    assert driver.run([videos], index, opts={"db": db_url})[0] == "exit 0"
    before = snapshot(index)
    old_engine = SearchEngine.open(index)
    sessions = open_db(IndexDir(index).db)
    with sessions() as s:  # the video holding the highest clip id goes, another one comes
        last = s.scalar(select(Video.path).join(Clip).order_by(Clip.id.desc()))
    sessions.kw["bind"].dispose()
    Path(last).rename(Path(last).with_name("renamed" + Path(last).suffix))
    status, result, _, _ = driver.run([videos], index)
    assert status == "exit 0" and (result["report"]["new"], result["report"]["removed"]) == (1, 1)
    after = snapshot(index)
    assert min(set(after["clip_ids"]) - set(before["clip_ids"])) > max(before["clip_ids"])
    stale = set(old_engine.store.ids().tolist()) - set(after["clip_ids"])
    for c in old_engine.clips():  # the old engine's view: the deleted clip is simply not found
        if c.clip_id not in stale:
            assert not {h.clip_id for h in old_engine.search_clip(c.clip_id, k=10)} & stale


# ---- a full or read-only disk -----------------------------------------------------------------------
def _add_videos(library: Path, videos: Path, extra: Path) -> None:
    shutil.copytree(library, videos)
    for k, f in enumerate(good_videos(extra)):
        shutil.copy2(f, videos / f"new{k}{f.suffix}")


@pytest.fixture(scope="module")
def extra(tmp_path_factory) -> Path:
    return make_library(tmp_path_factory.mktemp("extra") / "videos", groups=("rotate",), crash=False)


@slow_on_postgresql
def test_disk_full_at_the_vector_commit_keeps_the_previous_index(driver, library, extra, db_url, tmp_path):
    videos = tmp_path / "videos"
    shutil.copytree(library, videos)
    index = tmp_path / "idx"
    assert driver.run([videos], index, opts={"db": db_url})[0] == "exit 0"
    before = snapshot(index)
    for k, f in enumerate(good_videos(extra)):
        shutil.copy2(f, videos / f"new{k}{f.suffix}")
    status, result, passed, _ = driver.run([videos], index, points="decoder,vectors-write=enospc")
    assert status == "exit 1" and "vectors-write" in passed
    assert result["error"].startswith("IndexWriteError: cannot write the index at")
    assert "No space left on device" in result["error"] and "run again" in result["error"]
    after = snapshot(index)  # the old vectors load, the database agrees (its rows were taken back)
    assert after["problems"] == [] and differences(before, after, atol=0) == []
    engine = SearchEngine.open(index)
    assert len(engine.clips()) == 6 and engine.search_clip(engine.clips()[0].clip_id, k=3)
    status, result, _, _ = driver.run([videos], index)  # space again: the run completes
    assert status == "exit 0" and result["report"]["new"] == 2 and not snapshot(index)["problems"]


def _search_once(index: Path) -> None:
    """Open, search, and let go of every file handle (a busy tmpfs cannot be remounted)."""
    import gc

    engine = SearchEngine.open(index)
    assert engine.search_clip(engine.clips()[0].clip_id, k=2)
    engine.sessions.kw["bind"].dispose()
    del engine
    gc.collect()


@pytest.fixture
def tmpfs(tmp_path):
    """A small real filesystem (tmpfs) to fill up or make read-only; skipped where mount is not allowed."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode:
        pytest.skip("needs root and mount (tmpfs) to make a real full or read-only disk")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@slow_on_postgresql
def test_real_full_disk_and_read_only_disk(driver, library, extra, reference, tmpfs, tmp_path):
    index = copy_index(reference[0], tmpfs / "idx")
    before = snapshot(index)
    videos = tmp_path / "videos"
    _add_videos(library, videos, extra)
    running = SearchEngine.open(index)  # a search engine (the UI) open all along
    query = running.clips()[0].clip_id
    filler, outcomes = tmpfs / "filler", []
    for spare_kib in (0, 40, 100, 400):  # the disk filled up to a few KiB: each attempt fails elsewhere
        free = os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
        with open(filler, "wb") as f:
            f.write(b"\0" * max(0, free - spare_kib * 1024))
        status, result, passed, _ = driver.run([videos], index)
        outcomes.append({"spare_kib": spare_kib, "status": status, "last_point": passed[-1:],
                         "error": (result or {}).get("error", "")[:80]})
        if status == "exit 0":
            break
        assert status == "exit 1" and result["error"].startswith("IndexWriteError: cannot write the index"), result
        assert running.search_clip(query, k=2)  # the disk is still full: the open engine keeps serving
        filler.unlink()
        got = snapshot(index)  # and the index is the one from before the run (plus, maybe, the
        # failures of the bad files it met: those are recorded as they are found)
        diff = [d for d in differences(before, got, atol=0) if not d.startswith("failures")]
        assert got["problems"] == [] and diff == [], (spare_kib, got["problems"], diff)
    print("full-disk attempts:", outcomes)
    filler.unlink(missing_ok=True)
    assert any(o["status"] == "exit 1" for o in outcomes)
    running.sessions.kw["bind"].dispose()
    del running
    # read-only: a clear refusal, and a search engine still opens and serves
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        status, result, _, _ = driver.run([videos], index)
        assert status == "exit 1" and result["error"].startswith("IndexWriteError") and "Read-only" in result["error"]
        _search_once(index)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
    status, result, _, _ = driver.run([videos], index)
    final = snapshot(index)
    assert status == "exit 0" and not final["problems"]
    assert len([v for v in final["videos"] if v.startswith(str(videos)) and "/bad/" not in v]) == 8  # 6 + 2 new


# ---- hostile files ----------------------------------------------------------------------------------
class _Boom:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):  # unpickling this runs a shell command
        return (os.system, (f"touch {self.marker}",))


def _evil_checkpoint(path: Path, marker: Path) -> Path:
    import torch

    torch.save({"state_dict": {"model.encoder.x": _Boom(marker)}}, path)
    return path


def test_index_with_a_pickle_checkpoint_is_refused_before_any_work(library, tmp_path, capsys):
    from search.cli import main

    marker = tmp_path / "pwned"
    evil = _evil_checkpoint(tmp_path / "evil.ckpt", marker)
    code = main(["index", str(library), "--index", str(tmp_path / "idx"), "--lift", str(evil), "--json"])
    err = capsys.readouterr().err
    assert code == 2 and "Refusing to load" in err and "weights_only" in err and "Traceback" not in err
    assert not marker.exists()
    assert not (tmp_path / "idx" / "index.db").exists()  # refused before a byte was written


def test_a_planted_model_file_in_the_index_is_refused(reference, tmp_path):
    from lift.checkpoint import CheckpointError

    index = copy_index(reference[0], tmp_path / "idx")
    marker = tmp_path / "pwned"
    model = next((index / "models").glob("*.safetensors"))
    _evil_checkpoint(model, marker)  # the file the index names, replaced by a pickle
    with pytest.raises(CheckpointError, match="Refusing to load"):
        SearchEngine.open(index)
    assert not marker.exists()


def test_foreign_or_wrong_dimension_vector_files_are_refused(library, reference, tmp_path):
    import faiss

    from indexer.legacy import save_legacy
    from indexer.pipeline import run_index
    from indexer.segments import read_manifest
    from tests.index_driver import options

    index = copy_index(reference[0], tmp_path / "idx")
    segment = index / "vectors" / read_manifest(index / "vectors")["segments"][0]["file"]
    faiss.write_index(faiss.IndexFlatIP(64), str(segment))  # a valid FAISS file where a segment should be
    foreign = segment.read_bytes()
    with pytest.raises(StoreError, match="not written by lift-search"):
        SearchEngine.open(index)
    with pytest.raises(StoreError, match="not written by lift-search.*Move it"):
        run_index([library], index, options({}))
    assert segment.read_bytes() == foreign  # never overwritten
    shutil.rmtree(index / "vectors")
    wrong = VectorStore(index / "vectors", 16, meta={"lift_hash": "x"})
    wrong.add([1], np.ones((1, 16), np.float32))
    wrong.commit()
    with pytest.raises(StoreError, match="16-d vectors; this index expects 64-d"):
        SearchEngine.open(index)
    with pytest.raises(StoreError, match="16-d"):
        run_index([library], index, options({}))
    shutil.rmtree(index / "vectors")  # an index of lift-search 0.1: one vectors.faiss, here not ours
    faiss.write_index(faiss.IndexFlatIP(64), str(index / "vectors.faiss"))
    with pytest.raises(StoreError, match="not written by lift-search"):
        SearchEngine.open(index)
    save_legacy(index / "vectors.faiss", [1], np.ones((1, 16), np.float32), {"lift_hash": "x"})
    with pytest.raises(StoreError, match="16-d"):
        run_index([library], index, options({}))


def test_an_index_of_lift_search_0_1_opens_and_is_migrated_by_the_next_run(driver, library, reference, tmp_path):
    """Its single vectors.faiss is read as it is; the next index run moves the vectors into segments."""
    from indexer.legacy import save_legacy

    ref_index, ref = reference
    index = copy_index(ref_index, tmp_path / "idx")
    store = VectorStore.open(index / "vectors", 64)
    ids = store.ids()
    save_legacy(index / "vectors.faiss", ids, store.vectors(ids), store.meta)
    shutil.rmtree(index / "vectors")
    engine = SearchEngine.open(index)
    assert engine.store.kind == "exact" and len(engine.store) == len(ids)
    assert engine.search_clip(int(ids[0]), k=3)
    status, result, _, _ = driver.run([library], index)
    assert status == "exit 0" and result["report"]["new"] == 0
    assert not (index / "vectors.faiss").exists() and (index / "vectors" / "manifest.json").exists()
    assert differences(ref, snapshot(index)) == []
