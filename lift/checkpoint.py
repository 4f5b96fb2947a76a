"""Reading and writing LiFT weights.

Two formats are read by `load_checkpoint` (and so by `LiFT.from_checkpoint`):
  (a) the authors' PyTorch Lightning `.ckpt`: keys `model.encoder.*`, `model.decoder.*`; loaded with
      `torch.load(weights_only=True)` only, never falling back to full unpickling; dims read off tensors;
  (b) ours: a `.safetensors` file whose header metadata holds the `LiftConfig` as JSON under "lift".
`save_safetensors` writes (b). `download_official` fetches the published checkpoint into a cache.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from pathlib import Path

import torch

from .errors import CheckpointError
from .files import SAFETENSORS_META_KEY, atomic_write, safetensors_metadata
from .model import LiFT, LiftConfig

log = logging.getLogger(__name__)

OFFICIAL_NAME = "ggwirp95-epoch=458-step=834003.ckpt"
OFFICIAL_GDRIVE_ID = "1DFapOrZwRcltyq3_tQNTQ9mHtpgKqtZY"
OFFICIAL_URL = f"https://drive.google.com/file/d/{OFFICIAL_GDRIVE_ID}/view"


def cache_dir() -> Path:
    root = os.environ.get("LIFT_SEARCH_CACHE") or Path.home() / ".cache" / "lift-search"
    return Path(root)


def load_checkpoint(path: str | Path, n_heads: int = 8) -> LiFT:
    """Build a LiFT from either format; raises CheckpointError with a clear reason."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"LiFT checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"LiFT checkpoint {path} is empty (0 bytes): download it again.")
    if safetensors_metadata(path) is not None:
        return _load_ours(path)
    return _load_official(path, n_heads)


# ---- (a) the authors' Lightning checkpoint ------------------------------------------------------
def _load_official(path: Path, n_heads: int) -> LiFT:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # refused pickle, truncated zip, not a torch file at all
        kind = "it holds objects other than tensors (a pickle that could run code)" if (
            "weights_only" in str(e) or "Unpickl" in type(e).__name__) else "it is truncated or not a PyTorch file"
        raise CheckpointError(
            f"Refusing to load {path}: {kind}. Checkpoints are read with weights_only=True and nothing "
            f"else. ({type(e).__name__}: {str(e).splitlines()[0][:200]})") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not any(str(k).startswith("model.encoder.") for k in state):
        raise CheckpointError(
            f"{path} is a PyTorch file but not a LiFT checkpoint: no 'model.encoder.*' weights in it.")
    state = {k[len("model."):]: v for k, v in state.items() if k.startswith("model.")}
    cfg = infer_config(state, n_heads)
    cfg.provenance = {"source": "official-lightning", "file": path.name,
                      "epoch": ckpt.get("epoch"), "global_step": ckpt.get("global_step")}
    return _build(cfg, state, path, allow_missing={"feature_mean", "feature_std", *_WHITENING})


def infer_config(state: dict, n_heads: int = 8) -> LiftConfig:
    """Read D, d, the layer count and max_len off the tensors (the head count is not stored)."""
    try:
        d, D = state["encoder.input_proj.weight"].shape
        max_len = state["encoder.pos_encoder.pe"].shape[1]
    except (KeyError, ValueError, IndexError) as e:
        raise CheckpointError(f"LiFT weights are missing or misshapen: {e}") from None
    layers = {int(m.group(1)) for k in state if (m := re.match(r"encoder\.transformer\.layers\.(\d+)\.", k))}
    if not layers or d % n_heads:
        raise CheckpointError(f"LiFT weights have no encoder layers, or d={d} is not divisible by {n_heads} heads.")
    return LiftConfig(feature_dim=int(D), latent_dim=int(d), n_layers=max(layers) + 1,
                      n_heads=n_heads, max_len=int(max_len))


_WHITENING = ("static_mean", "static_whiten", "dynamic_whiten")  # identity when absent (older files)


def _build(cfg: LiftConfig, state: dict, path: Path, allow_missing: set = frozenset(_WHITENING)) -> LiFT:
    model = LiFT(cfg)
    expected = model.state_dict()
    problems = []
    for k, v in expected.items():
        if k not in state:
            if k not in allow_missing or (k in _WHITENING and cfg.whiten):
                problems.append(f"missing {k}")
        elif not torch.is_tensor(state[k]) or tuple(state[k].shape) != tuple(v.shape):
            shape = tuple(state[k].shape) if torch.is_tensor(state[k]) else type(state[k]).__name__
            problems.append(f"{k}: expected {tuple(v.shape)}, found {shape}")
    problems += [f"unexpected {k}" for k in state if k not in expected]
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        raise CheckpointError(f"{path} does not fit a LiFT with {cfg.feature_dim}-d features and "
                              f"d={cfg.latent_dim}: " + "; ".join(problems[:5]) + more)
    model.load_state_dict({k: state[k].float() for k in state}, strict=False)
    return model.eval()


# ---- (b) our safetensors format -----------------------------------------------------------------
def _load_ours(path: Path) -> LiFT:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}).") from None
    if SAFETENSORS_META_KEY not in meta:
        raise CheckpointError(f"{path} is a safetensors file without a LiFT config in its metadata.")
    try:
        cfg = LiftConfig.from_json(meta[SAFETENSORS_META_KEY])
    except (ValueError, TypeError) as e:
        raise CheckpointError(f"{path} has an unreadable LiFT config: {e}") from None
    return _build(cfg, state, path)


def save_safetensors(model: LiFT, path: str | Path) -> Path:
    """Write weights + config to one .safetensors file, atomically."""
    from safetensors.torch import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_write(path) as f:
        f.write(save(state, metadata={SAFETENSORS_META_KEY: model.config.to_json()}))
    return path


def hash_weights(h, module: torch.nn.Module):
    """Feed ``module``'s state_dict (names, dtypes, shapes, values; in name order) into hashlib object h."""
    for k, v in sorted(module.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update((t.float() if t.dtype == torch.bfloat16 else t).numpy().tobytes())  # numpy has no bf16
    return h


def model_digest(model: LiFT) -> str:
    """Names a LiFT by its architecture and weights only, not by its file or provenance (which holds the
    training time): a rerun that trains the same weights again gives the same name."""
    h = hashlib.sha256(json.dumps(model.config.architecture(), sort_keys=True).encode())
    return hash_weights(h, model).hexdigest()[:16]


# ---- the published checkpoint -------------------------------------------------------------------
def download_official(directory: str | Path | None = None) -> Path:
    """Return the path of the authors' checkpoint, downloading it once into the cache.

    The file is verified by loading it (weights only) and checking its dims (D = d = 384).
    """
    target = Path(directory or cache_dir()) / OFFICIAL_NAME
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        import gdown

        log.info("downloading the official LiFT checkpoint (~110 MB) to %s", target)
        got = gdown.download(id=OFFICIAL_GDRIVE_ID, output=str(partial), quiet=False)
        if not got or not partial.is_file():
            raise OSError("gdown returned nothing")
    except Exception as e:
        partial.unlink(missing_ok=True)
        raise CheckpointError(
            f"Could not download the official LiFT checkpoint ({type(e).__name__}: {e}). Without internet, "
            f"fetch it elsewhere from {OFFICIAL_URL} (or `gdown {OFFICIAL_GDRIVE_ID}`), copy it to {target} "
            f"or pass its path with --lift PATH; or index offline with `--backbone efficientnet-lite0 "
            f"--lift fit`, which trains a LiFT on your own library.") from None
    model = load_checkpoint(partial)
    if (model.config.feature_dim, model.config.latent_dim) != (384, 384):
        partial.unlink(missing_ok=True)
        raise CheckpointError("The downloaded file is not the published LiFT checkpoint (dims differ).")
    os.replace(partial, target)
    return target
