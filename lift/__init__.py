"""LiFT model package: the network, its checkpoints, frame backbones and self-supervised training.

Names are imported on first use, so that ``lift.config`` and ``lift.errors`` (no torch) stay cheap to import.
"""
from importlib import import_module

from .errors import BackboneError, CheckpointError, LiftSearchError

_LAZY = {"LiFT": "model", "LiftConfig": "model", "load_backbone": "backbones", "Backbone": "backbones",
         "BackboneRecord": "backbones"}
__all__ = ["LiFT", "LiftConfig", "load_backbone", "Backbone", "BackboneRecord", "BackboneError",
           "CheckpointError", "LiftSearchError"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
