"""Embedding: the encoder and the micro-batcher in front of it."""

from __future__ import annotations

from .batcher import BatchStats, MicroBatcher
from .encoder import Encoder, bundled_model_path

__all__ = ["BatchStats", "Encoder", "MicroBatcher", "bundled_model_path"]
