"""Provider fallback: QNN (HTP simulator) through the plug-in, unavailable providers skipped with reasons, placement.

The QDQ graph is built here with onnx.helper + onnxruntime's quantize_static (a16w8, static shapes: what the HTP
runs); the real QDQ bundle variant comes from the export side.
"""

import importlib.util
import json
import logging

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from edgelmm.cli import main as cli_main
from edgelmm.errors import ProviderError
from edgelmm.runtime import Pipeline, sessions
from edgelmm.runtime.profile import parse_profile
from edgelmm.runtime.sessions import SessionConfig, open_session

from .test_profile import MINIMAL

QNN_INSTALLED = importlib.util.find_spec("onnxruntime_qnn") is not None
QNN_SIM = {"qnn": {"backend": "htp", "soc_model": 60, "htp_performance_mode": "burst"}, "strict": True}
CONFIG = SessionConfig(intra_op_threads=1)


def providers(*entries):
    return parse_profile({**MINIMAL, "name": "t", "providers": list(entries)}).providers


@pytest.fixture(scope="module")
def qdq_model(tmp_path_factory):
    """float32 x [1, 16] -> MatMul(16x32) -> Add -> Relu -> MatMul(32x8) -> y [1, 8], quantized to QDQ a16w8."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    rng = np.random.default_rng(0)
    root = tmp_path_factory.mktemp("qdq")
    inits = [numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)
             for name, shape in (("w1", (16, 32)), ("b1", (32,)), ("w2", (32, 8)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    onnx.save(model, root / "f32.onnx")

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": rng.standard_normal((1, 16)).astype(np.float32)} for _ in range(16)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(root / "f32.onnx", root / "qdq.onnx", Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt16, weight_type=QuantType.QUInt8)
    return root / "qdq.onnx"


def run(graph, x):
    return graph.session.run(None, {"x": x})[0]


def test_qnn_first_runs_the_qdq_graph_on_qnn_or_falls_back_to_cpu(qdq_model):
    x = np.linspace(-1, 1, 16, dtype=np.float32)[None]
    graph = open_session(qdq_model, CONFIG, providers(QNN_SIM, {"cpu": {}}))
    reference = run(open_session(qdq_model, CONFIG, providers({"cpu": {}})), x)
    if QNN_INSTALLED:
        # strict: CPU fallback was disabled, so every node is on the (simulated) HTP; placement says so too
        assert graph.provider == "QNNExecutionProvider" and graph.skipped == ()
        assert set(graph.placement) == {"QNNExecutionProvider"}
        np.testing.assert_allclose(run(graph, x), reference, atol=0.05 * np.abs(reference).max())
    else:
        assert graph.provider == "CPUExecutionProvider"
        assert "onnxruntime-qnn is not installed" in graph.skipped[0]


def test_qnn_not_installed_falls_back_with_the_reason(qdq_model, monkeypatch):
    monkeypatch.setattr(sessions, "QNN_PACKAGE", "onnxruntime_qnn_not_here")
    graph = open_session(qdq_model, CONFIG, providers(QNN_SIM, {"cpu": {}}))
    assert graph.provider == "CPUExecutionProvider" and set(graph.placement) == {"CPUExecutionProvider"}
    assert graph.skipped == ("QNNExecutionProvider: onnxruntime-qnn is not installed (pip install 'edgelmm[qnn]';"
                             " wheels exist for Linux x86-64, where HTP is a simulator, and Windows)",)


@pytest.mark.skipif(not QNN_INSTALLED, reason="needs onnxruntime-qnn (the [qnn] extra, in [all] on x86-64 Linux)")
def test_strict_qnn_refuses_a_graph_it_cannot_take_whole(tiny_bundle):
    """The fp32 decoder has dynamic shapes: the HTP cannot take all of it, so strict QNN is skipped for CPU."""
    graph = open_session(tiny_bundle / "decoder.onnx", CONFIG, providers(QNN_SIM, {"cpu": {}}))
    assert graph.provider == "CPUExecutionProvider"
    assert graph.skipped[0].startswith("QNNExecutionProvider: ")
    assert "Dynamic shape is not supported" in graph.skipped[0] or "fallback to CPU EP" in graph.skipped[0]


@pytest.mark.skipif(not QNN_INSTALLED, reason="needs onnxruntime-qnn (the [qnn] extra, in [all] on x86-64 Linux)")
def test_qnn_context_cache_is_written_then_reused(qdq_model, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGELMM_CACHE", str(tmp_path))
    entry = {**QNN_SIM, "qnn": {**QNN_SIM["qnn"], "context_cache": True}}
    x = np.ones((1, 16), np.float32)
    first = open_session(qdq_model, CONFIG, providers(entry), cache_key="ab" * 32)
    cached = list((tmp_path / "qnn-context").glob("*_ctx.onnx"))
    assert len(cached) == 1 and first.provider == "QNNExecutionProvider"
    second = open_session(qdq_model, CONFIG, providers(entry), cache_key="ab" * 32)
    assert second.provider == "QNNExecutionProvider"
    assert any(n.op_type == "EPContext" for n in onnx.load(cached[0], load_external_data=False).graph.node)
    np.testing.assert_array_equal(run(first, x), run(second, x))
    cached[0].write_bytes(b"not a model")  # a broken cache is rebuilt, not a reason to leave the NPU
    third = open_session(qdq_model, CONFIG, providers(entry), cache_key="ab" * 32)
    assert third.provider == "QNNExecutionProvider" and cached[0].stat().st_size > 100


def test_unavailable_providers_are_skipped_for_the_next(qdq_model):
    graph = open_session(qdq_model, CONFIG, providers({"coreml": {}}, {"nnapi": {}}, {"cpu": {}}))
    assert graph.provider == "CPUExecutionProvider"
    assert [s.split(":")[0] for s in graph.skipped] == ["CoreMLExecutionProvider", "NnapiExecutionProvider"]
    assert all("not available in this onnxruntime" in s for s in graph.skipped)


def test_no_provider_left_is_one_error_listing_every_attempt(qdq_model, monkeypatch):
    monkeypatch.setattr(sessions, "QNN_PACKAGE", "onnxruntime_qnn_not_here")
    with pytest.raises(ProviderError) as err:
        open_session(qdq_model, CONFIG, providers(QNN_SIM, {"xnnpack": {}}))
    message = str(err.value)
    assert message.startswith("no execution provider could run 'qdq.onnx'; tried: QNNExecutionProvider: ")
    assert "onnxruntime-qnn is not installed" in message and "XnnpackExecutionProvider: not available" in message


FALLBACK_PROFILE = {**MINIMAL, "name": "fallback-test", "providers": [{"nnapi": {}}, {"cpu": {}}],
                    "graph_providers": {"token_embedding": [{"cpu": {}}]}, "precision": ["fp32"]}


def test_pipeline_records_providers_fallbacks_and_warns_once(tiny_bundle, caplog, tmp_path):
    profile = parse_profile(FALLBACK_PROFILE)
    with caplog.at_level(logging.WARNING, logger="edgelmm.runtime"):
        pipe = Pipeline.load(tiny_bundle, profile)
        Pipeline.load(tiny_bundle, profile)  # same situation again: no second warning
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "NnapiExecutionProvider" in warnings[0].getMessage()
    m = pipe.generate("hi", max_new_tokens=2).metrics
    assert m.providers == {"vision_encoder": "CPUExecutionProvider", "token_embedding": "CPUExecutionProvider",
                           "decoder": "CPUExecutionProvider"}
    assert set(m.provider_fallbacks) == {"vision_encoder", "decoder"}  # token_embedding's override is CPU only
    assert m.provider_fallbacks["decoder"][0].startswith("NnapiExecutionProvider: not available")
    assert m.placement["decoder"] == {"CPUExecutionProvider": m.placement["decoder"]["CPUExecutionProvider"]}
    assert m.profile == "fallback-test" and m.memory_budget_mb == 1024 and m.memory_estimate_mb > 0


def test_run_json_prints_the_providers_used(tiny_bundle, tmp_path, capsys):
    import yaml

    path = tmp_path / "fallback-test.yaml"
    path.write_text(yaml.safe_dump(FALLBACK_PROFILE))
    code = cli_main(["run", "--bundle", str(tiny_bundle), "--profile", str(path), "--prompt", "hi",
                     "--max-new-tokens", "2", "--json"])
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and out["metrics"]["providers"]["decoder"] == "CPUExecutionProvider"
    assert "NnapiExecutionProvider" in out["metrics"]["provider_fallbacks"]["decoder"][0]
