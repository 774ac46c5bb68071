"""Quantisation-aware training for the verifier: ONNX Runtime's dynamic int8, simulated in torch.

``semcache.embed.quantize.quantize_int8`` turns every projection of the exported pair model
(attention's QKV, its output, both feed-forward projections, the head) into an integer matrix
product: the weight is int8, symmetric, one scale per output column; the input is quantised
when the graph runs, uint8 with one scale and zero point over the whole input tensor of that
call (``DynamicQuantizeLinear``). The service scores each pair in a call of its own, so a
pair's input range is taken over its own tokens only.

``fake_quant(model)`` makes each of those ``nn.Linear`` layers compute what the int8 graph
computes, rounding included, with straight-through gradients, so that fine-tuning can teach the
model to keep its logits under that rounding (the feed-forward output projection, whose input
is the GELU output with a few large values, lost the most when quantised after training:
``benchmarks/results/verifier_int8_layers.md``). Padding tokens are left out of each pair's
range, as a pair alone has none. The state dict is unchanged (the layers' ``forward`` is
replaced on the instance); ``unfake_quant`` restores it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["fake_quant", "quantised_linears", "score_pairs_int8", "unfake_quant"]

# ORT's symmetric int8 weights use [-127, 127] (onnxruntime.quantization.quant_utils
# get_qmin_qmax_for_qType with symmetric=True).
_W_MAX = 127.0
_INT8_OPS = ("MatMul", "Attention")


def quantised_linears(model: Any) -> list[nn.Linear]:
    """The layers ``quantize_int8`` with op types MatMul and Attention turns into int8."""
    out: list[nn.Linear] = []
    for layer in model.encoder.encoder.layer:
        attention = layer.attention
        out += [attention.self.query, attention.self.key, attention.self.value]
        out += [attention.output.dense, layer.intermediate.dense, layer.output.dense]
    out.append(model.head)
    return out


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    # torch.round rounds half to even, as ONNX's QuantizeLinear does.
    return x + (torch.round(x) - x).detach()


def _weight(w: torch.Tensor) -> torch.Tensor:
    # nn.Linear's weight is (out, in): one scale per output row here = per output column of
    # the exported MatMul's (in, out) initializer.
    scale = (w.detach().abs().amax(dim=1, keepdim=True) / _W_MAX).clamp(min=1e-12)
    return torch.clamp(_round_ste(w / scale), -_W_MAX, _W_MAX) * scale


def _activation(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """DynamicQuantizeLinear then dequantise, one range per pair (row of the batch)."""
    flat = x.detach().reshape(x.shape[0], -1, x.shape[-1])
    if mask is not None and flat.shape[1] == mask.shape[1]:
        keep = mask.bool().unsqueeze(-1)
        high = torch.where(keep, flat, torch.full_like(flat, -torch.inf)).amax(dim=(1, 2))
        low = torch.where(keep, flat, torch.full_like(flat, torch.inf)).amin(dim=(1, 2))
    else:
        high, low = flat.amax(dim=(1, 2)), flat.amin(dim=(1, 2))
    high, low = high.clamp(min=0.0), low.clamp(max=0.0)
    scale = ((high - low) / 255.0).clamp(min=1e-12)
    zero = torch.clamp(torch.round(-low / scale), 0.0, 255.0)
    shape = (x.shape[0],) + (1,) * (x.dim() - 1)
    scale, zero = scale.reshape(shape), zero.reshape(shape)
    q = torch.clamp(_round_ste(x / scale) + zero, 0.0, 255.0)
    return (q - zero) * scale


class _Mask:
    """The attention mask of the batch in flight, for the layers' input ranges."""

    value: torch.Tensor | None = None


def fake_quant(model: Any) -> None:
    """Make ``model``'s int8-bound layers compute as the dynamic int8 graph does."""
    mask = _Mask()

    def remember(_module: nn.Module, _args: Any, kwargs: dict[str, Any]) -> None:
        mask.value = kwargs.get("attention_mask")

    model._fake_quant_hook = model.register_forward_pre_hook(remember, with_kwargs=True)
    for linear in quantised_linears(model):

        def forward(x: torch.Tensor, linear: nn.Linear = linear) -> torch.Tensor:
            return nn.functional.linear(
                _activation(x, mask.value), _weight(linear.weight), linear.bias
            )

        linear.forward = forward  # type: ignore[method-assign]


def unfake_quant(model: Any) -> None:
    """Undo ``fake_quant``: the layers compute in float again."""
    hook = getattr(model, "_fake_quant_hook", None)
    if hook is not None:
        hook.remove()
        del model._fake_quant_hook
    for linear in quantised_linears(model):
        linear.__dict__.pop("forward", None)


def score_pairs_int8(artifact: Any, pairs: Any, threads: int = 2) -> Any:
    """Logits of ``pairs`` from ``artifact``'s export with every projection in int8 (what
    ``fake_quant`` simulates), each pair in a call of its own as the service scores pairs."""
    import tempfile
    from pathlib import Path

    import numpy as np
    import onnxruntime as ort

    from semcache.cache.verifier import _export_verifier, fit_to_window
    from semcache.cache.verifier_model import MAX_LENGTH, encode_pairs, load_base
    from semcache.embed.quantize import int8_export

    _, tokenizer = load_base()
    with tempfile.TemporaryDirectory(prefix="semcache-qat-") as tmp:
        graph = Path(tmp) / "verifier_int8.onnx"
        # Every projection: the MatMuls with a weight and the fused Attention's QKV.
        int8_export(_export_verifier(Path(artifact), None), op_types=_INT8_OPS)(graph)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    out = np.zeros(len(pairs), dtype=np.float64)
    for i, pair in enumerate(pairs):
        a, b = fit_to_window(tokenizer, pair.a, pair.b, MAX_LENGTH)
        feeds = {k: v.numpy() for k, v in encode_pairs(tokenizer, [a], [b]).items()}
        out[i] = float(session.run(None, feeds)[0].reshape(-1)[0])
    return out
