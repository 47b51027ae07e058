"""The fast decoder graph (shared KV buffer, GroupQueryAttention) on tiny random Llamas: dispatch, layouts,
in-place KV updates, quantized precisions. Parity with transformers is in test_tiny_parity / test_real_weights."""

import copy
import dataclasses

import numpy as np
import onnx
import pytest
import torch

from edgelmm.errors import SpecError
from edgelmm.export.decoders import select_builder
from edgelmm.export.exporter import ExportOptions, export_model
from edgelmm.runtime import Pipeline
from edgelmm.runtime.decoding import SharedBufferDecoder
from edgelmm.runtime.generate import Decoder
from edgelmm.specs import GraphRole, Precision


def _hf_greedy(loaded, prompt, n):
    enc = loaded.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                               return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = loaded.model.generate(**enc, do_sample=False, max_new_tokens=n, min_new_tokens=n)
    return out[0, enc["input_ids"].shape[1] :].tolist()


def test_llama_gets_the_fast_builder_and_other_configs_fall_back(tiny_lm):
    builder, how = select_builder(tiny_lm.model, "auto")
    assert builder is not None and builder.model_type == "llama" and how == "fast llama builder"
    assert select_builder(tiny_lm.model, "generic")[0] is None
    odd = copy.copy(tiny_lm.model)
    odd.config = copy.deepcopy(tiny_lm.model.config)
    odd.config.hidden_act = "gelu"
    builder, how = select_builder(odd, "auto")
    assert builder is None and "does not support hidden_act gelu" in how
    with pytest.raises(SpecError, match="cannot build a fast decoder: .*hidden_act gelu"):
        select_builder(odd, "fast")
    odd.config.model_type = "mystery"
    assert "no fast builder for model_type 'mystery'" in select_builder(odd, "auto")[1]


@pytest.fixture(scope="module")
def generic_lm_bundle(tiny_lm, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "tiny-lm-generic"
    export_model(tiny_lm, out, ExportOptions(decoder_graph="generic"))
    return out


def test_runtime_runs_both_kv_layouts_to_the_same_tokens(tiny_lm, tiny_lm_bundle, generic_lm_bundle):
    fast, generic = Pipeline.load(tiny_lm_bundle), Pipeline.load(generic_lm_bundle)
    assert isinstance(fast.decoder, SharedBufferDecoder) and fast.manifest.kv_cache.layout == "shared-buffer"
    assert isinstance(generic.decoder, Decoder) and generic.manifest.kv_cache.layout == "past-present"
    assert generic.manifest.graphs[GraphRole.DECODER].options["graph"] == "generic torch.onnx export requested"
    expected = _hf_greedy(tiny_lm, "Hello there", 24)
    assert fast.generate("Hello there", max_new_tokens=24).token_ids == expected
    assert generic.generate("Hello there", max_new_tokens=24).token_ids == expected
    ids = fast.prompts.build("Hello there").ids
    np.testing.assert_allclose(fast.generate_ids(ids, max_new_tokens=1).metrics.prompt_tokens, len(ids))
    fast.decoder.reset()
    generic.decoder.reset()
    a = fast.decoder.forward(fast.embed(ids), all_logits=True)
    b = generic.decoder.forward(generic.embed(ids), all_logits=True)
    assert a.shape == b.shape == (len(ids), fast.manifest.model.vocab_size)
    np.testing.assert_allclose(a, b, atol=1e-4)


def _fresh_score(pipe, prompt_ids, answer_ids):
    """log p(answer | prompt) from one uninterrupted prefill of prompt + answer (no rewind)."""
    pipe.decoder.reset()
    logits = pipe.decoder.forward(pipe.embed(np.concatenate([prompt_ids, answer_ids[:-1]])), all_logits=True)
    logits = logits[len(prompt_ids) - 1 :].astype(np.float64)
    top = logits.max(-1, keepdims=True)
    logp = logits - top - np.log(np.exp(logits - top).sum(-1, keepdims=True))
    return logp[np.arange(len(answer_ids)), answer_ids].sum()


def test_score_rewinds_the_kv_cache_on_both_layouts(tiny_lm_bundle, generic_lm_bundle):
    """Pipeline.score = one fresh prefill per answer, whatever the order, on shared-buffer and past-present."""
    answers = ["yes", "The Quiet Garden", "a b c d e f", "no"]
    for bundle in (tiny_lm_bundle, generic_lm_bundle):
        pipe = Pipeline.load(bundle)
        before = pipe.generate("Pick one.", max_new_tokens=6, ignore_eos=True).token_ids
        scores = pipe.score("Pick one.", answers)
        assert scores.dtype == np.float64 and scores.shape == (4,) and np.all(scores < 0)
        np.testing.assert_allclose(pipe.score("Pick one.", answers[::-1]), scores[::-1], rtol=1e-5)
        np.testing.assert_allclose(pipe.score("Pick one.", answers[2:3]), scores[2:3], rtol=1e-5)
        ids = pipe.prompts.build("Pick one.").ids
        end = pipe.manifest.text.eos_token_ids[0]
        fresh = [_fresh_score(pipe, ids, np.array(pipe.tokenizer.encode_untrusted(a) + [end])) for a in answers]
        np.testing.assert_allclose(scores, fresh, rtol=1e-4)
        assert pipe.generate("Pick one.", max_new_tokens=6, ignore_eos=True).token_ids == before


def test_kv_cache_is_one_buffer_written_in_place(tiny_lm_bundle):
    pipe = Pipeline.load(tiny_lm_bundle)
    decoder = pipe.decoder
    ids = pipe.prompts.build("Tell me a story").ids
    decoder.reset()
    decoder.reserve(len(ids) + 8)
    buffers = list(decoder._cache)
    addresses = [b.ctypes.data for b in buffers]
    logits = decoder.forward(pipe.embed(ids))
    for _ in range(8):
        logits = decoder.forward(pipe._embed_token(int(np.argmax(logits))))
    total = len(ids) + 8
    assert decoder.length == total and decoder.capacity == 64
    assert [b.ctypes.data for b in decoder._cache] == addresses  # no step reallocated or swapped a buffer
    for buffer in buffers:  # the graph wrote exactly the real rows of our own memory: past and present are one
        assert np.abs(buffer[:, :, :total]).min(axis=-1).max() > 0 and not buffer[:, :, total:].any()
    kept = [b[:, :, :total].copy() for b in buffers]
    decoder.forward(pipe.embed(np.arange(70, dtype=np.int64) % 250))  # outgrows 64 rows: grows, keeps the past
    assert decoder.length == total + 70 and decoder.capacity == -(-(total + 70) // 64) * 64 > 64
    for old, new in zip(kept, decoder._cache):
        np.testing.assert_array_equal(new[:, :, :total], old)


def test_generation_reuses_buffers_and_restarts_cleanly(tiny_lm_bundle):
    pipe = Pipeline.load(tiny_lm_bundle)
    first = pipe.generate("One", max_new_tokens=12).token_ids
    pipe.generate("A much longer prompt than the first one, to move the cache around", max_new_tokens=12)
    assert pipe.generate("One", max_new_tokens=12).token_ids == first


@pytest.mark.parametrize(("precision", "op"), [(Precision.INT4, "MatMulNBits"), (Precision.W8, "MatMulNBits"),
                                               (Precision.INT8, "MatMulInteger")])
def test_quantized_tiny_exports_record_options_and_run(tiny_lm, tmp_path, precision, op):
    out = tmp_path / str(precision)
    manifest = export_model(tiny_lm, out, ExportOptions(precision=precision, block_size=16))
    decoder = manifest.graphs[GraphRole.DECODER]
    assert decoder.precision is precision and manifest.validation["passed"]
    ops = {n.op_type for n in onnx.load(str(out / "decoder.onnx"), load_external_data=False).graph.node}
    assert op in ops and "GroupQueryAttention" in ops
    if op == "MatMulNBits":
        assert decoder.options["bits"] == (4 if precision is Precision.INT4 else 8)
        assert decoder.options["block_size"] == 16 and decoder.options["accuracy_level"] == 4
    embedding = manifest.graphs[GraphRole.TOKEN_EMBEDDING]
    assert embedding.precision is (precision if precision is not Precision.INT8 else Precision.FP32)
    if precision is not Precision.INT8:  # the embedding's rows in 4- or 8-bit blocks, like the decoder's weights
        assert embedding.options["quantizer"] == "GatherBlockQuantized"
        assert embedding.options["bits"] == decoder.options["bits"]
    result = Pipeline.load(out).generate("Hi", max_new_tokens=6)
    assert len(result.token_ids) == 6


def test_export_options_are_checked_before_any_work(tiny_lm, tmp_path):
    with pytest.raises(SpecError, match="decoder graph 'fastest' is not valid"):
        ExportOptions(decoder_graph="fastest")
    with pytest.raises(SpecError, match="precision 'fp16' cannot be exported yet"):
        export_model(tiny_lm, tmp_path / "x", ExportOptions(precision=Precision.FP16))
    assert not (tmp_path / "x").exists()
    assert dataclasses.asdict(ExportOptions())["block_size"] == 32

