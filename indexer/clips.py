"""Clip planning: which time windows of a video become clips, and which frames each clip samples.

Pure functions, no I/O. The :class:`~lift.config.Sampling` settings are recorded in the index; a query made
with other settings is refused, because embeddings from different samplings are not comparable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Iterable

import numpy as np

from lift.config import Sampling

__all__ = ["Sampling", "VideoInfo", "ClipPlan", "plan_clips", "segment_plan", "union_indices"]

_EPS = 1e-9  # tolerance for float time comparisons


@dataclass(frozen=True)
class VideoInfo:
    """Stream facts read from the container header (no decoding needed)."""

    n_frames: int
    fps: float
    width: int
    height: int

    @property
    def duration_s(self) -> float:
        return self.n_frames / self.fps if self.fps > 0 else 0.0


@dataclass(frozen=True)
class ClipPlan:
    """One clip: the time span [start_s, end_s) and the frame indices sampled from it."""

    start_s: float
    end_s: float
    frame_indices: tuple[int, ...]  # len == Sampling.frames_per_clip, non-decreasing


def _sample(first: int, last: int, k: int) -> tuple[int, ...]:
    """The paper's protocol: ``np.linspace(first, last, k).astype(int)`` (repeats when last - first < k)."""
    return tuple(int(i) for i in np.linspace(first, last, k).astype(int))


def _on_grid(start: float, k: int, step: float, fps: float, n: int) -> tuple[int, ...]:
    """k frames of a window: those shown at the middles of its k equal parts, the parts being cells of
    one grid of ``step`` seconds for the whole video (a window starting off the grid, the final one,
    moves forward onto it, so that it still reaches the end)."""
    m0 = math.ceil(start / step - 1e-9)
    return tuple(min(int((m0 + j + 0.5) * step * fps + 1e-6), n - 1) for j in range(k))


def plan_clips(info: VideoInfo, sampling: Sampling) -> list[ClipPlan]:
    """Cut a video into clips.

    A video of at most ``max_single_s`` seconds is one clip sampling ``linspace(0, n_frames - 1, k)``
    (the paper's protocol). A longer one gets windows ``[s, s + window_s)`` for ``s = 0, stride,
    2*stride, ...`` while the window fits, plus a final window ending exactly at the video's end if the
    last one falls short. A window samples the frames shown at the middles of its k equal parts, on one
    time grid of ``window_s / k`` seconds for the whole video: windows that overlap share those frames
    (with the default 4 s windows every 2 s, half of them), so each is decoded and embedded once, and a
    long video costs half the backbone work. No frames (or no frame rate) gives no clips.
    """
    n, fps, k = info.n_frames, info.fps, sampling.frames_per_clip
    if n <= 0 or not fps > 0:
        return []
    duration = info.duration_s
    if duration <= sampling.max_single_s + _EPS:
        return [ClipPlan(0.0, duration, _sample(0, n - 1, k))]

    window = min(sampling.window_s, duration)
    starts: list[float] = []
    i = 0
    while i * sampling.stride_s + window <= duration + _EPS:
        starts.append(i * sampling.stride_s)
        i += 1
    if starts[-1] + window < duration - _EPS:
        starts.append(duration - window)
    step = window / k
    return [ClipPlan(start, min(start + window, duration), _on_grid(start, k, step, fps, n)) for start in starts]


def segment_plan(info: VideoInfo, frames_per_clip: int, start_s: float, end_s: float) -> ClipPlan:
    """One clip over the segment [start_s, end_s) of a video (end clamped to its end): the frames shown at
    the middles of its ``frames_per_clip`` equal parts, as a window of ``plan_clips`` samples them, so that a
    segment equal to an indexed window gives that window's frames."""
    end = min(end_s, info.duration_s)
    step = max(end - start_s, 0.0) / frames_per_clip
    frames = tuple(min(int((start_s + (j + 0.5) * step) * info.fps + 1e-6), info.n_frames - 1)
                   for j in range(frames_per_clip))
    return ClipPlan(start_s, end, frames)


def union_indices(plans: Iterable[ClipPlan]) -> np.ndarray:
    """Sorted unique frame indices needed by ``plans`` (int64; empty when there are none)."""
    parts = [np.asarray(p.frame_indices, dtype=np.int64) for p in plans]
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
