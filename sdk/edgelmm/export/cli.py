"""`edgelmm export`: a registry model or a local Hugging Face directory -> a validated ONNX bundle.

examples:
  edgelmm export --list
  edgelmm export --families
  edgelmm export --model smol-vqa --out bundles/smol-vqa
  edgelmm export --model ./my-llava-dir --out bundles/my-llava --precision fp32 --force
  edgelmm export --model smollm2-135m --out bundles/smollm2-int4 --precision int4
  edgelmm export --model smol-vqa --out bundles/smol-vqa-int4 --precision int4   # LoRA as a float side path
  edgelmm export --model runs/ilm/model --out bundles/smol-ilm   # an ilm model: + item_encoder.onnx + CF table
  edgelmm export --recipe export/smol-vqa/arm64-int4.yaml --out bundles/smol-vqa-int4
  edgelmm export --recipe smol-vqa/qnn-a16w8 --model runs/imp/model --out bundles/qnn   # another model dir
  edgelmm export --recipes
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgelmm export", description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", help="registry name (see --list) or a local LlavaForConditionalGeneration / causal LM dir"
                                   " (with --recipe: replaces the recipe's model)")
    p.add_argument("--recipe", help="an export recipe YAML (export/<model>/<variant>.yaml) or a shipped recipe's name:"
                                    " precision per graph, visual-token budget, calibration, accuracy re-check")
    p.add_argument("--out", help="bundle directory to write")
    p.add_argument("--precision", default="fp32",
                   help="decoder weights: fp32 (default), int4 / w8 (MatMulNBits weight-only blocks; the token "
                        "embedding's rows in 4- / 8-bit blocks too), int8 (dynamic; embedding fp32)")
    p.add_argument("--decoder-graph", default="auto", choices=("auto", "fast", "generic"),
                   help="auto (default): the fast hand-built graph where the architecture has one; generic: torch.onnx"
                        " with past/present copying (the baseline)")
    p.add_argument("--block-size", type=int, default=None, help="int4/w8: weights per quantization block (default 32)")
    p.add_argument("--accuracy-level", type=int, default=None,
                   help="int4/w8: MatMulNBits compute, 4 = int8 activations (default), 0 = fp32")
    p.add_argument("--quant-method", default=None, choices=("rtn", "minmax", "minmax-float", "hqq"),
                   help="int4: how block scales are chosen (see docs/performance.md)")
    p.add_argument("--lora", default="auto", choices=("auto", "merged", "side-path"),
                   help="a LoRA-trained LM (smol-vqa): auto (default) keeps the LoRA as a float side path beside int4/w8"
                        " base weights and merges it otherwise; merged: into the weights before quantizing")
    p.add_argument("--max-context", type=int, default=None, help="max prompt + generated tokens (default: model's)")
    p.add_argument("--image-size", default=None, metavar="N|HxW",
                   help="image size a fixed-grid family (Qwen2-VL) is exported for (default: its 448 px grid)")
    p.add_argument("--force", action="store_true", help="replace an existing output directory (atomically)")
    p.add_argument("--list", action="store_true", help="print the registry's model names and exit")
    p.add_argument("--families", action="store_true", help="print the supported model families (markdown) and exit")
    p.add_argument("--recipes", action="store_true", help="print the shipped export recipes and exit")
    return p


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    from edgelmm.models.registry import MODELS

    if args.families:
        from edgelmm.models.families import support_table

        print(support_table())
        return 0
    if args.recipes:
        from edgelmm.export.recipe import list_recipes, load_recipe

        for name in list_recipes():
            print(f"{name:<28}  {load_recipe(name).description}")
        return 0
    if args.recipe:
        return _export_recipe(args, parser)
    if args.list:
        width = max(len(n) for n in MODELS)
        for name, entry in MODELS.items():
            print(f"{name:<{width}}  {entry.kind:<9}  {entry.description}")
        return 0
    if not args.model or not args.out:
        parser.error("--model and --out are required (or --list)")
    from edgelmm.errors import SpecError, UnknownNameError
    from edgelmm.registry import lookup
    from edgelmm.specs import Precision

    # Every check that needs no torch runs first: a typo costs milliseconds, not an import of torch.
    if not Path(args.model).is_dir() and args.model not in MODELS:
        raise UnknownNameError(f"unknown model '{args.model}' (not a registry name, not a directory);"
                               f" valid: {', '.join(sorted(MODELS))}")
    precision = lookup({str(p): p for p in Precision}, args.precision, what="precision")
    image_size = _image_size(args.image_size, args.model) if args.image_size else None
    out = Path(args.out)
    from edgelmm._extras import require
    from edgelmm.export.bundle import check_output

    check_output(out, force=args.force)
    require("torch", "export")
    require("onnx", "export")
    from edgelmm.export.exporter import ExportOptions, export_model

    tuning = {k: v for k, v in (("block_size", args.block_size), ("accuracy_level", args.accuracy_level),
                                ("method", args.quant_method)) if v is not None}
    from edgelmm.export.quantize import QuantSpec

    QuantSpec(precision=precision, **tuning)  # a bad block size fails here, before the model loads
    if args.quant_method and precision is not Precision.INT4:
        raise SpecError(f"--quant-method applies to --precision int4 only, not {precision}")
    if "method" in tuning:
        tuning["quant_method"] = tuning.pop("method")
    options = ExportOptions(precision=precision, max_context=args.max_context, decoder_graph=args.decoder_graph,
                            lora=args.lora, **tuning)
    started = time.perf_counter()
    log = lambda msg: print(f"[export] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    from edgelmm.models.item_encoder import is_item_lm_dir

    if is_item_lm_dir(args.model):  # `edgelmm train --recipe ilm` output: the LM's bundle + item encoder + CF table
        from edgelmm.export.item_lm import export_item_lm

        manifest = export_item_lm(Path(args.model), out, options, force=args.force, log=log)
    else:
        loaded = _resolve(args.model, image_size)
        log(f"model '{loaded.name}' ready in {time.perf_counter() - started:.1f} s")
        manifest = export_model(loaded, out, options, force=args.force, log=log)
    _print_result(manifest, out, started)
    return 0


def _print_result(manifest: object, out: Path, started: float) -> None:
    from edgelmm.export.accuracy import format_accuracy

    print(format_report(manifest.validation))
    print()
    print(format_accuracy(manifest.accuracy))
    total = sum(f.bytes for f in manifest.files.values())
    print(f"wrote {out} ({len(manifest.files)} files, {total / 2**20:.1f} MB) in {time.perf_counter() - started:.1f} s")


def _export_recipe(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``--recipe``: everything the recipe says, checked (names, budget, output) before the model loads."""
    if not args.out:
        parser.error("--out is required with --recipe")
    overridden = [f for f, v in (("--precision", args.precision != "fp32"), ("--block-size", args.block_size),
                                 ("--accuracy-level", args.accuracy_level), ("--quant-method", args.quant_method),
                                 ("--max-context", args.max_context)) if v]
    if overridden:
        parser.error(f"{', '.join(overridden)} cannot be combined with --recipe (the recipe says it)")
    from edgelmm.errors import UnknownNameError
    from edgelmm.evals import export_checks
    from edgelmm.export.bundle import check_output
    from edgelmm.export.recipe import load_recipe
    from edgelmm.models.registry import MODELS

    recipe = load_recipe(args.recipe)
    export_checks.check_names(recipe)
    model = args.model or recipe.model
    if not Path(model).is_dir() and model not in MODELS:
        raise UnknownNameError(f"unknown model '{model}' (not a registry name, not a directory);"
                               f" valid: {', '.join(sorted(MODELS))}")
    out = Path(args.out)
    check_output(out, force=args.force)
    from edgelmm._extras import require

    require("torch", "export")
    require("onnx", "export")
    from edgelmm.export.exporter import ExportOptions, export_model

    options = ExportOptions(graphs=recipe.graphs, budget=recipe.budget, max_context=recipe.max_context,
                            decoder_graph=args.decoder_graph, check_tokens=recipe.validation.tokens,
                            static_shapes=recipe.static_shapes, recipe=recipe.name, lora=args.lora)
    calibration = recipe.calibration
    samples = (export_checks.calibration_samples(calibration.dataset, calibration.split, calibration.samples)
               if calibration is not None and recipe.graphs.static else [])
    validation = recipe.validation
    task_check = None
    if validation.task is not None:
        def task_check(bundle: Path) -> dict:
            return export_checks.task_accuracy(bundle, validation.task, validation.split, validation.samples)
    started = time.perf_counter()
    loaded = _resolve(model)
    log = lambda msg: print(f"[export] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    log(f"recipe '{recipe.name}': model '{loaded.name}' ready in {time.perf_counter() - started:.1f} s")
    manifest = export_model(loaded, out, options, force=args.force, log=log, calibration=samples,
                            task_check=task_check)
    _print_result(manifest, out, started)
    return 0


def _image_size(text: str, model: str) -> tuple[int, int]:
    from edgelmm.errors import SpecError

    if not Path(model).is_dir():
        raise SpecError("--image-size applies to a local model directory of a fixed-grid family (Qwen2-VL)")
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise SpecError(f"--image-size must be N or HxW in pixels, got '{text}'")
    return (int(parts[0]), int(parts[-1]))


def _resolve(model: str, image_size: tuple[int, int] | None = None) -> object:
    """A local directory wins over a registry name of the same spelling."""
    if Path(model).is_dir():
        from edgelmm.models.lmm import load_local

        return load_local(Path(model), image_size=image_size)
    from edgelmm.models.registry import build_model

    return build_model(model)


def format_report(validation: dict) -> str:
    """The export's parity table: one row per graph and shape."""
    rows = ["| graph | shape | max abs diff | atol | rtol | ok |", "|---|---|---:|---:|---:|---|"]
    for c in validation.get("cases", []):
        rows.append(f"| {c['graph']} | {c['shape']} | {c['max_abs_diff']:.3g} | {c['atol']:g} | {c['rtol']:g} |"
                    f" {'yes' if c['passed'] else 'NO'} |")
    return "\n".join(rows)
