"""The runtime never loads torch, transformers or onnx; the layers import one way: runtime <- export <- train."""

import ast
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


def test_bench_and_bench_help_do_not_import_heavy_modules():
    """Benchmarks run on devices with the runtime only."""
    modules = "edgelmm.bench.runner, edgelmm.bench.report, edgelmm.bench.compare, edgelmm.bench.cli"
    assert _heavy_modules_after(modules, "bench") == ""


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
        "runtime": ("edgelmm.export", "edgelmm.train", "edgelmm.models", "edgelmm.bench", "edgelmm.testing", *HEAVY),
        "bench": ("edgelmm.export", "edgelmm.train", "edgelmm.models", "edgelmm.testing", *HEAVY),
        "export": ("edgelmm.train", "edgelmm.testing"),
        "models": ("edgelmm.train", "edgelmm.export", "edgelmm.testing"),
        "demo": ("edgelmm.export", "edgelmm.train", "edgelmm.models", "edgelmm.bench", "edgelmm.testing", *HEAVY),
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


PICKLERS = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve", "marshal", "jsonpickle"}
UNSAFE_YAML = {"load", "load_all", "full_load", "full_load_all", "unsafe_load", "unsafe_load_all", "Loader",
               "FullLoader", "UnsafeLoader", "UnsafeConstructor"}


def _keyword(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_const(node, value):
    return isinstance(node, ast.Constant) and node.value is value


def unsafe_loads(source, label):
    """Every way a file could unpickle or run text as code, found on the AST (aliases and multi-line calls too)."""
    tree = ast.parse(source)
    aliases = {}  # local name -> module it stands for
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                if a.name.split(".")[0] in PICKLERS:
                    problems.append(f"{label}:{node.lineno}: import {a.name}")
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            names = {a.name for a in node.names}
            if root in PICKLERS or (root == "torch" and "load" in names) or (root == "yaml" and names & UNSAFE_YAML) \
                    or (root == "numpy" and "load" in names):
                problems.append(f"{label}:{node.lineno}: from {node.module} import {', '.join(sorted(names))}")
    calls = {id(n.func): n for n in ast.walk(tree) if isinstance(n, ast.Call)}
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module, attr, call = aliases.get(node.value.id), node.attr, calls.get(id(node))
            if module == "yaml" and attr in UNSAFE_YAML:
                problems.append(f"{label}:{node.lineno}: yaml.{attr} (use yaml.safe_load)")
            elif module == "torch" and attr == "load" and not (
                call and _is_const(_keyword(call, "weights_only"), True)
            ):
                problems.append(f"{label}:{node.lineno}: torch.load without weights_only=True")
            elif module == "numpy" and attr == "load" and not (
                call and _is_const(_keyword(call, "allow_pickle"), False)
            ):
                problems.append(f"{label}:{node.lineno}: numpy.load without allow_pickle=False")
            elif module == "pandas" and attr == "read_pickle":
                problems.append(f"{label}:{node.lineno}: pandas.read_pickle")
        elif isinstance(node, ast.Call):
            if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec", "__import__"):
                problems.append(f"{label}:{node.lineno}: {node.func.id}()")
            if _is_const(_keyword(node, "trust_remote_code"), True):
                problems.append(f"{label}:{node.lineno}: trust_remote_code=True runs code from a model directory")
    return sorted(problems, key=lambda p: int(p.split(":")[1]))


def test_unsafe_load_finder_catches_what_a_grep_misses():
    sample = (
        "import numpy as npy\nimport torch as T\nimport yaml\nfrom dill import loads\n"
        "T.load(\n    'x.pt',\n)\nT.load('y', weights_only=False)\nT.load('ok', weights_only=True)\n"
        "npy.load('a.npy')\nnpy.load('b.npy', allow_pickle=False)\nyaml.load(s, Loader=yaml.FullLoader)\n"
        "eval('1')\nAutoModel.from_pretrained(d, trust_remote_code=True)\n"
    )
    found = unsafe_loads(sample, "s")
    assert [f.split(": ", 1)[1] for f in found] == [
        "from dill import loads", "torch.load without weights_only=True", "torch.load without weights_only=True",
        "numpy.load without allow_pickle=False", "yaml.load (use yaml.safe_load)",
        "yaml.FullLoader (use yaml.safe_load)",
        "eval()", "trust_remote_code=True runs code from a model directory",
    ]


def test_no_unsafe_deserialisation_anywhere():
    """No pickle anywhere: safetensors / JSON / yaml.safe_load only; torch.load only with weights_only=True."""
    problems = [
        problem
        for root in ("sdk", "demos", "tests", "scripts", "runtimes")
        for path in sorted((REPO / root).rglob("*.py"))
        for problem in unsafe_loads(path.read_text(), str(path.relative_to(REPO)))
    ]
    assert not problems, problems
