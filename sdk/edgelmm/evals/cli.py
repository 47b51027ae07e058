"""`edgelmm eval`: exact-match accuracy of a model on a built-in task, the same code for torch models and bundles.

examples:
  edgelmm eval --bundle bundles/smol-vqa --task shapes --split test -n 1000
  edgelmm eval --model smol-vqa --task digits --json
  edgelmm eval --model runs/imp --task shapes-compositional
  edgelmm eval --prior --task shapes          # the image-blind answer prior (most frequent answer per question)
  edgelmm eval --model runs/imp --perplexity  # text perplexity vs the base LM (did training keep the LM's text?)
  edgelmm eval --bundle bundles/smol-vqa-tool --task tool-selection --constrained   # Choice over the catalog ids
  edgelmm eval --list
  edgelmm eval --task rec --model runs/ilm/model --baselines   # HR@10 / NDCG@10 of an ilm model (evals/rec.py)
  edgelmm eval --task rec --model runs/ilm/model --rec-bundle bundles/ilm-fp32 --rec-bundle bundles/ilm-int4
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="edgelmm eval", description=__doc__.split("\n")[0],
                                epilog=__doc__.split("\n", 2)[2], formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", help="torch model: registry name, weights dir (edgelmm train output) or HF dir")
    which.add_argument("--bundle", help="exported bundle directory (runs on onnxruntime, no torch)")
    which.add_argument("--prior", action="store_true", help="the image-blind answer prior instead of a model")
    p.add_argument("--task", help="task name (see --list)")
    p.add_argument("--split", default=None, help="dataset split (default: the task's, test)")
    p.add_argument("-n", type=int, default=500, help="number of examples (default 500)")
    p.add_argument("--batch-size", type=int, default=32, help="torch models: examples per generate call")
    p.add_argument("--threads", type=int, default=None, help="bundles: onnxruntime intra-op threads")
    p.add_argument("--constrained", action="store_true",
                   help="tool-selection: decode under a Choice over the catalog's tool ids (runtime/constraint.py)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the summary line")
    p.add_argument("--list", action="store_true", help="print the task names and exit")
    p.add_argument("--perplexity", action="store_true",
                   help="instead of a task: text perplexity of --model's LM vs its base LM (evals/perplexity.py)")
    p.add_argument("--candidates", type=int, default=20, help="--task rec: candidates per user (target + negatives)")
    p.add_argument("--baselines", action="store_true",
                   help="--task rec: also score the frozen LM reading titles, CF alone and popularity")
    p.add_argument("--systems", default=None, metavar="A,B",
                   help="--task rec: which systems to score (ilm, text-lm, cf, popularity; default ilm)")
    p.add_argument("--rec-bundle", action="append", default=[], metavar="DIR",
                   help="--task rec: also score this export of --model through the runtime (repeatable)")
    p.add_argument("--calibrate", action="store_true",
                   help="--task rec: rank LM systems by PMI (log p(title | prompt) - log p(title | neutral prompt))")
    p.add_argument("--base", default=None, help="with --perplexity: the registry LM to compare with "
                                                "(default: the model's base LM)")
    return p


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    from edgelmm.evals.tasks import TASKS

    if args.list:
        for name, task in TASKS.items():
            print(f"{name:<22}  {task.description}")
        print(f"{'rec':<22}  ilm models: next item for held-out users, HR@10 / NDCG@10 (--model DIR of "
              "`edgelmm train --recipe ilm`)")
        return 0
    if args.task == "rec":
        return _rec(args)
    if args.perplexity:
        return _perplexity(args)
    if not args.task or not (args.model or args.bundle or args.prior):
        parser.error("--task and one of --model, --bundle, --prior are required (or --list)")
    from edgelmm.evals.runner import BundleAnswerer, PriorAnswerer, evaluate
    from edgelmm.registry import lookup

    lookup(TASKS, args.task, what="task")
    if args.bundle:
        answerer = BundleAnswerer(args.bundle, threads=args.threads)
    elif args.prior:
        answerer = PriorAnswerer(args.task)
    else:
        from edgelmm._extras import require

        require("torch", "train")
        from edgelmm.evals.torch_answerer import TorchAnswerer, load_model

        answerer = TorchAnswerer(load_model(args.model))
    report = evaluate(answerer, args.task, split=args.split, n=args.n, batch_size=args.batch_size,
                      progress=sys.stderr.isatty() and not args.json, constrained=args.constrained)
    print(json.dumps(report.to_dict()) if args.json else report.summary())
    return 0


def _perplexity(args: argparse.Namespace) -> int:
    from edgelmm.errors import SpecError

    if not args.model:
        raise SpecError("--perplexity needs --model (a torch model: registry name or weights directory)")
    from edgelmm._extras import require

    require("torch", "train")
    from edgelmm.evals.perplexity import perplexity
    from edgelmm.evals.torch_answerer import base_lm_of, load_model
    from edgelmm.models.registry import build_model

    base = args.base or base_lm_of(args.model)
    if base is None:
        raise SpecError(f"'{args.model}' names no base LM; pass --base NAME (a registry LM)")
    trained, reference = perplexity(load_model(args.model)), perplexity(build_model(base))
    rise = trained.value / reference.value - 1
    if args.json:
        print(json.dumps({"model": trained.model, "perplexity": round(trained.value, 4), "base": reference.model,
                          "base_perplexity": round(reference.value, 4), "rise": round(rise, 4),
                          "tokens": trained.tokens}))
    else:
        print(f"text perplexity {trained.model}: {trained.value:.3f}  {reference.model}: {reference.value:.3f}  "
              f"({rise:+.1%}, {trained.tokens} tokens)")
    return 0


def _rec(args: argparse.Namespace) -> int:
    from edgelmm.errors import SpecError

    if not args.model:
        raise SpecError("--task rec needs --model DIR (the model directory of `edgelmm train --recipe ilm`)")
    if args.n < 1 or args.candidates < 2:
        raise SpecError(f"--task rec needs -n >= 1 and --candidates >= 2, got {args.n} and {args.candidates}")
    from edgelmm._extras import require

    require("torch", "train")
    from edgelmm.evals import rec

    systems = rec.SYSTEMS if args.baselines else tuple(args.systems.split(",")) if args.systems else ("ilm",)
    results = rec.run(args.model, n=args.n, candidates=args.candidates, systems=systems,
                      progress=sys.stderr.isatty() and not args.json, bundles=args.rec_bundle, threads=args.threads,
                      calibrate=args.calibrate)
    print(json.dumps(results) if args.json else rec.summary(results))
    return 0
