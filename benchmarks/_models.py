"""The shipped models for the benchmarks that time another build of them in their place
(quantized_models.py, onnx_fusion.py): loaded as ``semcache serve`` loads them (the
verifier as its fp32 model, which those benchmarks quantise themselves; the shipped int8
verifier is a model trained for int8, ``semcache/data/verifier-int8``), with calls that swap
in another ONNX session of the same model."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from _workload import Workload, build_workload

from semcache.cache.verifier import VerifiedDecision
from semcache.embed import Encoder
from semcache.embed.runtime import OnnxModel, default_threads


def workload_arguments(description: str, samples: int) -> tuple[argparse.Namespace, Workload]:
    """``--shared-data`` and ``--samples``, and the side-by-side workload they name."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--shared-data", type=Path, default=os.environ.get("SEMCACHE_SHARED_DATA"))
    parser.add_argument("--samples", type=int, default=samples)
    args = parser.parse_args()
    if args.shared_data is None:
        sys.exit("name the shared data folder: --shared-data ../shared/data")
    return args, build_workload(args.shared_data / "arena-prompts-5k" / "prompts.jsonl")


class ShippedModels:
    """The encoder (at ``precision``; the shipped one is int8) and the fp32 verifier on the
    ONNX runtime, the shipped intra-op threads."""

    def __init__(self, precision: str = "int8") -> None:
        self.threads = default_threads("onnx")
        self.encoder = Encoder(precision=precision)
        self.verifier = VerifiedDecision()
        assert self.encoder._onnx is not None and self.verifier._onnx is not None
        self.sessions: dict[str, OnnxModel] = {
            "encoder": self.encoder._onnx,
            "verifier": self.verifier._onnx,
        }

    def encode_with(self, model: OnnxModel) -> Callable[[list[str]], None]:
        """``Encoder.encode`` of a batch, run by ``model``."""

        def encode(texts: list[str]) -> None:
            self.encoder._onnx = model
            self.encoder.encode(texts)

        return encode

    def verify_with(self, model: OnnxModel) -> Callable[[list[tuple[str, str]]], None]:
        """``VerifiedDecision.logits`` of a batch of pairs, run by ``model``."""

        def verify(pairs: list[tuple[str, str]]) -> None:
            self.verifier._onnx = model
            self.verifier.logits(pairs)

        return verify
