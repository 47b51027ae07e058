"""Timings and memory of one generation, in the units users compare (ms, tokens/s, MB)."""

from __future__ import annotations

import dataclasses
import resource
import sys
from typing import Any


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    Linux: VmHWM from /proc/self/status, the high-water mark of this process's own memory. ``ru_maxrss`` is not
    used there because Linux carries it over from the parent across fork + exec: a child started by a large process
    reports the parent's peak. Elsewhere ru_maxrss (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def current_rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc; falls back to the peak elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        return pages * resource.getpagesize() / 2**20
    except (OSError, ValueError, IndexError):
        return peak_rss_mb()


@dataclasses.dataclass(slots=True)
class Metrics:
    """One generate() call. Times are wall-clock milliseconds; TTFT runs from the call to the first new token."""

    load_ms: float = 0.0
    """Pipeline.load time (verification + sessions), repeated in every result of that pipeline."""
    preprocess_ms: float = 0.0
    vision_ms: float = 0.0
    """Vision encoder (tower + connector) for all images of the call."""
    prefill_ms: float = 0.0
    """Token embedding + decoder over the prompt, up to the first logits."""
    ttft_ms: float = 0.0
    decode_ms: float = 0.0
    """All decode steps after the first token."""
    prompt_tokens: int = 0
    generated_tokens: int = 0
    decode_steps: int = 0
    """Decoder calls after the prefill (one per generated token but the first, unless a constraint skips them)."""
    images: int = 0
    peak_rss_mb: float = 0.0
    providers: dict[str, str] = dataclasses.field(default_factory=dict)
    """Execution provider actually used per graph role."""
    provider_fallbacks: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    """Per graph role, the providers of the profile that were skipped before it, each with the reason."""
    placement: dict[str, dict[str, int]] = dataclasses.field(default_factory=dict)
    """Per graph role, nodes per provider as onnxruntime partitioned them (a partial placement shows CPU too)."""
    profile: str = ""
    """Device profile name ("" when loaded without one)."""
    variant: str = ""
    """Bundle variant the profile picked from a variants directory ("" when a single bundle was given)."""
    memory_estimate_mb: float = 0.0
    """Estimated peak RSS at the pipeline's max context (runtime.budget), checked against the budget before load."""
    memory_budget_mb: float = 0.0
    """The profile's memory budget (0 without a profile)."""
    load_peak_rss_mb: float = 0.0
    """Measured peak RSS right after Pipeline.load; ``peak_rss_mb`` is the peak so far, after this generation."""

    @property
    def prefill_tok_s(self) -> float:
        return self.prompt_tokens / (self.prefill_ms / 1e3) if self.prefill_ms > 0 else 0.0

    @property
    def decode_tok_s(self) -> float:
        steps = self.generated_tokens - 1
        return steps / (self.decode_ms / 1e3) if steps > 0 and self.decode_ms > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["prefill_tok_s"] = self.prefill_tok_s
        out["decode_tok_s"] = self.decode_tok_s
        return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}
