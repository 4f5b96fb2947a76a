"""The embed stage: decoded frames -> per-frame backbone features, cached in the index folder.

Its own module, light to import (no database, no vector store, no torch until a backbone needs it): a Ray
actor imports it to embed (indexer.ray_runner), and every import is start-up time on each worker.
"""
from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass

from typing import TYPE_CHECKING

import cv2
import numpy as np

from .decode import Decoded
from .library import THUMB_HEIGHT, IndexDir, VideoFeatures

if TYPE_CHECKING:
    from lift.backbones import Backbone

log = logging.getLogger(__name__)

Timing = dict[str, float]  # seconds per stage name


def thumbnails(decoded: Decoded) -> np.ndarray:
    """(n_clips, THUMB_HEIGHT, w, 3) uint8: each clip's middle frame."""
    pos = {int(f): i for i, f in enumerate(decoded.frame_indices)}
    out = []
    for p in decoded.plans:
        img = decoded.frames[pos[p.frame_indices[len(p.frame_indices) // 2]]]
        w = max(1, round(img.shape[1] * THUMB_HEIGHT / img.shape[0]))
        out.append(cv2.resize(img, (w, THUMB_HEIGHT), interpolation=cv2.INTER_AREA))
    return np.stack(out)


@dataclass(frozen=True)
class EmbedderSpec:
    """How to build an Embedder elsewhere (a Ray actor): the index's backbone record, not the model."""

    record: dict                     # BackboneRecord.to_dict(): name, weights digest and source, preprocessing
    index: str                       # the index folder (on a shared filesystem for a cluster)
    device: str = "auto"
    runtime: str = "auto"
    weights: str | None = None       # a weights file other than the recorded one (--backbone-weights)
    threads: int | None = None       # torch threads on the CPU (None: as the process has them)
    onnx: bytes | None = None        # the record's backbone exported to ONNX and checked by the driver (a CPU
                                     # actor runs it without torch: lift.onnx_frames), else the actor builds it

    def build(self) -> "Embedder":
        if self.onnx is not None:  # without torch (lift.onnx_frames: most of a CPU actor's start-up)
            from lift.onnx_frames import OnnxFrames

            try:
                return Embedder(OnnxFrames(self.record, self.onnx, self.threads or os.cpu_count() or 1),
                                IndexDir(self.index))
            except Exception as e:  # this node's ONNX Runtime is missing, or older than the driver's
                log.warning("the driver's ONNX export of backbone %s does not run here (%s: %s): building the "
                            "backbone from its record", self.record["name"], type(e).__name__, str(e)[:200])
        import torch

        from lift.backbones import BackboneRecord, backbone_from_record

        if self.threads:
            torch.set_num_threads(self.threads)
        # refuses weights whose digest is not the record's
        backbone = backbone_from_record(BackboneRecord.from_dict(self.record), self.device, self.weights, self.runtime)
        return Embedder(backbone, IndexDir(self.index))


class Embedder:
    """Decoded videos -> their per-frame backbone features, cached in the index folder (stage 3).

    Frames of all the videos of a call go through the backbone together, in batches of exactly
    ``backbone.batch_size`` frames (the last padded): one call per batch, not per video, which is what keeps
    a GPU busy, and every call has the same shape, so a video's features do not depend on which videos
    share its batches (a resumed or distributed run gives the same features)."""

    def __init__(self, backbone: "Backbone", idx: IndexDir):
        self.backbone, self.idx = backbone, idx

    def __call__(self, videos: list[tuple[Decoded, str]]) -> Timing:
        """Embed and cache [(decoded video, its content hash)]; returns seconds per stage."""
        t0 = time.perf_counter()
        feats = self.backbone.encode_videos([d.frames for d, _ in videos])
        t1 = time.perf_counter()
        for (d, digest), f in zip(videos, feats):
            VideoFeatures(d.info, d.plans, d.frame_indices, f, thumbnails(d), d.read_mode
                          ).save(self.idx.features_path(digest))
        return {"backbone": t1 - t0, "cache": time.perf_counter() - t1}
