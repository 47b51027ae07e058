"""What ``Pipeline.load`` will do on a device, decided before any onnxruntime session exists.

Given a bundle directory (or a directory of bundle variants, one subdirectory each) and a device profile, pick the
variant, estimate its memory at the profile's context and refuse it if it exceeds the budget::

    bundles/smollm2/            a variants directory
      fp32/manifest.json ...    each subdirectory is a complete bundle
      int8/  int4/  a16w8/

The best variant is the one whose precision comes first in ``profile.precision`` among those that fit the budget and
``max_visual_tokens`` (ties: the smaller estimate). ``profile.variant`` pins one by name.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from edgelmm.errors import BudgetError, BundleError
from edgelmm.registry import lookup
from edgelmm.runtime.budget import MemoryEstimate, estimate_memory, manifest_precision
from edgelmm.runtime.manifest import MANIFEST_NAME, Manifest, read_manifest
from edgelmm.runtime.profile import DeviceProfile


@dataclasses.dataclass(frozen=True, slots=True)
class LoadPlan:
    """The bundle to load and what it should cost; ``variant`` is None when a single bundle was given."""

    root: Path
    manifest: Manifest
    estimate: MemoryEstimate
    profile: DeviceProfile | None
    variant: str | None = None
    rejected: tuple[str, ...] = ()
    """Variants passed over, each with the reason."""

    @property
    def context(self) -> int:
        return self.estimate.context

    def summary(self) -> dict[str, object]:
        """Plain data for ``edgelmm run --dry-run`` and logs."""
        return {
            "bundle": str(self.root),
            "variant": self.variant,
            "precision": manifest_precision(self.manifest),
            "profile": self.profile.name if self.profile else None,
            "memory_budget_mb": self.profile.memory_budget_mb if self.profile else None,
            "memory_estimate": self.estimate.to_dict(),
            "rejected_variants": list(self.rejected),
        }


def is_variants_dir(path: Path) -> bool:
    """A directory without a manifest whose subdirectories hold bundles."""
    return path.is_dir() and not (path / MANIFEST_NAME).exists() and bool(variant_dirs(path))


def variant_dirs(path: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(path.iterdir()) if p.is_dir() and not p.name.startswith(".")
            and (p / MANIFEST_NAME).is_file()}


def context_for(manifest: Manifest, profile: DeviceProfile | None) -> int:
    """Tokens (prompt + generated) this pipeline allows: the bundle's cap, lowered by the profile's."""
    cap = manifest.text.max_context
    return min(cap, profile.max_context) if profile else cap


def estimate_for(manifest: Manifest, profile: DeviceProfile | None) -> MemoryEstimate:
    chunk = profile.prefill_chunk if profile else None
    return estimate_memory(manifest, context=context_for(manifest, profile), prefill_chunk=chunk)


def plan_load(bundle_dir: str | os.PathLike[str], profile: DeviceProfile | None) -> LoadPlan:
    """Choose the bundle (or variant) for ``profile`` and check it fits; raises BudgetError with both numbers."""
    root = Path(bundle_dir)
    if is_variants_dir(root):
        if profile is None:
            raise BundleError(f"'{root}' holds bundle variants ({', '.join(variant_dirs(root))}); give a device"
                              " profile to choose one, or pass one variant's directory")
        return _choose_variant(root, profile)
    manifest = read_manifest(root)
    plan = LoadPlan(root=root, manifest=manifest, estimate=estimate_for(manifest, profile), profile=profile)
    if profile is not None:
        problem = _misfit(plan)
        if problem:
            raise BudgetError(f"bundle '{root.name}' {problem}{_hint(plan)}")
    return plan


def _misfit(plan: LoadPlan) -> str | None:
    """Why the planned bundle does not fit its profile (a clause after the bundle's name), or None."""
    profile, manifest, estimate = plan.profile, plan.manifest, plan.estimate
    if profile is None:
        return None
    if estimate.total_mb > profile.memory_budget_mb:
        return f"needs ~{estimate.summary()} but profile '{profile.name}' allows {profile.memory_budget_mb} MB"
    tokens = manifest.text.num_image_tokens if manifest.has_vision else 0
    if tokens > profile.max_visual_tokens:
        return (f"makes {tokens} visual tokens per image but profile '{profile.name}' allows"
                f" {profile.max_visual_tokens} (max_visual_tokens)")
    return None


def _candidates(root: Path, profile: DeviceProfile) -> tuple[list[LoadPlan], list[str]]:
    """Every readable variant under ``root`` as a plan, and the reasons others could not be read."""
    plans, rejected = [], []
    for name, path in variant_dirs(root).items():
        try:
            manifest = read_manifest(path)
        except BundleError as exc:
            rejected.append(f"'{name}' is unreadable ({exc})")
            continue
        plans.append(LoadPlan(root=path, manifest=manifest, estimate=estimate_for(manifest, profile),
                              profile=profile, variant=name))
    return plans, rejected


def _choose_variant(root: Path, profile: DeviceProfile) -> LoadPlan:
    plans, rejected = _candidates(root, profile)
    if profile.variant is not None:
        lookup({p.variant: p for p in plans}, profile.variant, what=f"bundle variant in '{root}'")
        plans = [p for p in plans if p.variant == profile.variant]
    preference = [str(p) for p in profile.precision]
    fitting = []
    for plan in plans:
        precision = manifest_precision(plan.manifest)
        problem = _misfit(plan)
        if precision not in preference and profile.variant is None:
            rejected.append(f"'{plan.variant}' is {precision}, not in the profile's precision list")
        elif problem:
            rejected.append(f"'{plan.variant}' {problem}")
        else:
            fitting.append(plan)
    if not fitting:
        raise BudgetError(f"no bundle variant in '{root}' fits profile '{profile.name}'"
                          f" (budget {profile.memory_budget_mb} MB): " + "; ".join(rejected))
    rank = {p: i for i, p in enumerate(preference)}
    best = min(fitting, key=lambda p: (rank.get(manifest_precision(p.manifest), len(rank)), p.estimate.total_mb))
    others = [f"'{p.variant}' fits but ranks lower" for p in fitting if p is not best]
    return dataclasses.replace(best, rejected=tuple(rejected + others))


def _hint(plan: LoadPlan) -> str:
    """What would fit instead: a sibling variant (when the bundle sits in a variants directory) or a shorter context."""
    profile, root = plan.profile, plan.root.resolve()
    assert profile is not None  # noqa: S101 - only called for a misfit, which needs a profile
    parent = root.parent
    if is_variants_dir(parent):
        preferred = {str(x) for x in profile.precision}
        fits = [p for p in _candidates(parent, profile)[0] if p.root.resolve() != root and _misfit(p) is None
                and manifest_precision(p.manifest) in preferred]
        if fits:
            best = min(fits, key=lambda p: p.estimate.total_mb)
            return f"; variant '{best.variant}' would fit (~{best.estimate.total_mb:.0f} MB)"
    context = _largest_fitting_context(plan.manifest, profile)
    if context:
        return f"; it would fit with max_context <= {context}"
    return "; no variant or context of it fits"


def _largest_fitting_context(manifest: Manifest, profile: DeviceProfile) -> int | None:
    """The longest context (>= 64 tokens) at which ``manifest`` fits the budget, by bisection on the estimate."""
    def fits(context: int) -> bool:
        estimate = estimate_memory(manifest, context=context, prefill_chunk=profile.prefill_chunk)
        return estimate.total_mb <= profile.memory_budget_mb

    low, high = 64, context_for(manifest, profile)
    if not fits(low):
        return None
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low
