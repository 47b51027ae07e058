"""edgelmm against its peers, side by side: interleaved rounds, one fresh process per run, one table.

Every system is a command that runs ONE generation in its own process and prints one JSON line (the driver
protocol below); this module only starts them, in interleaved order (A B C A B C ...), and summarises. The
edgelmm driver is here (``python -m edgelmm.bench.peers drive ...``); peer drivers live in scripts/bench_peers/.

Driver protocol: ``--model PATH --prompt-ids FILE --new-tokens N --threads T`` -> one JSON line with
``prefill_tok_s`` (prompt tokens / TTFT), ``decode_tok_s`` ((N - 1) / time from the first to the last new token),
``ttft_ms`` (prompt ids in hand -> first new id chosen), ``peak_rss_mb`` (the process, load included),
``model_mb`` (weight files on disk) and ``tokens`` (the new ids). Each driver warms up with one short generation
first, never stops at an end-of-sequence id, and pins its thread count to T.

    python -m edgelmm.bench.peers run --systems systems.json --prompt-ids ids.json --rounds 5 --out out/bench
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

METRICS = (("prefill_tok_s", "prefill tok/s"), ("decode_tok_s", "decode tok/s"), ("ttft_ms", "TTFT ms"),
           ("peak_rss_mb", "peak RSS MB"), ("model_mb", "model MB"))
WARMUP_TOKENS = 8


# -- the edgelmm driver ----------------------------------------------------------------------------------------


def drive(bundle: str, prompt_ids: list[int], new_tokens: int, threads: int) -> dict[str, Any]:
    """One edgelmm generation (after a short warmup) in this process; the driver protocol's record."""
    from edgelmm.runtime import Pipeline
    from edgelmm.runtime.metrics import peak_rss_mb

    pipe = Pipeline.load(bundle, threads=threads)
    pipe.generate_ids(prompt_ids, max_new_tokens=WARMUP_TOKENS, ignore_eos=True)
    result = pipe.generate_ids(prompt_ids, max_new_tokens=new_tokens, ignore_eos=True)
    m = result.metrics
    return {
        "prefill_tok_s": len(prompt_ids) / (m.ttft_ms / 1e3),
        "decode_tok_s": m.decode_tok_s,
        "ttft_ms": m.ttft_ms,
        "peak_rss_mb": peak_rss_mb(),
        "model_mb": sum(e.bytes for name, e in pipe.manifest.files.items() if ".onnx" in name) / 2**20,
        "tokens": result.token_ids,
        "kv_layout": pipe.manifest.kv_cache.layout,
    }


# -- running and summarising -----------------------------------------------------------------------------------


def run_rounds(systems: list[dict[str, Any]], prompt_file: Path, new_tokens: int, threads: int, rounds: int,
               log: Any = print) -> list[dict[str, Any]]:
    """Every system once per round, in the same order, each a fresh process; returns one row per run."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads)}
    rows = []
    for r in range(rounds):
        for system in systems:
            cmd = [*system["cmd"], "--prompt-ids", str(prompt_file), "--new-tokens", str(new_tokens),
                   "--threads", str(threads)]
            started = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
            if proc.returncode != 0:
                raise RuntimeError(f"{system['name']} failed ({proc.returncode}): {proc.stderr.strip()[-800:]}")
            record = json.loads(proc.stdout.strip().splitlines()[-1])
            if len(record["tokens"]) != new_tokens:
                raise RuntimeError(f"{system['name']} generated {len(record['tokens'])} tokens, not {new_tokens}")
            rows.append({"round": r, "system": system["name"], **record})
            log(f"round {r + 1}/{rounds} {system['name']:<34} decode {record['decode_tok_s']:7.1f} tok/s  prefill"
                f" {record['prefill_tok_s']:7.1f} tok/s  ({time.perf_counter() - started:.1f} s)")
    return rows


def summarise(rows: list[dict[str, Any]], comparisons: list[dict[str, str]]) -> dict[str, Any]:
    """Median [min, max] per system and metric; each comparison as the median of per-round ratios a / b."""
    systems = list(dict.fromkeys(r["system"] for r in rows))
    stats = {}
    for name in systems:
        mine = [r for r in rows if r["system"] == name]
        stats[name] = {key: {"median": statistics.median(r[key] for r in mine), "min": min(r[key] for r in mine),
                             "max": max(r[key] for r in mine)} for key, _ in METRICS}
    ratios = []
    for c in comparisons:
        by_round = {}
        for r in rows:
            by_round.setdefault(r["round"], {})[r["system"]] = r[c["metric"]]
        per_round = [v[c["a"]] / v[c["b"]] for v in by_round.values() if c["a"] in v and c["b"] in v and v[c["b"]]]
        ratios.append({**c, "median": statistics.median(per_round), "min": min(per_round), "max": max(per_round)})
    return {"systems": stats, "ratios": ratios}


def table(summary: dict[str, Any]) -> str:
    """Markdown: one row per system, median [min-max] per metric; then the ratios."""
    head = "| system | " + " | ".join(label for _, label in METRICS) + " |"
    lines = [head, "|---|" + "---:|" * len(METRICS)]
    for name, stats in summary["systems"].items():
        cells = [_cell(stats[key]) for key, _ in METRICS]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "| ratio (median of per-round ratios) | value [min-max] | target |", "|---|---:|---|"]
    for r in summary["ratios"]:
        lines.append(f"| {r['label']} | {r['median']:.2f} [{r['min']:.2f}-{r['max']:.2f}] | {r.get('target', '')} |")
    return "\n".join(lines)


def _cell(stat: dict[str, float]) -> str:
    fmt = "{:.0f}" if stat["median"] >= 100 else "{:.1f}"
    return f"{fmt.format(stat['median'])} [{fmt.format(stat['min'])}-{fmt.format(stat['max'])}]"


def chart(summary: dict[str, Any], path: Path) -> None:
    """Bar chart of prefill and decode tok/s (median, min-max whiskers) per system ([bench] extra: matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary["systems"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.5 * len(names) + 2), sharey=True)
    for ax, (key, label) in zip(axes, METRICS[:2]):
        stats = [summary["systems"][n][key] for n in names]
        med = [s["median"] for s in stats]
        err = [[m - s["min"] for m, s in zip(med, stats)], [s["max"] - m for m, s in zip(med, stats)]]
        colours = ["tab:blue" if n.startswith("edgelmm") else "tab:gray" for n in names]
        ax.barh(names, med, xerr=err, color=colours, capsize=3)
        ax.set_xlabel(label)
        ax.invert_yaxis()
        for y, m in enumerate(med):
            ax.text(m, y, f" {m:.0f}", va="center", fontsize=8)
    fig.suptitle("SmolLM2-135M-Instruct, batch 1, 2 threads, 128-token prompt, 128 new tokens (median, min-max)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- command line ----------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgelmm.bench.peers", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    d = sub.add_parser("drive", help="one edgelmm generation; prints the driver protocol's JSON line")
    d.add_argument("--model", required=True, help="bundle directory")
    r = sub.add_parser("run", help="interleave every system for N rounds; print the table, write JSON + chart")
    r.add_argument("--systems", required=True, help="JSON: {systems: [{name, cmd}], comparisons: [...]}")
    r.add_argument("--rounds", type=int, default=5)
    r.add_argument("--out", required=True, help="directory for results.json and chart.png")
    for q in (d, r):
        q.add_argument("--prompt-ids", required=True, help="JSON list of token ids")
        q.add_argument("--new-tokens", type=int, default=128)
        q.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    ids = json.loads(Path(args.prompt_ids).read_text())
    if args.command == "drive":
        print(json.dumps(drive(args.model, ids, args.new_tokens, args.threads)))
        return 0
    config = json.loads(Path(args.systems).read_text())
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    rows = run_rounds(config["systems"], Path(args.prompt_ids), args.new_tokens, args.threads, args.rounds, log)
    summary = summarise(rows, config.get("comparisons", []))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    setup = {"prompt_tokens": len(ids), "new_tokens": args.new_tokens, "threads": args.threads, "rounds": args.rounds,
             "order": [s["name"] for s in config["systems"]], "cpu": _cpu(), "finished": time.strftime("%Y-%m-%d %H:%M")}
    (out / "results.json").write_text(json.dumps({"setup": setup, **summary, "runs": rows}, indent=1))
    chart(summary, out / "chart.png")
    print(table(summary))
    print(json.dumps({"setup": setup, **summary}))
    return 0


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    sys.exit(main())
