"""int8 versions of the fp32 ONNX exports: ONNX Runtime's dynamic quantisation.

``quantize_int8`` quantises a graph's weight matrices to int8 (per output channel); their
activations are quantised at run time, one scale per call. ``int8_export`` wraps a model's
fp32 export function so that ``semcache.embed.runtime.load_onnx`` caches the int8 graph in its
place (the encoder's ``precision``, the verifier's).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["int8_export", "quantize_int8"]


def quantize_int8(
    source: Path,
    target: Path,
    *,
    op_types: Sequence[str] | None = None,
    exclude: Sequence[str] = (),
) -> None:
    """ONNX Runtime's dynamic int8 quantisation of the graph at ``source``, written to
    ``target``: int8 weights per output channel, activations quantised per call (their scale
    is taken over the whole input tensor, so over every row of a batch). ``op_types`` limits
    it to those operators (the quantiser's default, None, also takes the embedding tables and
    a Gemm head); ``exclude`` names nodes to leave in fp32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # The quantiser advises, on the root logger, a pre-processing step meant for static
    # quantisation of image models: noise in a server's first-start log.
    root = logging.getLogger()
    advice = _DropMessage("Please consider to run pre-processing before quantization")
    root.addFilter(advice)
    try:
        quantize_dynamic(
            str(source),
            str(target),
            weight_type=QuantType.QInt8,
            per_channel=True,
            op_types_to_quantize=list(op_types) if op_types is not None else None,
            nodes_to_exclude=list(exclude),
            # The fused graph's contrib ops (Attention, SkipLayerNormalization) have no shape
            # inference in the quantiser: say their outputs are float.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.removeFilter(advice)


def int8_export(
    export_fp32: Callable[[Path], None],
    *,
    op_types: Sequence[str] | None = None,
    keep_fp32: Callable[[str], bool] | None = None,
) -> Callable[[Path], None]:
    """An export function (for ``load_onnx``) that exports the fp32 graph to a scratch file
    and writes its ``quantize_int8`` to the path: ``op_types`` as there, and the nodes whose
    name ``keep_fp32`` accepts left in fp32."""

    def export(target: Path) -> None:
        import onnx

        with tempfile.TemporaryDirectory(prefix="semcache-int8-") as tmp:
            fp32 = Path(tmp) / "fp32.onnx"
            export_fp32(fp32)
            exclude = []
            if keep_fp32 is not None:
                graph = onnx.load(str(fp32), load_external_data=False).graph
                exclude = [node.name for node in graph.node if keep_fp32(node.name)]
            quantize_int8(fp32, target, op_types=op_types, exclude=exclude)

    return export


class _DropMessage(logging.Filter):
    """Drops the records whose message starts with ``prefix``."""

    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)
