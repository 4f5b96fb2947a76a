"""LiFT: Linearized Feature Trajectories (Bagad & Zisserman, NeurIPS 2025), in one file.

A clip is a sequence of T per-frame features x (B, T, D) from a frozen image backbone. A small
pre-norm transformer encoder reads [cls_static, cls_dynamic, x_1..x_T] and summarises the trajectory
as a static vector z_s and a dynamic vector z_d. The decoder must rebuild every frame from a point on
the straight line z_t = z_s + t/(T-1) * z_d, which forces z_d to carry the direction of change.

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
    provenance: dict = field(default_factory=dict)  # how the weights were made

    def architecture(self) -> dict:
        """The fields that decide what a LiFT with given weights computes (not how it was trained or where
        it came from): with the weights, they name a model (lift.checkpoint.model_digest)."""
        return {k: getattr(self, k) for k in ("feature_dim", "latent_dim", "n_layers", "n_heads", "max_len",
                                              "feature_norm", "whiten")}

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "LiftConfig":
        fields = json.loads(text)
        known = {k: v for k, v in fields.items() if k in cls.__dataclass_fields__}
        return cls(**known)


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


class Encoder(nn.Module):
    def __init__(self, cfg: LiftConfig):
        super().__init__()
        d = cfg.latent_dim
        self.cls_static = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.cls_dynamic = nn.Parameter(torch.randn(1, 1, d) * 0.02)
        self.input_proj = nn.Linear(cfg.feature_dim, d)
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
        d, D = cfg.latent_dim, cfg.feature_dim
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
    """

    def __init__(self, cfg: LiftConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        D = cfg.feature_dim
        self.register_buffer("feature_mean", torch.zeros(D))
        self.register_buffer("feature_std", torch.ones(D))
        d = cfg.latent_dim  # descriptor whitening (calibrate); identity until calibrated
        self.register_buffer("static_mean", torch.zeros(d))
        self.register_buffer("static_whiten", torch.eye(d))
        self.register_buffer("dynamic_whiten", torch.eye(d))

    # ---- training-time pieces ---------------------------------------------------------------
    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.feature_mean) / self.feature_std if self.config.feature_norm else x

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x: (B, T, D) raw features -> z_s (B, d), z_d (B, d), x_hat (B, T, D) in normalised units."""
        x = self.normalise(x)
        z_s, z_d = self.encoder(x)
        return z_s, z_d, self.decoder(z_s, z_d, x.shape[1])

    def loss(self, x: torch.Tensor, latents: bool = False):
        """Reconstruction MSE + ortho_weight * mean |cos(z_s, z_d)|; with latents=True, (loss, z_s, z_d)."""
        z_s, z_d, x_hat = self(x)
        rec = F.mse_loss(x_hat, self.normalise(x))
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
        z_s, z_d = self.encoder(self.normalise(_as_tensor(x, self.feature_mean)))
        return z_s, z_d

    @torch.no_grad()
    def reconstruct(self, x) -> torch.Tensor:
        """(B, T, D) -> x_hat (B, T, D), in the units of the input features."""
        x = _as_tensor(x, self.feature_mean)
        x_hat = self(x)[2]
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
