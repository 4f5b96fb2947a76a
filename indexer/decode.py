"""Decoding the sampled frames of each video, isolated in worker processes.

decord (unmaintained since 2021) can segfault or hang on corrupt input, so :class:`DecodePool` runs
it in long-lived worker processes ("spawn": the parent has torch threads, so no fork). One parent
thread drives each worker over a Pipe; a worker that crashes or stalls for ``timeout_s`` is killed
and replaced, and its file is reported as failed: a bad file costs one result, never the run.

Memory: frames are decoded straight at the reduced size (shorter side == ``short_side``); the source
size comes from the container header (OpenCV, no frame decoded), so a 4K frame is never held in
full. The worker decodes and sends at most ``CHUNK_FRAMES`` frames at a time, so its own memory
stays small; the parent assembles the whole video. A video needing more than ``max_pixels``
decoded pixels (default 2**29: 1.5 GiB of RGB, ~9.6 min of 16:9 video at 256 px and the default
4 s / 2 s sampling, ~12.8 min of 4:3) fails with a clear reason instead of exhausting memory;
with up to ``2 * workers`` videos in flight, that bounds the pool's memory.

Order: decord finds a frame by seeking to the keyframe before it and counting frames from there, using
the frames' presentation timestamps. Files without them (AVIs of MPEG-4 ASP that may hold B-frames:
XviD/DivX, as in UCF101 and HMDB51; opencv-doc's Megamind.avi) make it land on other frames, silently.
So each file is read one of two ways (``Decoded.read_mode``): "seek" (decord's random access) when its
frames have distinct timestamps and a first seek lands where reading in order does, else "sequential":
every frame decoded in order, the sampled ones kept (see :func:`_choose_mode`).
"""
from __future__ import annotations

import logging
import socket
import subprocess
import sys
from multiprocessing.connection import Connection
from pathlib import Path
import os
import queue
import signal
import stat
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from collections.abc import Iterable, Iterator

import numpy as np

from .clips import ClipPlan, Sampling, VideoInfo, plan_clips, segment_plan, union_indices

log = logging.getLogger(__name__)

CHUNK_FRAMES = 512  # frames per get_batch call and per pipe message
FLUSH_S = 1.0  # a sequential read sends the frames it has at least this often (the timeout is per message)
READ_MODES = ("seek", "sequential")
DEFAULT_MAX_PIXELS = 1 << 29  # decoded pixels per video (n_frames * h * w)
MAX_SOURCE_PIXELS = 7680 * 4320  # refuse sources beyond 8K UHD
_STARTUP_TIMEOUT_S = 120.0  # a fresh worker must import decord and cv2 within this
_MAX_TASKS_PER_WORKER = 200  # recycle workers: decord leaks native memory on some streams
_TEST_CRASH, _TEST_HANG, _TEST_SLOW = "__segfault__", "__hang__", "__slow__"  # file-name markers obeyed when
# _test_hooks=True: the decoder segfaults, hangs, or waits 3 s before decoding the file
_MAGIC = [(4, b"ftyp", "MP4/MOV"), (4, b"moov", "MP4/MOV"), (4, b"mdat", "MP4/MOV"), (0, b"RIFF", "AVI"),
          (0, b"\x1aE\xdf\xa3", "Matroska/WebM"), (0, b"FLV", "FLV"), (0, b"OggS", "Ogg"),
          (0, b"\x00\x00\x01\xba", "MPEG-PS"), (0, b"0&\xb2u", "ASF/WMV")]


@dataclass
class Decoded:
    """The sampled frames of one video, or the reason it could not be decoded."""

    path: str
    info: VideoInfo | None
    plans: list[ClipPlan]
    frame_indices: np.ndarray  # (n,) sorted unique, the frames decoded
    frames: np.ndarray | None  # (n, h, w, 3) uint8 RGB, shorter side == short_side
    error: str | None  # human-readable reason on failure, None on success
    seconds: float  # decode wall time
    repaired: int = 0  # undecodable frames replaced by a decodable neighbour
    read_mode: str | None = None  # "seek" or "sequential" (READ_MODES); None when nothing was read

    def clip_frames(self, plan: ClipPlan) -> np.ndarray:
        """The (frames_per_clip, h, w, 3) frames of one of ``plans``."""
        assert self.frames is not None, self.error
        return self.frames[np.searchsorted(self.frame_indices, plan.frame_indices)]


class DecodeError(Exception):
    """A file-level decoding failure with a human-readable reason."""


def _failure(path: str, error: str, t0: float, info: VideoInfo | None = None) -> Decoded:
    return Decoded(path, info, [], np.empty(0, np.int64), None, error, time.monotonic() - t0)


def check_file(path: str) -> str | None:
    """Checks that need no decoder (run in the parent); a reason, or None if the file is worth decoding."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return f"broken symlink (-> {os.readlink(path)})" if os.path.islink(path) else "file not found"
    except OSError as e:
        return f"cannot access file: {e.strerror}"
    if stat.S_ISDIR(st.st_mode):
        return "is a directory, not a video file"
    if not stat.S_ISREG(st.st_mode):
        return "not a regular file"  # a FIFO or a device would block the decoder
    if st.st_size == 0:
        return "empty file (0 bytes)"
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as e:
        return f"unreadable file: {e.strerror}"
    return None


def _explain(path: str, exc: Exception) -> str:
    """A reason for a file decord cannot open (its exception text is C++ log noise)."""
    if "cannot find video stream" in str(exc):
        return "not a video: no video stream"
    with open(path, "rb") as f:
        head = f.read(16)
    kind = next((kind for off, magic, kind in _MAGIC if head[off:off + len(magic)] == magic), None)
    return f"truncated or corrupt: cannot read the {kind} container" if kind else \
        "not a video: unrecognised or unsupported file format"


def _reason(e: Exception) -> str:
    return str(e) if isinstance(e, DecodeError) else f"decode failed: {e!r}"[:300]


def _scaled(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the shorter side == short_side, aspect kept (down- or up-scaling)."""
    if width <= height:
        return short_side, max(1, round(height * short_side / width))
    return max(1, round(width * short_side / height)), short_side


def _open(path: str, short_side: int):
    """Open ``path`` with decord decoding at the reduced size; returns (reader, VideoInfo)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:  # a non-UTF-8 file name: decord refuses it and OpenCV segfaults on it,
        fd = os.open(path, os.O_RDONLY)  # so both get the file through /proc/self/fd instead
        try:
            return _open_name(next((f"{d}/{fd}" for d in ("/proc/self/fd", "/dev/fd") if os.path.isdir(d)),
                                   path), short_side, path)
        finally:
            os.close(fd)
    return _open_name(path, short_side, path)


def _open_name(name: str, short_side: int, path: str):
    import cv2
    from decord import VideoReader, cpu

    path, original = name, path
    # The displayed size from the header alone (decord, like OpenCV, applies rotation metadata).
    cap = cv2.VideoCapture(path)
    width, height = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
    cap.release()
    try:
        if width <= 0 or height <= 0:  # OpenCV cannot tell: decode the first frame at full size
            height, width = VideoReader(path, ctx=cpu(0), num_threads=1)[0].shape[:2]
        if width * height <= MAX_SOURCE_PIXELS:
            out_w, out_h = _scaled(width, height, short_side)
            reader = VideoReader(path, ctx=cpu(0), width=out_w, height=out_h, num_threads=1)
    except Exception as e:  # decord raises RuntimeError / DECORDError carrying C++ log text
        raise DecodeError(_explain(original, e)) from None
    if width * height > MAX_SOURCE_PIXELS:
        raise DecodeError(f"frame size {width}x{height} is beyond the {MAX_SOURCE_PIXELS}-pixel limit")
    return reader, VideoInfo(len(reader), float(reader.get_avg_fps()), width, height)


def _rgb(batch: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(batch[..., :3])  # decord returns RGBA for streams with alpha


def _read(reader, reopen, indices: np.ndarray) -> tuple[np.ndarray, int]:
    """Frames at ``indices`` in one batch; if that fails, frame by frame on a fresh reader, each
    undecodable frame replaced by the nearest decodable one. Returns (frames, number replaced)."""
    try:
        return _rgb(reader.get_batch([int(i) for i in indices]).asnumpy()), 0
    except Exception as e:
        log.debug("batch decode failed (%s); retrying frame by frame", str(e).strip().splitlines()[-1:])
    reader, frames = reopen(), []
    for i in indices:
        try:
            frames.append(_rgb(reader[int(i)].asnumpy()))
        except Exception:
            frames.append(None)
    good = np.array([j for j, f in enumerate(frames) if f is not None], dtype=np.int64)
    bad = len(frames) - len(good)
    if bad * 2 > len(frames):
        raise DecodeError(f"truncated or corrupt: {bad} of {len(frames)} sampled frames could not be decoded")
    for j, f in enumerate(frames):
        if f is None:
            frames[j] = frames[good[np.argmin(np.abs(indices[good] - indices[j]))]]
    return np.stack(frames), bad


def _read_in_order(reader, indices: np.ndarray, pos: int = 0) -> Iterator[tuple[np.ndarray, int]]:
    """Decode every frame from ``pos`` (the reader's position) to ``indices[-1]`` in order, keeping those
    at ``indices`` (sorted, unique, >= pos); yields (frames, number replaced) chunks of at most
    CHUNK_FRAMES, at least every FLUSH_S. A frame the decoder fails on, or one past the stream's real
    end, is replaced by the last good frame before it (by the first good one when none came before)."""
    kept: list[np.ndarray] = []
    repaired, bad, waiting, last, ended, sent = 0, 0, 0, None, False, time.monotonic()
    for i in indices:
        frame = None
        while not ended and pos <= i:
            try:
                frame = reader.next()
            except StopIteration:  # fewer frames than the container announced
                ended, frame = True, None
            except Exception as e:  # this frame cannot be decoded; the next may be
                log.debug("frame %d: %s", pos, str(e).strip().splitlines()[-1:])
                frame = None
            pos += 1
        if frame is not None:
            last = _rgb(frame.asnumpy())
            kept += [last] * (waiting + 1)  # those missing before the first good frame get it
            repaired, waiting = repaired + waiting, 0
        elif last is None:
            waiting, bad = waiting + 1, bad + 1
        else:
            kept.append(last)
            repaired, bad = repaired + 1, bad + 1
        if bad * 2 > len(indices):
            raise DecodeError(f"truncated or corrupt: {bad} of {len(indices)} sampled frames could not be decoded")
        if len(kept) >= CHUNK_FRAMES or (kept and time.monotonic() - sent >= FLUSH_S):
            yield np.stack(kept[:CHUNK_FRAMES]), repaired
            kept, repaired, sent = kept[CHUNK_FRAMES:], 0, time.monotonic()
    if waiting:
        raise DecodeError("truncated or corrupt: no sampled frame could be decoded")
    while kept:
        yield np.stack(kept[:CHUNK_FRAMES]), repaired
        kept, repaired = kept[CHUNK_FRAMES:], 0


def _timestamps_usable(reader) -> bool:
    """Whether every frame has a timestamp of its own: decord's seeks find frames by them. Where the
    container has none (an AVI of MPEG-4 with possible B-frames) decord reports one huge negative value."""
    ts = reader.get_frame_timestamp(np.arange(len(reader)))[:, 0]  # start times in s, sorted
    return bool(np.isfinite(ts).all() and (np.diff(ts) > 0).all() and ts[0] > -1e6)


def _choose_mode(reader, reopen, indices: np.ndarray):
    """How to read a file: ("seek" or "sequential", the reader to go on with, the frames read while
    deciding as a first chunk, or None).

    "sequential" if the frames lack usable timestamps. Otherwise one seek is checked: the first sampled
    frame that needs one (the first at or past the second keyframe, within the first chunk) is reached
    by reading in order (the sampled frames before it lie before that keyframe: decord reads them without
    seeking), then read again by seeking back to it. A different frame (or a failure) means this file's
    seeks cannot be trusted: it is then read in order from the start, on a fresh reader. The check costs
    one seek; a file whose first chunk needs none is not checked.
    """
    if not _timestamps_usable(reader):
        return "sequential", reader, None
    keys = [k for k in reader.get_key_indices() if k > 0]
    head = indices[:CHUNK_FRAMES]
    if not keys or head[-1] < keys[0]:
        return "seek", reader, None
    head = head[:np.searchsorted(head, keys[0]) + 1]  # up to the first frame at or past that keyframe
    before, t = head[:-1], int(head[-1])
    try:
        frames = _rgb(reader.get_batch(before.tolist()).asnumpy()) if len(before) else None
        ((last, _),) = _read_in_order(reader, head[-1:], pos=int(before[-1]) + 1 if len(before) else 0)
        again = _rgb(reader.get_batch([t]).asnumpy())
    except Exception as e:  # (_read_in_order raises if frame t cannot be decoded)
        log.debug("checking a seek to frame %d: %s", t, str(e).strip().splitlines()[-1:])
    else:
        if np.array_equal(again, last):
            return "seek", reader, (last if frames is None else np.concatenate([frames, last]), 0)
    return "sequential", reopen(), None


Segment = tuple[float, float] | None  # one clip over [start_s, end_s) of a video instead of plan_clips' clips


def _stream(path: str, short_side: int, sampling: Sampling, max_pixels: int | None,
            segment: Segment = None, read_mode: str | None = None) -> Iterator:
    """The decoding protocol: a header Decoded (frames None; final if it has an error), then
    (frames, repaired) chunks in frame order until all frame_indices are sent, or an error str.
    ``read_mode`` None decides per file (:func:`_choose_mode`); "seek" or "sequential" forces one."""
    t0, info = time.monotonic(), None
    try:
        reader, info = _open(path, short_side)
        if info.n_frames <= 0 or not info.fps > 0:
            raise DecodeError("truncated or corrupt: no frames" if info.n_frames <= 0 else "no frame rate")
        if segment is not None and segment[0] >= info.duration_s:
            raise DecodeError(f"the segment starts at {segment[0]:g} s, after the video's end ({info.duration_s:.2f} s)")
        plans = plan_clips(info, sampling) if segment is None else [segment_plan(info, sampling.frames_per_clip, *segment)]
        indices = union_indices(plans)
        out_w, out_h = _scaled(info.width, info.height, short_side)
        if max_pixels and len(indices) * out_w * out_h > max_pixels:
            raise DecodeError(f"too long: {len(indices)} frames of {out_w}x{out_h} exceed max_pixels={max_pixels}")
        reopen = lambda: _open(path, short_side)[0]  # noqa: E731
        first = None
        if read_mode is None:
            read_mode, reader, first = _choose_mode(reader, reopen, indices)
    except Exception as e:
        yield _failure(path, _reason(e), t0, info)
        return
    yield Decoded(path, info, plans, indices, None, None, time.monotonic() - t0, read_mode=read_mode)
    try:
        done = 0
        if first is not None:
            yield first
            done = len(first[0])
        if read_mode == "sequential":
            yield from _read_in_order(reader, indices)
        else:
            for start in range(done, len(indices), CHUNK_FRAMES):
                yield _read(reader, reopen, indices[start:start + CHUNK_FRAMES])
    except Exception as e:
        yield _reason(e)


def _collect(messages: Iterator, t0: float) -> Decoded:
    """Assemble a whole Decoded from a _stream (or from a worker relaying one)."""
    head = next(messages)
    frames, filled = None, 0
    while head.error is None and filled < len(head.frame_indices):
        msg = next(messages)
        if isinstance(msg, str):
            return _failure(head.path, msg, t0, head.info)
        chunk, repaired = msg
        if frames is None:
            frames = np.empty((len(head.frame_indices), *chunk.shape[1:]), np.uint8)
        frames[filled:filled + len(chunk)] = chunk
        filled, head.repaired = filled + len(chunk), head.repaired + repaired
    head.frames, head.seconds = frames, time.monotonic() - t0
    return head


def decode_one(path: str, short_side: int = 256, sampling: Sampling = Sampling(),
               max_pixels: int | None = None, segment: Segment = None,
               read_mode: str | None = None) -> Decoded:
    """Decode one video in this process (no crash isolation): for tests, benchmarks and debugging.
    ``read_mode`` "seek" or "sequential" forces a way of reading (None: decided per file, as the pool does)."""
    if read_mode not in (None, *READ_MODES):
        raise ValueError(f"read_mode must be one of {READ_MODES} or None, got {read_mode!r}")
    t0, path = time.monotonic(), os.fspath(path)
    if (reason := check_file(path)) is not None:
        return _failure(path, reason, t0)
    return _collect(_stream(path, short_side, sampling, max_pixels, segment, read_mode), t0)


# ---- worker processes ---------------------------------------------------------------------------
@dataclass(frozen=True)
class _Config:
    short_side: int
    sampling: Sampling
    max_pixels: int | None
    quiet: bool
    test_hooks: bool


def _worker_entry(fd: int) -> None:
    """Entry point of a worker process: its end of the socket is `fd`; the first message is the config."""
    conn = Connection(fd)
    _worker_main(conn, conn.recv())


def _worker_main(conn, cfg: _Config) -> None:
    """Worker loop: receive a path, relay its _stream; None or a closed pipe ends it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    if cfg.quiet:  # ffmpeg/decord log to fd 2 from C; the reasons come back in Decoded.error instead
        os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    try:  # import before "ready", so start-up is not billed to the first file; failures show per file
        import cv2  # noqa: F401
        import decord  # noqa: F401
    except ImportError:
        pass
    conn.send("ready")
    while (task := conn.recv()) is not None:
        path, segment = task
        if cfg.test_hooks and _TEST_CRASH in path:
            os.kill(os.getpid(), signal.SIGSEGV)
        if cfg.test_hooks and _TEST_HANG in path:
            time.sleep(1e6)
        if cfg.test_hooks and _TEST_SLOW in path:
            time.sleep(3)
        for msg in _stream(path, cfg.short_side, cfg.sampling, cfg.max_pixels, segment):
            conn.send(msg)


class _Lost(Exception):
    """The worker died or stalled; the message says how."""


class _Worker:
    """One worker process and the parent's end of its pipe."""

    def __init__(self, cfg: _Config):
        self.cfg, self.proc, self.conn, self.ready, self.tasks = cfg, None, None, False, 0

    def start(self) -> None:
        """A fresh interpreter running only this module (not multiprocessing's spawn, which would
        re-import the caller's __main__: a script, a notebook or stdin)."""
        parent, child = socket.socketpair()
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from indexer.decode import _worker_entry; "
             "_worker_entry(int(sys.argv[1]))", str(child.fileno())],
            pass_fds=(child.fileno(),), stdin=subprocess.DEVNULL, env=env)
        child.close()
        self.conn = Connection(parent.detach())
        self.conn.send(self.cfg)
        self.ready, self.tasks = False, 0

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if not kill:
            try:
                self.conn.send(None)
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                pass
        self.proc.kill()  # no-op if it has exited
        self.proc.wait()
        self.conn.close()
        self.proc = self.conn = None

    def death(self) -> str:
        """How the worker ended, e.g. "signal SIGSEGV"; stops it."""
        try:
            code = self.proc.wait(2)
        except subprocess.TimeoutExpired:
            code = None
        self.stop(kill=True)
        if code is not None and code < 0:
            name = signal.Signals(-code).name
            return f"signal {name}" + ("; out of memory?" if name == "SIGKILL" else "")
        return f"exit code {code}" if code is not None else "no response"


@dataclass
class _Task:
    path: str
    segment: Segment = None
    out: queue.Queue = field(default_factory=queue.Queue)
    cancelled: bool = False


class DecodePool:
    """Decode videos in ``workers`` crash-isolated processes (see the module docstring).

    ``imap`` yields one Decoded per path, in input order, with at most ``2 * workers`` videos in
    flight, so decoding overlaps the caller's inference. A file that crashes its worker, or during
    which the worker sends nothing for ``timeout_s`` (per chunk of frames), yields a failed Decoded.
    Checks that need no decoder (missing, directory, empty, ...) are answered in the parent.
    """

    def __init__(self, workers: int = 2, timeout_s: float = 60.0, short_side: int = 256,
                 sampling: Sampling = Sampling(), max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 quiet: bool = True, _test_hooks: bool = False):
        self.timeout_s, self.prefetch = timeout_s, 2 * workers
        self._tasks: queue.Queue[_Task | None] = queue.Queue()
        self._closing = threading.Event()
        self._workers = [_Worker(_Config(short_side, sampling, max_pixels, quiet, _test_hooks))
                         for _ in range(workers)]
        for w in self._workers:  # start now: spawn start-up overlaps the caller's model loading
            w.start()
        self._threads = [threading.Thread(target=self._serve, args=(w,), daemon=True) for w in self._workers]
        for t in self._threads:
            t.start()

    def imap(self, paths: Iterable[str], segments: Iterable[Segment] | None = None) -> Iterator[Decoded]:
        """Decode ``paths`` (each as one clip over its segment (start_s, end_s), where ``segments`` gives
        one); yields their Decoded in input order."""
        todo, pending = zip(paths, segments) if segments is not None else ((p, None) for p in paths), deque()

        def submit() -> bool:
            path, segment = next(todo, (None, None))
            if path is None:
                return False
            task = _Task(os.fspath(path), segment)
            pending.append(task)
            if (reason := check_file(task.path)) is not None:
                task.out.put(_failure(task.path, reason, time.monotonic()))
            else:
                self._tasks.put(task)
            return True

        try:
            while len(pending) < self.prefetch and submit():
                pass
            while pending:
                task = pending.popleft()
                submit()
                yield task.out.get()
        finally:  # the caller stopped early: skip what is still queued (running ones finish)
            for task in pending:
                task.cancelled = True

    def _serve(self, worker: _Worker) -> None:
        while (task := self._tasks.get()) is not None:
            t0 = time.monotonic()
            try:
                if task.cancelled or self._closing.is_set():
                    raise _Lost("skipped: the caller stopped or the pool closed")
                self._ready(worker)
                t0 = time.monotonic()  # Decoded.seconds leaves out the worker's start-up
                result = _collect(self._relay(worker, task), t0)
                worker.tasks += 1
                if worker.tasks >= _MAX_TASKS_PER_WORKER:
                    worker.stop()
            except _Lost as e:
                if not (task.cancelled or self._closing.is_set()):
                    log.warning("%s: %s; worker restarted", task.path, e)
                result = _failure(task.path, str(e), t0)
            task.out.put(result)
        worker.stop()

    def _poll(self, worker: _Worker, timeout: float) -> bool:
        """Wait for the worker to send something; False on timeout or when the pool is closing."""
        deadline = time.monotonic() + timeout
        while not self._closing.is_set():
            if worker.conn.poll(max(0.0, min(deadline - time.monotonic(), 0.25))):
                return True
            if time.monotonic() >= deadline:
                return False
        return False

    def _ready(self, worker: _Worker) -> None:
        """(Re)start the worker if needed and wait until it has imported its decoders."""
        if worker.proc is None:
            worker.start()
        if not worker.ready:
            try:
                worker.ready = self._poll(worker, _STARTUP_TIMEOUT_S) and worker.conn.recv() == "ready"
            except (EOFError, OSError):
                pass
            if not worker.ready:
                raise _Lost(f"decoder failed to start ({worker.death()})")

    def _relay(self, worker: _Worker, task: _Task) -> Iterator:
        """The worker's messages for the task's file; raises _Lost when it crashes or stalls."""
        try:
            worker.conn.send((task.path, task.segment))
        except OSError:
            raise _Lost(f"decoder crashed ({worker.death()})") from None
        while True:
            if not self._poll(worker, self.timeout_s):
                worker.stop(kill=True)
                raise _Lost("pool closed" if self._closing.is_set() else
                            f"decoder timed out after {self.timeout_s:g} s")
            try:
                msg = worker.conn.recv()
            except (EOFError, OSError):  # the worker died: segfault, OOM kill, ...
                raise _Lost(f"decoder crashed ({worker.death()})") from None
            yield msg

    def close(self) -> None:
        """Stop the workers, killing busy ones; unfinished imap results are dropped. Idempotent."""
        self._closing.set()
        for _ in self._threads:
            self._tasks.put(None)
        for t in self._threads:
            t.join()

    def __enter__(self) -> DecodePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@dataclass(frozen=True)
class DecoderConfig:
    """What a DecodePool of a run is given (picklable: a Ray decode actor builds its pool from it, importing
    this module and nothing heavier: no torch, no database)."""

    short_side: int           # the backbone's resize: frames are decoded straight at that size
    sampling: Sampling
    timeout_s: float
    test_hooks: bool = False  # obey this module's file-name markers (__segfault__, __hang__, __slow__)

    def pool(self, workers: int) -> DecodePool:
        return DecodePool(workers=workers, timeout_s=self.timeout_s, short_side=self.short_side,
                          sampling=self.sampling, _test_hooks=self.test_hooks)


def failure_reason(decoded: Decoded) -> str | None:
    """Why a decoded video cannot be indexed (recorded as its failure), or None."""
    return decoded.error or (None if decoded.plans else "no clips (no frames)")
