"""Indexing a folder end to end: incremental runs, deletion, corrupt files, settings, DB/FAISS agreement;
each with the metadata in SQLite and, where a server is given (tests/pg_server.sh), in PostgreSQL."""
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from db import Video, open_db
from indexer.library import IndexDir, VideoFeatures
from indexer.pipeline import IndexSettingsError, run_index
from indexer.store import VectorStore
from lift.config import MOTION_WEIGHT
from search import SearchEngine, SearchError
from tests.conftest import slow_on_postgresql
from tests.helpers import agreement, copy_library, small_options


@pytest.fixture(scope="module")
def built(db_url, request) -> Path:
    """The small library's index, with its metadata in db_url's backend (not to be modified)."""
    return request.getfixturevalue("small_index" if db_url is None else "small_index_pg")


def test_small_index_is_whole(built, small_library):
    _, clips = small_library
    n_clips, n_vec, bad = agreement(built)
    assert n_clips == n_vec == len(clips) and bad == 0
    engine = SearchEngine.open(built)
    st = engine.status()
    assert st["videos"] == len(clips) and st["backbone"] == "efficientnet-lite0"
    assert st["lift"]["spec"] == "fit" and st["dim"] == 128


def test_search_api(built, small_library):
    engine = SearchEngine.open(built)
    clips = engine.clips()
    q = clips[0]
    hits = engine.search_clip(q.clip_id, k=5)
    assert len(hits) == 5 and q.clip_id not in [h.clip_id for h in hits]
    assert [h.rank for h in hits] == [1, 2, 3, 4, 5]
    assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
    for h in hits:  # the score is the weighted sum of its parts, at the default motion weight
        assert abs(h.score - ((1 - MOTION_WEIGHT) * h.static_score + MOTION_WEIGHT * h.dynamic_score)) < 1e-5
    # reverse: the dynamic part flips sign for every candidate
    rev = {h.clip_id: h for h in engine.search_clip(q.clip_id, k=len(clips), reverse=True, motion=0.5)}
    fwd = {h.clip_id: h for h in engine.search_clip(q.clip_id, k=len(clips), motion=0.5)}
    for cid in fwd:
        assert abs(fwd[cid].dynamic_score + rev[cid].dynamic_score) < 1e-5
        assert abs(fwd[cid].static_score - rev[cid].static_score) < 1e-5
    # query by file = query by the same indexed clip (same frames, same models)
    by_file = engine.search_video(q.video_path, k=3)
    assert by_file[0].clip_id == q.clip_id and by_file[0].score > 0.999
    with pytest.raises(SearchError):
        engine.search_clip(q.clip_id, motion=1.5)
    with pytest.raises(SearchError):
        engine.search_clip(10**9)


def test_forward_and_reverse_queries_find_the_same_scene(built, small_library):
    """Each scene is in the library moving both ways (two variants each): the forward query's top-1 is
    the same scene moving the same way, the reverse query's top-1 the same scene moving the other way."""
    _, clips = small_library
    label = {str(Path(c.path).absolute()): (c.scene, c.cls) for c in clips}
    engine = SearchEngine.open(built)
    fwd = rev = 0
    misses = []  # (query, forward top-1, reverse top-1) where either is wrong: what a failure shows
    for c in engine.clips():
        scene, cls = label[c.video_path]
        top = label[engine.search_clip(c.clip_id, k=1)[0].video_path]
        opp = label[engine.search_clip(c.clip_id, k=1, reverse=True)[0].video_path]
        fwd += top == (scene, cls)
        rev += opp[0] == scene and opp[1] != cls
        if top != (scene, cls) or opp[0] != scene or opp[1] == cls:
            misses.append(((scene, cls), top, opp))
    assert (fwd + rev) / (2 * len(clips)) >= 0.9, (fwd, rev, misses, engine.status()["lift"])


@slow_on_postgresql
def test_incremental_add_change_delete(small_library, db_url, tmp_path, caplog):
    library, _ = small_library
    videos = tmp_path / "videos"
    files = copy_library(library, videos, 6)
    index = tmp_path / "idx"
    r1 = run_index([videos], index, small_options(db=db_url))
    assert (r1.new, r1.failed, r1.videos_total) == (6, 0, 6)
    engine = SearchEngine.open(index)
    before = {c.video_path: engine.store.vectors([c.clip_id])[0] for c in engine.clips()}

    r2 = run_index([videos], index, small_options())  # nothing to do
    assert (r2.new, r2.changed, r2.removed, r2.unchanged) == (0, 0, 0, 6)
    assert r2.stages.get("backbone", 0) == 0
    # training options without --refit keep the index's LiFT, and say so
    with caplog.at_level("WARNING", logger="indexer.pipeline"):
        r2b = run_index([videos], index, small_options(fit_options_given=("--anchor",)))
    assert r2b.lift["hash"] == r2.lift["hash"]
    assert any("--anchor ignored" in m and "--refit" in m for m in caplog.messages), caplog.messages

    extra = copy_library(library, tmp_path / "more", 8)[6:]
    shutil.copy2(extra[0], files[1])                    # changed content
    for f in extra:                                     # two new files
        shutil.move(f, videos / f.name)
    files[0].unlink()                                   # deleted
    os.utime(files[2], (time.time() + 5, time.time() + 5))  # touched, same content
    r3 = run_index([videos], index, small_options())
    assert (r3.new, r3.changed, r3.removed, r3.unchanged) == (2, 1, 1, 4)
    assert r3.videos_total == 7 and agreement(index)[2] == 0
    engine = SearchEngine.open(index)
    paths = {c.video_path for c in engine.clips()}
    assert str(files[0]) not in paths and str(videos / extra[1].name) in paths
    # unchanged videos keep their vectors (the LiFT model is reused, not refitted)
    for c in engine.clips():
        if c.video_path in before and c.video_path != str(files[1]):
            np.testing.assert_allclose(engine.store.vectors([c.clip_id])[0], before[c.video_path], atol=1e-6)


@slow_on_postgresql
def test_corrupt_files_among_good_ones(small_library, db_url, tmp_path):
    library, _ = small_library
    videos = tmp_path / "videos"
    copy_library(library, videos, 4)
    (videos / "empty.mp4").write_bytes(b"")
    (videos / "random.mp4").write_bytes(np.random.default_rng(0).bytes(50_000))
    (videos / "text.avi").write_text("not a video at all\n" * 100)
    good = sorted(videos.glob("*v0*.webm"))[0].read_bytes()
    (videos / "truncated.mp4").write_bytes(good[: len(good) // 3])
    (videos / "notes.txt").write_text("ignored: not a video extension")
    report = run_index([videos], tmp_path / "idx", small_options(db=db_url))
    assert report.videos_total == 4 + (report.videos_total - 4)  # truncated may decode partially
    assert report.videos_total >= 4 and report.failed >= 3
    reasons = {Path(f["path"]).name: f["reason"] for f in report.failures}
    assert "empty" in reasons["empty.mp4"]
    assert "not a video" in reasons["random.mp4"] and "not a video" in reasons["text.avi"]
    engine = SearchEngine.open(tmp_path / "idx")
    assert {Path(p).name for p, _ in engine.failures()} >= {"empty.mp4", "random.mp4", "text.avi"}
    assert agreement(tmp_path / "idx")[2] == 0
    # a second run does not retry unchanged failures, and keeps everything
    again = run_index([videos], tmp_path / "idx", small_options())
    assert again.failed == 0 and again.videos_total == report.videos_total


@slow_on_postgresql
def test_other_settings_are_refused(small_library, db_url, tmp_path):
    library, _ = small_library
    videos = tmp_path / "v"
    copy_library(library, videos, 3)
    run_index([videos], tmp_path / "idx", small_options(db=db_url))
    from indexer.clips import Sampling

    with pytest.raises(IndexSettingsError, match="sampling"):
        run_index([videos], tmp_path / "idx", small_options(sampling=Sampling(window_s=8.0)))
    with pytest.raises(IndexSettingsError, match="backbone"):
        run_index([videos], tmp_path / "idx", small_options(backbone="timm:resnet18"))
    # an index from before the sampling scheme was recorded: its long videos' windows sampled other frames
    from db import get_setting, set_setting
    from indexer.library import IndexDir as _Dir

    sessions = open_db(_Dir(tmp_path / "idx").db, write=True)
    with sessions.begin() as s:
        old = {k: v for k, v in get_setting(s, "sampling").items() if k != "scheme"}
        set_setting(s, "sampling", old)
    with pytest.raises(IndexSettingsError, match="earlier lift-search"):
        run_index([videos], tmp_path / "idx", small_options())
    with pytest.raises(ValueError, match="unknown sampling scheme"):
        Sampling(scheme="linspace")


@slow_on_postgresql
def test_crash_between_db_and_vectors_is_repaired(small_library, db_url, tmp_path):
    """Simulate the worst moment: clips committed to the database, vectors never written."""
    library, _ = small_library
    videos = tmp_path / "v"
    copy_library(library, videos, 4)
    index = tmp_path / "idx"
    run_index([videos], index, small_options(db=db_url))
    idx = IndexDir(index)
    store = VectorStore.open(idx.vectors, 128, writable=True)
    victim = int(store.ids()[0])
    store.remove([victim])
    store.commit()                     # a vector lost: its database row has no vector
    assert agreement(index)[2] == 1
    engine = SearchEngine.open(index)  # the engine repairs on open (no indexer running)
    assert victim not in [c.clip_id for c in engine.clips()]
    assert agreement(index)[2] == 0
    report = run_index([videos], index, small_options())  # ... and the next run re-queues the video
    assert report.new == 1 and report.videos_total == 4 and agreement(index) == (4, 4, 0)


@slow_on_postgresql
def test_cli_index_search_status_json(small_library, db_url, tmp_path):
    library, _ = small_library
    videos = tmp_path / "v"
    files = copy_library(library, videos, 4)
    index = tmp_path / "idx"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    cli = [sys.executable, "-m", "search.cli"]
    db = ["--db", db_url] if db_url else []  # (the password comes from PGPASSWORD, never the folder)
    out = subprocess.run(cli + ["index", str(videos), "--index", str(index), *db, "--latent-dim", "32",
                                "--epochs", "5", "--workers", "1", "--json"],
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["videos_total"] == 4
    out = subprocess.run(cli + ["search", "--index", str(index), str(files[0]), "-k", "3", "--json"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    hits = json.loads(out.stdout)
    assert len(hits) == 3 and set(hits[0]) == {"rank", "score", "static_score", "dynamic_score", "clip_id",
                                              "video_path", "start_s", "end_s"}
    assert hits[0]["video_path"] == str(files[0])
    out = subprocess.run(cli + ["status", "--index", str(index), "--json"], capture_output=True, text=True,
                         env=env, timeout=300)
    assert json.loads(out.stdout)["clips"] == 4
    assert json.loads(out.stdout)["metadata"] == str(IndexDir(index).db)
    assert json.loads(out.stdout)["read_modes"] == {"seek": 4, "sequential": 0, "unknown": 0}
    out = subprocess.run(cli + ["status", "--index", str(index)], capture_output=True, text=True, env=env, timeout=300)
    assert "frames read by seeking: 4 videos; in order: 0" in out.stdout, out.stdout
    out = subprocess.run(cli + ["search", "--index", str(tmp_path / "nope"), "--clip", "1"],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 2 and "no lift-search index" in out.stderr and "Traceback" not in out.stderr


def test_untimed_avi_is_indexed_from_its_frames_read_in_order(tmp_path):
    """An AVI whose frames carry no timestamps (decord's seeks land elsewhere) is indexed from the frames
    a sequential read gives; an MP4 of the same frames beside it keeps seeking; both are recorded."""
    from indexer.decode import decode_one
    from indexer.synth import write_untimed_avi
    from lift import load_backbone
    from tests.test_decode import decode_number, encode, write_video

    videos, index = tmp_path / "v", tmp_path / "idx"
    videos.mkdir()
    untimed = write_untimed_avi(videos / "untimed.avi", (encode(i, 320, 240) for i in range(263)))
    write_video(videos / "numbered.mp4", 263)
    report = run_index([videos], index, small_options())
    assert report.read_modes == {"sequential": 1, "seek": 1} and report.failed == 0
    idx = IndexDir(index)
    with open_db(idx.db)() as s:
        rows = {Path(v.path).name: (v.read_mode, v.features) for v in s.query(Video)}
    assert {k: m for k, (m, _) in rows.items()} == {"untimed.avi": "sequential", "numbered.mp4": "seek"}
    for name, (mode, features) in rows.items():
        vf = VideoFeatures.load(idx.root / features)
        assert vf.read_mode == mode and len(vf.plans) == 5
        for plan, thumb in zip(vf.plans, vf.thumbs):  # each clip's thumbnail shows its middle frame
            assert decode_number(thumb) == plan.frame_indices[len(plan.frame_indices) // 2], name
    # the cached features are the backbone's on the frames read in order, not on those seeking gives
    vf = VideoFeatures.load(idx.root / rows["untimed.avi"][1])
    backbone = load_backbone("efficientnet-lite0", device="cpu")
    seq = decode_one(untimed, short_side=backbone.preprocess.resize, read_mode="sequential")
    seek = decode_one(untimed, short_side=backbone.preprocess.resize, read_mode="seek")
    assert np.array_equal(seq.frame_indices, vf.frame_indices)
    assert [decode_number(f) for f in seq.frames] == seq.frame_indices.tolist()
    np.testing.assert_allclose(vf.feats, backbone.encode_frames(seq.frames), atol=1e-5)
    assert np.abs(vf.feats - backbone.encode_frames(seek.frames)).max() > 0.1
    assert SearchEngine.open(index).status()["read_modes"] == {"seek": 1, "sequential": 1, "unknown": 0}


def test_database_from_before_read_modes_opens_and_is_upgraded(small_index, tmp_path):
    import sqlite3

    index = tmp_path / "idx"
    shutil.copytree(small_index, index)
    with sqlite3.connect(IndexDir(index).sqlite) as db:  # the schema of an index made before the column
        db.execute("ALTER TABLE videos DROP COLUMN read_mode")
    engine = SearchEngine.open(index)  # a reader does not change the database ...
    n = engine.status()["videos"]
    assert engine.status()["read_modes"] == {"seek": 0, "sequential": 0, "unknown": n} and n > 0
    assert len(engine.search_clip(engine.clips()[0].clip_id, k=1)) == 1
    with sqlite3.connect(IndexDir(index).sqlite) as db:
        assert "read_mode" not in {row[1] for row in db.execute("PRAGMA table_info(videos)")}
    open_db(IndexDir(index).db, write=True)  # ... a writer adds the column, old rows unknown (NULL)
    with sqlite3.connect(IndexDir(index).sqlite) as db:
        assert "read_mode" in {row[1] for row in db.execute("PRAGMA table_info(videos)")}
    assert SearchEngine.open(index).status()["read_modes"] == {"seek": 0, "sequential": 0, "unknown": n}
