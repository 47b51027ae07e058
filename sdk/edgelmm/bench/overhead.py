"""Python overhead per generated token, measured with cProfile around a real generation.

Everything a decode step does outside onnxruntime's ``run_with_iobinding`` (the graph itself) is overhead: token
choice, detokenization, stop checks, binding, the loop. cProfile attributes time to each call; the overhead is the
step's total time minus the time inside the graph calls, per token. cProfile slows Python code down itself, so the
figure is an upper bound; the top entries say where the rest goes.

    python -m edgelmm.bench.overhead --model bundles/smollm2-int4 --prompt-ids ids.json --new-tokens 128
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

GRAPH_CALLS = ("run_with_iobinding", "run_with_ort_values", "run")
"""onnxruntime entry points: time inside them is the graphs' (native code), not Python overhead."""


def measure(bundle: str, prompt_ids: list[int], new_tokens: int, threads: int, top: int = 8) -> dict[str, Any]:
    from edgelmm.runtime import Pipeline

    pipe = Pipeline.load(bundle, threads=threads)
    pipe.generate_ids(prompt_ids, max_new_tokens=8, ignore_eos=True)  # warm up: arenas, thread pools, caches
    pipe.decoder.reset()
    pipe.decoder.reserve(len(prompt_ids) + new_tokens)  # as Pipeline does: no KV growth inside the profiled loop
    embeds = pipe.embed(prompt_ids)
    first = pipe.decoder.forward(embeds)
    profiler = cProfile.Profile()

    def loop() -> None:
        from edgelmm.runtime.generate import token_loop

        token_loop(first, lambda t: pipe.decoder.forward(pipe._embed_token(t)), spec=pipe.generation_spec(),
                   max_new_tokens=new_tokens, eos_ids=frozenset(), prompt_ids=np.asarray(prompt_ids),
                   tokenizer=pipe.tokenizer, stream=lambda _: None)

    profiler.runcall(loop)
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    # Native methods appear as ('~', 0, "<built-in method ...run_with_iobinding>"): their time is the graph's.
    graph = sum(v[2] for k, v in stats.stats.items()
                if k[0] == "~" and any(f"'{n}'" in k[2] or k[2].endswith(f".{n}>") for n in GRAPH_CALLS))
    steps = new_tokens - 1
    ranked = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]
    return {
        "tokens": new_tokens,
        "step_us": total / steps * 1e6,
        "graph_us": graph / steps * 1e6,
        "python_overhead_us": (total - graph) / steps * 1e6,
        "python_overhead_pct": 100 * (total - graph) / total,
        "top_self_time": [{"function": f"{k[0].split('/')[-1]}:{k[1]}:{k[2]}", "calls": v[1],
                           "self_us_per_token": v[2] / steps * 1e6} for k, v in ranked],
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgelmm.bench.overhead", description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True, help="bundle directory")
    p.add_argument("--prompt-ids", required=True, help="JSON list of token ids")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    ids = json.loads(Path(args.prompt_ids).read_text())
    result = measure(args.model, ids, args.new_tokens, args.threads)
    for row in result["top_self_time"]:
        print(f"{row['self_us_per_token']:9.1f} us/token  {row['calls']:6d} calls  {row['function']}")
    print(json.dumps({k: v for k, v in result.items() if k != "top_self_time"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
