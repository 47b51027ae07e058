"""`edgelmm VERB ...`: one verb per stage, each imported only when it is called.

Errors print as one line, ``edgelmm: error: <message>``, exit code 2 for bad input and 1 for runtime failure; a
traceback only with ``--debug`` or ``EDGELMM_DEBUG=1``.
"""

from __future__ import annotations

import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from edgelmm import __version__
from edgelmm.errors import EdgelmmError

VERBS: dict[str, tuple[str, str]] = {
    "export": ("edgelmm.export.cli:main", "export a model to an ONNX bundle (graphs + manifest)"),
    "run": ("edgelmm.runtime.cli:main", "answer a prompt (and images) with a bundle, torch-free"),
    "train": ("edgelmm.train.cli:main", "train a model with a recipe (stages, checkpoints, resume, torchrun)"),
    "eval": ("edgelmm.evals.cli:main", "exact-match accuracy of a model or bundle on a built-in task"),
    "bench": ("edgelmm.bench.cli:main", "time a bundle on this device (img, pp, tg, e2e) or compare saved records"),
    "demo": ("edgelmm.demo.cli:main", "chat with a bundle about images in your browser (Gradio, offline, torch-free)"),
}
"""verb -> ("module:function", one-line help). The function takes argv (after the verb) and returns an exit code."""

USAGE = """usage: edgelmm [--version] [--debug] VERB [options]

verbs:
{verbs}

Run `edgelmm VERB --help` for a verb's options and an example."""


def _usage() -> str:
    width = max(len(v) for v in VERBS)
    return USAGE.format(verbs="\n".join(f"  {v:<{width}}  {h}" for v, (_, h) in VERBS.items()))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = os.environ.get("EDGELMM_DEBUG", "") not in ("", "0")
    if "--debug" in args:
        args.remove("--debug")
        debug = True
    if not args or args[0] in ("-h", "--help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        print(f"edgelmm {__version__}")
        return 0
    verb, rest = args[0], args[1:]
    if verb not in VERBS:
        print(f"edgelmm: error: unknown verb '{verb}'; valid: {', '.join(VERBS)}", file=sys.stderr)
        return 2
    target = VERBS[verb][0]
    module_name, func_name = target.split(":")
    try:
        func = getattr(importlib.import_module(module_name), func_name)
        return int(func(rest) or 0)
    except KeyboardInterrupt:
        print("edgelmm: interrupted", file=sys.stderr)
        return 130
    except EdgelmmError as exc:
        if debug:
            traceback.print_exc()
        print(f"edgelmm: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, exit 1, traceback on --debug
        if debug:
            traceback.print_exc()
        print(f"edgelmm: error: unexpected {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
              " (run with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
