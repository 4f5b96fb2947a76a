"""Clip planning: which time windows of a video become clips, and which frames each clip samples.

Pure functions, no I/O. The :class:`Sampling` settings are recorded in the index; a query made with
other settings is refused, because embeddings from different samplings are not comparable.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from collections.abc import Iterable

import numpy as np

_EPS = 1e-9  # tolerance for float time comparisons


@dataclass(frozen=True)
class Sampling:
    """How videos are cut into clips and how many frames each clip gets."""

    frames_per_clip: int = 16
    window_s: float = 4.0  # long videos are cut into windows of this length ...
    stride_s: float = 2.0  # ... starting every stride_s seconds
    max_single_s: float = 6.0  # a video no longer than this is one clip over its whole length

    def __post_init__(self) -> None:
        if self.frames_per_clip < 1:
            raise ValueError(f"frames_per_clip must be >= 1, got {self.frames_per_clip}")
        if not (self.window_s > 0 and self.stride_s > 0 and self.max_single_s >= 0):
            raise ValueError(f"window_s and stride_s must be > 0 and max_single_s >= 0: {self}")


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


def plan_clips(info: VideoInfo, sampling: Sampling) -> list[ClipPlan]:
    """Cut a video into clips.

    A video of at most ``max_single_s`` seconds is one clip sampling ``linspace(0, n_frames - 1, k)``.
    A longer one gets windows ``[s, s + window_s)`` for ``s = 0, stride, 2*stride, ...`` while the
    window fits, plus a final window ending exactly at the video's end if the last one falls short.
    A window's frames are those whose timestamp ``i / fps`` lies inside it; the clip samples them
    with the same linspace formula. No frames (or no frame rate) gives no clips.
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

    plans = []
    for start in starts:
        end = min(start + window, duration)
        first = min(math.ceil(start * fps - 1e-6), n - 1)  # first frame with timestamp >= start
        last = max(min(math.ceil(end * fps - 1e-6) - 1, n - 1), first)  # last frame before end
        plans.append(ClipPlan(start, end, _sample(first, last, k)))
    return plans


def union_indices(plans: Iterable[ClipPlan]) -> np.ndarray:
    """Sorted unique frame indices needed by ``plans`` (int64; empty when there are none)."""
    parts = [np.asarray(p.frame_indices, dtype=np.int64) for p in plans]
    return np.unique(np.concatenate(parts)) if parts else np.empty(0, dtype=np.int64)
