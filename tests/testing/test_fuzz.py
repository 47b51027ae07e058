"""Every loader under fuzzing: only EdgelmmError subclasses with one-line messages come out (a few hundred cases
each, derandomized; `python -m edgelmm.testing.fuzz` runs 10,000 per loader)."""

import pytest

from edgelmm.errors import BundleError
from edgelmm.testing.fuzz import FuzzTarget, one_line_problem, run_hypothesis
from edgelmm.testing.fuzz_targets import FUZZ_TARGETS, FuzzContext

CASES = {"bundle": 150, "cli-run": 150, "onnx-graph": 150, "chat-template": 200}
"""Cases per target in the suite (default 300): fewer where one case loads a bundle or opens sessions."""
DEADLINE_MS = 30_000  # one case on a loaded 2-core machine; a real hang is a finding, slowness is not


@pytest.fixture(scope="module")
def ctx(tiny_bundle, tiny_lm_bundle, tmp_path_factory):
    return FuzzContext.create(tmp_path_factory.mktemp("fuzz"), bundle=tiny_bundle, text_bundle=tiny_lm_bundle)


def test_registry_is_keyed_by_name_and_covers_every_loader():
    assert all(t.name == key and t.what for key, t in FUZZ_TARGETS.items())
    assert {
        "manifest-json",
        "manifest-dict",
        "bundle",
        "onnx-graph",
        "tokenizer-json",
        "prompt",
        "chat-template",
        "image-bytes",
        "image-array",
        "image-object",
        "image-path",
        "spec-yaml",
        "cli-run",
        "generate-options",
        "device-profile",
        "train-recipe",
        "export-recipe",
    } <= set(FUZZ_TARGETS)


@pytest.mark.parametrize("name", list(FUZZ_TARGETS))
def test_only_our_errors_come_out(ctx, name):
    tally = run_hypothesis(FUZZ_TARGETS[name], ctx, CASES.get(name, 300), seed=0, strict=True, deadline_ms=DEADLINE_MS)
    assert tally.uncaught == 0, tally.failures
    assert tally.refused > 0 and tally.accepted > 0, f"the cases never reach one side: {tally.row()}"


def test_the_harness_counts_what_escapes(ctx):
    from hypothesis import strategies as st

    def leaky(ctx, n):
        if n == 3:
            raise KeyError("raw")
        if n == 4:
            raise BundleError("two\u2028lines")  # escaped by EdgelmmError.__str__: still one line
        if n == 5:
            raise BundleError("fine")
        return n

    def broken_check(ctx, n, result):
        assert n != 6, "property broken"

    target = FuzzTarget(
        "leaky", leaky, lambda ctx: st.integers(0, 9), "test", seeds=lambda ctx: [3, 4, 5, 6], check=broken_check
    )
    tally = run_hypothesis(target, ctx, 50, seed=0)
    assert tally.uncaught >= 2 and any("KeyError" in f for f in tally.failures)
    assert any("property broken" in f for f in tally.failures)
    assert {"BundleError: two\\uNlines", "BundleError: fine"} <= set(tally.messages)  # escaped, numbers masked
    assert one_line_problem("a\nb") == "multi-line message" and one_line_problem("ok") is None
