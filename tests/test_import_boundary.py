"""The runtime never loads torch, transformers or onnx; the layers import one way: runtime <- export <- train."""

import ast
import re
import subprocess
import sys

from .conftest import REPO

HEAVY = ("torch", "transformers", "onnx", "onnxscript", "peft")


def test_runtime_and_run_help_do_not_import_heavy_modules():
    code = (
        "import sys, contextlib, io\n"
        "import edgelmm.runtime, edgelmm.cli\n"
        "import edgelmm.bench.runner, edgelmm.bench.report, edgelmm.bench.compare, edgelmm.bench.cli\n"
        "from edgelmm.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    for verb in ('run', 'bench'):\n"
        "        try:\n            main([verb, '--help'])\n        except SystemExit:\n            pass\n"
        f"bad = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(bad))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert proc.stdout.strip() == "", f"heavy modules loaded: {proc.stdout}"


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
    }
    problems = []
    for layer, banned in rules.items():
        for path in (pkg / layer).rglob("*.py"):
            for name in _imports(path):
                if any(name == b or name.startswith(b + ".") for b in banned):
                    problems.append(f"{path.relative_to(REPO)} imports {name}")
    for path in (REPO / "demos").rglob("*.py"):
        for name in _imports(path):
            if name.startswith("edgelmm.") and not name.startswith("edgelmm.runtime"):
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
