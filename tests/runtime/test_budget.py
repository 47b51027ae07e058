"""Memory budget before load, profile-driven variant choice, profile context and prefill chunks."""

import dataclasses
import json
import logging
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest

from edgelmm.errors import BudgetError, BundleError, InputError, UnknownNameError
from edgelmm.runtime import Pipeline, sessions
from edgelmm.runtime.budget import estimate_memory, kv_cache_bytes
from edgelmm.runtime.manifest import read_manifest
from edgelmm.runtime.profile import parse_profile

from ..conftest import REPO
from .test_profile import MINIMAL


def profile(**changes):
    return parse_profile({**MINIMAL, "name": "budget-test", "memory_mb": 1 << 20, "memory_budget_mb": 1 << 16,
                          "precision": ["fp32"], **changes})


@pytest.fixture
def no_sessions(monkeypatch):
    """Fail the test if any onnxruntime session is created."""
    def refuse(*args, **kwargs):
        raise AssertionError("a session was created")

    monkeypatch.setattr(sessions.ort, "InferenceSession", refuse)


def relabel(src, dst, *, precision=None, max_context=None):
    """Copy a bundle, changing only manifest fields (the graphs stay valid; sha256s cover graph files only)."""
    shutil.copytree(src, dst)
    data = json.loads((dst / "manifest.json").read_text())
    if precision:
        data["graphs"]["decoder"]["precision"] = precision
    if max_context:
        data["text"]["max_context"] = max_context
    (dst / "manifest.json").write_text(json.dumps(data))
    return dst


@pytest.fixture(scope="module")
def variants(tiny_lm_bundle, tmp_path_factory):
    """fp32 (the bundle), int8 (relabelled), int4 (relabelled, max_context 64: the smallest estimate)."""
    root = tmp_path_factory.mktemp("variants") / "tiny"
    root.mkdir()
    relabel(tiny_lm_bundle, root / "fp32")
    relabel(tiny_lm_bundle, root / "int8", precision="int8")
    relabel(tiny_lm_bundle, root / "int4", precision="int4", max_context=64)
    return root


def test_estimate_terms_follow_the_manifest(tiny_lm_bundle):
    manifest = read_manifest(tiny_lm_bundle)
    kv = manifest.kv_cache
    full = estimate_memory(manifest)
    assert full.context == manifest.text.max_context and full.prefill_chunk == full.context
    assert kv_cache_bytes(kv, 10) == 2 * kv.num_layers * kv.num_kv_heads * kv.head_dim * 10 * 4
    assert full.kv_mb == pytest.approx(2 * kv_cache_bytes(kv, full.context) / 2**20)  # past + present
    files = sum(e.bytes for n, e in manifest.files.items() if n != manifest.text.tokenizer_file)
    assert full.weights_mb == pytest.approx(files / 2**20)
    short = estimate_memory(manifest, context=32, prefill_chunk=8)
    assert short.context == 32 and short.prefill_chunk == 8 and short.total_mb < full.total_mb
    assert estimate_memory(manifest, context=10**9).context == manifest.text.max_context


def test_a_budget_10_percent_below_the_estimate_is_refused_before_any_session(tiny_bundle, no_sessions):
    estimate = estimate_memory(read_manifest(tiny_bundle), context=2048, prefill_chunk=512)
    budget = math.floor(0.9 * estimate.total_mb)
    with pytest.raises(BudgetError) as err:
        Pipeline.load(tiny_bundle, profile(memory_budget_mb=budget))
    message = str(err.value)
    assert f"needs ~{estimate.total_mb:.0f} MB" in message and f"allows {budget} MB" in message
    assert "\n" not in message and "would fit with max_context <=" in message


@pytest.mark.real_weights
def test_smollm2_10_percent_below_its_estimate_is_refused(smollm2_bundle, no_sessions):
    device = profile(memory_budget_mb=1, max_context=2048)
    estimate = estimate_memory(read_manifest(smollm2_bundle), context=2048, prefill_chunk=device.prefill_chunk)
    budget = math.floor(0.9 * estimate.total_mb)
    with pytest.raises(BudgetError, match=f"needs ~{estimate.total_mb:.0f} MB .* allows {budget} MB"):
        Pipeline.load(smollm2_bundle, dataclasses.replace(device, memory_budget_mb=budget))


@pytest.mark.real_weights
def test_smollm2_estimate_is_within_25_percent_of_measured_peak_rss(smollm2_bundle):
    """One measurement in a fresh process (scripts/bench_budget.py --child): load, fill 512 tokens, compare."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "bench_budget.py"), "--child", str(smollm2_bundle),
         "--profile", "laptop-x86", "--context", "512", "--new", "8"],
        capture_output=True, text=True, timeout=600, check=True)
    record = json.loads(proc.stdout.strip().splitlines()[-1])
    assert record["tokens"] >= 500
    assert abs(record["estimate_mb"] - record["peak_rss_mb"]) <= 0.25 * record["peak_rss_mb"], record


def test_visual_tokens_over_the_profile_limit_are_refused(tiny_bundle, no_sessions):
    tokens = read_manifest(tiny_bundle).text.num_image_tokens
    with pytest.raises(BudgetError, match=f"makes {tokens} visual tokens per image .* allows {tokens - 1}"):
        Pipeline.load(tiny_bundle, profile(max_visual_tokens=tokens - 1))


def test_the_preferred_variant_that_fits_is_picked_and_reported(variants, caplog):
    with caplog.at_level(logging.INFO, logger="edgelmm.runtime"):
        pipe = Pipeline.load(variants, profile(precision=["int8", "fp32"]))
    assert pipe.plan.variant == "int8" and pipe.root == variants / "int8"
    assert any("picked variant 'int8'" in r.getMessage() for r in caplog.records)
    m = pipe.generate("hi", max_new_tokens=2).metrics
    assert m.variant == "int8" and m.memory_estimate_mb == pytest.approx(pipe.plan.estimate.total_mb)
    assert m.load_peak_rss_mb > 0 and m.peak_rss_mb >= m.load_peak_rss_mb
    assert "'int4' is int4, not in the profile's precision list" in pipe.plan.rejected
    # a tight budget skips the preferred variants for the one that fits
    small = estimate_memory(read_manifest(variants / "int4"), context=2048, prefill_chunk=512).total_mb
    big = estimate_memory(read_manifest(variants / "int8"), context=2048, prefill_chunk=512).total_mb
    assert small < big
    tight = profile(precision=["fp32", "int8", "int4"], memory_budget_mb=math.ceil(small))
    assert Pipeline.load(variants, tight).plan.variant == "int4"


def test_variant_choice_errors(variants, no_sessions):
    with pytest.raises(BundleError, match="holds bundle variants"):
        Pipeline.load(variants)
    with pytest.raises(BudgetError, match=r"no bundle variant .* fits profile 'budget-test' \(budget 1 MB\): "
                                          r"'fp32' needs ~.*'int4' needs"):
        Pipeline.load(variants, profile(precision=["fp32", "int8", "int4"], memory_budget_mb=1))
    with pytest.raises(UnknownNameError, match="unknown bundle variant .* 'int16'"):
        Pipeline.load(variants, profile(variant="int16"))


def test_pinned_variant_and_the_sibling_hint(variants):
    assert Pipeline.load(variants, profile(variant="int4", precision=["fp32"])).plan.variant == "int4"
    small = estimate_memory(read_manifest(variants / "int4"), context=2048, prefill_chunk=512).total_mb
    with pytest.raises(BudgetError, match=f"variant 'int4' would fit \\(~{small:.0f} MB\\)"):
        Pipeline.load(variants / "fp32", profile(precision=["fp32", "int4"], memory_budget_mb=math.ceil(small)))


def test_profile_context_caps_prompt_and_generation(tiny_lm_bundle):
    pipe = Pipeline.load(tiny_lm_bundle, profile(max_context=40))
    assert pipe.max_context == 40 < pipe.manifest.text.max_context
    res = pipe.generate("hello", max_new_tokens=100)
    assert res.prompt_tokens + len(res.token_ids) == 40
    with pytest.raises(InputError, match="profile 'budget-test' allows a context of 40"):
        pipe.generate("x" * 60)


def test_chunked_prefill_matches_one_call(tiny_lm_bundle):
    whole = Pipeline.load(tiny_lm_bundle)
    chunked = Pipeline.load(tiny_lm_bundle, profile(prefill_chunk=3))
    assert whole.prefill_chunk == 0 and chunked.prefill_chunk == 3
    ids = whole.prompts.build("a prompt long enough for several chunks", 0)
    embeds, positions = whole.prompt_embeds(ids, None), np.arange(len(ids), dtype=np.int64)[None]
    np.testing.assert_allclose(chunked._prefill(embeds, positions), whole._prefill(embeds, positions), atol=1e-4)
    prompt = "chunks give the same greedy tokens"
    assert chunked.generate(prompt, max_new_tokens=8).token_ids == whole.generate(prompt, max_new_tokens=8).token_ids


def test_dry_run_prints_the_plan_without_loading(variants, tmp_path, capsys, no_sessions):
    import yaml

    from edgelmm.cli import main as cli_main

    path = tmp_path / "budget-test.yaml"
    path.write_text(yaml.safe_dump(profile(precision=["int8", "fp32"]).to_dict()))
    assert cli_main(["run", "--bundle", str(variants), "--profile", str(path), "--dry-run"]) == 0
    plan = yaml.safe_load(capsys.readouterr().out)
    assert plan["variant"] == "int8" and plan["memory_estimate"]["total_mb"] > 0
    assert plan["providers"]["decoder"] == ["CPUExecutionProvider"]
