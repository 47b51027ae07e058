"""The bench record: one schema, printed as a markdown table, csv or jsonl; saved and re-read as one JSON document.

The last line ``edgelmm bench`` prints is always the whole record as one JSON document (nanochat's infer_bench), so
``edgelmm bench ... | tail -1 > a.json`` saves a record that ``edgelmm bench --compare`` reads back.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgelmm.errors import InputError, SpecError
from edgelmm.runtime.metrics import peak_rss_mb
from edgelmm.specs import SPEC, from_dict, to_dict

SCHEMA = "edgelmm-bench"
SCHEMA_VERSION = 1
MAX_RECORD_BYTES = 64 * 2**20


@dataclasses.dataclass(slots=True)
class Sample:
    """One timed repetition of one test."""

    ms: float
    """The timed quantity in milliseconds (what the test name says: encode, prefill, decode, or the whole call)."""
    tokens: int = 0
    """Tokens processed in ``ms`` (pp: prompt tokens, tg: decode steps); 0 when tokens/s means nothing."""
    stages: dict[str, float] = dataclasses.field(default_factory=dict)
    """Per-stage timings of this repetition (e2e: vision_ms, prefill_ms, ttft_ms, decode_ms, ...)."""


@dataclasses.dataclass(**SPEC)
class BenchRow:
    """One test over its repetitions (warmup excluded). Standard deviations are sample stdevs (n - 1)."""

    test: str
    """As requested, llama-bench style: img / img<px>, pp<N>, tg<N>, e2e / e2e<N>."""
    kind: str
    n: int
    """Image side in pixels (img) or tokens (pp: prompt tokens, tg and e2e: generated tokens)."""
    samples_ms: tuple[float, ...]
    mean_ms: float
    std_ms: float
    median_ms: float
    tokens: int = 0
    tok_s_mean: float = 0.0
    tok_s_std: float = 0.0
    tok_s_median: float = 0.0
    stages: dict[str, float] = dataclasses.field(default_factory=dict)
    """Median over repetitions of each stage timing."""
    peak_rss_mb: float = 0.0
    """Peak RSS of the bench process after this test (a running maximum: earlier tests count)."""

    @classmethod
    def from_samples(cls, test: str, kind: str, n: int, samples: Sequence[Sample]) -> BenchRow:
        ms = [s.ms for s in samples]
        tokens = samples[0].tokens
        rates = [s.tokens / (s.ms / 1e3) for s in samples if s.ms > 0] if tokens else []
        stage_names = samples[0].stages.keys()
        return cls(
            test=test, kind=kind, n=n, samples_ms=tuple(round(v, 4) for v in ms),
            mean_ms=_r(statistics.fmean(ms)), std_ms=_r(_stdev(ms)), median_ms=_r(statistics.median(ms)),
            tokens=tokens,
            tok_s_mean=_r(statistics.fmean(rates)) if rates else 0.0,
            tok_s_std=_r(_stdev(rates)) if rates else 0.0,
            tok_s_median=_r(statistics.median(rates)) if rates else 0.0,
            stages={k: _r(statistics.median(s.stages[k] for s in samples)) for k in stage_names},
            peak_rss_mb=_r(peak_rss_mb()),
        )


@dataclasses.dataclass(**SPEC)
class BenchMeta:
    """What was measured, where, with which code. One per record; repeated in every csv / jsonl row."""

    bundle: str
    model: str
    precision: str
    """The graphs' precision: one value, or role=precision pairs when they differ."""
    model_bytes: int
    """Bytes of the ONNX graphs and their external data (tokenizer and manifest excluded)."""
    threads: int
    providers: dict[str, str]
    """Execution provider actually used, per graph role."""
    reps: int
    warmup: int
    load_ms: float
    """Pipeline.load: bundle verification (sha256 of every file) and session creation. Not part of any test."""
    edgelmm_version: str
    git_commit: str
    onnxruntime_version: str
    python_version: str
    cpu_info: str
    cpu_count: int
    arch: str
    os: str
    date: str
    device_profile: str | None = None
    bundle_git_commit: str = "unknown"
    """The commit that exported the bundle (manifest provenance)."""
    peak_rss_mb: float = 0.0
    label: str = ""
    """Free text from --label (device name, "emulated", ...), used as the record's name in comparisons."""


@dataclasses.dataclass(**SPEC)
class BenchRecord:
    schema: str
    schema_version: int
    meta: BenchMeta
    rows: tuple[BenchRow, ...]

    def to_json(self) -> str:
        """The record as one line of JSON."""
        return json.dumps(to_dict(self), separators=(",", ":"))


def _r(value: float) -> float:
    return round(value, 3)


def _stdev(values: Sequence[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


# ----------------------------------------------------------------------------------------------------------------
# Text forms


def fmt_num(value: float) -> str:
    """3 significant digits at least, no exponent: 0.512, 12.3, 1037."""
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    return f"{value:.{max(0, 2 - int(math.floor(math.log10(abs(value)))))}f}"


def stage_summary(row: BenchRow) -> str:
    """The stage medians worth reading in a table cell (e2e), e.g. "vision 4.1 ms, TTFT 120 ms, decode 51 tok/s"."""
    names = {"vision_ms": ("vision", "ms"), "ttft_ms": ("TTFT", "ms"), "prefill_tok_s": ("prefill", "tok/s"),
             "decode_tok_s": ("decode", "tok/s")}
    shown = [(label, unit, row.stages[k]) for k, (label, unit) in names.items() if k in row.stages]
    return ", ".join(f"{label} {fmt_num(value)} {unit}" for label, unit, value in shown)


def meta_lines(meta: BenchMeta) -> list[str]:
    providers = ", ".join(f"{role}={p.removesuffix('ExecutionProvider')}" for role, p in meta.providers.items())
    return [
        f"bundle `{meta.bundle}` ({meta.model}, {meta.precision}, {meta.model_bytes / 1e6:.1f} MB), "
        f"profile {meta.device_profile or 'none'}, providers {providers}",
        f"{meta.cpu_info} ({meta.arch}, {meta.cpu_count} CPUs), {meta.threads} threads, {meta.os}",
        f"edgelmm {meta.edgelmm_version} ({meta.git_commit[:12]}), onnxruntime {meta.onnxruntime_version}, "
        f"python {meta.python_version}, {meta.date}" + (f", label: {meta.label}" if meta.label else ""),
        f"{meta.reps} repetitions after {meta.warmup} warmup; load {fmt_num(meta.load_ms)} ms; "
        f"peak RSS {fmt_num(meta.peak_rss_mb)} MB",
    ]


def to_markdown(record: BenchRecord) -> str:
    lines = [*(f"- {line}" for line in meta_lines(record.meta)), ""]
    header = ("test", "t (ms) mean ± std", "median ms", "tok/s mean ± std", "median tok/s", "peak RSS MB",
              "stages (median)")
    lines += ["| " + " | ".join(header) + " |", "|---|---:|---:|---:|---:|---:|---|"]
    for row in record.rows:
        rate = f"{fmt_num(row.tok_s_mean)} ± {fmt_num(row.tok_s_std)}" if row.tokens else "-"
        lines.append(
            f"| {row.test} | {fmt_num(row.mean_ms)} ± {fmt_num(row.std_ms)} | {fmt_num(row.median_ms)} | {rate} | "
            f"{fmt_num(row.tok_s_median) if row.tokens else '-'} | {fmt_num(row.peak_rss_mb)} | {stage_summary(row)} |"
        )
    return "\n".join(lines)


def flat_rows(record: BenchRecord) -> list[dict[str, Any]]:
    """One self-contained dict per test: the meta fields, then the row's (llama-bench's csv / jsonl shape)."""
    meta = to_dict(record.meta)
    return [{**meta, **to_dict(row)} for row in record.rows]


def to_csv(record: BenchRecord) -> str:
    rows = flat_rows(record)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]) if rows else [], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in row.items()})
    return out.getvalue().rstrip("\n")


def to_jsonl(record: BenchRecord) -> str:
    return "\n".join(json.dumps(row, separators=(",", ":")) for row in flat_rows(record))


FORMATS = {"md": to_markdown, "csv": to_csv, "jsonl": to_jsonl}


# ----------------------------------------------------------------------------------------------------------------
# Saved records


def parse_record(data: Any, *, where: str) -> BenchRecord:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise InputError(f"{where} is not an edgelmm bench record (no \"schema\": \"{SCHEMA}\")")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{where}: bench record schema_version {data.get('schema_version')!r:.20} is not "
                         f"{SCHEMA_VERSION}; re-run edgelmm bench with this version")
    try:
        return from_dict(BenchRecord, data, where=where)
    except SpecError as exc:
        raise InputError(str(exc)) from None


def load_record(path: str | Path) -> BenchRecord:
    """A record saved with ``--save``, or any captured ``edgelmm bench`` stdout (its last line is the record)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            raise InputError(f"bench record '{path}' is larger than {MAX_RECORD_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"bench record '{path}' does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"bench record '{path}' cannot be read ({exc})") from None
    lines = [line for line in text.splitlines() if line.strip()]
    for candidate in (text, lines[-1] if lines else ""):
        try:
            return parse_record(json.loads(candidate), where=f"'{path}'")
        except json.JSONDecodeError:
            continue
    raise InputError(f"bench record '{path}' holds no JSON record (neither the file nor its last line)")


def save_record(record: BenchRecord, path: str | Path) -> None:
    """Write the record as one JSON document, atomically (a temporary file renamed into place)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(record.to_json() + "\n", encoding="utf-8")
    tmp.replace(path)
