"""Fusing an exported BERT graph into ONNX Runtime's transformer kernels.

``torch.onnx`` writes each layer's attention as a few dozen small ops (reshapes, transposes,
two matmuls, a softmax) when the model runs eager attention, and as an opaque pattern the
fuser cannot read when it runs PyTorch's SDPA. Exported eager, the graph of all-MiniLM-L6-v2
is fused by ONNX Runtime's own transformer optimizer (``onnxruntime.transformers``, part of
the onnxruntime wheel) into one ``Attention`` node per layer, ``SkipLayerNormalization``,
``BiasGelu`` and one ``EmbedLayerNormalization``: 542 nodes become 69, the same numbers within
float rounding (1e-7 on the embeddings), and a single short query runs about 1.15x faster
(``benchmarks/results/onnx_fusion.md``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["eager_attention", "fuse_bert"]

log = logging.getLogger(__name__)


def eager_attention(model: Any) -> None:
    """Make a Hugging Face model run (and so export) its attention as plain ops."""
    setter = getattr(model, "set_attn_implementation", None)
    if setter is not None:
        setter("eager")
    else:  # older transformers read the choice from the config at each forward
        model.config._attn_implementation = "eager"


def fuse_bert(path: Path, config: Any) -> dict[str, int]:
    """Rewrite the ONNX file at ``path`` with its BERT subgraphs fused, for a model of
    ``config``'s heads and width; returns how many of each fused op it holds. A graph the
    fuser does not recognise is written back valid, only unfused (the counts say so)."""
    from onnxruntime.transformers.optimizer import optimize_model

    # The optimizer logs every fusion pass at INFO through its own loggers.
    logging.getLogger("onnxruntime.transformers").setLevel(logging.WARNING)
    optimized = optimize_model(
        str(path),
        model_type="bert",
        num_heads=int(config.num_attention_heads),
        hidden_size=int(config.hidden_size),
        opt_level=0,  # the Python fusions only; the session applies its own at load
    )
    counts = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    optimized.save_model_to_file(str(path))
    if not counts.get("Attention"):
        log.warning("the exported graph's attention was not fused (%s): it runs unfused", counts)
    return counts
