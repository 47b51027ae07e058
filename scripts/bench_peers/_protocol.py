"""The driver protocol shared by the peer drivers (see edgelmm.bench.peers): arguments, warmup, one JSON line."""

from __future__ import annotations

import argparse
import json
import resource
from pathlib import Path

WARMUP_TOKENS = 8


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser()
    p.add_argument("--model", required=True)
    p.add_argument("--prompt-ids", required=True)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    args.ids = json.loads(Path(args.prompt_ids).read_text())
    return args


def emit(prompt_tokens: int, new_tokens: list[int], start: float, first: float, end: float, files: list[Path]) -> None:
    """Print the record: times from perf_counter() at prompt start, first new token, last new token."""
    print(json.dumps({
        "prefill_tok_s": prompt_tokens / (first - start),
        "decode_tok_s": (len(new_tokens) - 1) / (end - first),
        "ttft_ms": (first - start) * 1e3,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "model_mb": sum(f.stat().st_size for f in files) / 2**20,
        "tokens": new_tokens,
    }))
