"""`edgelmm train`: run a recipe's stages with checkpoints, resume, and multi-process training.

examples:
  edgelmm train --recipe imp --dry-run                 # print the stages (no torch imported)
  edgelmm train --recipe imp --quick --out runs/quick  # a few steps of every stage (smoke run)
  edgelmm train --recipe imp --out runs/imp            # the full recipe that made the shipped smol-vqa
  edgelmm train --resume runs/imp                      # continue an interrupted run (Ctrl-C checkpoints first)
  torchrun --nproc-per-node 2 -m edgelmm train --recipe imp --out runs/imp   # DDP: gloo on CPU, nccl on GPU
  edgelmm train --config my-recipe.yaml --out runs/mine   # a RecipeSpec as YAML/JSON (see --dump)
  edgelmm train --recipe llava-kd --teacher runs/imp/model --ablate rdist   # distil smol-vqa-s, without RDist

Writes into --out: log.jsonl (one line per step), loss.png, checkpoint/ (resumable: safetensors + meta.json) and
model/ (the trained weights: fp16 safetensors, meta.json, provenance.json with the evaluation results).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgelmm.errors import OutputExistsError, SpecError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgelmm train", description=__doc__.split("\n")[0],
                                epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", help="recipe name (see --list)")
    p.add_argument("--preset", default=None, help="named preset of the recipe (default: full)")
    p.add_argument("--quick", action="store_true", help="the quick preset: every stage for a few steps")
    p.add_argument("--config", help="a RecipeSpec as YAML or JSON instead of a preset")
    p.add_argument("--ablate", action="append", metavar="NAME",
                   help="drop part of the recipe (repeatable; llava-kd: mdist, rdist, dpt, distill)")
    p.add_argument("--teacher", help="distilling recipes: the teacher (registry name or trained model directory)")
    p.add_argument("--out", help="run directory (default: runs/<recipe>-<preset>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--force", action="store_true", help="start over in an --out that already holds a run")
    p.add_argument("--dry-run", action="store_true", help="print the stages and exit")
    p.add_argument("--dump", action="store_true", help="print the RecipeSpec as JSON and exit")
    p.add_argument("--list", action="store_true", help="print the recipes and their presets")
    p.add_argument("--checkpoint-every", type=float, default=300.0, metavar="SECONDS",
                   help="also checkpoint every SECONDS within a stage (default 300; stages always end with one)")
    p.add_argument("--stop-after-steps", type=int, default=None, metavar="N",
                   help="checkpoint and exit after N optimizer steps (continue later with --resume)")
    p.add_argument("--save-only", action="store_true",
                   help="with --resume: write model/ from the last checkpoint as it is, without training further "
                        "(a run stopped early; provenance.json records the stage and step)")
    p.add_argument("--no-eval", action="store_true", help="skip the recipe's evaluations after training")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    from edgelmm.train.recipes import RECIPES, presets

    if args.list:
        for name, entry in RECIPES.items():
            print(f"{name}  presets: {', '.join(presets(name))}  {entry.description}")
        return 0
    if args.save_only and not args.resume:
        parser.error("--save-only needs --resume DIR")
    resume_meta = _resume_meta(Path(args.resume)) if args.resume else None
    spec = _spec(args, parser, resume_meta)
    if args.dry_run or args.dump:
        from edgelmm.specs import to_dict

        print(json.dumps(to_dict(spec), indent=2) if args.dump else spec.describe())
        return 0
    ablated = "".join(f"-no-{name}" for name in args.ablate or ())
    out = Path(args.resume or args.out
               or f"runs/{spec.name}-{args.preset or ('quick' if args.quick else 'full')}{ablated}")
    if resume_meta is None:
        _check_fresh(out, force=args.force)
    return _run(spec, out, args, resume_meta)


def _spec(args: argparse.Namespace, parser: argparse.ArgumentParser, resume_meta: dict[str, Any] | None) -> Any:
    from edgelmm.specs import from_dict
    from edgelmm.train.recipes import presets
    from edgelmm.train.specs import RecipeSpec

    if args.config:
        spec = from_dict(RecipeSpec, _read_config(Path(args.config)), where=args.config)
    elif args.recipe:
        preset = args.preset or ("quick" if args.quick else "full")
        from edgelmm.registry import lookup

        spec = lookup(presets(args.recipe), preset, what=f"preset of recipe '{args.recipe}'")()
    elif resume_meta is not None:
        spec = from_dict(RecipeSpec, resume_meta["spec"], where=f"{args.resume}/checkpoint/meta.json")
    else:
        parser.error("--recipe (or --config, or --resume) is required")
    if args.ablate or args.teacher:
        if resume_meta is not None:
            raise SpecError("--ablate and --teacher change the recipe; a resumed run keeps its own")
        spec = _customise(spec, args)
    # Compared as specs, not dicts: a checkpoint written before a field was added (with its default) still matches.
    if resume_meta is not None and spec != from_dict(RecipeSpec, resume_meta["spec"], where="checkpoint/meta.json"):
        raise SpecError(f"the run in '{args.resume}' used a different recipe spec; resume it without --recipe/--config")
    from edgelmm.registry import lookup as _lookup
    from edgelmm.train.recipes import RECIPES

    _lookup(RECIPES, spec.name, what="recipe")
    return spec


def _customise(spec: Any, args: argparse.Namespace) -> Any:
    """Apply --ablate (the recipe's ABLATIONS, in order) and --teacher to ``spec``."""
    import dataclasses
    import importlib

    from edgelmm.registry import lookup
    from edgelmm.train.recipes import RECIPES

    module = importlib.import_module(lookup(RECIPES, spec.name, what="recipe").presets_module)
    for name in args.ablate or ():
        spec = lookup(getattr(module, "ABLATIONS", {}), name, what=f"ablation of recipe '{spec.name}'")(spec)
    if args.teacher:
        if spec.distill is None:
            raise SpecError(f"recipe '{spec.name}' distils from no teacher; --teacher does not apply")
        spec = dataclasses.replace(spec, distill=dataclasses.replace(spec.distill, teacher=args.teacher))
    return spec


def _read_config(path: Path) -> Any:
    """A RecipeSpec file: strict JSON (.json) or strict YAML (duplicate keys, NaN, huge files refused)."""
    from edgelmm import strict_json, strict_yaml

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SpecError(f"cannot read config '{path}': {exc.strerror}") from None
    if path.suffix == ".json":
        return strict_json.loads(data, where=str(path), error=SpecError)
    return strict_yaml.load(data, where=str(path), error=SpecError)


def _resume_meta(run: Path) -> dict[str, Any]:
    from edgelmm.errors import BundleError
    from edgelmm.meta_json import read_versioned

    path = run / "checkpoint" / "meta.json"
    meta = read_versioned(path, fmt=None, version=None, what="a training checkpoint",
                          missing=f"nothing to resume in '{run}': {path} is missing")
    if "spec" not in meta:
        raise BundleError(f"'{path}' is not a training checkpoint of edgelmm train")
    return meta


def _check_fresh(out: Path, *, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"output path '{out}' exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise OutputExistsError(f"'{out}' already holds a run; pass --resume {out} to continue it or --force to "
                                    "start over")
        import shutil

        for name in ("checkpoint", "log.jsonl", "loss.png", "model"):
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)


def _run(spec: Any, out: Path, args: argparse.Namespace, resume_meta: dict[str, Any] | None) -> int:
    from edgelmm._extras import require

    require("torch", "train")
    require("peft", "train")
    import torch

    from edgelmm.specs import to_dict
    from edgelmm.train import checkpoint, loop
    from edgelmm.train.recipes import load

    dist = loop.init_dist()
    local_world = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    if dist.device.type == "cpu" and local_world > 1:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))
    out.mkdir(parents=True, exist_ok=True)
    resume = None
    elapsed_before = 0.0
    if resume_meta is not None:
        tensors, meta = checkpoint.load(out / loop.CHECKPOINT_DIR)
        optimizer = checkpoint.load_optimizer(out / loop.CHECKPOINT_DIR)
        resume = {"tensors": tensors, "stage_index": meta["stage_index"], "step": meta["step"],
                  "optimizer": (optimizer or {}, meta.get("optimizer_scalars", {}))}
        elapsed_before = float(meta.get("elapsed_s", 0.0))
        if dist.main:
            loop.truncate_log(out / loop.LOG_FILE, meta["stage_index"], meta["step"])
            print(f"resuming '{out}' at stage {meta['stage']} step {meta['step']}", file=sys.stderr)
    ctx = loop.RunContext(out=out, dist=dist, meta={"recipe": spec.name, "spec": to_dict(spec)},
                          checkpoint_every_s=args.checkpoint_every, progress=not args.no_progress,
                          elapsed_before=elapsed_before, stop_after_steps=args.stop_after_steps)
    recipe = load(spec.name)
    try:
        with ctx.stop:
            state = recipe.setup(spec, ctx, resume)
            if not args.save_only:
                state = recipe.train(state)
    except loop.Stopped as stopped:
        if dist.main:
            print(f"edgelmm: {stopped}", file=sys.stderr)
        if stopped.by_signal:
            raise KeyboardInterrupt from None
        return 0
    dist.barrier()
    if dist.world > 1:
        torch.distributed.destroy_process_group()
    if not dist.main:
        return 0
    model_dir = recipe.save(state, out / "model")
    if args.save_only:
        _record_stop(model_dir, resume_meta)
        print(f"saved '{spec.name}' as stopped at stage {resume_meta['stage']} step {resume_meta['step']}; "
              f"weights in {model_dir}", file=sys.stderr)
    else:
        print(f"trained '{spec.name}' in {ctx.elapsed:.0f} s; weights in {model_dir}", file=sys.stderr)
    if spec.evals and not args.no_eval:
        _evaluate(spec, model_dir)
    return 0


def _evaluate(spec: Any, model_dir: Path) -> None:
    """Run the recipe's evaluations on the saved (reloaded, LoRA-merged) model; record them in provenance.json."""
    from edgelmm.evals.runner import evaluate
    from edgelmm.evals.torch_answerer import TorchAnswerer, load_model

    answerer = TorchAnswerer(load_model(str(model_dir)))
    results = {}
    for request in spec.evals:
        report = evaluate(answerer, request.task, split=request.split, n=request.n)
        print(report.summary())
        results[f"{request.task}:{request.split}"] = report.to_dict()
    record_evals(model_dir, results)


def _record_stop(model_dir: Path, meta: dict[str, Any]) -> None:
    """provenance.json of a --save-only model: where the run stopped (it did not finish its schedule)."""
    path = model_dir / "provenance.json"
    provenance = json.loads(path.read_text()) if path.is_file() else {}
    provenance["stopped_at"] = {"stage": meta["stage"], "stage_index": meta["stage_index"], "step": meta["step"]}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(provenance, indent=2) + "\n")
    os.replace(tmp, path)


def record_evals(model_dir: Path, results: dict[str, Any]) -> None:
    """Merge ``results`` into ``model_dir/provenance.json`` (written atomically)."""
    path = model_dir / "provenance.json"
    provenance = json.loads(path.read_text()) if path.is_file() else {}
    provenance.setdefault("eval", {}).update(results)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(provenance, indent=2) + "\n")
    os.replace(tmp, path)
