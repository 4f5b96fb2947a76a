"""LiFT model package: the network, its checkpoints, frame backbones and self-supervised training."""
from .backbones import Backbone, BackboneError, load_backbone
from .checkpoint import CheckpointError
from .model import LiFT, LiftConfig

__all__ = ["LiFT", "LiftConfig", "load_backbone", "Backbone", "BackboneError", "CheckpointError"]
