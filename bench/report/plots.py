"""The report's figures, drawn from its data: the methods (probe and retrieval), the motion-weight sweep
and the ablation."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .findings import best_baseline, recipe_rows

RED, BLUE, YELLOW, GREY, GREEN = "#d1495b", "#30638e", "#edae49", "#888888", "#2e8b57"
DPI = 110


def plots(data: dict, docs: Path) -> None:
    """eval_methods.png, eval_motion_sweep.png and eval_ablation.png in `docs`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for name, draw in (("eval_methods.png", methods_figure), ("eval_motion_sweep.png", motion_sweep_figure),
                       ("eval_ablation.png", ablation_figure)):
        fig = draw(plt, data)
        fig.tight_layout()
        fig.savefig(docs / name, dpi=DPI)
        plt.close(fig)


def methods_figure(plt, data: dict):
    """The CiA probe of every method (synthetic and unseen) and chiral retrieval on the synthetic benchmark."""
    probe, ret = data["benchmarks"]["synth"]["probe"], data["benchmarks"]["synth"]["retrieval"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    ms = probe["methods"]
    colours = [GREY if m["kind"] == "baseline" else RED for m in ms]
    ax = axes[0]
    x = np.arange(len(ms))
    ax.bar(x - 0.2, [100 * m["accuracy"] for m in ms], 0.4, label="synthetic", color=colours)
    if "unseen" in data["benchmarks"]:
        um = {m["key"]: m for m in data["benchmarks"]["unseen"]["probe"]["methods"]}
        ax.bar(x + 0.2, [100 * um[m["key"]]["accuracy"] for m in ms], 0.4, label="unseen", color="#cccccc",
               edgecolor=colours, hatch="//")
    ax.set_xticks(x, [f"{m['key']}\n{m['dims']}-d" for m in ms], fontsize=8)
    ax.axhline(50, ls="--", c="k", lw=0.8)
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    ax.set_title("CiA linear probe (mean over groups; chance 50 %)")
    ax.legend(fontsize=8, loc="upper left")
    ax = axes[1]
    rows = ret["methods"] + [{**s, "key": f"engine\nw={s['motion']}"} for s in ret["engine_sweep"] if s["motion"] == 0.5]
    x = np.arange(len(rows))
    for j, (key, lab, c) in enumerate((("forward_top1", "fwd top-1", BLUE), ("reverse_top1", "rev top-1", YELLOW),
                                       ("both_top1", "both right", RED))):
        ax.bar(x + (j - 1) * 0.27, [100 * r[key] for r in rows], 0.27, label=lab, color=c)
    ax.set_xticks(x, [r["key"] for r in rows], fontsize=8)
    ax.set_ylim(0, 105)
    ax.set_title("chiral retrieval, synthetic (exact search; LiFT engine)")
    ax.legend(fontsize=8, loc="lower right")
    return fig


def motion_sweep_figure(plt, data: dict):
    """Retrieval through SearchEngine.search_clip at each motion weight (synthetic)."""
    k = data["settings"]["k"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    sw = data["benchmarks"]["synth"]["retrieval"]["engine_sweep"]
    w = [s["motion"] for s in sw]
    for key, lab, style in (("forward_top1", "fwd top-1", "o-"), ("reverse_top1", "rev top-1", "s-"),
                            ("both_top1", "both right", "^-"), (f"forward_p@{k}", f"fwd P@{k}", "o:"),
                            (f"reverse_p@{k}", f"rev P@{k}", "s:")):
        ax.plot(w, [100 * s[key] for s in sw], style, label=lab)
    ax.set_xlabel("motion weight w (0: appearance only, 1: motion only)")
    ax.set_ylabel("%")
    ax.set_ylim(0, 105)
    ax.set_title("LiFT via SearchEngine.search_clip (synthetic)")
    ax.legend(fontsize=8)
    return fig


ABLATION_METRICS = (("CiA probe accuracy", lambda x: x["probe_sym"], lambda x: x["probe_raw"]),
                    ("chiral retrieval: fwd and rev top-1 both right", lambda x: x["retrieval_sym"]["both_top1"],
                     lambda x: x["retrieval_raw"]["both_top1"]))


def ablation_figure(plt, data: dict):
    """Probe and both-right retrieval against the latent size, per benchmark: both descriptors, with and
    without reversal augmentation, beside an untrained LiFT and the best baseline."""
    benches = [b for b in ("synth", "unseen") if b in data["benchmarks"]]
    fig, axes = plt.subplots(len(benches), 2, figsize=(12, 4 * len(benches)), squeeze=False)
    for bi, bench in enumerate(benches):
        for ax, (title, fs, fr) in zip(axes[bi], ABLATION_METRICS):
            _ablation_panel(ax, data, bench, title, fs, fr)
    return fig


def _ablation_panel(ax, data: dict, bench: str, title: str, fs, fr) -> None:
    abl = recipe_rows(data)
    untrained = [r for r in data["ablation"] if r["name"].startswith("untrained")]
    for f, lab, c in ((fs, "sym [m|dyn]", RED), (fr, "raw (z_s, z_d)", BLUE)):
        for aug, marker, ls in ((True, "o", "-"), (False, "x", "")):
            rows = [r for r in abl if r["reverse_augment"] == aug]
            ds = sorted({r["latent_dim"] for r in rows})
            if not ds:
                continue
            ys = [100 * np.mean([f(r["results"][bench]) for r in rows if r["latent_dim"] == d]) for d in ds]
            ax.plot(ds, ys, marker + ls, c=c, ms=8, label=f"{lab}, {'with' if aug else 'without'} reversal aug.")
        for r in untrained:
            ax.axhline(100 * f(r["results"][bench]), c=c, ls=":", lw=1, label=f"{lab}, untrained (random init)")
    ax.axhline(50 if "probe" in title else 0, c="k", ls="--", lw=0.6)
    if "probe" in title:  # the bar LiFT has to reach
        best = best_baseline(data["benchmarks"][bench]["probe"])
        ax.axhline(100 * best["accuracy"], c=GREEN, ls="-.", lw=1, label=f"best baseline: {best['name']} ({best['dims']}-d)")
    ax.set_xticks(data["settings"]["dims"])
    ax.set_xlabel("latent dimension d")
    ax.set_ylim(-2, 105)
    ax.set_title(f"{title} ({'synthetic' if bench == 'synth' else bench})")
    ax.legend(fontsize=7, loc="best")
