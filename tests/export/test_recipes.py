"""Export recipes, per-graph precisions, visual-token budgets, static QDQ and the accuracy re-check (tiny models)."""

import dataclasses
import importlib.util

import numpy as np
import onnx
import pytest
import torch

from edgelmm.errors import InputError, SpecError, UnknownNameError
from edgelmm.export.exporter import ExportOptions, export_model
from edgelmm.export.quantize import GraphPrecisions, QuantSpec, preset
from edgelmm.export.recipe import parse_recipe
from edgelmm.export.visual_tokens import VisualBudget
from edgelmm.runtime import Pipeline
from edgelmm.runtime.manifest import load_bundle
from edgelmm.specs import GraphRole, Precision

from ..test_cli import assert_bad_input, run_cli


def test_presets_are_classmethods_and_unknown_names_list_the_valid_ones():
    assert QuantSpec.arm64_int4().precision is Precision.INT4 and QuantSpec.arm64_int4().method == "minmax"
    assert QuantSpec.qnn_a16w8().static and not QuantSpec.arm64_int8().static
    plan = GraphPrecisions.arm64_int4()
    assert (plan.vision_encoder.precision, plan.token_embedding.precision, plan.decoder.precision) == (
        Precision.W8, Precision.INT4, Precision.INT4)
    assert preset("qnn-a16w8") == QuantSpec.qnn_a16w8()
    with pytest.raises(UnknownNameError, match="valid: arm64-int4, arm64-int8, .*qnn-a16w8"):
        preset("arm64-int3")
    with pytest.raises(SpecError, match="precision preset 'qnn-a4w4'.*valid: arm64-int4"):
        parse_recipe({"name": "x", "model": "tiny-random", "preset": "qnn-a4w4"})


def test_a_bad_recipe_lists_every_problem_at_once():
    data = {"name": "x", "model": "tiny-random", "colour": "red",
            "precision": {"decoder": {"precision": "int3", "block_size": "big"}},
            "budget": {"pool": 0}, "calibration": {"dataset": "shapes", "samples": 0}}
    with pytest.raises(SpecError) as err:
        parse_recipe(data, where="bad.yaml")
    message = str(err.value)
    assert message.startswith("bad.yaml: ")
    for fragment in ("colour", "int3", "block_size", "pool", "samples"):
        assert fragment in message, (fragment, message)


def test_static_precisions_need_calibration():
    with pytest.raises(SpecError, match="needs calibration"):
        parse_recipe({"name": "x", "model": "tiny-random", "preset": "qnn-a16w8"})


def test_unreachable_budget_is_refused_before_any_work(tiny_llava, tmp_path):
    out = tmp_path / "b"
    for budget, why in ((VisualBudget(image_size=20), "not a multiple of the patch size 8"),
                        (VisualBudget(image_size=64), "exceeds the model's own 32"),
                        (VisualBudget(pool=3), "cannot be pooled 3x3")):
        with pytest.raises(SpecError, match=why):
            export_model(tiny_llava, out, ExportOptions(budget=budget))
    assert not out.exists()


@pytest.fixture(scope="module")
def small_image_bundle(tiny_llava, tmp_path_factory):
    """The tiny LLaVA at 16 px instead of 32 (2x2 instead of 4x4 tokens), arm64-int4 precisions."""
    out = tmp_path_factory.mktemp("budget") / "b16"
    export_model(tiny_llava, out, ExportOptions(graphs=GraphPrecisions.arm64_int4(),
                                                budget=VisualBudget(image_size=16)))
    return out


def test_smaller_image_size_interpolates_position_embeddings_like_siglip(tiny_llava, small_image_bundle):
    manifest = load_bundle(small_image_bundle)
    assert manifest.text.num_image_tokens == 4 and manifest.preprocess.image_size == (16, 16)
    assert manifest.visual_tokens.native_tokens == 16 and manifest.visual_tokens.tokens == 4
    assert manifest.graphs[GraphRole.VISION_ENCODER].precision is Precision.W8
    pipe = Pipeline.load(small_image_bundle)
    pixels = (torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1)
    ours = pipe.sessions[GraphRole.VISION_ENCODER].session.run(None, {"pixel_values": pixels.numpy()})[0]
    with torch.no_grad():  # transformers' own per-call interpolation of the same table
        hidden = tiny_llava.model.model.vision_tower(pixels, interpolate_pos_encoding=True).last_hidden_state
        reference = tiny_llava.model.model.multi_modal_projector(hidden).numpy()
    assert ours.shape == reference.shape == (1, 4, 32)
    assert np.abs(ours - reference).max() < 0.05  # 8-bit vision; a wrong position table differs by ~1


def test_runtime_places_the_budgeted_number_of_image_slots(small_image_bundle, sample_images):
    pipe = Pipeline.load(small_image_bundle)
    prompt = pipe.prompts.build("what is it?", 1)
    assert prompt.image_slots[0][1] == 4
    assert int((prompt.ids == pipe.manifest.text.image_token_id).sum()) == 4
    result = pipe.generate("what is it?", images=[sample_images[0]], max_new_tokens=3)
    assert result.metrics.images == 1 and result.metrics.generated_tokens >= 1


@pytest.fixture(scope="module")
def pooled_qdq(tiny_llava, tmp_path_factory, sample_images):
    out = tmp_path_factory.mktemp("qdq") / "pooled-a16w8"
    samples = [(image, q) for image in sample_images[:3] for q in ("what colour?", "how many shapes?")]
    manifest = export_model(tiny_llava, out, ExportOptions(graphs=GraphPrecisions.qnn_a16w8(),
                                                           budget=VisualBudget(pool=2), static_shapes=True,
                                                           max_context=48),
                            calibration=samples)
    return out, manifest


def test_pooling_averages_2x2_blocks_of_the_connector_output(tiny_llava, pooled_qdq):
    out, manifest = pooled_qdq
    assert manifest.text.num_image_tokens == 4 and manifest.visual_tokens.pool == 2
    vision = manifest.graphs[GraphRole.VISION_ENCODER]
    assert vision.input("pixel_values").shape[0] == 1  # static shapes: one image per call
    pipe = Pipeline.load(out)
    pixels = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    ours = pipe.sessions[GraphRole.VISION_ENCODER].session.run(None, {"pixel_values": pixels.numpy()})[0]
    from edgelmm.models.vision import image_features

    with torch.no_grad():
        grid = image_features(tiny_llava.model, pixels).reshape(1, 2, 2, 2, 2, 32)  # [B, gy, 2, gx, 2, D]
    reference = grid.mean(dim=(2, 4)).reshape(1, 4, 32).numpy()
    assert np.abs(ours - reference).max() < 0.05
    assert np.abs(ours - reference).max() > 0  # 16-bit QDQ really ran


def test_static_qdq_graphs_are_quantized_and_rechecked(pooled_qdq):
    out, manifest = pooled_qdq
    for role in (GraphRole.VISION_ENCODER, GraphRole.DECODER):
        graph = manifest.graphs[role]
        assert graph.precision is Precision.A16W8 and graph.options["calibration_samples"] >= 3
        proto = onnx.load(str(out / graph.file), load_external_data=False)
        scales = [n for n in proto.graph.node if n.op_type == "QuantizeLinear"]
        assert scales, f"{role} has no QuantizeLinear"
        assert not any(n.op_type == "QuantizeLinear" and "attention_mask" in n.input[0] for n in proto.graph.node)
    assert manifest.graphs[GraphRole.TOKEN_EMBEDDING].precision is Precision.FP32
    accuracy = manifest.accuracy
    qnn = accuracy["providers"]["qnn-htp"]  # ran there with CPU fallback disabled, or says why not
    assert set(qnn["graphs"]) == {"vision_encoder", "decoder"}
    if importlib.util.find_spec("onnxruntime_qnn"):  # the [qnn] extra (Linux x86-64: the HTP simulator)
        assert qnn["ok"], qnn
        assert set(qnn["graphs"]["decoder"]["placement"]) == {"QNNExecutionProvider"}
        assert qnn["graphs"]["decoder"]["positions"] >= 16
    else:
        assert all(g["detail"] for g in qnn["graphs"].values())
    assert set(accuracy["max_abs_diff"]) == {"vision_encoder", "token_embedding", "decoder"}
    assert 0.5 <= accuracy["decoder_agreement"]["agreement"] <= 1.0
    assert accuracy["precision"]["decoder"] == "a16w8"


def test_static_shapes_decoder_is_a_fixed_step_the_runtime_runs(pooled_qdq, sample_images):
    out, manifest = pooled_qdq
    kv, decoder = manifest.kv_cache, manifest.graphs[GraphRole.DECODER]
    assert kv.layout == "static-buffer" and kv.max_length == 48
    assert all(isinstance(d, int) for t in decoder.inputs for d in t.shape), decoder.inputs
    pipe = Pipeline.load(out)
    result = pipe.generate("what colour?", images=[sample_images[0]], max_new_tokens=4, ignore_eos=True)
    assert result.metrics.generated_tokens == 4
    # generate()'s steps (logits of the last row only) pick what teacher forcing over all rows picks
    from edgelmm.export.accuracy import bundle_argmax

    text = pipe.generate("hello there", max_new_tokens=5, ignore_eos=True).token_ids
    prompt = pipe.prompts.build("hello there").ids
    forced = bundle_argmax(pipe, np.concatenate([prompt, text[:-1]]))
    assert forced[len(prompt) - 1 :].tolist() == text
    answers = ["red", "blue", "tan"]  # score() rewinds the alternating static buffers between answers
    scores = pipe.score("what colour?", answers, images=[sample_images[0]])
    np.testing.assert_allclose(pipe.score("what colour?", answers[::-1], images=[sample_images[0]]), scores[::-1],
                               rtol=1e-5)
    np.testing.assert_allclose(pipe.score("what colour?", answers[1:2], images=[sample_images[0]]), scores[1:2],
                               rtol=1e-5)
    with pytest.raises(InputError, match="max context is 48"):
        pipe.generate("x" * 60, max_new_tokens=1)


def test_static_qdq_without_samples_is_refused(tiny_llava, tmp_path):
    with pytest.raises(SpecError, match="need calibration samples"):
        export_model(tiny_llava, tmp_path / "x", ExportOptions(graphs=GraphPrecisions.qnn_a16w8()))
    assert not (tmp_path / "x").exists()


def test_export_recipe_cli_prints_the_accuracy_table_and_records_it(capsys, tmp_path):
    recipe = tmp_path / "tiny.yaml"
    recipe.write_text("name: tiny/arm64-int8\nmodel: tiny-random\npreset: arm64-int8\n"
                      "validation: {tokens: 64, task: shapes, split: test, samples: 3}\n")
    code, out, err = run_cli(capsys, "export", "--recipe", str(recipe), "--out", str(tmp_path / "b"))
    assert code == 0, err
    assert "| decoder top-1 agreement vs fp32 |" in out and "| task accuracy (shapes [test]) |" in out
    manifest = load_bundle(tmp_path / "b")
    assert manifest.accuracy["task"]["n"] == 3 and manifest.accuracy["decoder_agreement"]["tokens"] == 64
    assert manifest.provenance["export_options"]["recipe"] == "tiny/arm64-int8"
    assert manifest.graphs[GraphRole.VISION_ENCODER].precision is Precision.W8
    assert manifest.graphs[GraphRole.TOKEN_EMBEDDING].precision is Precision.W8  # 8-bit rows (the preset)


def test_export_recipe_cli_bad_input_is_one_line(capsys, tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("name: t\nmodel: tiny-random\npreset: arm64-int8\ncalibration: {dataset: nope}\n"
                      "validation: {task: nada}\n")
    code, _, err = run_cli(capsys, "export", "--recipe", str(recipe), "--out", str(tmp_path / "b"))
    assert_bad_input(code, err, r"calibration dataset 'nope'.*validation task 'nada'")
    code, _, err = run_cli(capsys, "export", "--recipe", "smol-vqa/arm64-int9", "--out", str(tmp_path / "b"))
    assert_bad_input(code, err, r"no export recipe .*shipped: smol-vqa/arm64-int4")
    assert not (tmp_path / "b").exists()


def test_fp32_export_agrees_with_torch_on_every_token(tiny_bundle):
    agreement = load_bundle(tiny_bundle).accuracy["decoder_agreement"]
    assert agreement["agreement"] == 1.0 and agreement["tokens"] == 256
    assert dataclasses.is_dataclass(ExportOptions())
