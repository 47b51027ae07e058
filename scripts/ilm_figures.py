"""The Item-Language Model figures of docs/item-language.md, from three finished `edgelmm train --recipe ilm` runs.

    python scripts/ilm_figures.py --ilm runs/ilm --random runs/ilm-random --mlp runs/ilm-mlp --out out/ilm -n 240

1. HR@10 / NDCG@10 on held-out users (the same cases for every system): ILM with its baselines (frozen LM reading
   titles, CF alone, popularity), the random-init Q-Former ablation and the MLP adaptor.
2. Bundles of the ILM model (fp32 and int4) and of the base SmolLM2 (fp32 and int4): on plain-text prompts the ILM
   bundle's tokens equal the base bundle's and its decoder.onnx has the same sha256 (the LM stayed frozen).
3. The same rec cases through the fp32 and int4 ILM bundles (torch-free runtime, Pipeline.score).
4. The LM systems again, ranked by PMI (evals/rec.py Calibrated) instead of raw title likelihood.

Each step's result is kept under OUT (rec-*.json, identity.json); re-running skips what exists.
Writes OUT/results.json and OUT/table.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "sdk"))

PROMPTS = ("Write one sentence about the sea.", "What is the capital of France?",
           "List three fruits.", "I watched <item> The Quiet Garden. What should I watch next?")
"""Plain text (no items=): the last one shows that an <item> written by the caller stays literal text."""
NEW_TOKENS = 32


def kept(path: Path, compute) -> dict:
    if path.is_file():
        return json.loads(path.read_text())
    started = time.perf_counter()
    result = {**compute(), "seconds": round(time.perf_counter() - started, 1)}
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def rec_eval(model: Path, systems: tuple[str, ...], args: argparse.Namespace, bundles: tuple[Path, ...] = (),
             calibrate: bool = False) -> dict:
    from edgelmm.evals import rec

    return rec.run(str(model / "model"), n=args.n, candidates=args.candidates, systems=systems,
                   bundles=[str(b) for b in bundles], threads=args.threads, calibrate=calibrate)


def export(out: Path, precision: str, ilm: Path | None) -> Path:
    """An ILM bundle of ``ilm`` (or the base SmolLM2 bundle when None) at ``precision``; kept if present."""
    from edgelmm.export.exporter import ExportOptions, export_model
    from edgelmm.export.item_lm import export_item_lm
    from edgelmm.models.registry import build_model
    from edgelmm.specs import Precision

    if (out / "manifest.json").is_file():
        return out
    options = ExportOptions(precision=Precision(precision))
    if ilm is None:
        export_model(build_model("smollm2-135m"), out, options)
    else:
        export_item_lm(ilm / "model", out, options)
    return out


def identity(ilm_bundle: Path, base_bundle: Path, threads: int) -> dict:
    """Plain-text generations of the two bundles, token for token, and their decoder graphs' sha256."""
    from edgelmm.runtime import Pipeline
    from edgelmm.runtime.manifest import read_manifest

    a, b = Pipeline.load(ilm_bundle, threads=threads), Pipeline.load(base_bundle, threads=threads)
    same = [a.generate(p, max_new_tokens=NEW_TOKENS, ignore_eos=True).token_ids
            == b.generate(p, max_new_tokens=NEW_TOKENS, ignore_eos=True).token_ids for p in PROMPTS]
    sha = [read_manifest(p).files["decoder.onnx"].sha256 for p in (ilm_bundle, base_bundle)]
    return {"prompts": len(PROMPTS), "tokens_each": NEW_TOKENS, "token_identical": sum(same),
            "decoder_sha256_equal": sha[0] == sha[1]}


def table(results: dict) -> str:
    lines = []
    for key, scoring in (("rec", "log-likelihood"), ("rec_pmi", "PMI (--calibrate)")):
        lines += [f"| system (LM systems ranked by {scoring}) | HR@10 | NDCG@10 | users |", "|---|---|---|---|"]
        for label, m in results[key].items():
            lines.append(f"| {label} | {m['hr@10']:.3f} ± {m['hr@10_se']:.3f} | {m['ndcg@10']:.3f} ± "
                         f"{m['ndcg@10_se']:.3f} | {m['users']} |")
        lines.append("")
    lines += ["| bundle pair (plain text) | token-identical prompts | decoder sha256 equal |", "|---|---|---|"]
    for precision, r in results["identity"].items():
        lines.append(f"| ILM vs SmolLM2, {precision} | {r['token_identical']} / {r['prompts']} "
                     f"({r['tokens_each']} tokens each) | {r['decoder_sha256_equal']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ilm", type=Path, required=True, help="run directory of the full preset")
    p.add_argument("--random", type=Path, required=True, help="run directory of --preset random-qformer")
    p.add_argument("--mlp", type=Path, required=True, help="run directory of --preset mlp")
    p.add_argument("--out", type=Path, default=Path("out/ilm"))
    p.add_argument("-n", type=int, default=240, help="held-out users")
    p.add_argument("--candidates", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="onnxruntime threads for the bundles")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    bundles = {(name, precision): export(args.out / "bundles" / f"{name}-{precision}", precision,
                                         args.ilm if name == "ilm" else None)
               for name in ("ilm", "smollm2") for precision in ("fp32", "int4")}
    main_run = kept(args.out / f"rec-ilm-n{args.n}.json", lambda: rec_eval(
        args.ilm, ("ilm", "text-lm", "cf", "popularity"), args, (bundles["ilm", "fp32"], bundles["ilm", "int4"])))
    random_run = kept(args.out / f"rec-random-n{args.n}.json", lambda: rec_eval(args.random, ("ilm",), args))
    mlp_run = kept(args.out / f"rec-mlp-n{args.n}.json", lambda: rec_eval(args.mlp, ("ilm",), args))
    s = main_run["systems"]
    rec = {"popularity": s["popularity"], "CF alone (BPR)": s["cf"], "frozen LM reading titles": s["text-lm"],
           "MLP adaptor (paper's baseline)": mlp_run["systems"]["ilm"],
           "ILM, random-init Q-Former (no phase 1)": random_run["systems"]["ilm"],
           "ILM (phase-1 Q-Former), torch": s["ilm"],
           "ILM, fp32 bundle (runtime)": s["bundle:ilm-fp32"], "ILM, int4 bundle (runtime)": s["bundle:ilm-int4"]}
    pmi_main = kept(args.out / f"rec-ilm-pmi-n{args.n}.json",
                    lambda: rec_eval(args.ilm, ("ilm", "text-lm"), args, calibrate=True))["systems"]
    pmi = {"frozen LM reading titles": pmi_main["text-lm"],
           "MLP adaptor (paper's baseline)": kept(args.out / f"rec-mlp-pmi-n{args.n}.json", lambda: rec_eval(
               args.mlp, ("ilm",), args, calibrate=True))["systems"]["ilm"],
           "ILM, random-init Q-Former (no phase 1)": kept(args.out / f"rec-random-pmi-n{args.n}.json", lambda: rec_eval(
               args.random, ("ilm",), args, calibrate=True))["systems"]["ilm"],
           "ILM (phase-1 Q-Former), torch": pmi_main["ilm"]}
    same = {precision: kept(args.out / f"identity-{precision}.json",
                            lambda pr=precision: identity(bundles["ilm", pr], bundles["smollm2", pr], args.threads))
            for precision in ("fp32", "int4")}
    results = {"args": {k: str(v) for k, v in vars(args).items()}, "rec": rec, "rec_pmi": pmi, "identity": same}
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "table.md").write_text(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
