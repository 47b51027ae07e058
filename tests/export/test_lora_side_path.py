"""LoRA exported unmerged: quantized MatMuls hold the base LM's weights, the deltas run as a float side path.

A tiny LLaVA (hidden 32, 2 layers) whose LM projection weights sit on a block-32 min-max 4-bit grid (as SmolLM2's
dequantized Q4_1 weights do) gets random LoRA deltas of about a fifth of a grid step (std ~1e-3 against steps of
~5e-3): merged, min-max int4 rounds them back onto the grid, as it does smol-vqa's.
"""

import dataclasses
import json

import numpy as np
import pytest
import torch
from onnx import TensorProto

from edgelmm.errors import SpecError
from edgelmm.export.exporter import ExportOptions, export_model
from edgelmm.export.llama_graph import build_llama_decoder
from edgelmm.export.lora_graph import LORA_TAG
from edgelmm.export.quantize import GraphPrecisions, QuantSpec, quantize_decoder
from edgelmm.models.tiny import build_tiny_llava
from edgelmm.models.weights import attach_lora
from edgelmm.runtime import Pipeline
from edgelmm.specs import GraphRole, Precision

PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
RANK, ALPHA, FACTOR_STD = 4, 8, 0.016
EXACT_INT4 = QuantSpec(precision=Precision.INT4, accuracy_level=0, lm_head_bits=0, method="minmax")
"""int4 min-max with fp32 compute and an fp32 LM head: on-grid base weights then lose nothing but the 8-bit zero-point
correction, so what remains is what the side path does."""
EXACT_ATOL = 1e-3
"""Max |logit| difference of the EXACT_INT4 side-path bundle vs the merged torch model (logits here are ~0.4)."""
DEFAULT_SHARE = 1.5
"""At the default int4 (int8 activations, 8-bit LM head, 4-bit embedding), the side-path bundle's max logit error vs
torch stays within this factor of the base model's own int4 error: the LoRA costs no accuracy of its own."""
GREEDY_TOKENS = 16


def _snap_to_grid(weight: torch.Tensor, block: int = 32) -> torch.Tensor:
    """[out, in] -> the same weights on a min-max 4-bit grid per block of ``block`` inputs (Q4_1's form)."""
    blocks = weight.reshape(weight.shape[0], -1, block)
    lo, hi = blocks.amin(-1, keepdim=True), blocks.amax(-1, keepdim=True)
    step = (hi - lo) / 15
    return (lo + torch.round((blocks - lo) / step) * step).reshape(weight.shape)


def _projection_paths(model: torch.nn.Module) -> dict[str, torch.nn.Linear]:
    return {n: m for n, m in model.named_modules() if n.startswith("model.language_model.")
            and n.rsplit(".", 1)[-1] in PROJECTIONS}


def _base_and_lora(seed: int = 0):
    """(tiny LLaVA on the grid without LoRA, the same with random LoRA merged and recorded)."""
    base = build_tiny_llava()
    with torch.no_grad():
        for linear in _projection_paths(base.model).values():
            linear.weight.copy_(_snap_to_grid(linear.weight))
    tuned = build_tiny_llava()
    tuned.model.load_state_dict(base.model.state_dict())
    g = torch.Generator().manual_seed(seed)
    tensors = {}
    for path, linear in _projection_paths(tuned.model).items():
        tensors[f"{path}.lora_A"] = torch.randn(RANK, linear.in_features, generator=g) * FACTOR_STD
        tensors[f"{path}.lora_B"] = torch.randn(linear.out_features, RANK, generator=g) * FACTOR_STD
    return base, attach_lora(tuned, tensors, scale=ALPHA / RANK)


@pytest.fixture(scope="module")
def base_and_lora():
    return _base_and_lora()


def _nbits_tensors(proto) -> dict[str, bytes]:
    """Every initializer a MatMulNBits reads (packed weights, scales, zero points), by name, as raw bytes."""
    init = {t.name: t for t in proto.graph.initializer}
    return {name: init[name].raw_data for n in proto.graph.node if n.op_type == "MatMulNBits"
            for name in n.input[1:] if name in init}


def test_int4_matmuls_hold_the_base_weights_and_the_side_path_stays_float(base_and_lora):
    base, tuned = base_and_lora
    assert tuned.lora is not None and tuned.lm_trained and len(tuned.lora.a) == 2 * len(PROJECTIONS)
    spec = QuantSpec.arm64_int4()
    side_fp32, _ = build_llama_decoder(tuned.model, 64, lora=tuned.lora)
    init = {t.name: t for t in side_fp32.graph.initializer}
    q = tuned.lora.base["model.language_model.layers.0.self_attn.q_proj"]
    qkv = np.frombuffer(init["/decoder/layers.0/attn/qkv_proj/weight"].raw_data, np.float32).reshape(32, -1)
    np.testing.assert_array_equal(qkv[:, :32], q.numpy().T)  # the base weight, bit for bit, not the merged one
    side = quantize_decoder(side_fp32, spec)
    plain = quantize_decoder(build_llama_decoder(base.model, 64)[0], spec)
    merged = quantize_decoder(build_llama_decoder(tuned.model, 64)[0], spec)
    side_q, plain_q, merged_q = _nbits_tensors(side), _nbits_tensors(plain), _nbits_tensors(merged)
    assert side_q == plain_q  # quantized exactly as the base model without LoRA is
    assert any(merged_q[k] != plain_q[k] for k in plain_q if "qkv_proj" in k)
    ops = [n.op_type for n in side.graph.node if LORA_TAG in n.name]
    # (A, B, Sum) x (qkv, o, gate|up, down) x 2: each Sum adds base, zero-point correction and delta in one node
    assert sorted(ops) == ["MatMul"] * 2 * 4 * 2 + ["Sum"] * 4 * 2
    assert len(side.graph.node) == len(plain.graph.node) + 2 * 4 * 2  # the side path costs two MatMuls per projection
    lora_nodes = [n for n in side.graph.node if LORA_TAG in n.name and n.op_type == "MatMul"]
    side_init = {t.name: t for t in side.graph.initializer}
    assert all(side_init[n.input[1]].data_type == TensorProto.FLOAT for n in lora_nodes)


def _logits(pipe: Pipeline, ids: list[int]) -> np.ndarray:
    pipe.decoder.reset()
    return pipe.decoder.forward(pipe.embed(np.asarray(ids, np.int64)), all_logits=True)


def _torch_logits(loaded, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        return loaded.model(input_ids=torch.tensor([ids])).logits[0].numpy()


def _greedy(loaded, prompt: str) -> list[int]:
    enc = loaded.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = loaded.model.generate(**enc, do_sample=False, max_new_tokens=GREEDY_TOKENS, min_new_tokens=GREEDY_TOKENS)
    return out[0, enc["input_ids"].shape[1]:].tolist()


def _error(loaded, options: ExportOptions, out, ids: list[int]) -> tuple[float, object]:
    """(max |bundle logits - torch logits| over ``ids``, the manifest) of ``loaded`` exported with ``options``."""
    manifest = export_model(loaded, out, options)
    return float(np.abs(_logits(Pipeline.load(out), ids) - _torch_logits(loaded, ids)).max()), manifest


def test_int4_side_path_matches_the_merged_torch_model_where_merged_int4_loses_the_lora(base_and_lora, tmp_path):
    base, tuned = base_and_lora
    exact = ExportOptions(graphs=GraphPrecisions(decoder=EXACT_INT4))  # a recipe's plan naming minmax
    manifest = export_model(tuned, tmp_path / "side", exact)
    pipe = Pipeline.load(tmp_path / "side")
    ids = pipe.prompts.build("The quick brown fox").ids
    reference = _torch_logits(tuned, ids)
    change = np.abs(reference - _torch_logits(base, ids)).max()  # what the LoRA does to the logits
    error = np.abs(_logits(pipe, ids) - reference).max()
    assert error <= EXACT_ATOL and error <= 0.05 * change, (error, change)
    assert pipe.generate("The quick brown fox", max_new_tokens=GREEDY_TOKENS).token_ids == _greedy(
        tuned, "The quick brown fox")
    assert manifest.graphs[GraphRole.DECODER].options["method"] == "minmax"
    # merged, the deltas round back onto the min-max grid: the bundle is the base model again
    lost, merged = _error(tuned, dataclasses.replace(exact, lora="merged"), tmp_path / "merged", ids)
    assert merged.graphs[GraphRole.DECODER].options["lora"] == {"form": "merged"}
    assert lost >= 0.5 * change > 10 * error, (lost, change, error)


def test_default_int4_export_records_the_side_path_and_costs_no_accuracy_of_its_own(base_and_lora, tmp_path):
    base, tuned = base_and_lora
    manifest = export_model(tuned, tmp_path / "side", ExportOptions(precision=Precision.INT4))
    decoder = manifest.graphs[GraphRole.DECODER]
    assert decoder.options["method"] == "minmax"  # auto: min-max on the base weights, not rtn
    record = decoder.options["lora"]
    assert record["form"] == "side-path" and record["rank"] == RANK and record["scale"] == ALPHA / RANK
    assert record["side_paths"] == 4 * 2 and record["dtype"] == "float32"
    assert manifest.provenance["export_options"]["lora"] == "side-path"
    on_disk = json.loads((tmp_path / "side" / "manifest.json").read_text())
    assert on_disk["graphs"]["decoder"]["options"]["lora"]["form"] == "side-path"
    pipe = Pipeline.load(tmp_path / "side")
    ids = pipe.prompts.build("The quick brown fox").ids
    error = np.abs(_logits(pipe, ids) - _torch_logits(tuned, ids)).max()
    floor, _ = _error(base, ExportOptions(precision=Precision.INT4), tmp_path / "base", ids)
    assert error <= DEFAULT_SHARE * floor, (error, floor)


def test_fp32_side_path_is_token_identical_to_transformers(base_and_lora, tmp_path):
    _, tuned = base_and_lora
    manifest = export_model(tuned, tmp_path / "b", ExportOptions(lora="side-path"))  # passes the fp32 tolerances
    assert manifest.graphs[GraphRole.DECODER].options["lora"]["form"] == "side-path"
    pipe = Pipeline.load(tmp_path / "b")
    assert pipe.generate("Hello there", max_new_tokens=GREEDY_TOKENS).token_ids == _greedy(tuned, "Hello there")


def test_auto_picks_the_side_path_for_weight_only_decoders_with_unmerged_lora(base_and_lora, tiny_llava):
    _, tuned = base_and_lora
    int4 = ExportOptions(precision=Precision.INT4).resolved(tuned)
    assert (int4.lora, int4.quant_method) == ("side-path", "minmax")
    assert ExportOptions(precision=Precision.W8).resolved(tuned).lora == "side-path"
    assert ExportOptions().resolved(tuned).lora == "merged"  # fp32 keeps the merged weights
    merged = ExportOptions(precision=Precision.INT4, lora="merged").resolved(tuned)
    assert (merged.lora, merged.quant_method) == ("merged", "rtn")  # the old fallback
    recipe = ExportOptions(graphs=GraphPrecisions.arm64_int4()).resolved(tuned)  # a recipe naming minmax
    assert recipe.lora == "side-path" and recipe.quant_spec(GraphRole.DECODER).method == "minmax"
    student = dataclasses.replace(tuned, lora=None)  # a fully trained LM: today's path
    assert ExportOptions(precision=Precision.INT4).resolved(student).quant_method == "rtn"
    assert ExportOptions(precision=Precision.INT4).resolved(tiny_llava).lora == "merged"
    with pytest.raises(SpecError, match="no unmerged LoRA"):
        ExportOptions(precision=Precision.INT4, lora="side-path").resolved(tiny_llava)
    with pytest.raises(SpecError, match="lora 'unmerged' is not valid"):
        ExportOptions(lora="unmerged")


def test_weights_directory_records_its_lora_unmerged(base_and_lora, tmp_path):
    """load_weights merges the LoRA for torch (as before) and keeps A, B, scale and the exact base weights."""
    from safetensors.torch import save_file

    from edgelmm.models.weights import load_weights
    from edgelmm.train.imp import vision_config_dict

    _, tuned = base_and_lora
    tensors = {k: v.clone() for k, v in tuned.model.state_dict().items()
               if k.startswith(("model.vision_tower.", "model.multi_modal_projector."))}
    path = "model.language_model.layers.1.mlp.down_proj"
    tensors |= {f"{path}.lora_A": tuned.lora.a[path], f"{path}.lora_B": tuned.lora.b[path]}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    meta = {"format": "edgelmm-lmm-weights", "schema_version": 1, "name": "tiny-lora", "base_lm": "tiny-random-lm",
            "vision_config": vision_config_dict(tuned.model.config.vision_config),
            "lora": {"r": RANK, "alpha": ALPHA, "target_modules": ["down_proj"]}}
    (tmp_path / "meta.json").write_text(json.dumps(meta))
    loaded = load_weights(tmp_path)
    assert loaded.lm_trained and list(loaded.lora.a) == [path] and loaded.lora.scale == ALPHA / RANK
    weight = dict(loaded.model.named_modules())[path].weight
    delta = loaded.lora.scale * loaded.lora.b[path] @ loaded.lora.a[path]
    torch.testing.assert_close(weight, loaded.lora.base[path] + delta)
    assert not torch.equal(weight, loaded.lora.base[path])
    (tmp_path / "meta.json").write_text(json.dumps({**meta, "lm_layers": 2}))  # a student: merged only
    assert load_weights(tmp_path).lora is None
