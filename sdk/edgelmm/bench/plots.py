"""Bench plots ([bench] extra: matplotlib, imported only when a plot is asked for)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from edgelmm._extras import require
from edgelmm.bench.compare import labels_for
from edgelmm.bench.report import BenchRecord


def plot_records(records: Sequence[BenchRecord], out: str | Path) -> Path:
    """One panel per test: a bar per record at its median time, whiskers at +- one standard deviation.

    Panels rather than one axis because img (ms), pp (tens of ms) and e2e (seconds) share no useful scale.
    """
    matplotlib = require("matplotlib", "bench")
    matplotlib.use("Agg")  # files only: no display on a board or in CI
    import matplotlib.pyplot as plt

    labels = labels_for(records)
    tests: list[str] = []
    for record in records:
        tests += [row.test for row in record.rows if row.test not in tests]
    cols = min(len(tests), 4)
    rows = math.ceil(len(tests) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.0 * rows), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, test in zip(axes.flat, tests):
        # x position = record index, so a record keeps its place and colour in every panel (legend below).
        for i, record in enumerate(records):
            row = next((r for r in record.rows if r.test == test), None)
            if row is not None:
                ax.bar(i, row.median_ms, yerr=row.std_ms, capsize=4, color=colours[i % len(colours)],
                       label=labels[i])
                if row.tokens:
                    ax.annotate(f"{row.tok_s_median:.0f} tok/s", (i, row.median_ms), ha="center", va="bottom",
                                fontsize=7, xytext=(0, 2), textcoords="offset points")
        ax.set_title(test, fontsize=9)
        ax.set_ylabel("median ms")
        ax.set_xticks([])
        ax.set_xlim(-0.6, len(records) - 0.4)
    for ax in list(axes.flat)[len(tests):]:
        ax.set_visible(False)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colours[i % len(colours)]) for i in range(len(records))]
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 3), fontsize=8, frameon=False)
    meta = records[0].meta
    fig.suptitle(f"edgelmm bench: {meta.model} ({meta.cpu_info}, {meta.threads} threads)", fontsize=10)
    fig.tight_layout(rect=(0, 0.06 + 0.03 * (len(labels) // 3), 1, 1))
    out = Path(out)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
