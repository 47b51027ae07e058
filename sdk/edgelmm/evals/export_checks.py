"""What an export recipe needs from the evaluation side: dataset/task names, calibration samples, task accuracy.

Export stays free of the training layer (tests/test_import_boundary.py); ``edgelmm export --recipe`` wires these in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgelmm.errors import EdgelmmError, SpecError
from edgelmm.evals.tasks import TASKS
from edgelmm.registry import lookup
from edgelmm.train.data import DATASETS


def check_names(recipe: Any) -> None:
    """Every dataset and task name ``recipe`` (an ExportRecipe) uses exists; all problems in one SpecError."""
    problems = []
    wanted = []
    if recipe.calibration is not None:
        wanted.append((DATASETS, recipe.calibration.dataset, "calibration dataset"))
    if recipe.validation.task is not None:
        wanted.append((TASKS, recipe.validation.task, "validation task"))
    for registry, name, what in wanted:
        try:
            lookup(registry, name, what=what)
        except EdgelmmError as exc:
            problems.append(str(exc))
    if recipe.calibration is not None and recipe.calibration.dataset in DATASETS:
        splits = DATASETS[recipe.calibration.dataset].splits
        if recipe.calibration.split not in splits:
            problems.append(f"calibration split '{recipe.calibration.split}' is not valid; valid: {', '.join(splits)}")
    if problems:
        raise SpecError(f"recipe '{recipe.name}': " + "; ".join(problems))


def calibration_samples(dataset: str, split: str, n: int) -> list[tuple[Any, str]]:
    """The first ``n`` (image, question) pairs of a built-in dataset's split: real inputs of the model's task."""
    source = lookup(DATASETS, dataset, what="dataset")
    return [(ex.image, ex.question) for ex in (source.example(split, i) for i in range(n))]


def task_accuracy(bundle: Path, task: str, split: str, n: int) -> dict[str, Any]:
    """Exact-match accuracy of the bundle at ``bundle`` on ``n`` examples of ``task`` through the runtime."""
    from edgelmm.evals.runner import BundleAnswerer, evaluate

    report = evaluate(BundleAnswerer(bundle, threads=1), task, split=split, n=n)
    out = report.to_dict()
    return {k: out[k] for k in ("task", "split", "n", "correct", "accuracy", "per_kind")}
