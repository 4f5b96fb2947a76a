"""Numbers and sentences derived from the report's results (headline, findings), so the text cannot go
stale: they are computed from docs/evaluation.json each time the docs are rendered."""
from __future__ import annotations

from typing import Callable

import numpy as np

from lift.config import MOTION_WEIGHT

from .format import bench_title, pct


def best_baseline(probe: dict) -> dict:
    """The baseline method with the highest probe accuracy in an `ev.run_probe` result."""
    return max((m for m in probe["methods"] if m["kind"] == "baseline"), key=lambda m: m["accuracy"])


def main_latent_dim(data: dict) -> int:
    """d of the index's own LiFT (the first ablation row): the ablation varies seeds, augmentation and
    anchor at this size."""
    return data["ablation"][0]["latent_dim"]


def recipe_rows(data: dict) -> list[dict]:
    """The ablation's LiFTs retrained on the main benchmark's clips with the index model's chord anchor (no
    index model, no untrained model, no other training library, no other anchor weight)."""
    anchor = data["ablation"][0].get("anchor", 0.0)
    return [r for r in data["ablation"] if r.get("max_epochs") and not r["name"].startswith("index model")
            and r.get("train", "synth") == "synth" and r.get("anchor", 0.0) == anchor]


def headline(data: dict) -> dict:
    """The numbers the acceptance criteria ask about, on the main synthetic benchmark."""
    b = data["benchmarks"]["synth"]
    probe = {m["key"]: m for m in b["probe"]["methods"]}
    ret = {m["key"]: m for m in b["retrieval"]["methods"]}
    sweep = {s["motion"]: s for s in b["retrieval"]["engine_sweep"]}
    best = best_baseline(b["probe"])
    lift = probe["lift_sym"]
    return {"mean_pooling_chiral_top1": ret["mean"]["chiral_top1"], "mean_pooling_both_top1": ret["mean"]["both_top1"],
            "mean_pooling_reverse_top1": ret["mean"]["reverse_top1"],
            "lift_probe": lift["accuracy"], "lift_raw_probe": probe["lift_raw"]["accuracy"],
            "best_baseline": best["name"], "best_baseline_probe": best["accuracy"],
            "concat_over_lift_dims": probe["concat"]["dims"] / lift["dims"],
            "lift_engine_default": {k: v for k, v in sweep[MOTION_WEIGHT].items() if k != "per_group"}}


Metric = Callable[[dict], float]
PROBE_SYM: Metric = lambda x: x["probe_sym"]
PROBE_RAW: Metric = lambda x: x["probe_raw"]
CHIRAL_SYM: Metric = lambda x: x["retrieval_sym"]["chiral_top1"]
CHIRAL_RAW: Metric = lambda x: x["retrieval_raw"]["chiral_top1"]
BOTH_SYM: Metric = lambda x: x["retrieval_sym"]["both_top1"]
BOTH_RAW: Metric = lambda x: x["retrieval_raw"]["both_top1"]
ZD_COS: Metric = lambda x: x["zd_cos_reversal"]


def avg(rows: list[dict], bench: str, f: Metric) -> float:
    """The mean of metric `f` over ablation rows on one benchmark (nan for no rows)."""
    return float(np.mean([f(r["results"][bench]) for r in rows])) if rows else float("nan")


def untrained_findings(data: dict) -> list[str]:
    return ["An untrained LiFT (random weights, d = %d) already gives %s: the symmetrised descriptor "
            "negates its motion half under time reversal by construction, so any encoder that is not "
            "blind to frame order separates a clip from its reversal; training makes that motion half "
            "consistent between different clips of the same action." % (r["latent_dim"], "; ".join(
                f"{bench_title(b)}: probe sym {pct(x['probe_sym'])} %, chiral sym "
                f"{pct(x['retrieval_sym']['chiral_top1'])} % (raw {pct(x['retrieval_raw']['chiral_top1'])} %)"
                for b, x in r["results"].items()))
            for r in data["ablation"] if r["name"].startswith("untrained")]


def recipe_findings(abl: list[dict], bench: str, d: int) -> list[str]:
    """Augmentation, descriptor, seeds and latent size, on one benchmark."""
    out = []
    title = bench_title(bench)
    aug = [r for r in abl if r["latent_dim"] == d and r["reverse_augment"]]
    noaug = [r for r in abl if r["latent_dim"] == d and not r["reverse_augment"]]
    if aug and noaug:
        out.append(f"Reversal augmentation ({title}, d = {d}, mean over seeds "
                   f"{sorted({r['seed'] for r in aug})}): probe sym {pct(avg(aug, bench, PROBE_SYM))} % "
                   f"with vs {pct(avg(noaug, bench, PROBE_SYM))} % without, probe raw "
                   f"{pct(avg(aug, bench, PROBE_RAW))} % vs {pct(avg(noaug, bench, PROBE_RAW))} %; "
                   f"chiral retrieval sym {pct(avg(aug, bench, CHIRAL_SYM))} % vs "
                   f"{pct(avg(noaug, bench, CHIRAL_SYM))} %, raw "
                   f"{pct(avg(aug, bench, CHIRAL_RAW))} % vs "
                   f"{pct(avg(noaug, bench, CHIRAL_RAW))} %; z_d cos "
                   f"{avg(aug, bench, ZD_COS):+.2f} vs {avg(noaug, bench, ZD_COS):+.2f}.")
    if aug:
        out.append(f"Symmetrised vs raw descriptor ({title}, d = {d}, with augmentation): probe "
                   f"{pct(avg(aug, bench, PROBE_SYM))} % vs {pct(avg(aug, bench, PROBE_RAW))} %, "
                   f"chiral retrieval {pct(avg(aug, bench, CHIRAL_SYM))} % vs "
                   f"{pct(avg(aug, bench, CHIRAL_RAW))} %, both-right "
                   f"{pct(avg(aug, bench, BOTH_SYM))} % vs {pct(avg(aug, bench, BOTH_RAW))} %.")
        if len(aug) > 1:
            out.append(f"Seed spread ({title}, d = {d}): probe sym "
                       f"{', '.join(pct(PROBE_SYM(r['results'][bench])) for r in aug)} %, chiral sym "
                       f"{', '.join(pct(CHIRAL_SYM(r['results'][bench])) for r in aug)} % "
                       f"(seeds {', '.join(str(r['seed']) for r in aug)}).")
    dims = sorted({r["latent_dim"] for r in abl if r["reverse_augment"]})
    if len(dims) > 1:
        at = {dim: [r for r in abl if r["latent_dim"] == dim and r["reverse_augment"]] for dim in dims}
        out.append(f"Latent dimension ({title}, with augmentation): " + "; ".join(
            f"d = {dim}: probe sym {pct(avg(at[dim], bench, PROBE_SYM))} %, "
            f"chiral sym {pct(avg(at[dim], bench, CHIRAL_SYM))} %" for dim in dims) + ".")
    return out


def anchor_findings(data: dict, abl: list[dict], d: int) -> list[str]:
    """The recipe's chord anchor against the paper's loss, same seeds."""
    anchor = data["ablation"][0].get("anchor", 0.0)
    anchored = [r for r in abl if r["latent_dim"] == d and r["reverse_augment"]]
    plain = [r for r in data["ablation"] if r.get("max_epochs") and r.get("train", "synth") == "synth"
             and r.get("anchor") == 0 and r["latent_dim"] == d and r["reverse_augment"]
             and r["seed"] in {a["seed"] for a in anchored}]
    if not (anchor and anchored and plain):
        return []
    return [f"Chord anchor (weight {anchor:g}, the indexer's default; d = {d}, with augmentation, mean "
            f"over seeds {sorted({r['seed'] for r in anchored})}), with vs without (the paper's loss): " + "; ".join(
                f"{bench_title(b)}: probe sym {pct(avg(anchored, b, PROBE_SYM))} "
                f"% vs {pct(avg(plain, b, PROBE_SYM))} %, chiral sym "
                f"{pct(avg(anchored, b, CHIRAL_SYM))} % vs {pct(avg(plain, b, CHIRAL_SYM))} %"
                for b in anchored[0]["results"]) + ". Without it, z_d's direction for one action changes "
            "from scene to scene (the reconstruction does not care), which a probe trained on other scenes "
            "cannot use; the anchor pulls z_d towards the frames' net change (last minus first) in the library's "
            "principal chord directions, a code that is shared between scenes."]


def library_size_findings(data: dict, abl: list[dict]) -> list[str]:
    """The same recipe fitted on the larger unseen library against the main benchmark's clips."""
    out = []
    for aug in (True, False):
        big = [r for r in data["ablation"] if r.get("train") == "unseen" and r["reverse_augment"] == aug]
        small = [r for r in abl if big and r["latent_dim"] == big[0]["latent_dim"]
                 and r["reverse_augment"] == aug and r["seed"] == big[0]["seed"]]
        if big and small and "unseen" in big[0]["results"]:
            b, s_ = big[0]["results"]["unseen"], small[0]["results"]["unseen"]
            out.append(f"Library size (unseen benchmark, d = {big[0]['latent_dim']}, "
                       f"{'with' if aug else 'without'} reversal augmentation, seed {big[0]['seed']}): fitted on "
                       f"its own clips instead of the synthetic benchmark's, probe sym {pct(b['probe_sym'])} % vs "
                       f"{pct(s_['probe_sym'])} %, probe raw {pct(b['probe_raw'])} % vs {pct(s_['probe_raw'])} %, "
                       f"chiral sym {pct(b['retrieval_sym']['chiral_top1'])} % vs "
                       f"{pct(s_['retrieval_sym']['chiral_top1'])} %.")
    return out


def motion_weight_finding(data: dict) -> str:
    sweep = {s["motion"]: s for s in data["benchmarks"]["synth"]["retrieval"]["engine_sweep"]}
    return (f"Motion weight (synthetic): w = 0 (appearance only, exactly time-symmetric) gives chiral "
            f"{pct(sweep[0.0]['chiral_top1'])} % with both = {pct(sweep[0.0]['both_top1'])} %; w = 1 (motion only) "
            f"{pct(sweep[1.0]['chiral_top1'])} %; w = 0.5 {pct(sweep[0.5]['chiral_top1'])} %. The arrow of time "
            f"lives in the dynamic half; the static half finds the scene, and the two together are needed.")


def findings(data: dict) -> list[str]:
    """Observations computed from the numbers, so the text cannot go stale."""
    abl, d = recipe_rows(data), main_latent_dim(data)
    out = untrained_findings(data)
    for bench in [b for b in ("synth", "unseen") if b in data["benchmarks"]]:
        out += recipe_findings(abl, bench, d)
    return out + anchor_findings(data, abl, d) + library_size_findings(data, abl) + [motion_weight_finding(data)]


def with_text(data: dict) -> dict:
    """Add the numbers and sentences derived from the runs (headline, findings) that the docs show."""
    data["headline"] = headline(data)
    data["findings"] = findings(data)
    return data
