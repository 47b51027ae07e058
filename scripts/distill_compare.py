"""The LLaVA-KD comparison of docs/distillation.md: the same student trained five ways, and the teacher.

    python scripts/distill_compare.py --teacher runs/imp/model --out out/distill            # full preset, ~2 h
    python scripts/distill_compare.py --teacher runs/imp/model --preset quick --out out/q   # smoke version
    python scripts/distill_compare.py --teacher ... --out out/distill --bundles             # + int4 bundles

Runs (each a fresh `edgelmm train --recipe llava-kd` process, same data, steps and seed): kd (DPT -> SFT -> DFT),
the ablations -MDist, -RDist, -DPT, and the no-distillation baseline (PT -> SFT -> FT, CE only). Then exact match on
the held-out test splits of shapes and digits for each student and the teacher; with --bundles also for int4
bundles of the teacher and the kd student. A finished run is not retrained, an interrupted one is resumed and a
score is kept (OUT/accuracy/), so re-running continues, and two processes can split the runs (--runs kd,baseline
and --runs no-mdist,no-rdist,no-dpt --no-teacher-eval), then one more with everything assembles the table.
Writes OUT/results.json and OUT/table.md. Training runs under `nice -n 19` with one thread (a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

RUNS = {"kd": (), "no-mdist": ("mdist",), "no-rdist": ("rdist",), "no-dpt": ("dpt",), "baseline": ("distill",)}
LABELS = {"kd": "LLaVA-KD (DPT+SFT+DFT)", "no-mdist": "-MDist", "no-rdist": "-RDist", "no-dpt": "-DPT",
          "baseline": "no distillation (PT+SFT+FT)", "teacher": "teacher", "teacher-int4": "teacher, int4 bundle",
          "kd-int4": "LLaVA-KD student, int4 bundle"}
TASKS = ("shapes", "digits")


def edgelmm(*args: str) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    cmd = ["nice", "-n", "19", sys.executable, "-m", "edgelmm", *args]
    print("+", " ".join(cmd[3:]), file=sys.stderr, flush=True)
    return subprocess.run(cmd, env=env, check=True, stdout=subprocess.PIPE, text=True).stdout


def train(name: str, ablate: tuple[str, ...], args: argparse.Namespace) -> float:
    out = args.out / name
    if (out / "model" / "meta.json").is_file():
        pass
    elif (out / "checkpoint" / "meta.json").is_file():  # an interrupted run: continue it
        edgelmm("train", "--resume", str(out), "--no-eval", "--no-progress")
    else:
        flags = [f for a in ablate for f in ("--ablate", a)]
        edgelmm("train", "--recipe", "llava-kd", "--preset", args.preset, "--teacher", args.teacher, *flags,
                "--out", str(out), "--force", "--no-eval", "--no-progress")
    return json.loads((out / "model" / "provenance.json").read_text())["train_seconds"]


def kept_score(name: str, args: argparse.Namespace) -> Path:
    return args.out / "accuracy" / f"{name}-n{args.n}.json"


def accuracy(name: str, source: tuple[str, str], args: argparse.Namespace) -> dict[str, float]:
    """source: ("--model", dir or name) or ("--bundle", dir) -> {task: exact match}.

    Kept in OUT/accuracy/NAME-nN.json, so runs split over processes (--runs) are scored once; delete it (or
    --force) after retraining a model in place."""
    cache = kept_score(name, args)
    if cache.is_file() and not args.force:
        kept = json.loads(cache.read_text())
        return {t: kept[t] for t in TASKS}
    out = {}
    for task in TASKS:
        report = json.loads(edgelmm("eval", *source, "--task", task, "--split", "test", "-n", str(args.n),
                                    "--json").strip().splitlines()[-1])
        out[task] = report["accuracy"]
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({**out, "source": list(source)}, indent=2) + "\n")
    return {t: out[t] for t in TASKS}


def table(results: dict[str, dict]) -> str:
    base = results.get("baseline", {}).get("mean")
    lines = ["| model | shapes test | digits test | mean | vs baseline | train s |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        delta = f"{100 * (r['mean'] - base):+.1f}" if base is not None and name != "baseline" else ""
        secs = f"{r['train_seconds']:.0f}" if "train_seconds" in r else ""
        lines.append(f"| {LABELS[name]} | {100 * r['shapes']:.1f} | {100 * r['digits']:.1f} | {100 * r['mean']:.1f} "
                     f"| {delta} | {secs} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--teacher", default="smol-vqa", help="registry name or trained model directory")
    p.add_argument("--preset", default="full", choices=("full", "quick"))
    p.add_argument("--out", type=Path, default=Path("out/distill"))
    p.add_argument("-n", type=int, default=500, help="test examples per task")
    p.add_argument("--runs", default=",".join(RUNS), help=f"subset of {','.join(RUNS)}")
    p.add_argument("--bundles", action="store_true", help="also export int4 bundles of teacher and kd; eval them")
    p.add_argument("--teacher-eval", action=argparse.BooleanOptionalAction, default=True,
                   help="score the teacher too (off for all but one process of a split comparison)")
    p.add_argument("--force", action="store_true", help="re-score models whose accuracy is already kept")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    results: dict[str, dict] = {}
    for name in args.runs.split(","):
        seconds = train(name, RUNS[name], args)
        results[name] = {**accuracy(name, ("--model", str(args.out / name / "model")), args),
                         "train_seconds": seconds}
    if args.teacher_eval:
        results["teacher"] = accuracy("teacher", ("--model", args.teacher), args)
    if args.bundles:
        for name, model in (("teacher-int4", args.teacher), ("kd-int4", str(args.out / "kd" / "model"))):
            bundle = args.out / "bundles" / name
            if args.force or not kept_score(name, args).is_file():
                # The exporter's auto method: a LoRA teacher keeps its LoRA as a float side path over minmax base
                # weights, a student whose whole LM trained gets rtn (minmax would snap it back to Q4_1's grid).
                edgelmm("export", "--model", model, "--out", str(bundle), "--precision", "int4", "--force")
            results[name] = accuracy(name, ("--bundle", str(bundle)), args)
    for r in results.values():
        r["mean"] = sum(r[t] for t in TASKS) / len(TASKS)
    record = {"args": {k: str(v) for k, v in vars(args).items()}, "wall_seconds": time.perf_counter() - started,
              "results": results}
    (args.out / "results.json").write_text(json.dumps(record, indent=2) + "\n")
    (args.out / "table.md").write_text(table(results))
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
