"""An independent check of `edgelmm bench`'s pp<N> / tg<N> figures: the same bundle timed with plain onnxruntime.

    flock /tmp/edgelmm-timing.lock python scripts/bench_reference.py --bundle bundles/smollm2-135m-fp32 --rounds 5

The child (``--child``) imports no edgelmm code: it reads manifest.json with ``json``, builds its own sessions and
KV-cache feeds, and times prefill of N random ids (token_embedding + decoder, empty cache) and N greedy decode
steps with time.perf_counter(). The parent interleaves, round by round, a fresh ``edgelmm bench --tests ppN,tgM``
process and a fresh child (A B A B ...), each with the same threads, and prints per-round medians, the median over
rounds and the ratio. Agreement within the machine's noise says bench times what it claims to.
``--inprocess PAIRS`` times pp<N> both ways in one process instead (edgelmm's Pipeline against plain sessions,
alternating A B / B A), which isolates the harness's own overhead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort


def session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def child(bundle: Path, pp: int, tg: int, reps: int, threads: int) -> dict[str, list[float]]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    embed = session(bundle / manifest["graphs"]["token_embedding"]["file"], threads)
    decoder = session(bundle / manifest["graphs"]["decoder"]["file"], threads)
    kv = manifest["kv_cache"]
    layers = range(kv["num_layers"])
    past = [kv[k].format(layer=i) for i in layers for k in ("past_key", "past_value")]
    present = [kv[k].format(layer=i) for i in layers for k in ("present_key", "present_value")]
    empty = np.zeros((1, kv["num_kv_heads"], 0, kv["head_dim"]), np.float32)
    vocab = manifest["model"]["vocab_size"]
    ids = np.random.default_rng(0).integers(100, vocab, pp)

    def forward(tokens: np.ndarray, cache: list, length: int) -> tuple[np.ndarray, list]:
        x = embed.run(["inputs_embeds"], {"input_ids": tokens[None].astype(np.int64)})[0]
        s = x.shape[1]
        feed = {"inputs_embeds": x, "attention_mask": np.ones((1, length + s), np.int64),
                "position_ids": np.arange(length, length + s, dtype=np.int64)[None], **dict(zip(past, cache))}
        out = decoder.run(["logits", *present], feed)
        return out[0][0, -1], out[1:]

    times: dict[str, list[float]] = {f"pp{pp}": [], f"tg{tg}": []}
    for rep in range(reps + 1):  # the first round is the warmup
        start = time.perf_counter()
        forward(ids, [empty] * len(past), 0)
        prefill = (time.perf_counter() - start) * 1e3
        logits, cache = forward(ids[:1], [empty] * len(past), 0)
        start = time.perf_counter()
        for step in range(tg):
            logits, cache = forward(np.array([int(np.argmax(logits))]), cache, 1 + step)
        decode = (time.perf_counter() - start) * 1e3
        if rep:
            times[f"pp{pp}"].append(prefill)
            times[f"tg{tg}"].append(decode)
    return times


def inprocess_pp(bundle: Path, pp: int, pairs: int, threads: int) -> dict[str, list[float]]:
    """pp<N> through edgelmm's Pipeline and through plain sessions in ONE process, alternating A B / B A per pair:
    separates the harness's own cost from process-to-process and order effects on a noisy machine."""
    from edgelmm.bench.runner import GREEDY, synthetic_ids
    from edgelmm.runtime import Pipeline

    pipe = Pipeline.load(bundle, threads=threads)
    ids = synthetic_ids(pipe, pp)
    manifest = json.loads((bundle / "manifest.json").read_text())
    embed = session(bundle / manifest["graphs"]["token_embedding"]["file"], threads)
    decoder = session(bundle / manifest["graphs"]["decoder"]["file"], threads)
    kv = manifest["kv_cache"]
    past = [kv[k].format(layer=i) for i in range(kv["num_layers"]) for k in ("past_key", "past_value")]
    empty = np.zeros((1, kv["num_kv_heads"], 0, kv["head_dim"]), np.float32)

    def plain() -> float:
        start = time.perf_counter()
        x = embed.run(["inputs_embeds"], {"input_ids": np.asarray(ids, np.int64)[None]})[0]
        decoder.run(["logits"], {"inputs_embeds": x, "attention_mask": np.ones((1, pp), np.int64),
                                 "position_ids": np.arange(pp, dtype=np.int64)[None], **dict.fromkeys(past, empty)})
        return (time.perf_counter() - start) * 1e3

    def edge() -> float:
        return pipe.generate_ids(ids, config=GREEDY, max_new_tokens=1, ignore_eos=True).metrics.prefill_ms

    plain(), edge()  # warmup
    times: dict[str, list[float]] = {"edgelmm": [], "plain": []}
    for i in range(2 * pairs):
        for name, fn in (("edgelmm", edge), ("plain", plain))[:: 1 if i % 2 else -1]:
            times[name].append(fn())
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True, type=Path)
    p.add_argument("--pp", type=int, default=128)
    p.add_argument("--tg", type=int, default=64)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--inprocess", type=int, default=0, metavar="PAIRS",
                   help="instead: pp<N> through edgelmm and plain sessions in one process, PAIRS x (A B, B A)")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.inprocess:
        times = inprocess_pp(args.bundle, args.pp, args.inprocess, args.threads)
        for name, values in times.items():
            print(f"{name:8} pp{args.pp} median {statistics.median(values):.1f} ms  {[round(v) for v in values]}")
        print(json.dumps({"ratio": statistics.median(times["edgelmm"]) / statistics.median(times["plain"]), **times}))
        return 0
    if args.child:
        print(json.dumps(child(args.bundle, args.pp, args.tg, args.reps, args.threads)))
        return 0
    tests = [f"pp{args.pp}", f"tg{args.tg}"]
    common = ["--bundle", str(args.bundle), "--reps", str(args.reps), "--threads", str(args.threads)]
    rounds: dict[str, dict[str, list[float]]] = {"edgelmm bench": {t: [] for t in tests},
                                                 "plain onnxruntime": {t: [] for t in tests}}
    for _ in range(args.rounds):
        out = subprocess.run([sys.executable, "-m", "edgelmm", "bench", *common, "--tests", ",".join(tests),
                              "--warmup", "1", "--json"], capture_output=True, text=True, check=True).stdout
        for row in json.loads(out.splitlines()[-1])["rows"]:
            rounds["edgelmm bench"][row["test"]].append(row["median_ms"])
        out = subprocess.run([sys.executable, __file__, *common, "--pp", str(args.pp), "--tg", str(args.tg),
                              "--child"], capture_output=True, text=True, check=True).stdout
        for test, samples in json.loads(out).items():
            rounds["plain onnxruntime"][test].append(statistics.median(samples))
    tokens = {tests[0]: args.pp, tests[1]: args.tg}
    print(f"{args.rounds} interleaved rounds x {args.reps} repetitions, {args.threads} threads, bundle {args.bundle}")
    print("| measurement | " + " | ".join(f"{t} median ms (tok/s)" for t in tests) + " |")
    print("|---|" + "---:|" * len(tests))
    medians = {}
    for name, per_test in rounds.items():
        medians[name] = {t: statistics.median(v) for t, v in per_test.items()}
        cells = [f"{m:.1f} ({tokens[t] / m * 1e3:.0f})" for t, m in medians[name].items()]
        print(f"| {name} | " + " | ".join(cells) + " |")
    ratio = {t: medians["edgelmm bench"][t] / medians["plain onnxruntime"][t] for t in tests}
    print("| ratio bench / plain | " + " | ".join(f"{r:.3f}" for r in ratio.values()) + " |")
    spread = {n: {t: [round(v, 1) for v in per] for t, per in d.items()} for n, d in rounds.items()}
    print(json.dumps({"medians_ms": medians, "ratio": ratio, "per_round_ms": spread}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
