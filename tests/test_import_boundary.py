"""The runtime never loads torch, transformers or onnx; the layers import one way: runtime <- export <- train."""

import ast
import re
import subprocess
import sys

from .conftest import REPO

HEAVY = ("torch", "transformers", "onnx", "onnxscript", "peft")


def _heavy_modules_after(modules: str, verb: str) -> str:
    """Import ``modules`` and run ``edgelmm VERB --help`` in a fresh interpreter; return the heavy modules loaded."""
    code = (
        "import sys, contextlib, io\n"
        f"import {modules}\n"
        "from edgelmm.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    try:\n        main([{verb!r}, '--help'])\n    except SystemExit:\n        pass\n"
        f"bad = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return proc.stdout.strip()


def test_runtime_and_run_help_do_not_import_heavy_modules():
    assert _heavy_modules_after("edgelmm.runtime, edgelmm.cli", "run") == ""


def test_demo_app_and_demo_help_do_not_import_heavy_modules():
    """The Gradio demo is runtime-only: its UI module and `edgelmm demo --help` load no torch, transformers, onnx."""
    assert _heavy_modules_after("edgelmm.demo.app, edgelmm.demo.engine", "demo") == ""


def _imports(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            yield node.module


def test_layers_import_one_way():
    pkg = REPO / "sdk" / "edgelmm"
    rules = {
        "runtime": ("edgelmm.export", "edgelmm.train", "edgelmm.models", "edgelmm.bench", *HEAVY),
        "bench": ("edgelmm.export", "edgelmm.train", "edgelmm.models", *HEAVY),
        "export": ("edgelmm.train",),
        "models": ("edgelmm.train", "edgelmm.export"),
        "demo": ("edgelmm.export", "edgelmm.train", "edgelmm.models", "edgelmm.bench", *HEAVY),
    }
    problems = []
    for layer, banned in rules.items():
        for path in (pkg / layer).rglob("*.py"):
            for name in _imports(path):
                if any(name == b or name.startswith(b + ".") for b in banned):
                    problems.append(f"{path.relative_to(REPO)} imports {name}")
    # demos/ (the scripts beside the app) use the runtime, the demo package and the CLI entry point only.
    allowed = ("edgelmm.runtime", "edgelmm.demo", "edgelmm.cli")
    for path in (REPO / "demos").rglob("*.py"):
        for name in _imports(path):
            heavy = any(name == b or name.startswith(b + ".") for b in HEAVY)
            if heavy or (name.startswith("edgelmm.") and not name.startswith(allowed)):
                problems.append(f"{path.relative_to(REPO)} imports {name}")
    assert not problems, problems


UNSAFE = re.compile(r"\bpickle\b|\bmarshal\.loads?\(|\byaml\.(unsafe_)?load\(|(?<![.\w])(eval|exec)\(|"
                    r"\btorch\.load\((?!.*weights_only=True)|\bnp\.load\((?!.*allow_pickle=False)")


def test_no_unsafe_deserialisation_in_the_package():
    """No pickle anywhere: safetensors / JSON / yaml.safe_load only; torch.load only with weights_only=True."""
    problems = [
        f"{path.relative_to(REPO)}:{i}: {line.strip()}"
        for root in ("sdk", "demos")
        for path in (REPO / root).rglob("*.py")
        for i, line in enumerate(path.read_text().splitlines(), 1)
        if UNSAFE.search(line)
    ]
    assert not problems, problems
