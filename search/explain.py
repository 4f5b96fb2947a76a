"""Why did a clip match? The numbers behind the UI's Explain page (no plotting here).

LiFT reads a clip as a trajectory of per-frame backbone features and rebuilds it from a straight line in
its latent space (`SearchEngine.clip_features` gives both, each (T, D)). To draw them, every trajectory
being compared (its frames *and* its reconstruction) is projected onto one shared plane: the top two
principal components of all of them together, each taken about its own mean, so that the plane shows how
the clips *change* rather than how they differ in looks (nor how far a poor reconstruction sits from its
clip, which `fit` reports). Both are then drawn about the clip's frames' mean, the reconstruction at its
true offset. The plane is oriented so the first clip moves left to right.

Each clip gets an arrow along its direction of change: the least-squares straight line through its
frames over time, from the first frame's time to the last. Reversing a clip in time reverses its arrow
exactly, so for an opposite-action match the result's arrow points against the query's;
`Explanation.arrow_cosine` measures that in the full feature space (-1: exactly opposite ways).

    exp = explain_clip(engine, 12)              # one clip
    exp = compare(query, result)                # two Trajectory, in one plane
    exp.trajectories[0].points, .line, .arrow, .times, .fit
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Trajectory:
    """One clip in feature space: per-frame features, LiFT's reconstruction of them, frame times."""

    features: np.ndarray        # (T, D)
    reconstruction: np.ndarray  # (T, D)
    times: np.ndarray           # (T,) seconds, increasing
    label: str = ""

    @classmethod
    def of(cls, features, reconstruction, start_s: float = 0.0, end_s: float | None = None,
           label: str = "") -> "Trajectory":
        """Frames spread evenly over [start_s, end_s] (over one second without an end). Frame features
        longer than the reconstruction (with "global+cells" pooling: the pooled vector, then a spatial map
        that LiFT reads as feature flow and does not rebuild) are drawn by their first, pooled, part."""
        x, r = np.asarray(features, np.float64), np.asarray(reconstruction, np.float64)
        if x.ndim == 2 and r.ndim == 2 and x.shape[1] > r.shape[1]:
            x = x[:, :r.shape[1]]
        if x.ndim != 2 or x.shape != r.shape or len(x) < 1:
            raise ValueError(f"features and reconstruction must both be (T, D); got {x.shape} and {r.shape}")
        end = start_s + 1.0 if end_s is None else end_s
        return cls(x, r, np.linspace(start_s, end, len(x)), label)

    def trend(self) -> np.ndarray:
        """(2, D): the least-squares line through the frames over time, at the first and last frame."""
        t = np.linspace(0.0, 1.0, len(self.features))
        mean = self.features.mean(0)
        tc = t - t.mean()
        slope = (tc @ (self.features - mean)) / (tc @ tc) if len(t) > 1 else np.zeros_like(mean)
        return np.stack([mean + slope * tc[0], mean + slope * tc[-1]])

    @property
    def direction(self) -> np.ndarray:
        """Unit vector (D,) along the trend, from the first frame to the last (zeros for a still clip)."""
        d = np.diff(self.trend(), axis=0)[0]
        n = np.linalg.norm(d)
        return d / n if n > 0 else np.zeros_like(d)

    @property
    def fit(self) -> float:
        """Share of the trajectory's variance that LiFT's reconstruction explains (R^2, at most 1)."""
        spread = np.sum((self.features - self.features.mean(0)) ** 2)
        if spread == 0:
            return 1.0
        return float(1.0 - np.sum((self.features - self.reconstruction) ** 2) / spread)


@dataclass(frozen=True)
class Projected:
    """A trajectory in the shared plane (about its own mean)."""

    label: str
    points: np.ndarray  # (T, 2) per-frame features
    line: np.ndarray    # (T, 2) LiFT's reconstruction
    times: np.ndarray   # (T,) seconds, for colouring by time
    arrow: np.ndarray   # (2, 2): tail (first frame) and head (last frame) of the frames' trend
    fit: float          # R^2 of LiFT's reconstruction in the full feature space


@dataclass(frozen=True)
class Explanation:
    trajectories: list[Projected]
    explained: np.ndarray          # (2,) share of the within-trajectory variance along each axis
    arrow_cosine: float | None     # cos between the first two clips' directions, full feature space
    arrow_cosine_2d: float | None  # the same for the drawn arrows

    @property
    def opposite(self) -> bool:
        """Whether the first two arrows point against each other."""
        return self.arrow_cosine is not None and self.arrow_cosine < 0


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(a @ b / (na * nb)) if na > 0 and nb > 0 else 0.0


def project(*trajectories: Trajectory) -> Explanation:
    """Project the trajectories (frames, reconstructions, arrows) onto one plane; see the module doc."""
    if not trajectories:
        raise ValueError("nothing to project")
    dims = {t.features.shape[1] for t in trajectories}
    if len(dims) != 1:
        raise ValueError(f"trajectories have different feature sizes: {sorted(dims)}")
    means = [t.features.mean(0) for t in trajectories]
    centred = np.concatenate([np.concatenate([t.features - m, t.reconstruction - t.reconstruction.mean(0)])
                              for t, m in zip(trajectories, means)])
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    axes = np.zeros((2, centred.shape[1]))
    axes[: min(2, len(vt))] = vt[:2]
    var = s ** 2
    explained = np.zeros(2)
    if var.sum() > 0:
        explained[: min(2, len(var))] = (var / var.sum())[:2]

    head = np.diff(trajectories[0].trend(), axis=0)[0] @ axes.T
    for i in range(2):  # the first clip moves left to right and, if at all, upwards
        if head[i] < 0:
            axes[i] = -axes[i]

    out = [Projected(t.label, (t.features - m) @ axes.T, (t.reconstruction - m) @ axes.T, t.times,
                     (t.trend() - m) @ axes.T, t.fit) for t, m in zip(trajectories, means)]
    cos = cos2 = None
    if len(trajectories) >= 2:
        cos = _cos(trajectories[0].direction, trajectories[1].direction)
        cos2 = _cos(*(np.diff(p.arrow, axis=0)[0] for p in out[:2]))
    return Explanation(out, explained, cos, cos2)


def clip_trajectory(engine, clip_id: int, label: str | None = None) -> Trajectory:
    """An indexed clip's trajectory, from the index's feature cache (nothing is decoded)."""
    clip = engine.clip(clip_id)  # raises SearchError for an unknown or hidden id
    feats, recon = engine.clip_features(clip_id)
    return Trajectory.of(feats, recon, clip.start_s, clip.end_s, label or f"clip {clip_id}")


def explain_clip(engine, clip_id: int) -> Explanation:
    return project(clip_trajectory(engine, clip_id))


def compare(query: Trajectory, result: Trajectory) -> Explanation:
    """A query and a result in one plane; `arrow_cosine` < 0 when they move opposite ways."""
    return project(query, result)
