"""Memory estimate (edgelmm.runtime.budget) vs measured peak RSS, each measurement in a fresh process.

    # from the fp32 SmolLM2 bundle, make int8 (quantize_dynamic) and int4 (MatMulNBits) decoder variants, then measure
    python scripts/bench_budget.py --fp32 bundles/smollm2-fp32 --variants-out bundles/smollm2-variants \\
        --profile laptop-x86 --context 1024 --context 2048
    # or measure bundles made elsewhere (issue 5's / issue 6's variants)
    python scripts/bench_budget.py --bundle bundles/smollm2-int4 --bundle bundles/smollm2-int8 --context 2048
    # resident bytes per file byte of each graph alone (the WEIGHT_RESIDENCY table of runtime/budget.py)
    python scripts/bench_budget.py --residency --bundle bundles/smollm2-variants/int4

Each measurement: a new Python process loads the bundle with the profile (its max_context set to ``--context``),
prefills a prompt of ``context - new`` tokens (the profile's prefill chunks) and generates ``--new`` tokens, so the
KV cache and activations reach the size the estimate reserves. Its peak RSS (ru_maxrss) is compared with the
estimate. Prints a markdown table; the last line is one JSON document with every record. Needs the [export] extra
(onnx, onnxruntime.quantization) only to make variants.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "sdk"))

DECODER = "decoder.onnx"


# ----------------------------------------------------------------------------------------------------------------
# Variants: int8 and int4 decoders from the fp32 bundle (a stand-in until the export issue writes them itself)


def make_variants(fp32: Path, out: Path, *, force: bool) -> dict[str, Path]:
    """out/fp32 (a copy of the input), out/int8 and out/int4; existing ones are kept unless ``force``."""
    from edgelmm.runtime.manifest import load_bundle

    manifest = load_bundle(fp32)
    made = {"fp32": out / "fp32", "int8": out / "int8", "int4": out / "int4"}
    for name, path in made.items():
        if path.exists() and not force:
            continue
        print(f"[variants] writing {path}", file=sys.stderr)
        _write_variant(fp32, manifest, path, name)
    return made


def _write_variant(src: Path, manifest, out: Path, precision: str) -> None:
    from edgelmm.export.bundle import write_bundle
    from edgelmm.specs import GraphRole, Precision

    def populate(tmp: Path):
        for name in manifest.files:
            if precision == "fp32" or not name.startswith(DECODER):
                shutil.copyfile(src / name, tmp / name)  # not a hard link: onnx refuses hard-linked external data
        graphs = dict(manifest.graphs)
        if precision != "fp32":
            options = _quantize(src / DECODER, tmp / DECODER, precision)
            graphs[GraphRole.DECODER] = dataclasses.replace(
                graphs[GraphRole.DECODER], precision=Precision(precision), options=options,
                external_data=(f"{DECODER}.data",))
        provenance = {**manifest.provenance, "variant_of": str(src), "variant_made_by": "scripts/bench_budget.py"}
        return dataclasses.replace(manifest, graphs=graphs, provenance=provenance, validation={})

    write_bundle(out, populate, force=True)


def _quantize(src: Path, dst: Path, precision: str) -> dict[str, object]:
    """int8: dynamic QOperator MatMuls; int4: MatMulNBits (block 32, symmetric, accuracy level 4 = int8 compute)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    logging.getLogger().setLevel(logging.WARNING)  # the quantizers log every tensor at INFO on the root logger
    if precision == "int8":
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         use_external_data_format=True, extra_options={"MatMulConstBOnly": True})
        return {"method": "quantize_dynamic", "weight_type": "QInt8", "op_types": ["MatMul"]}
    model = onnx.load(str(src))
    quantizer = MatMulNBitsQuantizer(model, block_size=32, is_symmetric=True, accuracy_level=4)
    quantizer.process()
    onnx.save_model(quantizer.model.model, str(dst), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=f"{DECODER}.data", size_threshold=1024)
    return {"method": "MatMulNBits", "bits": 4, "block_size": 32, "symmetric": True, "accuracy_level": 4}


# ----------------------------------------------------------------------------------------------------------------
# One measurement (runs in a child process)


def measure(bundle: str, profile_name: str, context: int, new: int, chunk: int | None) -> dict[str, object]:
    from edgelmm.runtime import Pipeline
    from edgelmm.runtime.budget import manifest_precision
    from edgelmm.runtime.metrics import peak_rss_mb
    from edgelmm.runtime.profile import load_profile

    profile = dataclasses.replace(load_profile(profile_name), max_context=context)
    if chunk:
        profile = dataclasses.replace(profile, prefill_chunk=chunk)
    pipe = Pipeline.load(bundle, profile)
    words = "The quick brown fox jumps over the lazy dog near the river bank at dawn. " * (context // 4)
    ids = pipe.tokenizer.encode_untrusted(words)[: context - new]
    text = pipe.tokenizer.decode(ids)
    res = pipe.generate(text, chat=False, max_new_tokens=new)
    peak = peak_rss_mb()  # VmHWM: ru_maxrss would report this script's parent's peak (Linux keeps it over exec)
    estimate = pipe.plan.estimate
    return {
        "bundle": bundle,
        "precision": manifest_precision(pipe.manifest),
        "profile": profile.name,
        "context": context,
        "prefill_chunk": estimate.prefill_chunk,
        "tokens": res.prompt_tokens + len(res.token_ids),
        "estimate_mb": round(estimate.total_mb, 1),
        "estimate": estimate.to_dict(),
        "load_peak_rss_mb": round(pipe.load_peak_rss_mb, 1),
        "peak_rss_mb": round(peak, 1),
        "providers": res.metrics.providers,
    }


def measure_graph(bundle: str, role: str, prepack: bool) -> dict[str, object]:
    """RSS one CPU session of one graph adds (anonymous vs file-backed), against its file bytes (onnx + data)."""
    import onnxruntime as ort

    from edgelmm.runtime.budget import SESSION_MB
    from edgelmm.runtime.manifest import read_manifest
    from edgelmm.runtime.sessions import SessionConfig, session_options

    manifest = read_manifest(bundle)
    graph = manifest.graphs[role]
    size = sum(manifest.files[name].bytes for name in (graph.file, *graph.external_data)) / 2**20
    options = session_options(SessionConfig())
    if not prepack:
        options.add_session_config_entry("session.disable_prepacking", "1")
    before = _rollup()
    session = ort.InferenceSession(str(Path(bundle) / graph.file), options, providers=["CPUExecutionProvider"])
    after = _rollup()
    del session
    added = after["Rss"] - before["Rss"]
    return {"bundle": bundle, "graph": role, "precision": str(graph.precision), "prepack": prepack,
            "file_mb": round(size, 1), "rss_added_mb": round(added, 1),
            "anonymous_added_mb": round(after["Anonymous"] - before["Anonymous"], 1),
            "file_backed_added_mb": round(after["File"] - before["File"], 1),
            "residency": round((added - SESSION_MB) / size, 3)}


def _rollup() -> dict[str, float]:
    """Rss, Anonymous and file-backed (clean) MiB of this process from /proc/self/smaps_rollup."""
    fields: dict[str, float] = {}
    with open("/proc/self/smaps_rollup") as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1]) / 1024
    return {"Rss": fields["Rss"], "Anonymous": fields["Anonymous"],
            "File": fields["Shared_Clean"] + fields["Private_Clean"]}


def residency(bundles: list[str]) -> int:
    """Each graph of each bundle alone in a fresh process, with onnxruntime's weight prepacking on and off."""
    from edgelmm.runtime.manifest import read_manifest

    print("| bundle | graph | precision | prepack | file MB | RSS added MB | anonymous | file-backed |"
          " (added - session) / file |\n|---|---|---|---|---:|---:|---:|---:|---:|")
    rows = []
    for bundle in bundles:
        for role in read_manifest(bundle).graphs:
            for prepack in (True, False):
                rows.append(_child(["--child-graph", bundle, "--graph", str(role),
                                    *([] if prepack else ["--no-prepack"])]))
                r = rows[-1]
                print(f"| {Path(bundle).name} | {role} | {r['precision']} | {'on' if prepack else 'off'} |"
                      f" {r['file_mb']} | {r['rss_added_mb']} | {r['anonymous_added_mb']} |"
                      f" {r['file_backed_added_mb']} | {r['residency']} |")
    print(json.dumps({"residency": rows}))
    return 0


def run_child(bundle: str, profile: str, context: int, new: int, chunk: int | None) -> dict[str, object]:
    return _child(["--child", bundle, "--profile", profile, "--context", str(context), "--new", str(new),
                   *(["--prefill-chunk", str(chunk)] if chunk else [])])


def _child(args: list[str]) -> dict[str, object]:
    """Run this script in a fresh process (its own peak RSS) and return the JSON it prints last."""
    cmd = [sys.executable, __file__, *args]
    bundle = args[1]
    env = {**os.environ, "PYTHONPATH": str(REPO / "sdk")}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"measurement failed for {bundle} ({' '.join(args)}): {proc.stderr.strip()[-600:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def summarise(records: list[dict[str, object]]) -> list[dict[str, object]]:
    """Median peak RSS over rounds per (bundle, context), with the estimate's error relative to it."""
    groups: dict[tuple[str, int, int], list[dict[str, object]]] = {}
    for r in records:
        groups.setdefault((str(r["bundle"]), int(r["context"]), int(r["prefill_chunk"])), []).append(r)
    rows = []
    for (bundle, context, chunk), rs in groups.items():
        measured = statistics.median(float(r["peak_rss_mb"]) for r in rs)
        estimate = float(rs[0]["estimate_mb"])
        rows.append({
            "bundle": bundle, "precision": rs[0]["precision"], "context": context, "prefill_chunk": chunk,
            "tokens": rs[0]["tokens"],
            "estimate_mb": estimate, "peak_rss_mb": measured,
            "load_peak_rss_mb": statistics.median(float(r["load_peak_rss_mb"]) for r in rs),
            "error_pct": round(100 * (estimate - measured) / measured, 1), "rounds": len(rs),
            "samples_mb": [r["peak_rss_mb"] for r in rs], "estimate": rs[0]["estimate"],
        })
    return rows


def table(rows: list[dict[str, object]]) -> str:
    lines = ["| bundle | precision | context | prefill chunk | estimate MB | measured peak RSS MB | error |"
             " load peak MB |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {Path(str(r['bundle'])).name} | {r['precision']} | {r['context']} | {r['prefill_chunk']} |"
                     f" {r['estimate_mb']:.0f} |"
                     f" {r['peak_rss_mb']:.0f} | {r['error_pct']:+.1f}% | {r['load_peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fp32", type=Path, help="fp32 bundle to derive int8/int4 variants from")
    p.add_argument("--variants-out", type=Path, help="where the variants go (with --fp32)")
    p.add_argument("--force", action="store_true", help="rewrite existing variants")
    p.add_argument("--bundle", action="append", default=[], help="a bundle to measure (repeatable)")
    p.add_argument("--profile", default="laptop-x86")
    p.add_argument("--context", type=int, action="append", default=None, help="max context (repeatable)")
    p.add_argument("--new", type=int, default=16, help="tokens generated after the prompt")
    p.add_argument("--rounds", type=int, default=2, help="fresh processes per bundle and context")
    p.add_argument("--prefill-chunk", type=int, default=None, help="override the profile's prefill_chunk")
    p.add_argument("--residency", action="store_true", help="measure each graph's resident bytes instead")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-graph", help=argparse.SUPPRESS)
    p.add_argument("--graph", help=argparse.SUPPRESS)
    p.add_argument("--no-prepack", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    contexts = args.context or [2048]
    if args.child:
        print(json.dumps(measure(args.child, args.profile, contexts[0], args.new, args.prefill_chunk)))
        return 0
    if args.child_graph:
        print(json.dumps(measure_graph(args.child_graph, args.graph, not args.no_prepack)))
        return 0
    bundles = list(args.bundle)
    if args.fp32:
        if not args.variants_out:
            p.error("--fp32 needs --variants-out")
        bundles += [str(v) for v in make_variants(args.fp32, args.variants_out, force=args.force).values()]
    if not bundles:
        p.error("give --bundle or --fp32")
    if args.residency:
        return residency(bundles)
    records = []
    for _ in range(args.rounds):  # rounds interleave bundles, as timing runs do
        for context in contexts:
            for bundle in bundles:
                records.append(run_child(bundle, args.profile, context, args.new, args.prefill_chunk))
                print(f"[measure] {records[-1]['bundle']} ctx {context}: estimate {records[-1]['estimate_mb']} MB,"
                      f" peak {records[-1]['peak_rss_mb']} MB", file=sys.stderr)
    rows = summarise(records)
    print(table(rows))
    import onnxruntime

    print(json.dumps({"onnxruntime": onnxruntime.__version__, "machine": platform.machine(),
                      "profile": args.profile, "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
