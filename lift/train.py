"""Self-supervised training of a LiFT on feature sequences (B, T, D).

The paper's recipe: reconstruction MSE + 0.1 * mean |cos(z_s, z_d)|, Adam (weight decay 1e-5),
ReduceLROnPlateau (factor 0.5, patience 5). Added for small libraries: a held-out split with early
stopping, optional input standardisation, and time-reversal augmentation (each batch also holds the
reversed sequences, which teaches z_d to flip with the arrow of time), and an optional chord anchor
(TrainConfig.anchor > 0: z_d should point along the net change of the L2-normalised frames, last minus
first, projected on the library's top-d chord directions, which makes one direction of change read the
same in every scene; see docs/evaluation.md). Optionally (TrainConfig.whiten), the descriptor's whitening
is calibrated on all the sequences (LiFT.calibrate).
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import TrainConfig
from .errors import UsageError
from .model import LiFT, LiftConfig
from .runtime import resolve_device

log = logging.getLogger(__name__)


def chord(x: torch.Tensor) -> torch.Tensor:
    """The net change of each sequence, last frame minus first, of L2-normalised frames: (B, T, D) -> (B, D).

    The decoder's line runs from z_s (t = 0) to z_s + z_d (t = 1), so z_d is the chord of the trajectory.
    Endpoints, not the least-squares slope: clips hold still, ease and speed up, and the net change is
    what an action and its reversal swap. Frames are L2-normalised (cosine geometry) so that no scene's
    brighter features outweigh the rest."""
    x = F.normalize(x, dim=-1)
    return x[:, -1] - x[:, 0]


def anchor_basis(x: torch.Tensor, d: int) -> torch.Tensor:
    """The top-d principal directions (uncentred) of the chords of sequences x (N, T, D): (D, d).

    Uncentred, because chords flip sign with time reversal: the library's chords are centred on zero
    once each clip comes with its reversal. Fewer clips than d leave the remaining columns zero."""
    s = chord(x).double()                                   # (N, D)
    _, _, vt = torch.linalg.svd(s, full_matrices=False)     # (min(N, D), D)
    basis = torch.zeros(x.shape[2], d, dtype=x.dtype, device=x.device)
    k = min(d, vt.shape[0])
    basis[:, :k] = vt[:k].T.to(x.dtype)
    return basis


def _loss(model: LiFT, x: torch.Tensor, basis: torch.Tensor | None, weight: float) -> torch.Tensor:
    """The paper's loss, plus weight * (1 - cos(z_d, chord(x) @ basis)) when an anchor basis is given."""
    if basis is None:
        return model.loss(x)
    loss, _, z_d = model.loss(x, latents=True)
    target = chord(x) @ basis                                # (B, d)
    return loss + weight * (1 - F.cosine_similarity(z_d, target, dim=-1)).mean()


def _epoch_loss(model: LiFT, data: torch.Tensor, tc: TrainConfig, opt=None, gen=None, basis=None) -> float:
    """One pass over `data` (N, T, D); trains when an optimiser is given. Returns the mean loss."""
    order = torch.randperm(len(data), generator=gen) if opt else torch.arange(len(data))
    total, count = 0.0, 0
    for i in range(0, len(data), tc.batch_size):
        x = data[order[i:i + tc.batch_size]]                     # (b, T, D)
        if tc.reverse_augment:
            x = torch.cat([x, x.flip(1)])                         # (2b, T, D)
        with torch.set_grad_enabled(opt is not None):
            loss = _loss(model, x, basis, tc.anchor)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        total += loss.item() * len(x)
        count += len(x)
    return total / max(count, 1)


def fit(features, cfg: LiftConfig | None = None, tc: TrainConfig = TrainConfig()) -> tuple[LiFT, dict]:
    """Train a LiFT on `features` (N, T, D). `cfg` None: lift-search's own architecture for this data,
    the paper's with d = tc.latent_dim and standardised inputs. Returns the best model (eval mode) and a
    history dict (losses per epoch; the chord anchor's basis (D, d), or None without the anchor)."""
    x = torch.as_tensor(np.asarray(features, dtype=np.float32))
    cfg = cfg or LiftConfig(feature_dim=x.shape[-1], latent_dim=tc.latent_dim, feature_norm=True)
    if x.ndim != 3 or x.shape[2] != cfg.feature_dim:
        raise UsageError(f"features must be (N, T, {cfg.feature_dim}); got {tuple(x.shape)}")
    if len(x) < 2:
        raise UsageError(f"need at least 2 sequences to train a LiFT; got {len(x)}")
    device = resolve_device(tc.device)
    torch.manual_seed(tc.seed)
    gen = torch.Generator().manual_seed(tc.seed)
    perm = torch.randperm(len(x), generator=gen)
    n_val = max(1, int(round(len(x) * tc.val_fraction))) if len(x) >= 10 else 0
    val, train = x[perm[:n_val]].to(device), x[perm[n_val:]].to(device)

    model = LiFT(cfg).to(device)
    if cfg.feature_norm:
        flat = train.reshape(-1, cfg.feature_dim)
        model.feature_mean.copy_(flat.mean(0))
        model.feature_std.copy_(flat.std(0).clamp_min(1e-3))
    # the anchor's target space: the top-d principal directions of the training clips' chords
    basis = anchor_basis(train, cfg.latent_dim) if tc.anchor > 0 else None
    opt = torch.optim.Adam(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=5)

    history = {"train_loss": [], "val_loss": [], "anchor_basis": basis}
    best, best_state, stale = math.inf, None, 0
    start = time.time()
    bar = tqdm(range(tc.epochs), desc="train LiFT", unit="epoch", disable=not tc.progress)
    for epoch in bar:
        model.train()
        tr = _epoch_loss(model, train, tc, opt, gen, basis)
        model.eval()
        va = _epoch_loss(model, val, tc, basis=basis) if n_val else tr
        sched.step(va)
        history["train_loss"].append(tr)
        history["val_loss"].append(va)
        bar.set_postfix(train=f"{tr:.4f}", val=f"{va:.4f}", lr=f"{opt.param_groups[0]['lr']:.1e}")
        if va < best - 1e-6:
            best, stale = va, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= tc.patience:
                log.info("early stop at epoch %d (best held-out loss %.5f)", epoch, best)
                break
    model.load_state_dict(best_state)
    model = model.cpu().eval()
    if tc.whiten:
        model.calibrate(x)
    model.config.provenance = {
        "source": "lift-search fit", "sequences": len(x), "frames": int(x.shape[1]),
        "epochs_run": len(history["train_loss"]), "best_val_loss": best,
        "seconds": round(time.time() - start, 1), "train_config": asdict(tc),
    }
    return model, history
