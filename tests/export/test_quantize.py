"""int4 min-max blocks with integer zero points: the block-sum correction makes them compute what float zero points
compute (the fast int8 kernel needs integer zero points). Tiny one-MatMul graphs, no model."""

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from edgelmm.export.quantize import CORRECTION_SUFFIX, QuantSpec, quantize_decoder
from edgelmm.specs import Precision

K, N = 96, 40  # three 32-weight blocks along K: an odd count, so the packed zero points need their row padding


def one_matmul(weight: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"], name="/decoder/layers.0/proj/MatMul")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", K])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq", N])], [numpy_helper.from_array(weight, "w")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])


def run(model: onnx.ModelProto, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def quantized(weight: np.ndarray, method: str, accuracy_level: int = 0) -> onnx.ModelProto:
    spec = QuantSpec(precision=Precision.INT4, block_size=32, accuracy_level=accuracy_level, method=method)
    return quantize_decoder(one_matmul(weight), spec)


def test_integer_zero_points_with_block_sum_correction_compute_what_float_zero_points_compute():
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((K, N)) * 0.05 + rng.uniform(-0.05, 0.05, (1, N))).astype(np.float32)
    x = rng.standard_normal((2, 5, K)).astype(np.float32)
    fast, exact = quantized(weight, "minmax"), quantized(weight, "minmax-float")
    init = {t.name: t for t in fast.graph.initializer}
    nbits = {n.name: n for n in fast.graph.node if n.op_type == "MatMulNBits"}
    main = nbits.pop("/decoder/layers.0/proj/MatMul_Q4")
    assert init[main.input[3]].data_type == TensorProto.UINT8
    # the two correction MatMuls (block sums, residuals) as 8-bit MatMulNBits; nothing else
    assert sorted(nbits) == [f"{main.name}{CORRECTION_SUFFIX}_Q8", f"{main.name}{CORRECTION_SUFFIX}_blocksum_Q8"]
    assert {n.op_type for n in fast.graph.node} == {"MatMulNBits", "Add"}
    y_fast, y_exact = run(fast, x), run(exact, x)
    corrected_error = np.abs(y_fast - y_exact).max()
    assert corrected_error < 2e-3
    # the correction carries real weight: the rounded zero points alone are far off float zero points
    uncorrected = onnx.ModelProto()
    uncorrected.CopyFrom(fast)
    del uncorrected.graph.node[:]
    uncorrected.graph.node.extend([main])
    uncorrected.graph.node[0].output[0] = "y"
    assert np.abs(run(uncorrected, x) - y_exact).max() > 10 * corrected_error
    assert np.abs(y_exact - x @ weight).max() > 1e-3


def test_integer_zero_points_run_at_accuracy_level_4():
    rng = np.random.default_rng(1)
    weight = (rng.standard_normal((K, N)) * 0.05).astype(np.float32)
    x = rng.standard_normal((1, 3, K)).astype(np.float32)
    model = quantized(weight, "minmax", accuracy_level=4)
    levels = {a.i for n in model.graph.node if n.op_type == "MatMulNBits" for a in n.attribute
              if a.name == "accuracy_level"}
    assert levels == {4}
    y, y_exact = run(model, x), run(quantized(weight, "minmax-float"), x)  # int8 activations vs fp32 compute
    assert np.abs(y - y_exact).max() < 0.03 * np.abs(y_exact).max()


def test_int4_method_auto_is_rtn_for_fine_tuned_lms(tiny_llava):
    """Min-max int4 matches SmolLM2's Q4_1 grid and rounds merged LoRA deltas away (docs/training.md): auto picks
    rtn for a fine-tuned LM without unmerged LoRA (a trained student; LoRA models get the side path instead,
    test_lora_side_path.py) and minmax for a registry LM's own weights; an explicit method is kept."""
    import dataclasses

    from edgelmm.export.exporter import ExportOptions
    from edgelmm.export.quantize import DEFAULT_METHOD
    from edgelmm.specs import GraphRole, Precision

    options = ExportOptions(precision=Precision.INT4)
    assert options.resolved(tiny_llava).quant_spec(GraphRole.DECODER).method == DEFAULT_METHOD
    tuned = dataclasses.replace(tiny_llava, lm_trained=True)
    assert options.resolved(tuned).quant_spec(GraphRole.DECODER).method == "rtn"
    explicit = ExportOptions(precision=Precision.INT4, quant_method="minmax")
    assert explicit.resolved(tuned).quant_method == "minmax"
    from edgelmm.export.quantize import GraphPrecisions

    preset = ExportOptions(graphs=GraphPrecisions.arm64_int4())
    assert preset.resolved(tiny_llava).quant_spec(GraphRole.DECODER).method == "minmax"
    assert preset.resolved(tuned).quant_spec(GraphRole.DECODER).method == "rtn"


def one_gather(table: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], name="/embed/Gather")], "g",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["batch", "seq", K])],
        [numpy_helper.from_array(table, "table")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_w8_embedding_is_an_8bit_gather_that_returns_q8_0_rows_bit_for_bit():
    from edgelmm.export.quantize import quantize_embedding

    rng = np.random.default_rng(1)
    # a Q8_0 table (llama.cpp: d = block max |w| / 127 stored as fp16, q = round(w / d)), as SmolLM2's GGUF ships it
    raw = rng.standard_normal((50, K // 32, 32)).astype(np.float32)
    d = (np.abs(raw).max(-1, keepdims=True) / 127).astype(np.float16).astype(np.float32)
    q8 = (d * np.rint(raw / d).clip(-127, 127)).reshape(50, K)
    q8[3] = 0.0  # an all-zero row (padding tokens) must not divide by zero
    proto, precision = quantize_embedding(one_gather(q8), QuantSpec.embedding_w8())
    assert precision is Precision.W8
    assert [n.op_type for n in proto.graph.node] == ["GatherBlockQuantized"]
    assert {t.name: t.data_type for t in proto.graph.initializer}["table"] == TensorProto.UINT8
    ids = np.array([[0, 3, 49, 7]], dtype=np.int64)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(session.run(None, {"ids": ids})[0], q8[ids])
    # any other table: within half a step (block max / 254) of every weight
    table = rng.standard_normal((50, K)).astype(np.float32)
    proto, _ = quantize_embedding(one_gather(table), QuantSpec.embedding_w8())
    got = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]
    step = np.abs(table.reshape(50, -1, 32)).max(-1).repeat(32, axis=1) / 127
    assert np.all(np.abs(got - table[ids]) <= step[ids] / 2 + 1e-6)
    # rows that blocks cannot tile stay fp32, and the precision says so
    proto, precision = quantize_embedding(one_gather(table), QuantSpec(precision=Precision.W8, block_size=64))
    assert precision is Precision.FP32 and [n.op_type for n in proto.graph.node] == ["Gather"]
    assert QuantSpec.embedding_w8().options(gather=True) == {"quantizer": "GatherBlockQuantized", "bits": 8,
                                                             "block_size": 32, "symmetric": True}
