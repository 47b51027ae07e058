"""Weight quantization of one graph, driven by a QuantSpec (onnxruntime's quantizers, nothing hand-rolled).

    QuantSpec(precision=int4, block_size=32, accuracy_level=4)  ->  MatMul -> MatMulNBits (4-bit blocks)
    QuantSpec(precision=w8, ...)                                ->  MatMul -> MatMulNBits (8-bit blocks)
    QuantSpec(precision=int8)                                   ->  MatMul -> MatMulInteger (per-channel int8
                                                                    weights, activations quantized at run time;
                                                                    onnxruntime fuses it to DynamicQuantizeMatMul)
    QuantSpec(precision=int4) on a Gather graph (token_embedding) -> GatherBlockQuantized (4-bit rows)
    QuantSpec(precision=w8) on a Gather graph (token_embedding)   -> GatherBlockQuantized (8-bit symmetric rows)

Each graph of a bundle gets its own spec (the decoder int4, the vision encoder fp32, ...); ``options()`` is what the
manifest records for that graph.
"""

from __future__ import annotations

import dataclasses
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from edgelmm.errors import SpecError
from edgelmm.export.lora_graph import fuse_with_corrections, side_path_nodes
from edgelmm.specs import SPEC, GraphRole, Precision

WEIGHT_ONLY_BITS = {Precision.INT4: 4, Precision.W8: 8}
STATIC = (Precision.A8W8, Precision.A16W8)
"""Static QDQ precisions: activations quantized with ranges calibrated on real samples (export/qdq.py)."""
QUANTIZABLE = (Precision.FP32, Precision.INT8, Precision.INT4, Precision.W8, *STATIC)

METHODS = ("rtn", "minmax", "minmax-float", "hqq")
DEFAULT_METHOD = "minmax"
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
    lm_head_bits: int = 8
    """Bits of the decoder's output projection (0 keeps it fp32). 8 by default, as llama.cpp keeps its output
    tensor above 4 bits: the LM head decides every token, and small LMs tie it to the embedding table."""
    method: str = DEFAULT_METHOD
    """int4 MatMul weights: rtn (round to nearest, ``symmetric`` or with an integer zero point), minmax (each
    block's min..max on 16 levels, llama.cpp's Q4_1 form, stored with an integer zero point so onnxruntime's int8
    kernel runs it, plus a per-block correction of the zero point's fraction: see ``_integer_zero_points``),
    minmax-float (the same blocks with float zero points: exact, but onnxruntime 1.32 runs them ~10x slower) or hqq
    (half-quadratic optimisation of scale and float zero point: slow the same way). Calibration-free all four;
    embeddings and every other precision always take rtn (see ``weight_method``)."""

    # Named presets: what each deployment target gets, and why it differs from the default.
    @classmethod
    def cpu_fp32(cls) -> QuantSpec:
        """The reference: every other variant's accuracy is measured against it."""
        return cls()

    @classmethod
    def arm64_int4(cls) -> QuantSpec:
        """Decoder weights in 4-bit min-max blocks of 32 with int8 activations (accuracy level 4): decode is memory
        bound, so 4-bit weights are the largest speed-up, and arm64's sdot/i8mm (x86 VNNI) run level 4; min-max
        blocks of 32 are the grid of the Q4_1 weights SmolLM2 ships in, so they lose least (docs/performance.md)."""
        return cls(precision=Precision.INT4, block_size=32, accuracy_level=4, method="minmax")

    @classmethod
    def arm64_int8(cls) -> QuantSpec:
        """8-bit weight-only blocks of 32 (MatMulNBits) with int8 compute: activations are quantized per block of 32
        inside the kernel, so the residual-stream outliers of small LMs cost little. quantize_dynamic's int8
        (one activation scale per tensor) agreed with fp32 on only 68.6% of SmolLM2 tokens (docs/quantization.md)."""
        return cls(precision=Precision.W8, block_size=32, accuracy_level=4, method="rtn")

    @classmethod
    def dynamic_int8(cls) -> QuantSpec:
        """quantize_dynamic's int8 (DynamicQuantizeMatMul, per-channel weights, one activation scale per tensor):
        runs on every onnxruntime build, including those without MatMulNBits kernels; less accurate on LMs."""
        return cls(precision=Precision.INT8)

    @classmethod
    def embedding_int4(cls) -> QuantSpec:
        """Token embedding rows in 4-bit blocks (GatherBlockQuantized): the table is the largest tensor of a small
        LM (113 MB of SmolLM2's fp32); 4 bits make it 18 MB but cost exact-string tasks accuracy (tool ids: -3.4
        points on the tool model, docs/tool-selection.md)."""
        return cls(precision=Precision.INT4, block_size=32, method="rtn")

    @classmethod
    def embedding_w8(cls) -> QuantSpec:
        """Token embedding rows in 8-bit symmetric blocks of 32 (GatherBlockQuantized, bits 8): SmolLM2's table
        ships as GGUF Q8_0, which is exactly this grid, so the rows come back bit for bit at half the fp32 size."""
        return cls(precision=Precision.W8, block_size=32, method="rtn")

    @classmethod
    def qnn_a16w8(cls) -> QuantSpec:
        """Static QDQ, 16-bit activations and 8-bit weights, MatMul only: Hexagon HTP runs only fixed-point
        graphs, 8-bit activations lose the outliers of small LMs, and a whole-graph QDQ is destroyed by the
        additive float32-min causal mask (shared/docs/pitfalls.md); the rest of the graph stays float."""
        return cls(precision=Precision.A16W8)

    @classmethod
    def qnn_a8w8(cls) -> QuantSpec:
        """Static QDQ with 8-bit activations: the fastest HTP form and the one older NPUs (and NNAPI) take; for
        vision towers, whose activations are well bounded, more than for decoders."""
        return cls(precision=Precision.A8W8)

    def __post_init__(self) -> None:
        problems = []
        if self.precision not in QUANTIZABLE:
            problems.append(f"precision '{self.precision}' has no quantizer; valid: {', '.join(QUANTIZABLE)}")
        if self.block_size < 16 or self.block_size & (self.block_size - 1):
            problems.append(f"block_size must be a power of two >= 16, got {self.block_size}")
        if self.method not in METHODS:
            problems.append(f"method '{self.method}' is not valid; valid: {', '.join(METHODS)}")
        if self.lm_head_bits not in (0, 4, 8):
            problems.append(f"lm_head_bits must be 0 (fp32), 4 or 8, got {self.lm_head_bits}")
        if self.accuracy_level not in (0, 1, 2, 3, 4):
            problems.append(f"accuracy_level must be 0-4, got {self.accuracy_level}")
        if problems:
            raise SpecError("invalid quantization spec: " + "; ".join(problems))

    @property
    def weight_method(self) -> str:
        """The method MatMul weights actually get: ``method`` for int4, rtn otherwise."""
        return self.method if self.precision is Precision.INT4 else "rtn"

    def options(self, *, gather: bool = False) -> dict[str, Any]:
        """What the manifest records for a graph quantized with this spec (``gather``: an embedding table)."""
        if gather and self.precision in WEIGHT_ONLY_BITS:
            bits = WEIGHT_ONLY_BITS[self.precision]
            return {"quantizer": "GatherBlockQuantized", "bits": bits, "block_size": self.block_size,
                    "symmetric": self.symmetric or bits == 8}
        if self.precision in WEIGHT_ONLY_BITS:
            method = self.weight_method
            out: dict[str, Any] = {"quantizer": "MatMulNBits", "method": method,
                                   "bits": WEIGHT_ONLY_BITS[self.precision], "block_size": self.block_size,
                                   "accuracy_level": self.accuracy_level,
                                   "symmetric": self.symmetric and method == "rtn",
                                   "zero_points": ZERO_POINTS.get(method) or ("int" if not self.symmetric
                                                                             else "none"),
                                   "lm_head_bits": self.lm_head_bits}
            if self.accuracy_level == 4:
                out["note"] = ACCURACY_LEVEL_NOTE
            return out
        if self.precision is Precision.INT8:
            return {"quantizer": "quantize_dynamic", "weight_type": "int8", "per_channel": True,
                    "lm_head_bits": 8 if self.lm_head_bits else 0}
        if self.precision in STATIC:
            return {"quantizer": "quantize_static", "format": "QDQ", "op_types": ["MatMul", "Gemm"],
                    "activation_type": "uint16" if self.precision is Precision.A16W8 else "uint8",
                    "weight_type": "uint8", "per_channel": True, "calibration": "minmax"}
        return {}

    @property
    def static(self) -> bool:
        """Static QDQ: needs calibration samples."""
        return self.precision in STATIC


PRESETS = {"cpu-fp32": QuantSpec.cpu_fp32, "arm64-int4": QuantSpec.arm64_int4, "arm64-int8": QuantSpec.arm64_int8,
           "dynamic-int8": QuantSpec.dynamic_int8,
           "embedding-int4": QuantSpec.embedding_int4, "embedding-w8": QuantSpec.embedding_w8,
           "qnn-a16w8": QuantSpec.qnn_a16w8, "qnn-a8w8": QuantSpec.qnn_a8w8}
"""Preset names (as recipes and the CLI spell them) -> QuantSpec classmethods."""


def preset(name: str) -> QuantSpec:
    """The named preset (UnknownNameError lists the valid ones)."""
    from edgelmm.registry import lookup

    return lookup(PRESETS, name, what="quantization preset")()


@dataclasses.dataclass(**SPEC)
class GraphPrecisions:
    """One QuantSpec per graph of a bundle: precision is chosen per graph, not per bundle."""

    vision_encoder: QuantSpec = QuantSpec()
    token_embedding: QuantSpec = QuantSpec()
    decoder: QuantSpec = QuantSpec()

    def for_role(self, role: GraphRole) -> QuantSpec:
        return getattr(self, str(role), QuantSpec())

    @property
    def static(self) -> bool:
        """Any graph needs calibration samples."""
        return any(getattr(self, f.name).static for f in dataclasses.fields(self))

    @classmethod
    def cpu_fp32(cls) -> GraphPrecisions:
        """Everything fp32: the accuracy reference and the fallback every runtime can run."""
        return cls()

    @classmethod
    def arm64_int8(cls) -> GraphPrecisions:
        """8-bit weights for both MatMul graphs and 8-bit embedding rows: SmolLM2's table is Q8_0 in its GGUF, so
        the rows are exact and the bundle is 78 MB smaller at the same agreement and task accuracy
        (docs/quantization.md)."""
        return cls(vision_encoder=QuantSpec.arm64_int8(), token_embedding=QuantSpec.embedding_w8(),
                   decoder=QuantSpec.arm64_int8())

    @classmethod
    def arm64_int4(cls) -> GraphPrecisions:
        """Decoder int4 (memory-bound decode), vision 8-bit (compute-bound once per image; 4-bit towers lose more
        for little speed), embeddings in 4-bit rows (the largest file)."""
        return cls(vision_encoder=QuantSpec.arm64_int8(), token_embedding=QuantSpec.embedding_int4(),
                   decoder=QuantSpec.arm64_int4())

    @classmethod
    def qnn_a16w8(cls) -> GraphPrecisions:
        """Vision and decoder MatMuls as static a16w8 QDQ for Hexagon HTP; the embedding lookup stays an fp32
        Gather on the CPU (a memory read, nothing for an NPU to speed up)."""
        return cls(vision_encoder=QuantSpec.qnn_a16w8(), decoder=QuantSpec.qnn_a16w8())


GRAPH_PRESETS = {"cpu-fp32": GraphPrecisions.cpu_fp32, "arm64-int8": GraphPrecisions.arm64_int8,
                 "arm64-int4": GraphPrecisions.arm64_int4, "qnn-a16w8": GraphPrecisions.qnn_a16w8}


ZERO_POINTS = {"minmax": "int+block-sum correction", "minmax-float": "float", "hqq": "float"}
"""How each non-rtn method stores its zero points (rtn: int, or none when symmetric)."""
LM_HEAD_NODE = "/decoder/lm_head/MatMul"
CORRECTION_SUFFIX = "_zp_correction"
"""Name suffix of the plain MatMul nodes ``_integer_zero_points`` adds (tests tell them from projections by it)."""


def quantize_decoder(proto: onnx.ModelProto, spec: QuantSpec) -> onnx.ModelProto:
    """Quantize every MatMul with a constant weight, the LM head at ``spec.lm_head_bits``; fp32 returns ``proto``.
    LoRA side-path MatMuls (export/lora_graph.py) stay float32: their deltas are what quantization would lose.

    onnxruntime's quantizer rewrites ``proto`` in place: pass a copy if the fp32 graph is still needed."""
    if spec.precision is Precision.FP32:
        return proto
    if spec.static:
        raise SpecError(f"{spec.precision} is static QDQ: quantize with export.qdq after calibration")
    side = side_path_nodes(proto.graph.node)
    if spec.precision is Precision.INT8:
        return _dynamic_int8(proto, side + ([] if spec.lm_head_bits else [LM_HEAD_NODE]))
    head_bits = spec.lm_head_bits if spec.lm_head_bits != WEIGHT_ONLY_BITS[spec.precision] else None
    proto = _matmul_nbits(proto, spec, ("MatMul",), side + ([LM_HEAD_NODE] if head_bits is not None else []))
    if head_bits:  # a second pass for the head alone, round to nearest at its own width
        head = dataclasses.replace(spec, precision=Precision.W8 if head_bits == 8 else Precision.INT4, method="rtn")
        # nodes_to_include does not restrict onnxruntime's quantizer to those nodes: exclude the side path again
        proto = _matmul_nbits(proto, head, ("MatMul",), side, include=[LM_HEAD_NODE])
    if spec.weight_method == "minmax":
        corrections = _integer_zero_points(proto.graph)
        # 8-bit MatMulNBits run the small correction MatMuls faster than fp32 MatMul (~10% of decode speed
        # measured, docs/performance.md); the 0/1 indicators are exact at 8 bits, the residuals lose ~1/256
        w8 = dataclasses.replace(spec, precision=Precision.W8, method="rtn", symmetric=True)
        others = [n.name for n in proto.graph.node if n.op_type == "MatMul" and n.name not in corrections]
        proto = _matmul_nbits(proto, w8, ("MatMul",), others)  # (an fp32 LM head stays fp32)
        if side:
            fuse_with_corrections(proto.graph, CORRECTION_SUFFIX + "_add")
    return proto


def quantize_vision(proto: onnx.ModelProto, spec: QuantSpec) -> onnx.ModelProto:
    """The vision encoder's MatMuls (tower and connector) at ``spec``: int8 dynamic or MatMulNBits weight-only;
    static QDQ goes through export/qdq.py (it needs calibration samples)."""
    if spec.precision is Precision.FP32:
        return proto
    if spec.static:
        raise SpecError(f"{spec.precision} is static QDQ: quantize with export.qdq after calibration")
    if spec.precision is Precision.INT8:
        return _dynamic_int8(proto, [])
    return _matmul_nbits(proto, spec, ("MatMul",), [])


def quantize_embedding(proto: onnx.ModelProto, spec: QuantSpec) -> tuple[onnx.ModelProto, Precision]:
    """The token embedding's Gather in 4-bit blocks for int4, 8-bit blocks for w8; other precisions keep it fp32.
    Returns the graph and the precision it actually has."""
    if spec.precision is Precision.INT4:
        return _matmul_nbits(proto, spec, ("Gather",), []), Precision.INT4
    if spec.precision is Precision.W8 and _gather_8bit(proto, spec.block_size):
        return proto, Precision.W8
    return proto, Precision.FP32


def _gather_8bit(proto: onnx.ModelProto, block_size: int) -> int:
    """Every Gather of a constant float table [V, H] (H a multiple of ``block_size``) -> GatherBlockQuantized(bits=8),
    in place: uint8 rows with the implicit zero point 128 (symmetric, q in [1, 255]) and float32 scales
    [V, H / block_size] = block max |w| / 127, which is llama.cpp's Q8_0. onnxruntime's quantizer writes only 4-bit
    Gathers; its kernel takes 8 bits. Returns how many Gathers it replaced (0: the graph is unchanged, fp32)."""
    graph = proto.graph
    tables = {t.name: t for t in graph.initializer}
    replaced = 0
    for node in graph.node:
        table = tables.get(node.input[0]) if node.op_type == "Gather" else None
        axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
        if table is None or axis != 0 or len(table.dims) != 2 or table.dims[1] % block_size:
            continue
        w = onnx.numpy_helper.to_array(table).astype(np.float32)
        blocks = w.reshape(w.shape[0], -1, block_size)
        scale = np.abs(blocks).max(axis=-1) / 127.0
        q = np.rint(blocks / np.where(scale == 0, 1.0, scale)[..., None]).clip(-127, 127) + 128
        name = node.input[0]
        graph.initializer.remove(table)
        graph.initializer.extend([onnx.numpy_helper.from_array(q.reshape(w.shape).astype(np.uint8), name),
                                  onnx.numpy_helper.from_array(scale.astype(np.float32), f"{name}_scales")])
        replacement = onnx.helper.make_node(
            "GatherBlockQuantized", [name, node.input[1], f"{name}_scales"], list(node.output), name=node.name,
            domain="com.microsoft", gather_axis=0, quantize_axis=1, block_size=block_size, bits=8)
        node.CopyFrom(replacement)
        replaced += 1
    if replaced and not any(o.domain == "com.microsoft" for o in proto.opset_import):
        proto.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return replaced


def _matmul_nbits(proto: onnx.ModelProto, spec: QuantSpec, op_types: tuple[str, ...], exclude: list[str],
                  include: list[str] | None = None) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger("onnxruntime.quantization").setLevel(logging.ERROR)
    algo = None
    if spec.weight_method != "rtn" and "Gather" not in op_types:
        from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig

        algo = HQQWeightOnlyQuantConfig(block_size=spec.block_size, bits=4, op_types_to_quantize=op_types)
    quantizer = MatMulNBitsQuantizer(
        proto,
        algo_config=algo,
        bits=WEIGHT_ONLY_BITS.get(spec.precision, 4),
        block_size=spec.block_size,
        is_symmetric=spec.symmetric,
        accuracy_level=spec.accuracy_level,
        nodes_to_exclude=exclude,
        nodes_to_include=include,
        op_types_to_quantize=op_types,
        quant_axes=(("Gather", 1),) if "Gather" in op_types else None,
    )
    if algo is not None and spec.method.startswith("minmax"):
        quantizer.node_quantizer = _min_max_quantizer(algo)
    quantizer.process()
    model = quantizer.model.model
    if algo is not None:  # the HQQ quantizer leaves accuracy_level unset (fp32 compute): apply the spec's
        for node in model.graph.node:
            if node.op_type == "MatMulNBits":
                kept = [a for a in node.attribute if a.name != "accuracy_level"]
                del node.attribute[:]
                node.attribute.extend([*kept, onnx.helper.make_attribute("accuracy_level", spec.accuracy_level)])
    return model


def _min_max_quantizer(config: Any) -> Any:
    """onnxruntime's HQQ node quantizer without its optimisation and zero-point rounding: plain asymmetric
    min-max blocks with float zero points (packing and MatMulNBits nodes stay onnxruntime's)."""
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantizer

    class MinMax(HQQWeightOnlyQuantizer):
        def quantize_internal(self, tensor: Any, bits: int = 4, channel_wise: bool = True, group_size: int = 64,
                              optimize: bool = True, round_zero: bool = True, axis: int = 1) -> Any:
            return super().quantize_internal(tensor, bits, channel_wise, group_size, optimize=False,
                                             round_zero=False, axis=axis)

    return MinMax(config)


def _integer_zero_points(graph: onnx.GraphProto) -> list[str]:
    """Rewrite float-zero-point 4-bit MatMulNBits nodes to uint8 zero points without changing what they compute.

    onnxruntime 1.32 runs MatMulNBits with int8 activations (accuracy level 4, the fast VNNI kernel) only when the
    zero points are integers. A min-max block ``w = (q - z) * s`` with a float ``z`` splits into
    ``(q - round(z)) * s + r`` with ``r = s * (round(z) - z)`` constant over the block (|r| <= s/2), so

        Y = MatMulNBits(A; q, s, round(z)) + blocksum(A) @ R,   blocksum(A) = A @ S,  S [K, K/block] of 0/1,

    R [K/block, N] = r: llama.cpp's Q4_1 dot product computes the same ``m * sum(x)`` term. The two small MatMuls
    per projection cost ~20-25% of decode speed (docs/performance.md); without them (r dropped) agreement with fp32
    falls from ~96% to ~74% on SmolLM2-135M. Indicators S are shared per (K, block) shape. Returns the names of
    the MatMul nodes it added."""
    from onnx import helper, numpy_helper

    init = {t.name: t for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    added: list[str] = []
    for node in graph.node:
        zp = init.get(node.input[3]) if node.op_type == "MatMulNBits" and len(node.input) > 3 else None
        if zp is None or zp.data_type != onnx.TensorProto.FLOAT:
            nodes.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        k, n, block = attrs["K"], attrs["N"], attrs["block_size"]
        blocks = -(-k // block)
        scales = numpy_helper.to_array(init[node.input[2]]).reshape(n, blocks)
        zero = numpy_helper.to_array(zp).reshape(n, blocks)
        rounded = np.clip(np.round(zero), 0, 15).astype(np.uint8)
        residual = (scales * (rounded - zero)).T.astype(np.float32)  # [blocks, N]
        rounded = np.pad(rounded, ((0, 0), (0, blocks % 2)))  # two 4-bit zero points a byte, rows padded
        zp.CopyFrom(numpy_helper.from_array((rounded[:, 0::2] | rounded[:, 1::2] << 4).reshape(-1), zp.name))
        indicator = f"blocksum_indicator_K{k}_B{block}"
        if indicator not in init:
            init[indicator] = numpy_helper.from_array(
                np.kron(np.eye(blocks, dtype=np.float32), np.ones((block, 1), np.float32))[:k], indicator)
            graph.initializer.append(init[indicator])
        name, out = node.name + CORRECTION_SUFFIX, node.output[0]
        graph.initializer.append(numpy_helper.from_array(residual, name + "_residual"))
        node.output[0] = out + "_nbits"
        nodes += [node,
                  helper.make_node("MatMul", [node.input[0], indicator], [name + "_blocksum"], name=name + "_blocksum"),
                  helper.make_node("MatMul", [name + "_blocksum", name + "_residual"], [name], name=name),
                  helper.make_node("Add", [out + "_nbits", name], [out], name=name + "_add")]
        added += [name + "_blocksum", name]
    del graph.node[:]
    graph.node.extend(nodes)
    return added


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
