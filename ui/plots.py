"""Matplotlib figures of search.explain results (object-oriented API: no pyplot global state)."""
from __future__ import annotations

import numpy as np
from matplotlib.collections import LineCollection
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from search.explain import Explanation, Projected

CMAP = "viridis"
ARROW_COLOURS = ("#d62728", "#1f77b4")  # query / clip, result


def _panel(ax, tr: Projected, norm: Normalize, colour: str, explained: np.ndarray):
    pts, line = tr.points, tr.line
    segs = np.stack([pts[:-1], pts[1:]], axis=1)
    ax.add_collection(LineCollection(segs, cmap=CMAP, norm=norm, array=tr.times[:-1], linewidths=1.5,
                                     alpha=0.6, zorder=1))
    sc = ax.scatter(pts[:, 0], pts[:, 1], c=tr.times, cmap=CMAP, norm=norm, s=28, edgecolors="white",
                    linewidths=0.5, zorder=3, label="frames (backbone features)")
    ax.plot(line[:, 0], line[:, 1], color="0.25", lw=1.5, ls="--", zorder=2, label="LiFT reconstruction")
    ax.plot([], [], color=colour, lw=2.5, label="direction of change")
    ax.scatter(line[:, 0], line[:, 1], c=tr.times, cmap=CMAP, norm=norm, s=22, marker="s", edgecolors="0.2",
               linewidths=0.6, zorder=2)
    (x0, y0), (x1, y1) = tr.arrow
    ax.annotate("", xy=(x1, y1), xytext=(x0, y0), zorder=4,
                arrowprops=dict(arrowstyle="-|>,head_width=0.4,head_length=0.8", color=colour, lw=2.5))
    ax.set_title(f"{tr.label}\nLiFT reconstruction R² = {tr.fit:.2f}", fontsize=10.5)
    ax.set_xlabel(f"PC1 ({explained[0]:.0%} of variance)", fontsize=9)
    ax.set_ylabel(f"PC2 ({explained[1]:.0%})", fontsize=9)
    ax.tick_params(labelsize=8)
    ax.grid(alpha=0.25)
    return sc


def _limits(axes, trs):
    allpts = np.concatenate([np.concatenate([t.points, t.line, t.arrow]) for t in trs])
    lo, hi = allpts.min(0), allpts.max(0)
    pad = np.maximum((hi - lo) * 0.08, 1e-6)
    for ax in axes:
        ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
        ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])


def trajectory_figure(exp: Explanation) -> Figure:
    """One panel per trajectory (same plane, same scales), coloured by time, with the LiFT line and its
    arrow; with two trajectories, a third panel draws both arrows from one point."""
    trs = exp.trajectories
    n = len(trs) + (1 if len(trs) >= 2 else 0)
    fig = Figure(figsize=(3.7 * n + 0.6, 3.7), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    last = None
    for i, (ax, tr) in enumerate(zip(axes, trs)):
        norm = Normalize(tr.times.min(), max(tr.times.max(), tr.times.min() + 1e-6))
        last = _panel(ax, tr, norm, ARROW_COLOURS[i % 2], exp.explained)
        if len(trs) > 1:
            fig.colorbar(last, ax=ax, shrink=0.85, pad=0.02).set_label("time in clip (s)", fontsize=8)
    _limits(axes[: len(trs)], trs)
    if len(trs) == 1:
        fig.colorbar(last, ax=axes[0], shrink=0.85, pad=0.02).set_label("time in video (s)", fontsize=9)
        axes[0].legend(loc="best", fontsize=8, framealpha=0.8)
    else:
        _arrows_panel(axes[-1], exp)
    return fig


def _arrows_panel(ax, exp: Explanation):
    for i, tr in enumerate(exp.trajectories[:2]):
        d = tr.arrow[1] - tr.arrow[0]
        n = np.linalg.norm(d)
        d = d / n if n > 0 else d
        ax.annotate("", xy=tuple(d), xytext=(0, 0),
                    arrowprops=dict(arrowstyle="-|>,head_width=0.5,head_length=1", color=ARROW_COLOURS[i], lw=3))
        ax.plot([], [], color=ARROW_COLOURS[i], lw=3, label=tr.label)
    ax.set_xlim(-1.25, 1.25)
    ax.set_ylim(-1.25, 1.25)
    ax.set_aspect("equal")
    ax.axhline(0, color="0.8", lw=0.8)
    ax.axvline(0, color="0.8", lw=0.8)
    ax.set_xticks([])
    ax.set_yticks([])
    cos = exp.arrow_cosine or 0.0
    verdict = "opposite ways" if cos < -0.3 else "the same way" if cos > 0.3 else "unrelated ways"
    ax.set_title(f"directions: they move {verdict}\ncos = {cos:+.2f} in feature space", fontsize=10.5)
    ax.legend(loc="lower center", fontsize=8, ncols=1, framealpha=0.8)
