"""`edgelmm bench`: llama-bench-style timings of a bundle, or a comparison of saved records.

examples:
  edgelmm bench --bundle bundles/smol-vqa                      # img,pp128,tg64,e2e; 1 warmup + 5 repetitions
  edgelmm bench --bundle bundles/smollm2 --tests pp128,tg64 --threads 2 --save fp32.json
  edgelmm bench --bundle bundles/smollm2-int4 --tests pp128,tg64 --threads 2 --save int4.json --format csv
  edgelmm bench --compare fp32.json int4.json --plot fp32-vs-int4.png

The last stdout line is always one JSON document (the record, or the comparison); --json prints only that line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="edgelmm bench", description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--bundle", help="bundle directory to benchmark")
    what.add_argument("--compare", nargs="+", metavar="RECORD",
                      help="saved records (--save files or captured stdout) to compare; the first is the baseline")
    p.add_argument("--profile", default=None, help="device profile name or YAML path, passed to Pipeline.load")
    p.add_argument("--tests", default=None,
                   help="comma-separated: img[<px>], pp<N>, tg<N>, e2e[<N>] (default img,pp128,tg64,e2e; "
                        "no img for a text-only bundle)")
    p.add_argument("--reps", type=int, default=5, help="timed repetitions per test (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs before each test (default 1)")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads per graph (default: every CPU this process may use)")
    p.add_argument("--format", choices=("md", "csv", "jsonl"), default="md", help="table format (default md)")
    p.add_argument("--json", action="store_true", help="print only the JSON record; no table, no progress")
    p.add_argument("--save", metavar="PATH", help="also write the JSON record to PATH")
    p.add_argument("--plot", metavar="PNG", help="draw the record(s) with matplotlib (pip install 'edgelmm[bench]')")
    p.add_argument("--label", default="", help="a name for this record in comparisons (device, build, ...)")
    return p


def _progress(quiet: bool) -> tuple[Any, Any]:
    """A rich progress bar on stderr (a context manager and a callback), or nothing with --json / without rich."""
    if quiet:
        return None, None
    try:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    except ImportError:  # rich is in the [bench] extra; the runtime-only install benchmarks without a bar
        return None, None
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), transient=True)
    task = bar.add_task("bench", total=None)

    def update(test: str, done: int, total: int) -> None:
        bar.update(task, description=f"bench {test}", completed=done, total=total)

    return bar, update


def main(argv: Sequence[str]) -> int:
    args = build_parser().parse_args(list(argv))
    from edgelmm.bench import report  # after parsing: --help stays instant

    if args.compare:
        from edgelmm.bench.compare import compare, to_markdown

        records = [report.load_record(path) for path in args.compare]
        comparison = compare(records)
        if not args.json:
            print(to_markdown(comparison))
        _plot(args.plot, records)
        print(comparison.to_json())
        return 0

    from edgelmm.bench.provenance import available_cpus
    from edgelmm.bench.runner import bench

    bar, update = _progress(args.json)
    threads = args.threads if args.threads is not None else available_cpus()
    kwargs = dict(reps=args.reps, warmup=args.warmup, threads=threads, profile=args.profile, label=args.label)
    if bar is None:
        record = bench(args.bundle, args.tests, **kwargs)
    else:
        with bar:
            record = bench(args.bundle, args.tests, progress=update, **kwargs)
    if args.save:
        report.save_record(record, args.save)
    if not args.json:
        print(report.FORMATS[args.format](record))
    _plot(args.plot, [record])
    print(record.to_json())
    return 0


def _plot(path: str | None, records: list) -> None:
    if path:
        from edgelmm.bench.plots import plot_records

        print(f"plot written to {plot_records(records, path)}", file=sys.stderr)
