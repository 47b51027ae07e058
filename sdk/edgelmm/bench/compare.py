"""Saved bench records side by side: precision A vs B, device A vs B. Reads records; never re-runs anything."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from edgelmm.bench.report import BenchRecord, BenchRow, fmt_num
from edgelmm.errors import InputError

DIFF_FIELDS = ("label", "model", "precision", "model_bytes", "device_profile", "providers", "cpu_info", "arch",
               "threads", "onnxruntime_version", "edgelmm_version", "git_commit")
"""Meta fields shown in the comparison header when they differ between records."""


@dataclasses.dataclass(frozen=True, slots=True)
class CompareRow:
    test: str
    rows: tuple[BenchRow | None, ...]
    """This test's row in each record (None where a record lacks it)."""

    def ratios(self) -> tuple[float | None, ...]:
        """Speed of each record relative to the first: baseline median time / this median time (> 1: faster)."""
        base = self.rows[0]
        return tuple(
            round(base.median_ms / row.median_ms, 4) if base and row and row.median_ms > 0 else None
            for row in self.rows
        )


@dataclasses.dataclass(frozen=True, slots=True)
class Comparison:
    labels: tuple[str, ...]
    differs: dict[str, tuple[object, ...]]
    rows: tuple[CompareRow, ...]

    def to_dict(self) -> dict[str, object]:
        return {
            "schema": "edgelmm-bench-compare",
            "labels": list(self.labels),
            "baseline": self.labels[0],
            "differs": {k: list(v) for k, v in self.differs.items()},
            "rows": [
                {
                    "test": r.test,
                    "median_ms": [row.median_ms if row else None for row in r.rows],
                    "std_ms": [row.std_ms if row else None for row in r.rows],
                    "tok_s_median": [row.tok_s_median if row and row.tokens else None for row in r.rows],
                    "speedup_vs_baseline": list(r.ratios()),
                }
                for r in self.rows
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"))


def labels_for(records: Sequence[BenchRecord]) -> tuple[str, ...]:
    """``--label`` when given, else "model precision @ cpu"; numbered when two would read the same."""
    raw = [r.meta.label or f"{r.meta.model} {r.meta.precision} @ {r.meta.cpu_info} x{r.meta.threads}" for r in records]
    return tuple(f"#{i + 1} {label}" if raw.count(label) > 1 else label for i, label in enumerate(raw))


def compare(records: Sequence[BenchRecord]) -> Comparison:
    """Align ``records`` by test name (the first record is the baseline; its test order is kept)."""
    if len(records) < 2:
        raise InputError(f"--compare needs two or more records, got {len(records)}")
    metas = [dataclasses.asdict(r.meta) for r in records]
    differs = {k: tuple(m[k] for m in metas) for k in DIFF_FIELDS if any(m[k] != metas[0][k] for m in metas)}
    order: list[str] = []
    for record in records:
        order += [row.test for row in record.rows if row.test not in order]
    by_test = [{row.test: row for row in record.rows} for record in records]
    rows = tuple(CompareRow(test, tuple(tests.get(test) for tests in by_test)) for test in order)
    return Comparison(labels_for(records), differs, rows)


def _cell(row: BenchRow | None) -> str:
    if row is None:
        return "-"
    rate = f" ({fmt_num(row.tok_s_median)})" if row.tokens else ""
    return f"{fmt_num(row.median_ms)} ± {fmt_num(row.std_ms)}{rate}"


def to_markdown(comparison: Comparison) -> str:
    labels = comparison.labels
    lines = [f"- baseline: {labels[0]}"]
    lines += [f"- {k}: " + " | ".join(str(v) for v in values) for k, values in comparison.differs.items()]
    header = " | ".join(f"{label} median ms (tok/s)" for label in labels)
    ratios = " | ".join(f"{label} vs baseline" for label in labels[1:])
    lines += ["", f"| test | {header} | {ratios} |", "|---|" + "---:|" * (2 * len(labels) - 1)]
    for r in comparison.rows:
        cells = [_cell(row) for row in r.rows]
        speed = [f"{x:.2f}x" if x is not None else "-" for x in r.ratios()[1:]]
        lines.append(f"| {r.test} | " + " | ".join(cells + speed) + " |")
    lines.append("")
    lines.append("Speed ratios are baseline median time / median time: above 1 is faster than the baseline.")
    return "\n".join(lines)
