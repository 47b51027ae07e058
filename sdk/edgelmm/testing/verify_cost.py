"""What bundle verification costs at load time, stage by stage, against creating the sessions it protects.

    flock /tmp/edgelmm-timing.lock python -m edgelmm.testing.verify_cost --bundle bundles/smol-vqa --rounds 5

Stages are timed in rotation within each round (manifest, files without and with sha256, graph walk, tokenizer +
template, sessions with one intra-op thread), medians over rounds. Files are in the page cache after the first
round, as they are for every load but the first after boot. The last stdout line is one JSON document.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgelmm.runtime.bundle_files import verify_files, verify_graphs
from edgelmm.runtime.manifest import read_manifest
from edgelmm.runtime.pipeline import load_prompt_builder
from edgelmm.runtime.sessions import SessionConfig, open_cpu_session


def stages(bundle: Path) -> dict[str, Callable[[], Any]]:
    manifest = read_manifest(bundle)
    config = SessionConfig(intra_op_threads=1)
    return {
        "manifest": lambda: read_manifest(bundle),
        "files: sizes": lambda: verify_files(bundle, manifest, check_hashes=False),
        "files: sizes + sha256": lambda: verify_files(bundle, manifest, check_hashes=True),
        "graphs: protobuf walk": lambda: verify_graphs(bundle, manifest),
        "tokenizer + template": lambda: load_prompt_builder(bundle, manifest),
        "sessions (not verification)": lambda: [
            open_cpu_session(bundle / g.file, config) for g in manifest.graphs.values()
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgelmm.testing.verify_cost", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", type=Path, required=True)
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)
    work = stages(args.bundle)
    samples: dict[str, list[float]] = {name: [] for name in work}
    for r in range(args.rounds + 1):  # round 0 warms the page cache and is dropped
        names = list(work)
        names = names[r % len(names) :] + names[: r % len(names)]  # rotate the order every round
        for name in names:
            start = time.perf_counter()
            work[name]()
            if r:
                samples[name].append((time.perf_counter() - start) * 1e3)
    med = {name: statistics.median(v) for name, v in samples.items()}
    verify = med["manifest"] + med["files: sizes + sha256"] + med["graphs: protobuf walk"] + med["tokenizer + template"]
    total = verify + med["sessions (not verification)"]
    size_mb = sum(f.stat().st_size for f in args.bundle.iterdir() if f.is_file()) / 2**20
    print(f"bundle {args.bundle} ({size_mb:.0f} MB), {args.rounds} rounds, medians:")
    print("| stage | median ms |\n|---|---:|")
    for name, value in med.items():
        print(f"| {name} | {value:.1f} |")
    sha_ms = med["files: sizes + sha256"] - med["files: sizes"]
    print(
        f"verification {verify:.0f} ms of a {total:.0f} ms load ({100 * verify / total:.0f}%); sha256 alone"
        f" {sha_ms:.0f} ms ({size_mb / (sha_ms / 1e3):.0f} MB/s)"
    )
    print(
        json.dumps(
            {
                "bundle": str(args.bundle),
                "bundle_mb": round(size_mb, 1),
                "rounds": args.rounds,
                "median_ms": {k: round(v, 1) for k, v in med.items()},
                "verification_ms": round(verify, 1),
                "load_ms": round(total, 1),
                "verification_share": round(verify / total, 3),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
