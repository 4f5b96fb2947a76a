"""LiFT: Linearized Feature Trajectories (Bagad & Zisserman, NeurIPS 2025), in one file.

A clip is a sequence of T per-frame features x (B, T, D) from a frozen image backbone. A small
pre-norm transformer encoder reads [cls_static, cls_dynamic, x_1..x_T] and summarises the trajectory
as a static vector z_s and a dynamic vector z_d. The decoder must rebuild every frame from a point on
the straight line z_t = z_s + t/(T-1) * z_d, which forces z_d to carry the direction of change.

Optionally (LiftConfig.flow_grid > 0) each frame's features end with a coarse spatial map of the frame
(flow_grid x flow_grid cells of flow_channels each, see lift.backbones: the "cells" pooling). The model
then reads, per frame, the pooled features plus *feature flow* (FeatureFlow): where each cell's content
moved between neighbouring frames. Flow says "things move left" in the same words whatever the things
look like, which the pooled features of an ImageNet backbone do not (docs/benchmarks.md, across scenes).

Parameter names follow the authors' checkpoint (see checkpoint.py), so their weights load as they are.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class LiftConfig:
    feature_dim: int = 384       # D: backbone feature size (DINOv2 ViT-S/14 CLS)
    latent_dim: int = 384        # d: size of z_s and of z_d
    n_layers: int = 4
    n_heads: int = 8
    max_len: int = 16            # rows of the sinusoidal position table
    dropout: float = 0.1
    ortho_weight: float = 0.1    # weight of mean |cos(z_s, z_d)| in the loss
    backbone: str | None = None  # name given to lift.load_backbone, if known
    feature_norm: bool = False   # standardise input features with stored mean/std
    whiten: bool = False         # describe() whitens [m | dyn] with stored library statistics (calibrate)
    flow_grid: int = 0           # > 0: each frame ends with a flow_grid^2-cell map of flow_channels-d cells
    flow_channels: int = 0
    flow_radius: int = 2         # cells a match may move between neighbouring frames (a square window)
    flow_temperature: float = 0.1  # of the softmax over cosine similarities of cells
    motion_pin: float = 0.0      # > 0: z_d also gets motion_pin * sqrt(d) * unit(motion_target @ motion_basis)
    provenance: dict = field(default_factory=dict)  # how the weights were made

    @property
    def map_dim(self) -> int:
        """Dims of a frame's spatial map (0 without flow)."""
        return self.flow_grid ** 2 * self.flow_channels

    @property
    def global_dim(self) -> int:
        """Dims of a frame's pooled features: what is standardised and rebuilt."""
        return self.feature_dim - self.map_dim

    @property
    def input_dim(self) -> int:
        """Dims of one frame as the encoder reads it: pooled features, then 2-d flow per cell."""
        return self.global_dim + 2 * self.flow_grid ** 2

    @property
    def target_dim(self) -> int:
        """Dims of LiFT.motion_target: the pooled features' chord, then (with flow) the total flow."""
        return self.input_dim

    def architecture(self) -> dict:
        """The fields that decide what a LiFT with given weights computes (not how it was trained or where
        it came from): with the weights, they name a model (lift.checkpoint.model_digest)."""
        keys = ("feature_dim", "latent_dim", "n_layers", "n_heads", "max_len", "feature_norm", "whiten")
        if self.flow_grid:  # only then, so that the names of models without flow stay what they were
            keys += ("flow_grid", "flow_channels", "flow_radius", "flow_temperature")
        if self.motion_pin:
            keys += ("motion_pin",)
        return {k: getattr(self, k) for k in keys}

    def __post_init__(self):
        if self.flow_grid and (self.flow_channels < 1 or self.global_dim < 1):
            raise ValueError(f"flow_grid {self.flow_grid} x {self.flow_grid} cells of {self.flow_channels} "
                             f"channels do not fit in {self.feature_dim}-d frame features")

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LiftConfig":
        fields = json.loads(text)
        known = {k: v for k, v in fields.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def chord(x: torch.Tensor) -> torch.Tensor:
    """The net change of each sequence, last frame minus first, of L2-normalised frames: (B, T, D) -> (B, D).

    The decoder's line runs from z_s (t = 0) to z_s + z_d (t = 1), so z_d is the chord of the trajectory.
    Endpoints, not the least-squares slope: clips hold still, ease and speed up, and the net change is
    what an action and its reversal swap. Frames are L2-normalised (cosine geometry) so that no scene's
    brighter features outweigh the rest."""
    x = F.normalize(x, dim=-1)
    return x[:, -1] - x[:, 0]


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """The classic Transformer position table, (1, length, dim)."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    pe = torch.zeros(length, dim)
    pe[:, 0::2] = torch.sin(position * div)
    pe[:, 1::2] = torch.cos(position * div[: dim // 2])
    return pe[None]


class PositionalEncoding(nn.Module):
    def __init__(self, cfg: LiftConfig):
        super().__init__()
        self.register_buffer("pe", sinusoidal_table(cfg.max_len, cfg.latent_dim))  # (1, L, d)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        T = h.shape[1]
        if T <= self.pe.shape[1]:
            pe = self.pe[:, :T]
        else:  # stretch the table along time (the authors' code fails here)
            pe = F.interpolate(self.pe.transpose(1, 2), size=T, mode="linear", align_corners=True)
            pe = pe.transpose(1, 2)
        return h + pe


class Block(nn.Module):
    """Pre-norm encoder layer: x + SA(norm1(x)), then x + FF(norm2(x)); FF uses ReLU."""

    def __init__(self, cfg: LiftConfig):
        super().__init__()
        d = cfg.latent_dim
        self.self_attn = nn.MultiheadAttention(d, cfg.n_heads, dropout=cfg.dropout, batch_first=True)
        self.linear1 = nn.Linear(d, 4 * d)
        self.linear2 = nn.Linear(4 * d, d)
        self.norm1 = nn.LayerNorm(d)
        self.norm2 = nn.LayerNorm(d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.dropout1 = nn.Dropout(cfg.dropout)
        self.dropout2 = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 2+T, d)
        h = self.norm1(x)
        x = x + self.dropout1(self.self_attn(h, h, h, need_weights=False)[0])
        h = self.norm2(x)
        x = x + self.dropout2(self.linear2(self.dropout(F.relu(self.linear1(h)))))
        return x


class Stack(nn.Module):
    def __init__(self, cfg: LiftConfig):
        super().__init__()
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x  # no final LayerNorm


class FeatureFlow(nn.Module):
    """Feature flow: where the content of each cell of a frame's map went in the neighbouring frames.

    For frames a, b (maps of G = grid^2 cells, L2-normalised), cell i of a is matched softly to the cells
    of b within `radius` cells: p_ij = softmax_j(cos(a_i, b_j) / temperature), and its displacement is
    sum_j p_ij pos_j - pos_i, in cells. A step's flow is antisymmetrised, s(a, b) = (f(a, b) - f(b, a)) / 2,
    so that the reversed pair gives exactly -s. Frame t gets the mean of the steps into and out of it
    (zero beyond the ends), so reversing the clip reverses the tokens and negates them, exactly; their sum
    over the clip is the total displacement. No parameters: (B, T, G * C) -> (B, T, G * 2)."""

    def __init__(self, cfg: LiftConfig):
        super().__init__()
        g = cfg.flow_grid
        yy, xx = torch.meshgrid(torch.arange(g), torch.arange(g), indexing="ij")
        pos = torch.stack([xx, yy], -1).reshape(g * g, 2).float()                 # (G, 2) in cells
        near = (pos[:, None] - pos[None]).abs().amax(-1) <= cfg.flow_radius          # (G, G)
        self.register_buffer("pos", pos, persistent=False)
        self.register_buffer("window", torch.zeros(g * g, g * g).masked_fill(~near, float("-inf")), persistent=False)
        self.cells, self.channels, self.temperature = g * g, cfg.flow_channels, cfg.flow_temperature

    def step(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """(..., G, C) unit cells of a and b -> (..., G, 2) where each cell of a went in b."""
        p = (a @ b.transpose(-1, -2) / self.temperature + self.window).softmax(-1)  # (..., G, G)
        return p @ self.pos - self.pos

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        B, T, _ = maps.shape
        c = F.normalize(maps.reshape(B, T, self.cells, self.channels), dim=-1)     # (B, T, G, C)
        a, b = c[:, :-1], c[:, 1:]
        s = (self.step(a, b) - self.step(b, a)) / 2                                 # (B, T-1, G, 2)
        pad = s.new_zeros(B, 1, self.cells, 2)
        return ((torch.cat([pad, s], 1) + torch.cat([s, pad], 1)) / 2).flatten(2)  # (B, T, G * 2)


class Encoder(nn.Module):
    def __init__(self, cfg: LiftConfig):
        super().__init__()
        d = cfg.latent_dim
        self.cls_static = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.cls_dynamic = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.input_proj = nn.Linear(cfg.input_dim, d)
        self.pos_encoder = PositionalEncoding(cfg)
        self.transformer = Stack(cfg)
        self.static_proj = nn.Linear(d, d)
        self.dynamic_proj = nn.Linear(d, d)
        self.static_norm = nn.LayerNorm(d)
        self.dynamic_norm = nn.LayerNorm(d)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # x: (B, T, D)
        B = x.shape[0]
        h = self.pos_encoder(self.input_proj(x))                          # (B, T, d)
        cls = torch.cat([self.cls_static, self.cls_dynamic], dim=1)       # (1, 2, d), static first
        out = self.transformer(torch.cat([cls.expand(B, -1, -1), h], 1))  # (B, 2+T, d)
        z_s = self.static_norm(self.static_proj(out[:, 0]))               # (B, d)
        z_d = self.dynamic_norm(self.dynamic_proj(out[:, 1]))             # (B, d)
        return z_s, z_d


class Decoder(nn.Module):
    def __init__(self, cfg: LiftConfig):
        super().__init__()
        d, D = cfg.latent_dim, cfg.input_dim
        self.model = nn.Sequential(
            nn.Linear(d, 2 * d), nn.LayerNorm(2 * d), nn.GELU(),
            nn.Linear(2 * d, 2 * d), nn.LayerNorm(2 * d), nn.GELU(),
            nn.Linear(2 * d, D),
        )

    def forward(self, z_s: torch.Tensor, z_d: torch.Tensor, T: int) -> torch.Tensor:
        t = torch.arange(T, device=z_s.device, dtype=z_s.dtype) / max(T - 1, 1)  # (T,)
        z = z_s[:, None] + t[None, :, None] * z_d[:, None]                       # (B, T, d)
        return self.model(z)                                                       # (B, T, D)


def _as_tensor(x, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not torch.is_tensor(x) else x).to(like.device, like.dtype)


class LiFT(nn.Module):
    """The auto-encoder plus the descriptors the search engine stores.

    `encode` gives the paper's (z_s, z_d); `describe` gives the time-reversal-symmetrised descriptor
    [m | dyn], each half L2-normalised, for which reversing the clip exactly negates `dyn`.
    With flow (config.flow_grid > 0), the encoder reads [pooled features | feature flow] per frame and the
    decoder rebuilds both (`inputs`).
    """

    def __init__(self, cfg: LiftConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.flow = FeatureFlow(cfg) if cfg.flow_grid else None
        D = cfg.global_dim
        self.register_buffer("feature_mean", torch.zeros(D))
        self.register_buffer("feature_std", torch.ones(D))
        d = cfg.latent_dim
        if cfg.motion_pin:  # the pinned motion path's basis (lift.train.fit sets it: the anchor's basis)
            self.register_buffer("motion_basis", torch.zeros(cfg.target_dim, d))
        # descriptor whitening (calibrate); identity until calibrated
        self.register_buffer("static_mean", torch.zeros(d))
        self.register_buffer("static_whiten", torch.eye(d))
        self.register_buffer("dynamic_whiten", torch.eye(d))

    # ---- training-time pieces ---------------------------------------------------------------
    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.feature_mean) / self.feature_std if self.config.feature_norm else x

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, T, D) frame features -> pooled part (B, T, global_dim), spatial map (B, T, map_dim) or None."""
        g = self.config.global_dim
        return (x[..., :g], x[..., g:]) if self.flow is not None else (x, None)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) frame features -> (B, T, input_dim): the pooled features, then (with flow) each frame's
        feature flow. The encoder reads this, standardised; it has no parameters, so training computes it
        once. Reversing a clip reverses its prepared frames and negates their flow: `reverse_prepared`."""
        pooled, maps = self.split(x)
        return pooled if maps is None else torch.cat([pooled, self.flow(maps)], -1)

    def reverse_prepared(self, p: torch.Tensor) -> torch.Tensor:
        """The prepared frames of the time-reversed clip: prepare(x.flip(1)) == reverse_prepared(prepare(x))."""
        p = p.flip(1)
        if self.flow is None:
            return p
        g = self.config.global_dim
        return torch.cat([p[..., :g], -p[..., g:]], -1)

    def _standardise(self, p: torch.Tensor) -> torch.Tensor:
        g = self.config.global_dim
        return torch.cat([self.normalise(p[..., :g]), p[..., g:]], -1) if self.flow is not None else self.normalise(p)

    def motion_target(self, p: torch.Tensor) -> torch.Tensor:
        """What a clip measurably does, from its `prepare`d frames p (B, T, input_dim): the chord of the
        pooled features; with feature flow, [unit chord | unit total flow] (the flow summed over the clip:
        where each cell's content went). Exactly negated by time reversal. (B, target_dim). lift.train's
        anchor points z_d at its projection on the library's main directions; `motion_pin` adds that
        projection to z_d outright, a path with nothing learned, so it works the same on unseen scenes."""
        g = self.config.global_dim
        c = chord(p[..., :g])
        if self.flow is None:
            return c
        return torch.cat([F.normalize(c, dim=-1), F.normalize(p[..., g:].sum(1), dim=-1)], -1)

    def _latents(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Prepared frames (B, T, input_dim) -> z_s, z_d (B, d) each."""
        z_s, z_d = self.encoder(self._standardise(p))
        if self.config.motion_pin:
            pinned = F.normalize(self.motion_target(p) @ self.motion_basis, dim=-1)
            z_d = z_d + self.config.motion_pin * math.sqrt(self.config.latent_dim) * pinned
        return z_s, z_d

    def forward(self, x: torch.Tensor, prepared: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, T, D) raw features (or `prepare`d ones) -> z_s (B, d), z_d (B, d), x_hat (B, T, input_dim)
        in standardised units."""
        p = x if prepared else self.prepare(x)
        z_s, z_d = self._latents(p)
        return z_s, z_d, self.decoder(z_s, z_d, p.shape[1])

    def loss(self, x: torch.Tensor, latents: bool = False, prepared: bool = False):
        """Reconstruction MSE + ortho_weight * mean |cos(z_s, z_d)|; with latents=True, (loss, z_s, z_d)."""
        p = x if prepared else self.prepare(x)
        z_s, z_d, x_hat = self(p, prepared=True)
        rec = F.mse_loss(x_hat, self._standardise(p))
        ortho = F.cosine_similarity(z_s, z_d, dim=-1).abs().mean()
        loss = rec + self.config.ortho_weight * ortho
        return (loss, z_s, z_d) if latents else loss

    # ---- inference API -----------------------------------------------------------------------
    @property
    def descriptor_dim(self) -> int:
        return 2 * self.config.latent_dim

    @torch.no_grad()
    def encode(self, x) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D) -> z_s (B, d), z_d (B, d): the paper's descriptor parts."""
        return self._latents(self.prepare(_as_tensor(x, self.feature_mean)))

    @torch.no_grad()
    def reconstruct(self, x) -> torch.Tensor:
        """(B, T, D) -> x_hat (B, T, global_dim): the pooled features rebuilt from the line, in their units."""
        x = _as_tensor(x, self.feature_mean)
        x_hat = self(x)[2][..., :self.config.global_dim]
        if self.config.feature_norm:
            x_hat = x_hat * self.feature_std + self.feature_mean
        return x_hat

    @torch.no_grad()
    def describe(self, x) -> torch.Tensor:
        """(B, T, D) -> (B, 2d) = [m / |m|, dyn / |dyn|], symmetrised over time reversal.

        mid = z_s + z_d / 2 is the middle of the latent line. With x' = x reversed in time,
        m = (mid(x) + mid(x')) / 2 and dyn = (z_d(x) - z_d(x')) / 2, so describing x' gives exactly
        [m, -dyn]: a reverse query is a plain negation of the second half. A calibrated model
        (config.whiten) also whitens each half with its library statistics; dyn's map is linear (no
        centring), so the negation stays exact.
        """
        m, dyn = self._halves(_as_tensor(x, self.feature_mean))
        if self.config.whiten:
            m = F.normalize((m - self.static_mean) @ self.static_whiten, dim=-1)
            dyn = F.normalize(dyn @ self.dynamic_whiten, dim=-1)
        return torch.cat([m, dyn], dim=-1)

    def _halves(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, T, D) -> the unit-length, un-whitened m (B, d) and dyn (B, d)."""
        B = x.shape[0]
        z_s, z_d = self.encode(torch.cat([x, x.flip(1)]))  # (2B, d) each
        mid = z_s + z_d / 2
        m = (mid[:B] + mid[B:]) / 2
        dyn = (z_d[:B] - z_d[B:]) / 2
        return F.normalize(m, dim=-1), F.normalize(dyn, dim=-1)

    @torch.no_grad()
    def calibrate(self, x, shrink: float = 0.1, batch: int = 512) -> "LiFT":
        """Fit describe()'s whitening on a library's sequences x (N, T, D): m is centred and both halves
        are decorrelated, W = (C + shrink * max_eig(C) * I)^(-1/2). Whitening drops what every clip of the
        library shares (on our chiral demo, dyn's top 2 directions held 45% of its variance), so that
        what is left (where and which way things move) weighs more in the cosines."""
        x = _as_tensor(x, self.feature_mean)
        parts = [self._halves(x[i:i + batch]) for i in range(0, len(x), batch)]
        m, dyn = torch.cat([p[0] for p in parts]).double(), torch.cat([p[1] for p in parts]).double()
        mean = m.mean(0)

        def inv_sqrt(a: torch.Tensor) -> torch.Tensor:
            vals, vecs = torch.linalg.eigh(a.T @ a / len(a))
            vals = vals.clamp_min(0) + shrink * vals.max()
            return (vecs * vals.rsqrt()) @ vecs.T

        self.static_mean.copy_(mean)
        self.static_whiten.copy_(inv_sqrt(m - mean))
        self.dynamic_whiten.copy_(inv_sqrt(dyn))
        self.config.whiten = True
        return self

    # ---- persistence (see checkpoint.py for the formats) -------------------------------------
    @classmethod
    def from_checkpoint(cls, path: str | Path, device: str = "cpu") -> "LiFT":
        from .checkpoint import load_checkpoint

        return load_checkpoint(path).to(device).eval()

    def save(self, path: str | Path) -> Path:
        from .checkpoint import save_safetensors

        return save_safetensors(self, path)
