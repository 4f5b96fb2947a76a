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
from .model import LiFT, LiftConfig, chord  # noqa: F401 (chord: the anchor's target without flow)
from .runtime import resolve_device

log = logging.getLogger(__name__)


def anchor_basis(x: torch.Tensor, d: int, target=chord) -> torch.Tensor:
    """The top-d principal directions (uncentred) of target(x) over sequences x (N, T, D) (by default the
    chords): (S, d).

    Uncentred, because the targets flip sign with time reversal: the library's targets are centred on
    zero once each clip comes with its reversal. Fewer clips than d leave the remaining columns zero."""
    s = target(x).double()                                  # (N, S)
    _, _, vt = torch.linalg.svd(s, full_matrices=False)     # (min(N, S), S)
    basis = torch.zeros(s.shape[1], d, dtype=x.dtype, device=x.device)
    k = min(d, vt.shape[0])
    basis[:, :k] = vt[:k].T.to(x.dtype)
    return basis


def _loss(model: LiFT, p: torch.Tensor, basis: torch.Tensor | None, anchor: float) -> torch.Tensor:
    """The paper's loss on prepared frames p, plus anchor * (1 - cos(z_d, model.motion_target(p) @ basis))."""
    loss, _, z_d = model.loss(p, latents=True, prepared=True)
    if basis is not None and anchor:
        target = model.motion_target(p) @ basis              # (B, d)
        loss = loss + anchor * (1 - F.cosine_similarity(z_d, target, dim=-1)).mean()
    return loss


def _epoch_loss(model: LiFT, data: torch.Tensor, tc: TrainConfig, opt=None, gen=None, basis=None) -> float:
    """One pass over `data` (N, T, input_dim), prepared frames; trains when an optimiser is given. Returns
    the mean loss."""
    order = torch.randperm(len(data), generator=gen) if opt else torch.arange(len(data))
    total, count = 0.0, 0
    for i in range(0, len(data), tc.batch_size):
        x = data[order[i:i + tc.batch_size]]                     # (b, T, input_dim)
        if tc.reverse_augment:
            x = torch.cat([x, model.reverse_prepared(x)])         # (2b, T, input_dim)
        with torch.set_grad_enabled(opt is not None):
            loss = _loss(model, x, basis, tc.anchor)
        if opt is not None:
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        total += loss.item() * len(x)
        count += len(x)
    return total / max(count, 1)


def lift_config(feature_dim: int, tc: TrainConfig, cells=None) -> LiftConfig:
    """lift-search's own LiFT for frames of `feature_dim` dims: the paper's architecture with d =
    tc.latent_dim, standardised inputs and the pinned motion path (tc.motion_pin); with `cells` (the frames'
    spatial map, a lift.backbones.CellsSpec), feature flow over them."""
    flow = dict(flow_grid=cells.grid, flow_channels=cells.channels) if cells is not None else {}
    return LiftConfig(feature_dim=feature_dim, latent_dim=tc.latent_dim, feature_norm=True,
                      motion_pin=tc.motion_pin, **flow)


@torch.no_grad()
def prepared(model: LiFT, x, rows=None, batch: int = 64, device="cpu") -> torch.Tensor:
    """model.prepare over the sequences x[rows] (x: (N, T, D), a numpy array or tensor; rows: all by default),
    `batch` at a time: (len(rows), T, input_dim) float32 on `device`. Only the prepared frames are kept (with
    flow, 1,672 of the cells' 7,552 dims a frame), never a second copy of the raw ones."""
    rows = np.arange(len(x)) if rows is None else np.asarray(rows)
    parts = [model.prepare(torch.as_tensor(np.asarray(x[rows[i:i + batch]], dtype=np.float32)).to(device))
             for i in range(0, len(rows), batch)]
    return torch.cat(parts) if parts else torch.zeros(0, *x.shape[1:-1], model.config.input_dim, device=device)


def fit(features, cfg: LiftConfig | None = None, tc: TrainConfig = TrainConfig()) -> tuple[LiFT, dict]:
    """Train a LiFT on `features` (N, T, D). `cfg` None: lift-search's own architecture for this data
    (lift_config, without flow). Returns the best model (eval mode) and a
    history dict (losses per epoch; the chord anchor's basis (D, d), or None without the anchor)."""
    x = features if torch.is_tensor(features) else np.asarray(features)  # read in batches, never copied whole
    cfg = cfg or lift_config(x.shape[-1], tc)
    if x.ndim != 3 or x.shape[2] != cfg.feature_dim:
        raise UsageError(f"features must be (N, T, {cfg.feature_dim}); got {tuple(x.shape)}")
    if len(x) < 2:
        raise UsageError(f"need at least 2 sequences to train a LiFT; got {len(x)}")
    device = resolve_device(tc.device)
    torch.manual_seed(tc.seed)
    gen = torch.Generator().manual_seed(tc.seed)
    perm = torch.randperm(len(x), generator=gen).numpy()
    n_val = max(1, int(round(len(x) * tc.val_fraction))) if len(x) >= 10 else 0

    model = LiFT(cfg).to(device)
    # what the encoder reads (with flow: the feature flow, computed once here; it has no parameters)
    val, train = prepared(model, x, perm[:n_val], device=device), prepared(model, x, perm[n_val:], device=device)
    if cfg.feature_norm:
        flat = train[..., :cfg.global_dim].reshape(-1, cfg.global_dim)
        model.feature_mean.copy_(flat.mean(0))
        model.feature_std.copy_(flat.std(0).clamp_min(1e-3))
    # the anchor's target space: the top-d principal directions of the training clips' motion targets
    basis = anchor_basis(train, cfg.latent_dim, model.motion_target) if tc.anchor > 0 or cfg.motion_pin else None
    if cfg.motion_pin:
        model.motion_basis.copy_(basis)
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
