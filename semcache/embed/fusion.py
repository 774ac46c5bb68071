"""Fusing an exported BERT graph into ONNX Runtime's transformer kernels.

``torch.onnx`` writes each layer's attention as a few dozen small ops (reshapes, transposes,
two matmuls, a softmax) when the model runs eager attention, and as an opaque pattern the
fuser cannot read when it runs PyTorch's SDPA. Exported eager, the graph of all-MiniLM-L6-v2
is fused by ONNX Runtime's own transformer optimizer (``onnxruntime.transformers``, part of
the onnxruntime wheel) into one ``Attention`` node per layer, ``SkipLayerNormalization``,
``BiasGelu`` and one ``EmbedLayerNormalization``: 542 nodes become 69, the same numbers within
float rounding (1e-7 on the embeddings), and a single short query runs about 1.15x faster
(``benchmarks/results/onnx_fusion.md``).

Two of those fusions are then undone (``split_slow_fusions``): ONNX Runtime's CPU kernel of
``SkipLayerNormalization`` took about 93 us a node on a 39-token pair (a third of the int8
verifier's time, more than its 19 integer matmuls together), where the ``Add`` and the
standard ``LayerNormalization`` it replaces take about 21 us; ``BiasGelu`` gives way to
``Add`` + ``Gelu`` for a few percent more. Same numbers within float rounding (1e-7 on the
embeddings); a one-pair verifier call 3.0 -> 2.1 ms, a 39-token encode 3.3 -> 2.3 ms on one
core (``benchmarks/results/onnx_fusion.md``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

__all__ = ["eager_attention", "fuse_bert", "split_slow_fusions"]

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
    split_slow_fusions(optimized.model)
    optimized.save_model_to_file(str(path))
    if not counts.get("Attention"):
        log.warning("the exported graph's attention was not fused (%s): it runs unfused", counts)
    return counts


def split_slow_fusions(model: Any) -> dict[str, int]:
    """Rewrite, in place, each ``SkipLayerNormalization`` of ``model`` (an ONNX ModelProto)
    as ``Add`` (+ ``Add`` of its bias) + ``LayerNormalization``, and each ``BiasGelu`` as
    ``Add`` + ``Gelu``: the same arithmetic on faster CPU kernels (module docstring). A node
    whose mean or variance output is read stays fused. Returns how many of each were split."""
    from onnx import helper

    graph = model.graph
    nodes: list[Any] = []
    split = {"SkipLayerNormalization": 0, "BiasGelu": 0}
    for node in graph.node:
        name = node.name or node.output[0]
        if node.op_type == "SkipLayerNormalization" and not any(node.output[1:3]):
            epsilon = next((a.f for a in node.attribute if a.name == "epsilon"), 1e-12)
            inputs = list(node.input) + [""] * (5 - len(node.input))
            x, skip, gamma, beta, bias = inputs[:5]
            # The residual sum is an output of its own when the next layer reads it.
            total = node.output[3] if len(node.output) > 3 and node.output[3] else f"{name}_sum"
            if bias:
                nodes.append(helper.make_node("Add", [x, skip], [f"{name}_skip"], f"{name}_add"))
                nodes.append(
                    helper.make_node("Add", [f"{name}_skip", bias], [total], f"{name}_bias")
                )
            else:
                nodes.append(helper.make_node("Add", [x, skip], [total], f"{name}_add"))
            norm_inputs = [total, gamma] + ([beta] if beta else [])
            nodes.append(
                helper.make_node(
                    "LayerNormalization",
                    norm_inputs,
                    [node.output[0]],
                    f"{name}_norm",
                    axis=-1,
                    epsilon=epsilon,
                )
            )
            split[node.op_type] += 1
        elif node.op_type == "BiasGelu" and node.domain == "com.microsoft":
            nodes.append(helper.make_node("Add", list(node.input), [f"{name}_in"], f"{name}_add"))
            nodes.append(
                helper.make_node(
                    "Gelu",
                    [f"{name}_in"],
                    list(node.output),
                    f"{name}_gelu",
                    domain="com.microsoft",
                )
            )
            split[node.op_type] += 1
        else:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return split
