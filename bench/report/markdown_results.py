"""The numbered result sections of docs/evaluation.md: 1. the CiA probe, 2. chiral retrieval, 3. the
ablations, 4. real footage. Each takes the report's data and returns its markdown lines."""
from __future__ import annotations

from .format import bench_title, pct, retrieval_cells, retrieval_head, table
from .real import DEFAULT_REAL_VIDEOS

BENCHES = ("synth", "unseen")  # the synthetic benchmarks, in the order the docs show them


def _probe_precision(B: dict) -> str:
    """How far one test scene moves the probe, per benchmark."""
    precision = []
    for key in (b for b in BENCHES if b in B):
        per_scene = 2 * B[key]["library"]["params"]["variants"]  # clips of a scene: variants x 2 classes
        scenes, groups = B[key]["probe"]["test"] // per_scene, B[key]["probe"]["groups"]
        precision.append(f"the {bench_title(key)} test split holds {B[key]['probe']['test']} videos from {scenes} "
                         f"scenes ({scenes / groups:g} per group), so one scene moves a group's score by up to "
                         f"{100 / (scenes / groups):.0f} points and the mean by {100 / scenes:.1f}")
    return ("**How precise.** A test scene's clips (its variants, each beside its exact time reversal) tend to be "
            "right or wrong together: " + "; ".join(precision) + ". Differences of a few points are noise; the "
            "seed spread in section 3 shows how far retraining alone moves LiFT.\n")


def _resampled_probe(B: dict, methods: list[dict]) -> list[str]:
    rs = {key: B[key]["probe_resampled"] for key in BENCHES if key in B and "probe_resampled" in B[key]}
    if not rs:
        return []
    first = next(iter(rs.values()))
    cell = lambda r, key: f"{100 * r['methods'][key]['mean']:.1f} +/- {100 * r['methods'][key]['se']:.1f}"  # noqa: E731
    return [f"The same probe over {first['reps']} random splits by scene (in each group {first['test_share']:.0%} of "
            f"the scenes test, the rest train; numpy seed {first['seed']}), mean +/- standard error of the mean: "
            f"how the methods compare once the luck of one split is averaged out. (Not the CiA protocol, which "
            f"fixes the split; the LiFT is the index's own.)\n",
            table(["method"] + [f"{bench_title(key)} (%)" for key in rs],
                  [[m["name"]] + [cell(r, m["key"]) for r in rs.values()] for m in methods]) + "\n"]


def probe_section(data: dict) -> list[str]:
    B = data["benchmarks"]
    syn, uns = B["synth"], B.get("unseen")
    out = ["## 1. CiA linear probe (our Table 2)\n",
           "Per chiral group, `sklearn.linear_model.RidgeClassifier()` (default alpha) is fitted on the train "
           "split's descriptors and scored on the test split; the mean over groups is reported (chance 50 %). All "
           "descriptors come from the same cached frame features.\n"]
    um = {m["key"]: m for m in uns["probe"]["methods"]} if uns else {}
    out.append(table(["method", "dims", "synthetic (%)"] + (["unseen (%)"] if uns else []),
                     [[m["name"], m["dims"], pct(m["accuracy"])] + ([pct(um[m["key"]]["accuracy"])] if uns else [])
                      for m in syn["probe"]["methods"]]) + "\n")
    out.append(_probe_precision(B))
    out += _resampled_probe(B, syn["probe"]["methods"])
    for key in (b for b in BENCHES if b in B):
        ms = B[key]["probe"]["methods"]
        out.append(f"Per group, {bench_title(key)} (accuracy %, test split):\n")
        out.append(table(["group"] + [m["key"] for m in ms],
                         [[g] + [pct(m["per_group"][g]) for m in ms] for g in ms[0]["per_group"]]) + "\n")
    out.append("For context only, rows of the paper's Table 2 (chiral accuracy %, features of DINOv2 and of video "
               "models on the real CiA splits of SSv2, EPIC-Kitchens and Charades), quoted as printed. **Not "
               "comparable** with the numbers above: other videos, other backbones, other descriptor sizes; ours is "
               "a small synthetic benchmark whose classes are exact time reversals, with ImageNet efficientnet-lite0 "
               "features.\n")
    out.append(table(["Model", "Architecture", "Pooling", "D", "SSv2", "EPIC", "Charades"],
                     [list(r["columns"]) for r in data["paper_table2"]]) + "\n")
    return out


def _retrieval_tables(r: dict, title: str, k: int) -> list[str]:
    """One benchmark's retrieval: methods, the engine's motion-weight sweep, groups below 100 % at w = 0.5."""
    out = [f"**{title}** ({r['clips']} clips):\n",
           table(["method (exact cosine search)", "dims"] + retrieval_head(k),
                 [[m["name"], m["dims"], *retrieval_cells(m, k)] for m in r["methods"]]) + "\n",
           table(["LiFT via SearchEngine, motion weight"] + retrieval_head(k),
                 [[s["motion"], *retrieval_cells(s, k)] for s in r["engine_sweep"]]) + "\n"]
    at = {s["motion"]: s for s in r["engine_sweep"]}[0.5]
    weak = {g: x for g, x in at["per_group"].items() if x["chiral_top1"] < 1.0}
    if weak:
        out.append(f"Groups below 100 % at w = 0.5 ({title}):\n")
        out.append(table(["group"] + retrieval_head(k), [[g, *retrieval_cells(x, k)] for g, x in weak.items()]) + "\n")
    return out


def retrieval_section(data: dict) -> list[str]:
    k, B = data["settings"]["k"], data["benchmarks"]
    syn = B["synth"]
    per_group = syn["library"]["clips"] // syn["library"]["params"]["groups"]
    out = ["## 2. Chiral retrieval\n",
           f"Every labelled clip queries the others. **fwd top-1**: the top result has the query's group and class. "
           f"**rev top-1**: the top result of the reverse query has the query's group and the opposite class. "
           f"**chiral**: the mean of the two; **both**: the share of clips with both right; P@{k}: precision of the "
           f"top {k} (a group holds {per_group} clips, so a clip has {per_group // 2 - 1} same-class and "
           f"{per_group // 2} opposite-class partners). Baselines, and LiFT's descriptors for comparison, are "
           f"searched by exact cosine similarity with the descriptor of the time-reversed frames as the reverse "
           f"query; the sweep goes through `SearchEngine.search_clip` (score = (1 - w) cos(static) + w cos(+/- "
           f"motion)).\n",
           "**Chance.** A time-blind descriptor (mean pooling; LiFT at motion weight 0, whose static half is exactly "
           "symmetric in time) gives the reverse query the forward query's ranking, so at most one of the two can "
           "be right for any clip: *both* is 0 and *chiral* at most 50 %. Which one it gets right is an accident of "
           "the data: here a clip's nearest neighbour in appearance is usually its mirror twin (same scene and "
           "variant, opposite class), so time-blind methods have a high rev top-1 and a low fwd top-1.\n"]
    for key in (b for b in BENCHES if b in B):
        out += _retrieval_tables(B[key]["retrieval"], bench_title(key), k)
    c = syn["checks"]
    out.append("Consistency: the engine's top-1 equals the engine's formula applied in numpy to the stored vectors "
               "for " + ", ".join(f"w = {w}: {pct(v)} %" for w, v in c["top1_agreement_engine_vs_numpy"].items())
               + f" of the queries; stored and recomputed descriptors differ by at most "
                 f"{c['max_abs_diff_stored_vs_recomputed']:.1e}.\n")
    out.append("![LiFT and baselines](eval_methods.png)\n\n![motion-weight sweep](eval_motion_sweep.png)\n")
    return out


def _ablation_table(rows: list[dict], bkey: str) -> str:
    def cells(r: dict) -> list:
        x = r["results"][bkey]
        return [r["name"], r["latent_dim"], {True: "yes", False: "no"}.get(r["reverse_augment"], "-"), r["seed"],
                r["epochs_run"], r["train_seconds"], pct(x["probe_raw"]), pct(x["probe_sym"]),
                pct(x["retrieval_raw"]["chiral_top1"]), pct(x["retrieval_sym"]["chiral_top1"]),
                pct(x["retrieval_sym"]["both_top1"]), f"{x['zd_cos_reversal']:+.3f}"]

    return table(["model", "d", "rev. aug.", "seed", "epochs", "train s", "probe raw", "probe sym", "chiral raw",
                  "chiral sym", "both sym", "z_d cos"], [cells(r) for r in rows]) + "\n"


def _direction_consistency(B: dict, benches: list[str]) -> list[str]:
    """Same-scene vs cross-scene cosine of the motion halves, per group, beside the probe (if measured)."""
    dc = {b: B[b].get("direction_consistency") for b in benches}
    if not all(dc.values()):
        return []
    head = ["group"] + [f"{bench_title(b)}: {w}" for b in benches for w in ("same scene", "cross scene")]
    head += [f"probe sym {bench_title(b)}" for b in benches]
    probe_sym = {b: {m["key"]: m for m in B[b]["probe"]["methods"]}["lift_sym"]["per_group"] for b in benches}
    cos = lambda x: f"{x:+.2f}" if x is not None else "-"  # noqa: E731
    rows = [[g] + [cos(dc[b][g][w]) for b in benches for w in ("same_scene", "cross_scene")]
            + [pct(probe_sym[b][g]) for b in benches] for g in dc["synth"]]
    return ["**Why the probe and retrieval disagree.** Mean cosine between the motion halves (dyn) of two clips of "
            "the same class, from the same scene and from different scenes (the index's LiFT). Retrieval compares a "
            "clip with the clips of its own scene, so it needs only the first to be high; a linear probe trained on "
            "some scenes and tested on others needs the second. Where the cross-scene cosine is near 0 (or "
            "negative), the 'direction' LiFT encodes is specific to the scene's appearance (efficientnet-lite0 is an "
            "ImageNet classifier; its pooled features move differently when different objects move the same way).\n",
            table(head, rows) + "\n"]


def ablation_section(data: dict) -> list[str]:
    B, st = data["benchmarks"], data["settings"]
    out = ["## 3. Where the time-awareness comes from\n",
           f"LiFTs retrained with `lift.train.fit` on the synthetic index's cached frame features (the indexer's own "
           f"training set and recipe, but at most {st['ablation_epochs']} epochs to fit the shared 2-core machine; "
           f"no decoding), each scored with both descriptors: *raw* = the paper's concat(z_s, z_d) (retrieval: exact "
           f"cosine, reverse query = descriptor of the reversed frames), *sym* = our [m | dyn] (retrieval: the "
           f"engine's formula at w = 0.5). The first row is the index's own LiFT (up to "
           f"{data['ablation'][0]['max_epochs']} epochs). z_d cos = mean cos(z_d(x), z_d(reversed x)), -1 when z_d "
           f"flips exactly with the arrow of time. Rows ending in `_fitunseen` are fitted (self-supervised, as `--lift "
           f"fit` would) on the unseen library's own clips, three times as many as the synthetic benchmark's: for "
           f"them the synthetic benchmark is the unseen one. `_anchorW` is the weight of the chord anchor "
           f"(`TrainConfig(anchor=W)`: W x (1 - cos(z_d, chord(x) @ P)), chord(x) the last minus the first of the "
           f"L2-normalised frames, P the top-d principal directions of the training clips' chords); `_anchor0` is the "
           f"paper's loss.\n"]
    benches = [b for b in BENCHES if b in B]
    for bkey in benches:
        out += [f"**{bench_title(bkey)}**:\n", _ablation_table(data["ablation"], bkey)]
    out.append("![ablation](eval_ablation.png)\n")
    out += [f"- {line}" for line in data["findings"]]
    out.append("")
    return out + _direction_consistency(B, benches)


NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def real_section(data: dict) -> list[str]:
    r = data["benchmarks"].get("real")
    if not r:
        return []
    k, lib = data["settings"]["k"], r["library"]
    n, cuts = len(lib["sources"]), lib["cuts"]
    videos = r["paths"].get("videos", str(DEFAULT_REAL_VIDEOS))  # reports made before it was recorded: the default
    per_group = r["probe"]["test"] // r["probe"]["groups"]  # test clips of a group
    return [
        "## 4. Sanity check on real footage\n",
        f"The {NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else n} videos of `{videos}` (" + ", ".join(
            f"{s['file']}: {s['frames']} frames at {s['fps']:g} fps" for s in lib["sources"]) +
        f"), each cut at {len(cuts)} start/end points "
        f"{', '.join(f'{a:g}-{b:g}' for a, b in cuts)} (fractions of its length; the first two "
        f"cuts train, the last two test), and each cut also written as its exact time reversal with "
        f"`indexer.synth.write_reversed`: {n} groups (one per video) x 2 classes (forward, reversed) x {len(cuts)} "
        f"cuts = {lib['clips']} clips, indexed with the synthetic benchmark's LiFT (never trained on real "
        f"footage). A reverse query should find a reversed cut of the same video.\n",
        "```bash\n" + r["index"]["command"] + "\n"
        f"lift-search eval retrieval --index {r['paths']['index']} --labels {r['paths']['library']}/labels.csv\n```\n",
        table(["method", "dims", "probe (%)"] + retrieval_head(k),
              [[m["name"], m["dims"], pct(pm["accuracy"]), *retrieval_cells(m, k)]
               for m, pm in zip(r["retrieval"]["methods"], r["probe"]["methods"])]) + "\n",
        table(["LiFT via SearchEngine, motion weight"] + retrieval_head(k),
              [[s["motion"], *retrieval_cells(s, k)] for s in r["retrieval"]["engine_sweep"]]) + "\n",
        f"With {per_group} test clips per group the probe moves in steps of {100 / per_group:g} points per group; "
        "it is shown for completeness.\n"]
