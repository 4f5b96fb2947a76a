"""Step 4: ablations from the index's cached frame features (no decoding). LiFTs retrained with
lift.train.fit at other latent sizes, without reversal augmentation, without the chord anchor, with other
seeds and on another library; each scored with both descriptors (the paper's concat(z_s, z_d) and our
symmetrised [m | dyn]) next to the index's own LiFT and an untrained one."""
from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path

import numpy as np

from search import evaluate as ev

from .format import pct

log = logging.getLogger(__name__)

LATENT_DIMS = (128, 192, 256, 384)  # default latent sizes of the ablation


def training_sequences(idx: Path) -> np.ndarray:
    """The clips the indexer trained its LiFT on, in its order (indexer.pipeline.library_sequences)."""
    from db import open_db
    from indexer.library import IndexDir
    from indexer.pipeline import library_sequences

    d = IndexDir(idx)
    return library_sequences(d, open_db(d.db), [])


def ablation_configs(dims: list[int], seeds: list[int], main_d: int, anchor: float) -> list[dict]:
    """What to retrain: the indexer's recipe (reversal augmentation, chord anchor of weight `anchor`) at
    each latent size, then at `main_d` with the other seeds, without augmentation, without the anchor (the
    paper's loss) and fitted on the (3x larger) unseen library itself, as `--lift fit` would."""
    configs = [{"latent_dim": d, "reverse_augment": True, "seed": seeds[0], "anchor": anchor} for d in dims]
    configs += [{"latent_dim": main_d, "reverse_augment": True, "seed": s, "anchor": anchor} for s in seeds[1:]]
    configs += [{"latent_dim": main_d, "reverse_augment": False, "seed": s, "anchor": anchor} for s in seeds]
    configs += [{"latent_dim": main_d, "reverse_augment": True, "seed": s, "anchor": 0.0} for s in seeds]
    configs += [{"latent_dim": main_d, "reverse_augment": True, "seed": seeds[0], "anchor": anchor,
                 "train": "unseen"}]
    return configs


def score_model(model, benches: dict[str, ev.Benchmark], k: int) -> dict:
    """Both descriptors of `model` on each benchmark: probe, retrieval, and how z_d flips under reversal."""
    out = {}
    for key, bench in benches.items():
        g, cl, sp = bench.group, bench.cls, bench.split
        flipped = np.ascontiguousarray(bench.seqs[:, ::-1])
        sym = ev.lift_sym(model, bench.seqs)
        raw, raw_rev = ev.lift_raw(model, bench.seqs), ev.lift_raw(model, flipped)
        d = model.config.latent_dim
        out[key] = {"probe_raw": ev.probe_accuracy(raw, g, cl, sp)["accuracy"],
                    "probe_sym": ev.probe_accuracy(sym, g, cl, sp)["accuracy"],
                    "retrieval_sym": {k_: v for k_, v in ev.lift_retrieval(sym, g, cl, k, 0.5).items()
                                      if k_ != "per_group"},
                    "retrieval_raw": {k_: v for k_, v in ev.exact_retrieval(raw, raw_rev, g, cl, k).items()
                                      if k_ != "per_group"},
                    # cos(z_d(x), z_d(reversed x)): -1 when z_d flips exactly with the arrow of time
                    "zd_cos_reversal": float(np.mean(np.sum(ev.l2n(raw[:, d:]) * ev.l2n(raw_rev[:, d:]), 1)))}
    return out


def untrained_model(feature_dim: int, latent_dim: int, train_seqs: np.ndarray):
    """A LiFT with random weights (torch seed 0) and the training features' input standardisation."""
    import torch

    from lift import LiFT, LiftConfig

    torch.manual_seed(0)
    model = LiFT(LiftConfig(feature_dim=feature_dim, latent_dim=latent_dim, feature_norm=True)).eval()
    flat = torch.as_tensor(train_seqs.reshape(-1, feature_dim))
    model.feature_mean.copy_(flat.mean(0))
    model.feature_std.copy_(flat.std(0).clamp_min(1e-3))
    return model


def reference_rows(index_model, benches: dict[str, ev.Benchmark], train_seqs: np.ndarray, k: int) -> list[dict]:
    """The index's own LiFT, the same weights with the descriptor whitening toggled, and an untrained LiFT."""
    prov = index_model.config.provenance
    tc = prov["train_config"]
    own = {"name": "index model", "source": "the index's own LiFT (lift-search index --lift fit)",
           "latent_dim": index_model.config.latent_dim, "reverse_augment": tc["reverse_augment"],
           "anchor": tc.get("anchor", 0.0), "seed": tc["seed"], "max_epochs": tc["epochs"],
           "epochs_run": prov["epochs_run"], "train_seconds": prov["seconds"],
           "best_val_loss": prov["best_val_loss"], "dims": index_model.descriptor_dim,
           "results": score_model(index_model, benches, k)}
    other = copy.deepcopy(index_model)
    if other.config.whiten:
        other.config.whiten = False
        twin = {"name": "index model, no whitening", "source": "the index's own LiFT with LiftConfig.whiten off"}
    else:
        other.calibrate(train_seqs)
        twin = {"name": "index model, whitened", "source": "the index's own LiFT with LiFT.calibrate on its "
                "training clips"}
    twin["results"] = score_model(other, benches, k)
    d = index_model.config.latent_dim
    untrained = untrained_model(train_seqs.shape[-1], d, train_seqs)
    return [own, {**own, **twin},
            {"name": "untrained (random init)", "source": "LiFT(LiftConfig(...)) with torch seed 0, input "
             "standardisation from the training features, no training", "latent_dim": d,
             "reverse_augment": None, "seed": 0, "max_epochs": 0, "epochs_run": 0, "train_seconds": 0.0,
             "best_val_loss": None, "dims": untrained.descriptor_dim,
             "results": score_model(untrained, benches, k)}]


def retrain(name: str, c: dict, seqs: np.ndarray, on: str, backbone: str, benches: dict[str, ev.Benchmark],
            epochs: int, k: int) -> dict:
    """Ablation row `name`: a LiFT fitted with config `c` on `seqs` (the `on` benchmark's clips), scored."""
    from lift import LiftConfig
    from lift.train import TrainConfig, fit

    cfg = LiftConfig(feature_dim=seqs.shape[-1], latent_dim=c["latent_dim"], backbone=backbone, feature_norm=True)
    tc = TrainConfig(epochs=epochs, reverse_augment=c["reverse_augment"], seed=c["seed"], anchor=c["anchor"],
                     progress=False)
    t0 = time.perf_counter()
    model, hist = fit(seqs, cfg, tc)
    return {**c, "train": on, "name": name, "source": f"retrained from the cached features of the {on} benchmark's "
            f"{len(seqs)} clips (lift.train.fit)", "max_epochs": epochs, "epochs_run": len(hist["val_loss"]),
            "train_seconds": round(time.perf_counter() - t0, 1), "best_val_loss": float(min(hist["val_loss"])),
            "dims": model.descriptor_dim, "results": score_model(model, benches, k)}


def ablate(index_model, benches: dict[str, ev.Benchmark], train_seqs: np.ndarray, configs: list[dict],
           epochs: int, k: int, cache: Path) -> list[dict]:
    """The reference rows, then one row per config (each stamped in `cache`, so a rerun resumes)."""
    rows = reference_rows(index_model, benches, train_seqs, k)
    cache.mkdir(parents=True, exist_ok=True)
    for c in configs:
        on = c.get("train", "synth")  # which benchmark's clips the LiFT is fitted on (self-supervised)
        if on not in benches:
            continue
        seqs = train_seqs if on == "synth" else benches[on].seqs
        name = f"d{c['latent_dim']}_aug{int(c['reverse_augment'])}_seed{c['seed']}_ep{epochs}" + (
            "" if on == "synth" else f"_fit{on}") + f"_anchor{c['anchor']:g}"
        stamp = cache / f"{name}.json"
        if stamp.is_file():
            rows.append(json.loads(stamp.read_text()))
            continue
        log.info("ablation %s: training on %d cached clips", name, len(seqs))
        row = retrain(name, c, seqs, on, index_model.config.backbone, benches, epochs, k)
        stamp.write_text(json.dumps(row, indent=1))
        log.info("  %s: %s s, %s", name, row["train_seconds"], ", ".join(
            f"{b}: probe sym {pct(r['probe_sym'])} chiral sym {pct(r['retrieval_sym']['chiral_top1'])}"
            for b, r in row["results"].items()))
        rows.append(row)
    return rows
