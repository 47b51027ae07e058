"""`edgelmm run`: answer a prompt with a bundle (torch-free).

example:
  edgelmm run --bundle bundles/smol-vqa --image photo.png --prompt "What is in the picture?" --max-new-tokens 32
  edgelmm run --bundle bundles/smollm2 --prompt "Write a haiku about phones." --json
  edgelmm run --bundle bundles/smol-vqa --profile raspberry-pi-5 --image photo.png --prompt "Describe it." --json
  edgelmm run --bundle bundles/smollm2-variants --profile pixel-8 --dry-run   # variant, memory estimate, providers
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from edgelmm._argparse import OneLineParser


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="edgelmm run", description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bundle", required=True, help="bundle directory written by `edgelmm export`")
    p.add_argument("--image", action="append", default=[], metavar="PATH", help="an image (repeat for several)")
    p.add_argument("--prompt", help="the user message (required unless --dry-run)")
    p.add_argument("--item", action="append", type=int, default=None, metavar="ID",
                   help="item bundles: the item id for the next <item> placeholder of --prompt (repeat in order)")
    p.add_argument("--profile", default=None, metavar="NAME|PATH",
                   help="device profile: a name from device_profiles/ or a YAML file (default: CPU, no budget)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the chosen variant, memory estimate vs budget and provider order as YAML; load nothing")
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: the bundle's generation settings")
    p.add_argument("--json", action="store_true", help="print one JSON object: text, token ids, metrics")
    p.add_argument("--threads", type=int, default=None, help="intra-op threads per graph (default: onnxruntime's)")
    p.add_argument("--temperature", type=float, default=None, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--repetition-penalty", type=float, default=None)
    p.add_argument("--stop", action="append", default=None, metavar="TEXT", help="stop string (repeatable)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--raw", action="store_true", help="no chat template: the prompt is fed as plain text")
    return p


def main(argv: Sequence[str]) -> int:
    parser = build_parser()
    args = parser.parse_args(list(argv))
    if args.dry_run:
        return _dry_run(args)
    if args.prompt is None:
        parser.error("--prompt is required (unless --dry-run)")
    from edgelmm.runtime.pipeline import Pipeline  # after parsing: --help stays instant

    pipe = Pipeline.load(args.bundle, args.profile, threads=args.threads)
    stream = None if args.json else (lambda piece: (sys.stdout.write(piece), sys.stdout.flush()))
    result = pipe.generate(
        args.prompt,
        images=args.image,
        items=args.item,
        max_new_tokens=args.max_new_tokens,
        stream=stream,
        chat=not args.raw,
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        repetition_penalty=args.repetition_penalty,
        stop=tuple(args.stop) if args.stop else None,
        seed=args.seed,
    )
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        m = result.metrics
        print()
        print(
            f"[{m.prompt_tokens} prompt + {m.generated_tokens} new tokens | vision {m.vision_ms:.0f} ms |"
            f" TTFT {m.ttft_ms:.0f} ms | prefill {m.prefill_tok_s:.0f} tok/s | decode {m.decode_tok_s:.1f} tok/s |"
            f" peak RSS {m.peak_rss_mb:.0f} MB]",
            file=sys.stderr,
        )
    return 0


def _dry_run(args: argparse.Namespace) -> int:
    """Resolve profile, variant and budget exactly as Pipeline.load would, without creating any session."""
    import yaml

    from edgelmm.runtime.plan import plan_load
    from edgelmm.runtime.profile import load_profile

    profile = load_profile(args.profile) if args.profile else None
    plan = plan_load(args.bundle, profile)
    summary = plan.summary()
    if profile is not None:
        summary["providers"] = {str(role): [spec.provider.ort_name for spec in profile.providers_for(role)]
                                for role in plan.manifest.graphs}
    print(yaml.safe_dump(summary, sort_keys=False), end="")
    return 0
