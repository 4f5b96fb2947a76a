"""A backbone's ONNX export on the CPU without torch: what a Ray CPU actor embeds with (indexer/ray_runner.py).

Importing torch is most of such an actor's start-up: two actors on a running 2-CPU cluster were ready 2.7 s after
they were created with torch and lift.runtime's ONNX session, 0.9 s with ONNX Runtime's session alone
(docs/cluster.md). This is lift.backbones.Backbone.from_onnx with its preprocessing in numpy, bit for bit
(centre crop, then (x / 255 - mean) / std in float32) and the same fixed-shape batches, so it makes the same
features. Frames that need resizing (a decoder delivers them at the record's size) go through that Backbone,
which imports torch then.
"""
from __future__ import annotations

import numpy as np

from .batches import fixed_batches
from .config import CPU_BACKBONE_BATCH


class OnnxFrames:
    """Frames (N, H, W, 3) uint8 RGB -> features (N, D) float32, from a backbone record (BackboneRecord.to_dict())
    and the bytes of its ONNX export, on ``threads`` CPU threads."""

    device, runtime, batch_size = "cpu", "onnxruntime", CPU_BACKBONE_BATCH

    def __init__(self, record: dict, onnx: bytes, threads: int):
        import onnxruntime as ort

        self.record, self.onnx, self.threads = record, onnx, threads
        self.name, self.dim, pre = record["name"], int(record["feature_dim"]), record["preprocess"]
        self.resize, self.crop = int(pre["resize"]), int(pre["crop"])
        self.mean, self.std = (np.asarray(pre[k], np.float32) for k in ("mean", "std"))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as lift.runtime.onnx_session
        opts.log_severity_level = 3
        self.session = ort.InferenceSession(onnx, opts, providers=["CPUExecutionProvider"])
        self._resizing = None  # the torch Backbone, once frames need resizing

    def preprocess(self, frames: np.ndarray) -> np.ndarray:
        """(N, H, W, 3) uint8 at the record's size (shorter side == resize) -> (N, 3, crop, crop) float32."""
        h, w = frames.shape[1:3]
        top, left = int(round((h - self.crop) / 2)), int(round((w - self.crop) / 2))
        x = frames[:, top:top + self.crop, left:left + self.crop].astype(np.float32) / np.float32(255)
        return np.ascontiguousarray(((x - self.mean) / self.std).transpose(0, 3, 1, 2))

    def encode_frames(self, frames: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        return self.encode_videos([frames], batch_size)[0]

    def encode_videos(self, videos: list[np.ndarray], batch_size: int | None = None) -> list[np.ndarray]:
        """As Backbone.encode_videos: all the videos' frames in batches of exactly ``batch_size`` (the last padded
        with zeros), one model call each; each video's (N_i, D) features."""
        if any(v.ndim != 4 or v.shape[-1] != 3 or v.dtype != np.uint8 or min(v.shape[1:3]) != self.resize
               for v in videos):
            return self._torch_backbone().encode_videos(videos, batch_size)
        batch_size = batch_size or self.batch_size
        out = [self.session.run(None, {"x": x})[0] for x in fixed_batches(videos, batch_size, self.preprocess, np.concatenate, _pad)]
        lengths = [len(v) for v in videos]
        rows = np.concatenate(out)[:sum(lengths)] if out else np.zeros((0, self.dim), np.float32)
        return np.split(rows, np.cumsum(lengths)[:-1])

    def _torch_backbone(self):
        if self._resizing is None:
            import torch

            from .backbones import Backbone, BackboneRecord

            torch.set_num_threads(self.threads)
            self._resizing = Backbone.from_onnx(BackboneRecord.from_dict(self.record), self.onnx, self.threads)
        return self._resizing


def _pad(x: np.ndarray, k: int) -> np.ndarray:
    return np.concatenate([x, np.zeros((k, *x.shape[1:]), x.dtype)])
