"""The soak script itself (the 1,000-generation figure comes from `python -m edgelmm.testing.soak`)."""

import ast

from edgelmm.testing.soak import soak

from ..conftest import REPO


def test_short_soak_runs_every_input_kind_without_errors(tiny_bundle):
    report = soak(tiny_bundle, 60, threads=1)
    assert report["errors"] == 0, report["first_errors"]
    assert report["ok"] == 58 and report["refused_as_planned"] == 2
    assert set(report["rss_mb"]) == {"after_load", "after_warmup", "end"}
    assert report["rss_growth_pct"] < 25  # loose here: 60 calls are noise; the 1,000-call run is held to 5%


def test_soak_and_verify_cost_use_the_runtime_only():
    """They must run wherever a bundle runs (a phone, an aarch64 board): no torch, no export, no hypothesis."""
    for name in ("soak.py", "verify_cost.py"):
        tree = ast.parse((REPO / "sdk/edgelmm/testing" / name).read_text())
        modules = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
        modules |= {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        ours = {m for m in modules if m.startswith("edgelmm")}
        assert all(m.startswith(("edgelmm.runtime", "edgelmm.errors", "edgelmm.specs")) for m in ours), ours
        assert not modules & {"torch", "transformers", "onnx", "hypothesis"}
