"""Fuzz every loader: only EdgelmmError subclasses, each with a one-line message, may come out.

    python -m edgelmm.testing.fuzz --list
    python -m edgelmm.testing.fuzz                              # every target, 10,000 cases each (nice it)
    python -m edgelmm.testing.fuzz --target prompt --cases 500
    python -m edgelmm.testing.fuzz --engine atheris --target image-bytes --cases 100000   # needs edgelmm[fuzz]

Each case is fed to the loader under test and classified: ``accepted`` (it loaded; the target's property check, if
any, held), ``refused`` (an EdgelmmError with a one-line printable message) or ``uncaught`` (any other exception, a
multi-line message, a broken property, or a case slower than the watchdog). The table counts distinct refusal
messages after masking quoted values and numbers, i.e. how many different ways a loader says no.

Engines: hypothesis (default; derandomized, so a run is reproducible from ``--seed``) for every target, and atheris
(coverage-guided libFuzzer) for targets whose case is plain bytes, one subprocess per target.
The last stdout line is one JSON document with the whole table.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import dataclasses
import faulthandler
import json
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgelmm.errors import EdgelmmError

CASE_TIMEOUT_S = 120
"""Watchdog: a single case running this long is a hang; the process dies with every thread's traceback."""


class FuzzFailure(AssertionError):
    """A case broke the contract; raised in strict mode so hypothesis shrinks it."""


@dataclasses.dataclass(frozen=True, slots=True)
class FuzzTarget:
    """One loader under attack."""

    name: str
    loader: Callable[[Any, Any], Any]
    """(context, case) -> whatever the loader returned. Raises EdgelmmError to refuse."""
    cases: Callable[[Any], Any]
    """context -> hypothesis strategy of cases (built lazily: strategies may need a bundle)."""
    what: str
    seeds: Callable[[Any], Sequence[Any]] = lambda ctx: ()
    """context -> cases always tried first (valid files, known attacks)."""
    check: Callable[[Any, Any, Any], None] | None = None
    """(context, case, result) -> None; raises AssertionError when an accepted case's result is wrong."""
    from_bytes: bool = False
    """The case is ``bytes``: atheris can drive this target."""


@dataclasses.dataclass(slots=True)
class Outcome:
    kind: str
    """accepted | refused | uncaught"""
    detail: str = ""
    ms: float = 0.0


@dataclasses.dataclass(slots=True)
class Tally:
    """What one target did over all its cases."""

    target: str
    engine: str = "hypothesis"
    cases: int = 0
    accepted: int = 0
    refused: int = 0
    uncaught: int = 0
    max_ms: float = 0.0
    seconds: float = 0.0
    messages: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    failures: list[str] = dataclasses.field(default_factory=list)
    """First few uncaught cases: 'what happened <- repr(case)'."""

    def add(self, outcome: Outcome, case: Any) -> None:
        self.cases += 1
        self.max_ms = max(self.max_ms, outcome.ms)
        if outcome.kind == "accepted":
            self.accepted += 1
        elif outcome.kind == "refused":
            self.refused += 1
            self.messages[outcome.detail] += 1
        else:
            self.uncaught += 1
            if len(self.failures) < 20:
                self.failures.append(f"{outcome.detail} <- {_short_repr(case)}")

    def row(self) -> dict[str, Any]:
        return {
            "loader": self.target,
            "engine": self.engine,
            "cases": self.cases,
            "accepted": self.accepted,
            "refused": self.refused,
            "uncaught": self.uncaught,
            "distinct_messages": len(self.messages),
            "max_ms": round(self.max_ms, 1),
            "seconds": round(self.seconds, 1),
            "failures": self.failures,
        }


def _short_repr(value: Any, limit: int = 300) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"


_MASKS = (
    (re.compile(r"'[^']*'|\"[^\"]*\""), "'_'"),
    (re.compile(r"\b[0-9a-f]{8,}\b"), "H"),
    (re.compile(r"-?\d+(\.\d+)?(e[-+]?\d+)?"), "N"),
)


def message_template(exc: BaseException) -> str:
    """``ClassName: message`` with quoted values and numbers masked: one entry per distinct way of refusing."""
    text = str(exc)
    for pattern, repl in _MASKS:
        text = pattern.sub(repl, text)
    return f"{type(exc).__name__}: {text[:160]}"


def one_line_problem(message: str) -> str | None:
    """Why ``message`` is not a printable one-liner, or None if it is."""
    if not message.strip():
        return "empty message"
    if len(message.splitlines()) != 1:
        return "multi-line message"
    bad = [c for c in message if not (c.isprintable() or c == " ")]
    return f"unprintable characters {''.join(bad)[:10]!r} in message" if bad else None


def run_case(target: FuzzTarget, ctx: Any, case: Any) -> Outcome:
    """Feed one case and classify what came out."""
    start = time.perf_counter()
    faulthandler.dump_traceback_later(CASE_TIMEOUT_S, exit=True)
    try:
        result = target.loader(ctx, case)
        if target.check is not None:
            target.check(ctx, case, result)
        outcome = Outcome("accepted")
    except EdgelmmError as exc:
        problem = one_line_problem(str(exc))
        outcome = (
            Outcome("uncaught", f"{type(exc).__name__} with a {problem}")
            if problem
            else Outcome("refused", message_template(exc))
        )
    except AssertionError as exc:
        outcome = Outcome("uncaught", f"property broken: {str(exc)[:200]}")
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - the point: anything else (Rust panics included) is a finding
        first = str(exc).splitlines()[0][:200] if str(exc) else ""
        outcome = Outcome("uncaught", f"{type(exc).__module__}.{type(exc).__name__}: {first}")
    finally:
        faulthandler.cancel_dump_traceback_later()
    outcome.ms = (time.perf_counter() - start) * 1e3
    return outcome


def run_hypothesis(
    target: FuzzTarget, ctx: Any, cases: int, *, seed: int = 0, strict: bool = False, deadline_ms: float | None = None
) -> Tally:
    """Seeds first, then ``cases`` generated cases. ``strict`` raises on the first failure (tests: shrinks it)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as fix_seed

    tally = Tally(target.name)
    start = time.perf_counter()

    def feed(case: Any) -> None:
        outcome = run_case(target, ctx, case)
        tally.add(outcome, case)
        if strict and outcome.kind == "uncaught":
            raise FuzzFailure(f"{target.name}: {outcome.detail} <- {_short_repr(case, 2000)}")

    for case in target.seeds(ctx):
        feed(case)
    phases = [Phase.generate, Phase.shrink] if strict else [Phase.generate]

    @fix_seed(seed)
    @settings(
        max_examples=cases,
        database=None,
        deadline=deadline_ms,
        phases=phases,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        print_blob=strict,
    )
    @given(target.cases(ctx))
    def generated(case: Any) -> None:
        feed(case)

    generated()
    tally.seconds = time.perf_counter() - start
    return tally


def run_atheris(target: FuzzTarget, ctx: Any, runs: int, *, seed: int = 0) -> None:
    """libFuzzer, coverage-guided over every loaded Python module; exits the process when done (or on a crash)."""
    from edgelmm._extras import require

    atheris = require("atheris", "fuzz")
    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{target.name}-"))
    for i, case in enumerate(target.seeds(ctx)):
        (corpus / f"seed-{i}").write_bytes(case)

    def one(data: bytes) -> None:
        outcome = run_case(target, ctx, data)
        if outcome.kind == "uncaught":
            raise FuzzFailure(f"{target.name}: {outcome.detail}")

    atheris.Setup(
        [sys.argv[0], f"-runs={runs}", f"-seed={seed + 1}", "-max_len=65536", "-rss_limit_mb=4096", str(corpus)], one
    )
    atheris.Fuzz()


def _atheris_subprocess(name: str, runs: int, seed: int, bundle_args: list[str]) -> Tally:
    cmd = [
        sys.executable,
        "-m",
        "edgelmm.testing.fuzz",
        "--engine",
        "atheris-child",
        "--target",
        name,
        "--cases",
        str(runs),
        "--seed",
        str(seed),
        *bundle_args,
    ]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    tally = Tally(name, engine="atheris", seconds=time.perf_counter() - start)
    done = re.search(r"Done (\d+) runs", proc.stderr)
    tally.cases = int(done.group(1)) if done else 0
    if proc.returncode != 0:
        tally.uncaught = 1
        tally.failures = [line for line in proc.stderr.splitlines() if "FuzzFailure" in line or "Error" in line][:5]
    return tally


# -- report -------------------------------------------------------------------------------------------------------

COLUMNS = ("loader", "engine", "cases", "accepted", "refused", "uncaught", "distinct_messages", "max_ms", "seconds")


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r[c]) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


# -- command line -------------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m edgelmm.testing.fuzz",
        description=__doc__.split("\n")[0],
        epilog=__doc__.split("\n", 2)[2],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", action="append", default=None, help="a target name (repeatable; default: all)")
    p.add_argument("--cases", type=int, default=10_000, help="generated cases per target (after the seeds)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine", choices=("hypothesis", "atheris", "atheris-child"), default="hypothesis")
    p.add_argument("--bundle", type=Path, default=None, help="a LLaVA bundle (default: tiny-random, built once)")
    p.add_argument("--text-bundle", type=Path, default=None, help="a text-only bundle (default: tiny-random-lm)")
    p.add_argument("--list", action="store_true", help="print the targets and exit")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from edgelmm.registry import lookup

    args = build_parser().parse_args(argv)
    if args.engine == "atheris-child":  # coverage only where it helps: our code, Pillow's plugins, json, jinja2
        from edgelmm._extras import require

        with require("atheris", "fuzz").instrument_imports(include=["edgelmm", "PIL", "json", "jinja2"]):
            from PIL import Image

            from edgelmm.testing.fuzz_targets import FUZZ_TARGETS, FuzzContext

            Image.init()
    else:
        from edgelmm.testing.fuzz_targets import FUZZ_TARGETS, FuzzContext
    if args.list:
        for name, target in FUZZ_TARGETS.items():
            print(f"{name:<20} {'bytes ' if target.from_bytes else ''}{target.what}")
        return 0
    names = args.target or list(FUZZ_TARGETS)
    targets = [lookup(FUZZ_TARGETS, n, what="fuzz target") for n in names]
    with tempfile.TemporaryDirectory(prefix="edgelmm-fuzz-") as scratch:
        ctx = FuzzContext.create(Path(scratch), bundle=args.bundle, text_bundle=args.text_bundle)
        if args.engine == "atheris-child":
            run_atheris(targets[0], ctx, args.cases, seed=args.seed)
            return 0
        bundle_args = ["--bundle", str(ctx.bundle), "--text-bundle", str(ctx.text_bundle)]
        rows = []
        for target in targets:
            if args.engine == "atheris":
                if not target.from_bytes:
                    continue
                tally = _atheris_subprocess(target.name, args.cases, args.seed, bundle_args)
            else:
                with contextlib.redirect_stdout(sys.stderr):  # loaders that print must not break the table
                    tally = run_hypothesis(target, ctx, args.cases, seed=args.seed)
            rows.append(tally.row())
            print(
                f"[fuzz] {target.name}: {tally.cases} cases, {tally.uncaught} uncaught, {tally.seconds:.0f} s",
                file=sys.stderr,
            )
            for failure in tally.failures:
                print(f"[fuzz]   {failure}", file=sys.stderr)
    print(markdown(rows))
    print(json.dumps({"fuzz": rows, "seed": args.seed, "engine": args.engine}))
    return 1 if any(r["uncaught"] for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
