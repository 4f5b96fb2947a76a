"""Clip planning and crash-isolated decoding (indexer.clips, indexer.decode), on generated media."""
from __future__ import annotations

import math
import shutil
import struct
import subprocess
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from indexer.clips import ClipPlan, Sampling, VideoInfo, plan_clips, union_indices
from indexer.decode import DecodePool, decode_one
from indexer.synth import write_untimed_avi

S = Sampling()
FFMPEG = shutil.which("ffmpeg")
BANDS, BASE = 3, 16  # frame number i is written as base-16 digits, one grey band per digit


def encode(i: int, w: int, h: int) -> np.ndarray:
    img = np.zeros((h, w, 3), np.uint8)
    for b in range(BANDS):
        img[:, b * w // BANDS:(b + 1) * w // BANDS] = (i // BASE ** b) % BASE * 16 + 8
    return img


def decode_number(img: np.ndarray) -> int:
    h, w = img.shape[:2]
    digits = [img[h // 4:3 * h // 4, (2 * b + 1) * w // (2 * BANDS) - 4:(2 * b + 1) * w // (2 * BANDS) + 4].mean()
              for b in range(BANDS)]
    return sum(round((d - 8) / 16) * BASE ** b for b, d in enumerate(digits))


def write_video(path: Path, n: int, w: int = 320, h: int = 240, fps: float = 25.0, fourcc: str = "mp4v") -> Path:
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    assert vw.isOpened(), f"cannot write {path}"
    for i in range(n):
        vw.write(encode(i, w, h))
    vw.release()
    return path


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    m = {
        "short_mp4": write_video(d / "short.mp4", 30),
        "short_avi": write_video(d / "short.avi", 30, fourcc="MJPG"),
        "portrait": write_video(d / "portrait.mp4", 20, w=180, h=320),
        "long": write_video(d / "long.mp4", 263, w=160, h=120),  # 10.52 s: 4 windows + a final one
        "tiny": write_video(d / "tiny.mp4", 5),
        "one": write_video(d / "one.avi", 1, fourcc="MJPG"),
    }
    m["zero"] = d / "zero.mp4"
    m["zero"].write_bytes(b"")
    m["random"] = d / "random.mp4"
    m["random"].write_bytes(np.random.default_rng(0).integers(0, 256, 50_000, np.uint8).tobytes())
    m["text"] = d / "notes.avi"
    m["text"].write_text("not a video at all\n" * 100)
    data = m["long"].read_bytes()
    m["truncated"] = d / "truncated.mp4"
    m["truncated"].write_bytes(data[: len(data) // 2])
    m["directory"] = d / "folder.mp4"
    m["directory"].mkdir()
    m["symlink"] = d / "dangling.mp4"
    m["symlink"].symlink_to(d / "gone.mp4")
    m["missing"] = d / "missing.mp4"
    data = bytearray(m["long"].read_bytes())  # damage the middle of the stream, keep the index
    at = int(len(data) * 0.4)
    data[at:at + 5000] = np.random.default_rng(1).integers(0, 256, 5000, np.uint8).tobytes()
    m["damaged"] = d / "damaged.mp4"
    m["damaged"].write_bytes(bytes(data))
    data = bytearray(m["short_mp4"].read_bytes())  # a phone-style video: rotation in the track header
    matrix = data.index(b"tkhd") + 44  # version-0 tkhd: 4 (version, flags) + 20 + 8 + 8 bytes before it
    data[matrix:matrix + 36] = struct.pack(">9i", 0, 1 << 16, 0, -(1 << 16), 0, 0, 240 << 16, 0, 1 << 30)
    m["rotated"] = d / "rotated.mp4"
    m["rotated"].write_bytes(bytes(data))
    m["untimed"] = write_untimed_avi(d / "untimed.avi", (encode(i, 320, 240) for i in range(263)))  # 10.52 s
    m["webm"] = write_video(d / "vp8.webm", 60, fourcc="VP80")
    if FFMPEG:  # XviD with real B-frames, as UCF101's and HMDB51's AVIs are made
        m["bframes"] = d / "bframes.avi"
        subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(m["long"]), "-c:v", "mpeg4", "-vtag", "XVID",
                        "-bf", "2", "-g", "24", "-q:v", "2", str(m["bframes"])], check=True)
    m["crash"] = shutil.copy(m["short_mp4"], d / "x__segfault__.mp4")
    m["hang"] = shutil.copy(m["short_mp4"], d / "x__hang__.mp4")
    return {k: Path(v) for k, v in m.items()}


@pytest.fixture(scope="module")
def pool():
    with DecodePool(workers=2, timeout_s=2.0, _test_hooks=True) as p:
        yield p


def paper(first: int, last: int, k: int = 16) -> tuple[int, ...]:
    return tuple(int(i) for i in np.linspace(first, last, k).astype(int))


# ---- planning -----------------------------------------------------------------------------------
def test_short_video_is_one_clip_with_the_papers_indices():
    for n in (30, 150):  # 1.2 s and exactly max_single_s (6.0 s)
        (plan,) = plan_clips(VideoInfo(n, 25.0, 320, 240), S)
        assert plan == ClipPlan(0.0, n / 25.0, paper(0, n - 1))
        assert plan.frame_indices == tuple(np.linspace(0, n - 1, 16).astype(int))


def grid(start: float, fps: float = 25.0, n: int = 10**9) -> tuple[int, ...]:
    """The frames shown at the middles of the 16 quarter-seconds of a 4 s window starting at `start`."""
    return tuple(min(int((math.ceil(start / 0.25 - 1e-9) + j + 0.5) * 0.25 * fps + 1e-6), n - 1) for j in range(16))


def test_long_video_windows_and_final_window_reaching_the_end():
    plans = plan_clips(VideoInfo(263, 25.0, 320, 240), S)  # 10.52 s
    assert [(p.start_s, p.end_s) for p in plans[:4]] == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert plans[-1].start_s == pytest.approx(6.52) and plans[-1].end_s == pytest.approx(10.52)
    assert plans[0].frame_indices == (3, 9, 15, 21, 28, 34, 40, 46, 53, 59, 65, 71, 78, 84, 90, 96)
    assert plans[1].frame_indices == grid(2.0) and plans[-1].frame_indices == grid(6.52, n=263)
    exact = plan_clips(VideoInfo(250, 25.0, 320, 240), S)  # 10 s: the last regular window ends at the end
    assert [(p.start_s, p.end_s) for p in exact] == [(0, 4), (2, 6), (4, 8), (6, 10)]


def test_overlapping_windows_share_their_frames():
    plans = plan_clips(VideoInfo(250, 25.0, 320, 240), S)  # 10 s: 4 windows, each half shared
    for a, b in zip(plans, plans[1:]):
        assert a.frame_indices[8:] == b.frame_indices[:8]
    assert len(union_indices(plans)) == 40  # 8 per 2 s, against 64 for 4 unshared windows
    long = plan_clips(VideoInfo(3000, 25.0, 320, 240), S)  # 2 min: 59 windows
    assert len(union_indices(long)) == 8 * (len(long) + 1)  # every frame embedded once, each used twice
    # the final window, off the regular starts, snaps to the same grid and shares frames too
    tail = plan_clips(VideoInfo(263, 25.0, 320, 240), S)
    assert len(set(tail[-1].frame_indices) & set(tail[-2].frame_indices)) >= 12


def test_windows_hold_their_frames_at_fractional_fps():
    fps = 30000 / 1001
    plans = plan_clips(VideoInfo(1000, fps, 640, 360), S)  # 33.4 s
    step = S.window_s / 16
    assert plans[-1].end_s == pytest.approx(1000 / fps) and plans[-1].frame_indices[-1] >= 999 - step * fps
    for p in plans:
        assert len(p.frame_indices) == 16 and list(p.frame_indices) == sorted(p.frame_indices)
        assert all(p.start_s - step / 2 <= i / fps < p.end_s + step / 2 for i in p.frame_indices)


def test_tiny_and_empty_videos():
    (plan,) = plan_clips(VideoInfo(5, 25.0, 320, 240), S)
    assert len(plan.frame_indices) == 16 and set(plan.frame_indices) == set(range(5))
    (one,) = plan_clips(VideoInfo(1, 25.0, 320, 240), S)
    assert one.frame_indices == (0,) * 16
    assert plan_clips(VideoInfo(0, 25.0, 320, 240), S) == []
    assert plan_clips(VideoInfo(100, 0.0, 320, 240), S) == []


def test_union_indices():
    plans = plan_clips(VideoInfo(263, 25.0, 320, 240), S)
    u = union_indices(plans)
    assert u.tolist() == sorted({i for p in plans for i in p.frame_indices})
    assert union_indices([]).shape == (0,)


# ---- decoding -----------------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["short_mp4", "short_avi"])
def test_decode_one_returns_the_right_frames_at_short_side(media, key):
    d = decode_one(str(media[key]))
    assert d.error is None, d.error
    assert d.info == VideoInfo(30, 25.0, 320, 240)
    assert d.frames.shape == (16, 256, 341, 3) and d.frames.dtype == np.uint8
    assert d.frame_indices.tolist() == list(paper(0, 29))
    assert [decode_number(f) for f in d.frames] == d.frame_indices.tolist()
    assert d.clip_frames(d.plans[0]).shape == (16, 256, 341, 3)


def test_decode_portrait_tiny_and_one_frame(media):
    d = decode_one(str(media["portrait"]))
    assert d.frames.shape == (16, 455, 256, 3)
    assert [decode_number(f) for f in d.frames] == d.frame_indices.tolist()
    tiny = decode_one(str(media["tiny"]))
    assert tiny.frame_indices.tolist() == [0, 1, 2, 3, 4] and tiny.frames.shape[0] == 5
    assert [decode_number(f) for f in tiny.clip_frames(tiny.plans[0])] == list(tiny.plans[0].frame_indices)
    one = decode_one(str(media["one"]))
    assert one.error is None and one.clip_frames(one.plans[0]).shape == (16, 256, 341, 3)


def test_decode_long_video_upscales_and_keeps_order(media):
    d = decode_one(str(media["long"]))  # 160x120 source: upscaled to 341x256
    assert d.error is None and len(d.plans) == 5 and d.frames.shape[1:] == (256, 341, 3)
    assert [decode_number(f) for f in d.frames] == d.frame_indices.tolist()
    assert decode_one(str(media["long"]), max_pixels=10 * 256 * 341).error.startswith("too long")


def test_rotated_video_comes_out_upright_at_short_side(media):
    cap = cv2.VideoCapture(str(media["rotated"]))
    ok, first = cap.read()
    assert ok and first.shape == (320, 240, 3), "OpenCV did not see the rotation: fixture broken"
    d = decode_one(str(media["rotated"]))
    assert d.info.width == 240 and d.info.height == 320 and d.frames.shape == (16, 341, 256, 3)
    want = cv2.resize(cv2.cvtColor(first, cv2.COLOR_BGR2RGB), (256, 341), interpolation=cv2.INTER_AREA)
    assert np.abs(d.frames[0].astype(int) - want).mean() < 6  # not squashed nor sideways


def test_damaged_frames_are_replaced_by_neighbours(media):
    d = decode_one(str(media["damaged"]))
    assert d.error is None and d.repaired > 0 and len(d.frames) == len(d.frame_indices)
    got = np.array([decode_number(f) for f in d.frames])
    assert np.abs(got - d.frame_indices).max() <= 30 and (got == d.frame_indices).mean() > 0.8


def test_frames_travel_in_chunks(media, monkeypatch):
    import indexer.decode as dec

    whole = decode_one(str(media["long"]))
    monkeypatch.setattr(dec, "CHUNK_FRAMES", 7)
    chunked = decode_one(str(media["long"]))
    assert np.array_equal(whole.frames, chunked.frames) and len(whole.frames) > 7


def test_pool_decodes_in_input_order(pool, media):
    keys = ["long", "short_mp4", "tiny", "short_avi", "portrait", "one"]
    t = time.perf_counter()
    results = list(pool.imap(str(media[k]) for k in keys))
    assert [r.path for r in results] == [str(media[k]) for k in keys]
    for r in results:
        assert r.error is None, (r.path, r.error)
        assert [decode_number(f) for f in r.frames] == r.frame_indices.tolist()
    print(f"pool: {len(keys)} videos in {time.perf_counter() - t:.2f} s; "
          f"per video {np.mean([r.seconds for r in results]) * 1000:.0f} ms")


BAD = {
    "zero": "empty file (0 bytes)",
    "random": "not a video",
    "text": "not a video",
    "truncated": "truncated or corrupt",
    "directory": "is a directory",
    "symlink": "broken symlink",
    "missing": "file not found",
}


def test_bad_media_fail_clearly_and_the_pool_keeps_going(pool, media):
    keys = [k for bad in BAD for k in (bad, "short_mp4")]
    results = list(pool.imap([str(media[k]) for k in keys]))
    assert [r.path for r in results] == [str(media[k]) for k in keys]
    for k, r in zip(keys, results):
        if k in BAD:
            assert r.error and r.error.startswith(BAD[k]) and r.frames is None, (k, r.error)
        else:
            assert r.error is None and r.frames.shape == (16, 256, 341, 3)


def test_bad_media_in_process(media):
    for k, reason in BAD.items():
        assert decode_one(str(media[k])).error.startswith(reason), k


def test_crash_is_reported_and_the_next_file_decodes(pool, media):
    crash, good = list(pool.imap([str(media["crash"]), str(media["short_mp4"])]))
    assert crash.error == "decoder crashed (signal SIGSEGV)"
    assert good.error is None and good.frames.shape == (16, 256, 341, 3)


def test_hang_is_killed_after_timeout(pool, media):
    t = time.perf_counter()
    hang, good = list(pool.imap([str(media["hang"]), str(media["short_avi"])]))
    assert hang.error == "decoder timed out after 2 s"
    assert 2.0 <= hang.seconds < 5.0 and time.perf_counter() - t < 10
    assert good.error is None and good.frames.shape == (16, 256, 341, 3)


def test_abandoned_imap_leaves_the_pool_usable(pool, media):
    it = pool.imap([str(media["short_mp4"])] * 10)
    assert next(it).error is None
    it.close()
    (r,) = pool.imap([str(media["tiny"])])
    assert r.error is None and r.frames.shape[0] == 5


def test_pool_start_up_and_close(media):
    t = time.perf_counter()
    with DecodePool(workers=1) as p:
        (r,) = p.imap([str(media["short_mp4"])])
        first = time.perf_counter() - t
    assert r.error is None
    print(f"start-up + first video: {first:.2f} s")
    p.close()  # idempotent


def test_close_while_busy_returns_promptly(media):
    pool = DecodePool(workers=1, timeout_s=60.0, _test_hooks=True)
    results: list = []
    consumer = threading.Thread(target=lambda: results.extend(
        pool.imap([str(media["hang"]), str(media["short_mp4"])])))
    consumer.start()
    time.sleep(1.0)
    t = time.perf_counter()
    pool.close()
    consumer.join(5)
    assert time.perf_counter() - t < 3 and not consumer.is_alive()
    assert [r.error for r in results] == ["pool closed", "skipped: the caller stopped or the pool closed"]


# ---- files whose seeks land on wrong frames -----------------------------------------------------
def in_order(path: Path, indices) -> list[int]:
    """The frame numbers shown at ``indices`` when the file is decoded in order (OpenCV, not decord)."""
    cap, shown, want = cv2.VideoCapture(str(path)), [], set(int(i) for i in indices)
    for i in range(max(want) + 1):
        ok, img = cap.read()
        assert ok, f"{path.name}: OpenCV read only {i} frames"
        if i in want:
            shown.append(decode_number(img[..., ::-1]))
    return shown


def untimed_cases(media) -> list[str]:
    return ["untimed"] + (["bframes"] if "bframes" in media else [])


def test_untimed_avi_fixture_reproduces_the_wrong_seeks(media):
    """The fixture is sharp: decord's random access (what the indexer used to do) returns other frames."""
    from decord import VideoReader, cpu

    for key in untimed_cases(media):
        idx = union_indices(plan_clips(decode_one(str(media[key]), short_side=64).info, S))
        assert in_order(media[key], idx) == idx.tolist()  # the file itself is fine, read in order
        batch = VideoReader(str(media[key]), ctx=cpu(0), num_threads=1).get_batch(idx.tolist()).asnumpy()
        wrong = [decode_number(f) for f in batch] != idx.tolist()
        assert wrong, f"{key}: decord's seeks landed right: the fixture no longer reproduces the problem"


@pytest.mark.parametrize("case", ["untimed", "bframes"])
def test_untimed_avi_is_read_in_order_and_gives_the_right_frames(media, case):
    if case not in media:
        pytest.skip("needs ffmpeg (apt-get install ffmpeg)")
    d = decode_one(str(media[case]))
    assert d.error is None and d.read_mode == "sequential" and d.repaired == 0
    assert len(d.plans) == 5 and d.frames.shape == (len(d.frame_indices), 256, 341, 3)
    assert [decode_number(f) for f in d.frames] == d.frame_indices.tolist() == in_order(media[case], d.frame_indices)
    for p in d.plans:  # each clip gets its own frames
        assert [decode_number(f) for f in d.clip_frames(p)] == list(p.frame_indices)


def test_seek_check_catches_wrong_seeks_when_timestamps_look_fine(media, monkeypatch):
    """The second line of defence: one seek is checked against reading in order."""
    import indexer.decode as dec

    monkeypatch.setattr(dec, "_timestamps_usable", lambda reader: True)
    d = decode_one(str(media["untimed"]))
    assert d.read_mode == "sequential" and [decode_number(f) for f in d.frames] == d.frame_indices.tolist()


@pytest.mark.parametrize("key", ["short_mp4", "long", "short_avi", "webm", "portrait"])
def test_ordinary_files_keep_seeking_and_both_ways_agree(media, key):
    d = decode_one(str(media[key]))
    assert d.error is None and d.read_mode == "seek"
    assert [decode_number(f) for f in d.frames] == d.frame_indices.tolist()
    seq = decode_one(str(media[key]), read_mode="sequential")
    assert seq.read_mode == "sequential" and np.array_equal(seq.frames, d.frames)  # bit-identical


def test_sequential_frames_travel_in_chunks(media, monkeypatch):
    import indexer.decode as dec

    whole = decode_one(str(media["untimed"]))
    monkeypatch.setattr(dec, "CHUNK_FRAMES", 7)
    chunked = decode_one(str(media["untimed"]))
    assert chunked.read_mode == "sequential" and np.array_equal(whole.frames, chunked.frames)
    assert len(whole.frames) > 7
    monkeypatch.setattr(dec, "FLUSH_S", 0.0)  # a slow read sends what it has, frame by frame
    messages = list(dec._stream(str(media["untimed"]), 64, S, None))
    assert [len(m[0]) for m in messages[1:]] == [1] * len(whole.frames)
    with pytest.raises(ValueError, match="read_mode"):
        decode_one(str(media["untimed"]), read_mode="random")


class _Frames:
    """A stand-in for a decord reader read in order: frame i shows i; `fail` frames raise; `n` frames."""

    def __init__(self, n: int, fail=()):
        self.n, self.fail, self.pos = n, set(fail), 0

    def next(self):
        i, self.pos = self.pos, self.pos + 1
        if i >= self.n:
            raise StopIteration
        if i in self.fail:
            raise RuntimeError(f"cannot decode frame {i}")
        return type("F", (), {"asnumpy": lambda _: np.full((2, 2, 3), i, np.uint8)})()


def test_reading_in_order_replaces_undecodable_frames():
    from indexer.decode import DecodeError, _read_in_order

    def read(reader, indices):
        chunks = list(_read_in_order(reader, np.array(indices)))
        return [int(f[0, 0, 0]) for c, _ in chunks for f in c], sum(r for _, r in chunks)

    # an undecodable frame gets the last good one; frames before the first good one get that one
    assert read(_Frames(20, fail={5, 0}), [0, 3, 5, 9]) == ([3, 3, 3, 9], 2)
    # a stream shorter than announced: the missing tail gets the last good frame
    assert read(_Frames(8), [0, 4, 7, 9, 11]) == ([0, 4, 7, 7, 7], 2)
    with pytest.raises(DecodeError, match="3 of 5 sampled frames"):
        read(_Frames(5), [0, 4, 6, 8, 10])
    with pytest.raises(DecodeError, match="truncated or corrupt"):
        read(_Frames(10, fail=set(range(10))), [2])


def test_pool_reads_untimed_files_in_order(pool, media):
    untimed, mp4 = list(pool.imap([str(media["untimed"]), str(media["long"])]))
    assert (untimed.read_mode, mp4.read_mode) == ("sequential", "seek")
    for r in (untimed, mp4):
        assert [decode_number(f) for f in r.frames] == r.frame_indices.tolist()
