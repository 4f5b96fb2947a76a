"""A corpus of bad media, generated here, indexed beside good videos: every file is either indexed or
recorded with a clear reason, the run finishes, every good file is indexed, and a decoder that crashes
or hangs costs one file. Non-UTF-8 file names go through SQLite, the search engine and JSON intact.

Runs go through tests/index_driver.py; as root the indexer runs without root's power to read any file
(setpriv drops CAP_DAC_OVERRIDE), so that a chmod-000 file really is unreadable.
"""
from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.helpers import record, snapshot
from tests.index_driver import Driver

FFMPEG = shutil.which("ffmpeg")
SETPRIV = shutil.which("setpriv")
AS_ROOT = os.geteuid() == 0
NO_DAC = ("--inh-caps=-dac_override,-dac_read_search", "--bounding-set=-dac_override,-dac_read_search")
CAN_UNREAD = not AS_ROOT or bool(SETPRIV)  # can a chmod-000 file be made unreadable to the indexer?
TIMEOUT_S = 5


def _writer(path: Path, frames, fourcc: str, fps: float = 12.0) -> Path:
    h, w = frames[0].shape[:2]
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert vw.isOpened(), path
    for f in frames:
        vw.write(f)
    vw.release()
    return path


def _frames(n: int, w: int, h: int, seed: int) -> list:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (h, w, 3), np.uint8)
    return [np.roll(base, 3 * i, axis=1) for i in range(n)]


def _ffmpeg(*args: str) -> bool:
    return FFMPEG is not None and subprocess.run([FFMPEG, "-v", "error", "-y", *args],
                                                 capture_output=True).returncode == 0


def build_corpus(root: Path) -> tuple[dict, list[str], list[Path]]:
    """Files under `root` -> expectation: ("indexed", None), ("failed", reason prefix) or
    ("either", None). Also the cases that could not be made here (no ffmpeg ...), and the good files."""
    from indexer.synth import render_library

    good = [Path(c.path) for c in render_library(root / "good", n_scenes_per_group=1, variants=1,
                                                  groups=["left_right", "up_down"], seed=0, progress=False)]
    (root / "good" / "labels.csv").unlink()
    bad, src = root / "bad", root.parent / "sources"  # sources: not indexed
    bad.mkdir()
    src.mkdir()
    cases, skipped = {}, []
    mp4v = _writer(src / "mp4v.mp4", _frames(40, 160, 120, 11), "mp4v").read_bytes()

    def case(name: str, expect: tuple):
        cases[bad / name if isinstance(name, str) else bad / os.fsdecode(name)] = expect

    (bad / "zero.mp4").write_bytes(b"")
    case("zero.mp4", ("failed", "empty file (0 bytes)"))
    (bad / "truncated.mp4").write_bytes(mp4v[: len(mp4v) // 3])  # the moov atom is at the end: lost
    case("truncated.mp4", ("failed", "truncated or corrupt: cannot read the MP4/MOV container"))
    data = good[0].read_bytes()  # a synthetic library video (VP8 WebM), cut in the middle
    (bad / ("truncated" + good[0].suffix)).write_bytes(data[: len(data) // 2])
    case("truncated" + good[0].suffix, ("either", None))
    (bad / "random.mp4").write_bytes(np.random.default_rng(1).bytes(30_000))
    case("random.mp4", ("failed", "not a video: unrecognised or unsupported file format"))
    (bad / "notes.avi").write_text("this is a text file\n" * 200)
    case("notes.avi", ("failed", "not a video"))
    if _ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(bad / "audio_only.mp4")):
        case("audio_only.mp4", ("failed", "not a video: no video stream"))
    else:
        skipped.append("audio_only.mp4: needs ffmpeg (apt-get install ffmpeg)")
    _writer(bad / "one_frame.avi", _frames(1, 64, 48, 2), "MJPG")
    case("one_frame.avi", ("indexed", None))
    _writer(bad / "two_by_two.mp4", _frames(10, 2, 2, 3), "mp4v")  # OpenCV will not write 1x1
    case("two_by_two.mp4", ("indexed", None))
    if _ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:duration=1:rate=10", "-vf", "scale=1:1",
               "-c:v", "ffv1", str(bad / "one_by_one.mkv")):
        case("one_by_one.mkv", ("indexed", None))
    else:
        skipped.append("one_by_one.mkv: needs ffmpeg")
    mjpg = _writer(src / "mjpg.avi", _frames(40, 160, 120, 4), "MJPG").read_bytes()
    d = bytearray(mjpg)  # the AVI headers claim 60000x60000; the frames are 160x120
    a = d.index(b"avih") + 8
    d[a + 32:a + 40] = struct.pack("<II", 60000, 60000)
    f = d.index(b"strf") + 8
    d[f + 4:f + 12] = struct.pack("<ii", 60000, 60000)
    (bad / "huge_header.avi").write_bytes(bytes(d))
    case("huge_header.avi", ("indexed", None))
    d, i = bytearray(mjpg), 0  # every JPEG frame claims 10000x10000 (a decompression bomb)
    while (i := d.find(b"\xff\xc0", i)) >= 0:
        d[i + 5:i + 9] = struct.pack(">HH", 10000, 10000)
        i += 2
    (bad / "huge_frames.avi").write_bytes(bytes(d))
    case("huge_frames.avi", ("failed", "truncated or corrupt"))
    if _ffmpeg("-f", "lavfi", "-i", "color=c=blue:size=8192x4608:duration=0.2:rate=5", "-c:v", "mjpeg",
               "-q:v", "31", str(bad / "huge_real.avi")):
        case("huge_real.avi", ("failed", "frame size 8192x4608 is beyond"))
    else:
        skipped.append("huge_real.avi: needs ffmpeg")
    if _ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:duration=3:rate=12", "-vf",
               "setpts='if(lt(N,12),N*0.2/TB,(2.4+(N-12)/30)/TB)'", "-fps_mode", "vfr", "-c:v", "mpeg4",
               str(bad / "variable_rate.mp4")):
        case("variable_rate.mp4", ("indexed", None))
    else:
        skipped.append("variable_rate.mp4: needs ffmpeg")
    d, starts, i = bytearray(mjpg), [], 0  # frames 18-21 of 40 destroyed in the middle of the stream
    while (i := d.find(b"\xff\xd8\xff", i)) >= 0:
        starts.append(i)
        i += 3
    for k in (18, 19, 20, 21):
        d[starts[k]:starts[k] + 300] = np.random.default_rng(k).bytes(300)
    (bad / "corrupt_middle.avi").write_bytes(bytes(d))
    case("corrupt_middle.avi", ("indexed", None))
    from indexer.synth import write_untimed_avi  # an AVI without timestamps (read in order), damaged:
    untimed = write_untimed_avi(src / "untimed.avi", _frames(60, 160, 120, 12)).read_bytes()
    d = bytearray(untimed)  # ... bytes destroyed in the middle of the stream
    d[len(d) // 2:len(d) // 2 + 2000] = np.random.default_rng(13).bytes(2000)
    (bad / "untimed_corrupt.avi").write_bytes(bytes(d))
    case("untimed_corrupt.avi", ("indexed", None))
    (bad / "untimed_truncated.avi").write_bytes(untimed[:len(untimed) // 2])  # ... or cut in half
    case("untimed_truncated.avi", ("indexed", None))
    d = bytearray(mp4v)  # bytes flipped in the middle of an mp4v stream
    at = int(len(d) * 0.4)
    d[at:at + 3000] = np.random.default_rng(5).bytes(3000)
    (bad / "corrupt_middle.mp4").write_bytes(bytes(d))
    case("corrupt_middle.mp4", ("indexed", None))
    _writer(bad / "unreadable.mp4", _frames(20, 64, 48, 6), "mp4v").chmod(0)
    case("unreadable.mp4", ("failed", "unreadable file: Permission denied") if CAN_UNREAD else ("indexed", None))
    (bad / "broken_link.mp4").symlink_to(bad / "gone.mp4")
    case("broken_link.mp4", ("failed", "broken symlink (->"))
    (bad / "loop.mp4").symlink_to(bad / "loop.mp4")
    case("loop.mp4", ("failed", "cannot access file: Too many levels of symbolic links"))
    (bad / "folder.mp4").mkdir()
    case("folder.mp4", ("failed", "is a directory, not a video file"))
    os.mkfifo(bad / "pipe.mp4")  # a naive reader would block on it forever
    case("pipe.mp4", ("failed", "not a regular file"))
    # (OpenCV crashes on such a name: written under another, then renamed)
    os.rename(_writer(bad / "latin1.mp4", _frames(20, 64, 48, 7), "mp4v"), os.fsencode(bad) + b"/caf\xe9-latin1.mp4")
    case(b"caf\xe9-latin1.mp4", ("indexed", None))
    with open(os.fsencode(bad) + b"/\xff\xfe-random.mp4", "wb") as f:
        f.write(np.random.default_rng(8).bytes(5000))
    case(b"\xff\xfe-random.mp4", ("failed", "not a video"))
    _writer(bad / "x__segfault__.mp4", _frames(20, 64, 48, 9), "mp4v")
    case("x__segfault__.mp4", ("failed", "decoder crashed (signal SIGSEGV)"))
    _writer(bad / "x__hang__.mp4", _frames(20, 64, 48, 10), "mp4v")
    case("x__hang__.mp4", ("failed", f"decoder timed out after {TIMEOUT_S} s"))
    return cases, skipped, good


@pytest.fixture(scope="module")
def indexed(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_media")
    cases, skipped, good = build_corpus(root / "videos")
    prefix = ("setpriv", *NO_DAC) if AS_ROOT and SETPRIV else ()
    driver = Driver(root / "driver", prefix=prefix)
    index = root / "idx"
    first = driver.run([root / "videos"], index, points="decoder", opts={"timeout_s": TIMEOUT_S})
    second = driver.run([root / "videos"], index, points="decoder", opts={"timeout_s": TIMEOUT_S})
    driver.close()
    yield {"cases": cases, "skipped": skipped, "good": good, "index": index, "first": first,
           "second": second, "root": root}
    for path in cases:
        if path.exists() and not path.is_symlink():
            path.chmod(0o755)  # let pytest clean up


def test_every_bad_file_is_indexed_or_recorded_and_the_run_finishes(indexed):
    status, result, _, seconds = indexed["first"]
    assert status == "exit 0" and result["ok"], result
    snap = snapshot(indexed["index"])
    assert snap["problems"] == []
    failures = {f["path"]: f["reason"] for f in result["report"]["failures"]}
    outcome = {}
    for path, (expect, reason) in indexed["cases"].items():
        p = str(path)
        got = "indexed" if p in snap["videos"] else "failed" if p in failures else "missing"
        outcome[path.name] = got if got != "failed" else f"failed: {failures[p]}"
        assert got != "missing", f"{path.name} neither indexed nor recorded"
        if expect != "either":
            assert got == expect, (path.name, outcome[path.name])
        if got == "failed" and reason:
            assert failures[p].startswith(reason), (path.name, failures[p])
    assert set(failures) <= {str(p) for p in indexed["cases"]}
    for g in indexed["good"]:  # every good file beside them is indexed
        assert str(g) in snap["videos"]
    assert set(snap["failures"]) == set(failures)  # ... and every failure is in the database
    from db import Video, open_db
    from indexer.library import IndexDir

    with open_db(IndexDir(indexed["index"]).db)() as s:
        in_order = sorted(os.fsencode(Path(v.path).name).decode("utf-8", "backslashreplace")
                          for v in s.query(Video) if v.read_mode == "sequential")
    record("bad_media", {
        "bad_files_tried": len(indexed["cases"]), "indexed": sum(v == "indexed" for v in outcome.values()),
        "recorded_with_reason": sum(v.startswith("failed") for v in outcome.values()),
        "good_files_indexed": len(indexed["good"]), "read_in_order": in_order,
        "cases_not_built_here": indexed["skipped"],
        "unreadable_really_unreadable": CAN_UNREAD, "run_s": round(seconds, 1),
        "outcomes": {os.fsencode(k).decode("utf-8", "backslashreplace"): v for k, v in sorted(outcome.items())},
    })


def test_damaged_files_without_timestamps_are_read_in_order(indexed):
    from db import Video, open_db
    from indexer.library import IndexDir

    with open_db(IndexDir(indexed["index"]).db)() as s:
        modes = {v.path: v.read_mode for v in s.query(Video)}
    assert modes[str(indexed["root"] / "videos/bad/untimed_corrupt.avi")] == "sequential"
    assert modes[str(indexed["root"] / "videos/bad/untimed_truncated.avi")] == "sequential"
    assert {modes[str(g)] for g in indexed["good"]} == {"seek"}  # intact files keep seeking
    # (a damaged keyframe is concealed from the frames before it when read in order, not after a seek:
    # such a file, e.g. corrupt_middle.mp4, fails the seek check and is read in order too)


def test_failures_are_remembered_and_not_retried(indexed):
    status, result, _, _ = indexed["second"]
    assert status == "exit 0" and result["ok"]
    r = result["report"]
    assert (r["new"], r["changed"], r["removed"], r["failed"]) == (0, 0, 0, 0)
    assert r["stages"].get("backbone", 0) == 0 and r["stages"].get("decode (workers)", 0) == 0
    assert r["videos_total"] == indexed["first"][1]["report"]["videos_total"]


def test_non_utf8_names_survive_sqlite_json_and_search(indexed, capsys):
    from search import SearchEngine
    from search.cli import main

    good = os.fsdecode(os.fsencode(indexed["root"] / "videos" / "bad") + b"/caf\xe9-latin1.mp4")
    bad = os.fsdecode(os.fsencode(indexed["root"] / "videos" / "bad") + b"/\xff\xfe-random.mp4")
    # the report, as JSON, gives the very same str back
    report = indexed["first"][1]["report"]
    assert bad in {f["path"] for f in report["failures"]}
    engine = SearchEngine.open(indexed["index"])
    clip = next(c for c in engine.clips() if c.video_path == good)
    assert engine.video_file(clip.clip_id) == Path(good)
    assert engine.search_clip(clip.clip_id, k=3)
    assert bad in dict(engine.failures())
    assert main(["status", "--index", str(indexed["index"]), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert bad in {f["path"] for f in status["failure_reasons"]}
    assert main(["search", "--index", str(indexed["index"]), "--clip", str(clip.clip_id), "-k", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == 2


def test_unreadable_file_is_recorded_not_fatal_in_process(tmp_path, monkeypatch):
    """The planning step's part (hashing), without a decoder: a file that cannot be read is recorded."""
    from db import Failure, open_db
    from indexer import stages

    videos = tmp_path / "v"
    videos.mkdir()
    (videos / "a.mp4").write_bytes(b"x" * 100)
    (videos / "b.mp4").write_bytes(b"y" * 100)

    def content_hash(path):
        if path.endswith("a.mp4"):
            raise PermissionError(13, "Permission denied", path)
        return "h"

    monkeypatch.setattr(stages, "content_hash", content_hash)
    sessions = open_db(tmp_path / "x.db", write=True)
    plan = stages.Planner(sessions, [videos])()
    assert [p.file.path for p in plan.pending] == [str(videos / "b.mp4")] and not plan.gone
    writer = stages.Writer(sessions, None, None)
    for f, reason in plan.unreadable:
        writer.fail(f, reason)
    with sessions() as s:
        assert [(f.path, f.reason) for f in s.query(Failure)] == [(str(videos / "a.mp4"),
                                                                  "unreadable file: Permission denied")]
