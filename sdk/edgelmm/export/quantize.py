"""Weight quantization of one graph, driven by a QuantSpec (onnxruntime's quantizers, nothing hand-rolled).

    QuantSpec(precision=int4, block_size=32, accuracy_level=4)  ->  MatMul -> MatMulNBits (4-bit blocks)
    QuantSpec(precision=w8, ...)                                ->  MatMul -> MatMulNBits (8-bit blocks)
    QuantSpec(precision=int8)                                   ->  MatMul -> MatMulInteger (per-channel int8
                                                                    weights, activations quantized at run time;
                                                                    onnxruntime fuses it to DynamicQuantizeMatMul)
    QuantSpec(precision=int4) on a Gather graph (token_embedding) -> GatherBlockQuantized (4-bit rows)

Each graph of a bundle gets its own spec (the decoder int4, the vision encoder fp32, ...); ``options()`` is what the
manifest records for that graph.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

import onnx

from edgelmm.errors import SpecError
from edgelmm.specs import SPEC, Precision

WEIGHT_ONLY_BITS = {Precision.INT4: 4, Precision.W8: 8}
QUANTIZABLE = (Precision.FP32, Precision.INT8, Precision.INT4, Precision.W8)

DEFAULT_BLOCK_SIZE = 32
DEFAULT_ACCURACY_LEVEL = 4
ACCURACY_LEVEL_NOTE = (
    "accuracy_level 4 quantizes activations to int8 inside MatMulNBits; results differ slightly between x86-64 and "
    "aarch64 kernels (logit differences ~0.1 seen), so greedy outputs may differ across CPU architectures"
)


@dataclasses.dataclass(**SPEC)
class QuantSpec:
    """How one graph's weights are stored and computed.

    Defaults are the fastest setting measured on the reference CPU (docs/performance.md, SmolLM2-135M, 2 threads):
    block 32 with accuracy level 4 (int8 dot products on VNNI); 4-bit agreement with fp32 stays >= 90% there.
    """

    precision: Precision = Precision.FP32
    block_size: int = DEFAULT_BLOCK_SIZE
    """Weights per quantization block along K (MatMulNBits / GatherBlockQuantized); power of two, >= 16."""
    accuracy_level: int = DEFAULT_ACCURACY_LEVEL
    """MatMulNBits compute type: 0 = unset (fp32), 1 fp32, 2 fp16, 3 bf16, 4 int8 activations."""
    symmetric: bool = True
    """Symmetric blocks store no zero points (smaller, what llama.cpp's Q4_0 does)."""
    quantize_lm_head: bool = True
    """Quantize the decoder's output projection too (the largest single matrix of small LMs)."""

    def __post_init__(self) -> None:
        problems = []
        if self.precision not in QUANTIZABLE:
            problems.append(f"precision '{self.precision}' has no quantizer; valid: {', '.join(QUANTIZABLE)}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            problems.append(f"block_size must be a power of two >= 16, got {self.block_size}")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            problems.append(f"accuracy_level must be 0-4, got {self.accuracy_level}")
        if problems:
            raise SpecError("invalid quantization spec: " + "; ".join(problems))

    def options(self, *, gather: bool = False) -> dict[str, Any]:
        """What the manifest records for a graph quantized with this spec (``gather``: an embedding table)."""
        if gather and self.precision is Precision.INT4:
            return {"quantizer": "GatherBlockQuantized", "bits": 4, "block_size": self.block_size,
                    "symmetric": self.symmetric}
        if self.precision in WEIGHT_ONLY_BITS:
            out: dict[str, Any] = {"quantizer": "MatMulNBits", "bits": WEIGHT_ONLY_BITS[self.precision],
                                   "block_size": self.block_size, "accuracy_level": self.accuracy_level,
                                   "symmetric": self.symmetric, "quantize_lm_head": self.quantize_lm_head}
            if self.accuracy_level == 4:
                out["note"] = ACCURACY_LEVEL_NOTE
            return out
        if self.precision is Precision.INT8:
            return {"quantizer": "quantize_dynamic", "weight_type": "int8", "per_channel": True,
                    "quantize_lm_head": self.quantize_lm_head}
        return {}


LM_HEAD_NODE = "/decoder/lm_head/MatMul"


def quantize_decoder(proto: onnx.ModelProto, spec: QuantSpec) -> onnx.ModelProto:
    """Quantize every MatMul with a constant weight (the LM head unless excluded); fp32 returns ``proto``."""
    if spec.precision is Precision.FP32:
        return proto
    exclude = [] if spec.quantize_lm_head else [LM_HEAD_NODE]
    if spec.precision in WEIGHT_ONLY_BITS:
        return _matmul_nbits(proto, spec, ("MatMul",), exclude)
    return _dynamic_int8(proto, exclude)


def quantize_embedding(proto: onnx.ModelProto, spec: QuantSpec) -> tuple[onnx.ModelProto, Precision]:
    """The token embedding's Gather in 4-bit blocks for int4; other precisions keep it fp32 (8-bit Gather is not
    supported by onnxruntime's quantizer). Returns the graph and the precision it actually has."""
    if spec.precision is not Precision.INT4:
        return proto, Precision.FP32
    return _matmul_nbits(proto, spec, ("Gather",), []), Precision.INT4


def _matmul_nbits(proto: onnx.ModelProto, spec: QuantSpec, op_types: tuple[str, ...],
                  exclude: list[str]) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    quantizer = MatMulNBitsQuantizer(
        proto,
        bits=WEIGHT_ONLY_BITS.get(spec.precision, 4),
        block_size=spec.block_size,
        is_symmetric=spec.symmetric,
        accuracy_level=spec.accuracy_level,
        nodes_to_exclude=exclude,
        op_types_to_quantize=op_types,
        quant_axes=(("Gather", 1),) if "Gather" in op_types else None,
    )
    quantizer.process()
    return quantizer.model.model


def _dynamic_int8(proto: onnx.ModelProto, exclude: list[str]) -> onnx.ModelProto:
    """quantize_dynamic works on files: round-trip through a temporary directory (external data included)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="edgelmm-int8-") as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save_model(proto, str(src), save_as_external_data=True, location="in.onnx.data")
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True, op_types_to_quantize=["MatMul"],
                         nodes_to_exclude=exclude, use_external_data_format=True,
                         extra_options={"MatMulConstBOnly": True, "DefaultTensorType": onnx.TensorProto.FLOAT})
        return onnx.load(str(dst))
