"""Per-variant table of what shrinking costs: bundle MB, vision ms, TTFT, decode tok/s, agreement, task accuracy.

    # 1. export every variant (slow, not timed: run niced); smol-vqa through its shipped recipes, SmolLM2 directly
    nice -n 19 python scripts/bench_quant.py prepare out/quant [--model DIR] [--only smol-vqa/arm64-int4 ...]
    # 2. sizes and agreement from the manifests (SmolLM2 variants)
    python scripts/bench_quant.py report out/quant
    # 3. time them, interleaved (A B C A B C ...), medians over rounds; writes table.md, results.json, plot.png
    flock /tmp/edgelmm-timing.lock python scripts/bench_quant.py measure out/quant --rounds 5 --threads 2

Accuracy columns come from each bundle's manifest (the export re-checked them: decoder top-1 agreement with the fp32
torch model, teacher-forced over the fixed text; task accuracy through the runtime). Timings: one image + one
question from the shapes test split, greedy, ``--new`` tokens with eos ignored (decode tok/s over the same count).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "sdk"))

SMOL_VQA = ("smol-vqa/cpu-fp32", "smol-vqa/arm64-int8", "smol-vqa/arm64-int4", "smol-vqa/arm64-int4-16tok",
            "smol-vqa/qnn-a16w8")
SMOLLM2 = ("fp32", "int8", "int8-fp32-compute", "int8-fp32-head", "int8-b16", "dynamic-int8", "int4", "a16w8",
           "a16w8-static")
"""SmolLM2-135M decoder variants (the issue's file-size and agreement figures)."""
AGREEMENT_TOKENS = 1024


def prepare(work: Path, model: str | None, only: list[str], tokens: int) -> None:
    """Export each variant into ``work`` (existing ones are kept)."""
    for name in only or [*SMOL_VQA, *(f"smollm2/{v}" for v in SMOLLM2)]:
        out = work / name.replace("/", "--")
        if (out / "manifest.json").exists():
            continue
        started = time.perf_counter()
        print(f"[prepare] {name} -> {out}", file=sys.stderr, flush=True)
        if name.startswith("smollm2/"):
            _export_smollm2(name.split("/")[1], out, tokens)
        else:
            from edgelmm.cli import main

            argv = ["export", "--recipe", name, "--out", str(out)] + (["--model", model] if model else [])
            if main(argv) != 0:
                raise SystemExit(f"export of {name} failed")
        print(f"[prepare] {name}: {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)


def _export_smollm2(variant: str, out: Path, tokens: int) -> None:
    from edgelmm.evals.export_checks import calibration_samples
    from edgelmm.export.exporter import ExportOptions, export_model
    from edgelmm.export.quantize import GraphPrecisions, QuantSpec
    from edgelmm.models.registry import build_model
    from edgelmm.specs import Precision

    plans = {"fp32": GraphPrecisions.cpu_fp32(), "int8": GraphPrecisions(decoder=QuantSpec.arm64_int8()),
             "dynamic-int8": GraphPrecisions(decoder=QuantSpec.dynamic_int8()),
             "int8-fp32-compute": GraphPrecisions(decoder=QuantSpec(precision=Precision.W8, accuracy_level=0)),
             # where int8 compute's 3 points go: the LM head kept fp32, or activation blocks of 16 instead of 32
             "int8-fp32-head": GraphPrecisions(decoder=dataclasses.replace(QuantSpec.arm64_int8(), lm_head_bits=0)),
             "int8-b16": GraphPrecisions(decoder=dataclasses.replace(QuantSpec.arm64_int8(), block_size=16)),
             "int4": GraphPrecisions(decoder=QuantSpec.arm64_int4(), token_embedding=QuantSpec.embedding_int4()),
             "a16w8": GraphPrecisions(decoder=QuantSpec.qnn_a16w8())}
    plans["a16w8-static"] = plans["a16w8"]  # the NPU form: static single-token step, checked on the QNN HTP simulator
    static = {"static_shapes": True, "max_context": 64} if variant.endswith("-static") else {}
    samples = calibration_samples("shapes", "train", 32) if plans[variant].static else []
    export_model(build_model("smollm2-135m"), out, ExportOptions(graphs=plans[variant], check_tokens=tokens, **static),
                 calibration=samples, log=lambda m: print(f"[export] {m}", file=sys.stderr, flush=True))


def measure(work: Path, rounds: int, threads: int, new: int) -> list[dict]:
    """Time every bundle in ``work``, interleaved over ``rounds``; return one record per bundle."""
    from edgelmm.runtime import Pipeline
    from edgelmm.train.data import DATASETS

    bundles = sorted(p.parent for p in work.glob("*/manifest.json") if not p.parent.name.startswith("."))  # staging
    pipes = {b.name: Pipeline.load(b, threads=threads) for b in bundles}
    example = DATASETS["shapes"].example("test", 0)
    times: dict[str, dict[str, list[float]]] = {n: {"vision_ms": [], "ttft_ms": [], "decode_tok_s": []} for n in pipes}
    for name, pipe in pipes.items():  # warm-up: first-run allocations and kernel selection are not timed
        _run(pipe, example, new)
    for _ in range(rounds):
        for name, pipe in pipes.items():
            metrics = _run(pipe, example, new)
            times[name]["vision_ms"].append(metrics.vision_ms)
            times[name]["ttft_ms"].append(metrics.ttft_ms)
            times[name]["decode_tok_s"].append(metrics.decode_tok_s)
    records = []
    for bundle in bundles:
        pipe = pipes[bundle.name]
        accuracy = pipe.manifest.accuracy
        task = accuracy.get("task") or {}
        records.append({
            "variant": bundle.name.replace("--", "/"),
            "bundle_mb": round(sum(f.bytes for f in pipe.manifest.files.values()) / 2**20, 1),
            "decoder_mb": round(_graph_bytes(pipe.manifest, "decoder") / 2**20, 1),
            "visual_tokens": pipe.manifest.text.num_image_tokens,
            "precision": accuracy.get("precision", {}),
            **{k: round(statistics.median(v), 2) for k, v in times[bundle.name].items()},
            "agreement": (accuracy.get("decoder_agreement") or {}).get("agreement"),
            "agreement_tokens": (accuracy.get("decoder_agreement") or {}).get("tokens"),
            "task_accuracy": task.get("accuracy"), "task_n": task.get("n"),
        })
    return records


def _run(pipe, example, new: int):
    images = [example.image] if pipe.manifest.has_vision else []
    return pipe.generate(example.question, images=images, max_new_tokens=new, ignore_eos=True).metrics


def _graph_bytes(manifest, role: str) -> int:
    graph = manifest.graphs[role]
    return sum(manifest.files[f].bytes for f in (graph.file, *graph.external_data))


def report(work: Path) -> str:
    """Untimed figures from the manifests alone: decoder file size (ratio to fp32) and agreement, per SmolLM2 variant;
    the QNN placement check where the export ran one."""
    from edgelmm.runtime.manifest import load_bundle

    manifests = {p.parent.name.removeprefix("smollm2--"): load_bundle(p.parent, check_hashes=False)
                 for p in sorted(work.glob("smollm2--*/manifest.json"))}
    fp32 = _graph_bytes(manifests["fp32"], "decoder") if "fp32" in manifests else None
    rows = ["| variant | decoder precision | decoder file MB | x fp32 | top-1 agreement vs fp32 (tokens) |"
            " QNN HTP (CPU fallback off) |", "|---|---|---:|---:|---:|---|"]
    for name, m in manifests.items():
        size, agreement = _graph_bytes(m, "decoder"), m.accuracy.get("decoder_agreement", {})
        qnn = m.accuracy.get("providers", {}).get("qnn-htp", {}).get("graphs", {}).get("decoder")
        qnn_text = "-" if qnn is None else (f"runs; argmax = CPU EP on {qnn['argmax_identical_vs_cpu']:.1%}"
                                            f" of {qnn['positions']}" if qnn["ok"] else f"refused: {qnn['detail']}")
        rows.append(f"| {name} | {m.graphs['decoder'].precision} ({m.graphs['decoder'].options.get('quantizer', '-')})"
                    f" | {size / 2**20:.1f} | {size / fp32:.3f} | {agreement.get('agreement', 0):.1%}"
                    f" ({agreement.get('tokens', 0)}) | {qnn_text} |" if fp32 else "")
    return "\n".join(rows)


def table(records: list[dict]) -> str:
    rows = ["| variant | precision (vision / embedding / decoder) | visual tokens | bundle MB | vision ms | TTFT ms |"
            " decode tok/s | top-1 agreement vs fp32 | task accuracy |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in records:
        p = r["precision"]
        precision = " / ".join(p.get(g, "-") for g in ("vision_encoder", "token_embedding", "decoder"))
        agreement = f"{r['agreement']:.1%} ({r['agreement_tokens']})" if r["agreement"] is not None else "-"
        task = f"{r['task_accuracy']:.1%} (n={r['task_n']})" if r["task_accuracy"] is not None else "-"
        vision = f"{r['vision_ms']:.2f}" if r["visual_tokens"] else "-"
        rows.append(f"| {r['variant']} | {precision} | {r['visual_tokens'] or '-'} | {r['bundle_mb']} | {vision} |"
                    f" {r['ttft_ms']:.1f} | {r['decode_tok_s']:.1f} | {agreement} | {task} |")
    return "\n".join(rows)


def plot(records: list[dict], path: Path) -> None:
    """Task accuracy (or agreement, for text-only variants) against TTFT, one point per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in records:
        y = r["task_accuracy"] if r["task_accuracy"] is not None else r["agreement"]
        if y is None:
            continue
        ax.scatter(r["ttft_ms"], 100 * y, s=30 + r["bundle_mb"] / 2)
        ax.annotate(r["variant"], (r["ttft_ms"], 100 * y), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("TTFT (ms, median; 1 image + question)")
    ax.set_ylabel("task accuracy % (text-only: top-1 agreement %)")
    ax.set_title("accuracy vs time to first token (marker area ~ bundle MB)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", choices=("prepare", "report", "measure"))
    p.add_argument("work", type=Path)
    p.add_argument("--model", help="prepare: a trained smol-vqa directory instead of the registry's smol-vqa")
    p.add_argument("--only", nargs="*", default=[], help="prepare: these variants only")
    p.add_argument("--tokens", type=int, default=AGREEMENT_TOKENS, help="prepare: agreement tokens (SmolLM2)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--new", type=int, default=32, help="measure: generated tokens per run")
    args = p.parse_args()
    if args.mode == "prepare":
        prepare(args.work, args.model, args.only, args.tokens)
        return
    if args.mode == "report":
        print(report(args.work))
        return
    records = measure(args.work, args.rounds, args.threads, args.new)
    text = table(records)
    print(text)
    (args.work / "table.md").write_text(text + "\n")
    (args.work / "results.json").write_text(json.dumps(records, indent=2) + "\n")
    plot(records, args.work / "accuracy_vs_ttft.png")
    print(json.dumps(records))


if __name__ == "__main__":
    main()
