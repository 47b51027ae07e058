"""One evaluation loop for every model kind: an Answerer turns (image, question) into text; the task scores it.

Answerers: BundleAnswerer (an exported bundle through edgelmm.runtime.Pipeline: onnxruntime, no torch),
edgelmm.evals.torch_answerer.TorchAnswerer (a torch model: registry name, weights dir or HF dir) and PriorAnswerer
(the image-blind answer prior). All see the same examples in the same order.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from edgelmm.errors import SpecError
from edgelmm.evals.tasks import TASKS, EvalTask
from edgelmm.registry import lookup
from edgelmm.runtime.constraint import Choice
from edgelmm.train.data import DATASETS
from edgelmm.train.data.base import Example, normalise_answer


class Answerer(Protocol):
    name: str

    def answer(self, examples: Sequence[Example], max_new_tokens: int, constraint: Choice | None = None
               ) -> list[str]:
        """One answer per example (image + question), greedy; one of ``constraint``'s framed options if given."""
        ...


@dataclasses.dataclass(slots=True)
class EvalReport:
    task: str
    split: str
    model: str
    n: int
    correct: int
    per_kind: dict[str, tuple[int, int]]
    """kind -> (correct, total)."""
    seconds: float
    mistakes: list[dict[str, str]]
    """The first few wrong answers: question, expected, got."""

    @property
    def accuracy(self) -> float:
        return self.correct / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "split": self.split, "model": self.model, "n": self.n, "correct": self.correct,
                "accuracy": round(self.accuracy, 4), "seconds": round(self.seconds, 1),
                "per_kind": {k: {"correct": c, "n": t, "accuracy": round(c / t, 4)}
                             for k, (c, t) in sorted(self.per_kind.items())},
                "mistakes": self.mistakes}

    def summary(self) -> str:
        kinds = "  ".join(f"{k} {c}/{t}" for k, (c, t) in sorted(self.per_kind.items()))
        return (f"{self.task} [{self.split}] {self.model}: exact match {self.correct}/{self.n} = "
                f"{self.accuracy:.1%}  ({kinds})")


def examples(task: EvalTask, split: str, n: int, start: int = 0) -> list[Example]:
    dataset = lookup(DATASETS, task.dataset, what="dataset")
    if n < 1:
        raise SpecError(f"-n must be >= 1, got {n}")
    return [dataset.example(split, i) for i in range(start, start + n)]


def evaluate(answerer: Answerer, task_name: str, *, split: str | None = None, n: int = 500, batch_size: int = 32,
             progress: bool = False, keep_mistakes: int = 10, constrained: bool = False) -> Any:
    """Exact-match accuracy of ``answerer`` on the first ``n`` examples of ``split`` (default: the task's); a task
    with its own ``evaluator`` (tool-selection) returns that evaluator's report. ``constrained``: decode under the
    task's choice set (tasks with an evaluator that supports it)."""
    task = lookup(TASKS, task_name, what="task")
    split = split or task.default_split
    if task.evaluator:
        module, function = task.evaluator.split(":")
        return getattr(importlib.import_module(module), function)(
            answerer, task, split=split, n=n, batch_size=batch_size, progress=progress, constrained=constrained,
            keep_mistakes=keep_mistakes)
    if constrained:
        raise SpecError(f"task '{task.name}' has no constrained mode")
    items = examples(task, split, n)
    started = time.perf_counter()
    per_kind: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0])
    correct, mistakes = 0, []
    bar = _bar(progress, n, f"eval {task.name}")
    for start in range(0, n, batch_size):
        chunk = items[start : start + batch_size]
        for ex, got in zip(chunk, answerer.answer(chunk, task.max_new_tokens)):
            ok = task.score(got, ex)
            correct += ok
            per_kind[ex.kind][0] += ok
            per_kind[ex.kind][1] += 1
            if not ok and len(mistakes) < keep_mistakes:
                mistakes.append({"question": ex.question, "expected": ex.answer, "got": got})
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    return EvalReport(task=task.name, split=split, model=answerer.name, n=n, correct=correct,
                      per_kind={k: (c, t) for k, (c, t) in per_kind.items()},
                      seconds=time.perf_counter() - started, mistakes=mistakes)


def _bar(progress: bool, total: int, desc: str) -> Any:
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="ex", mininterval=2.0)


class BundleAnswerer:
    """An exported bundle, through the torch-free runtime (greedy, the bundle's own prompt rendering)."""

    def __init__(self, bundle: str | Path, threads: int | None = None) -> None:
        from edgelmm.runtime import Pipeline

        self.pipe = Pipeline.load(bundle, threads=threads)
        self.name = f"bundle:{Path(bundle).name}"
        self.decode_steps: list[int] = []
        """Decoder calls after the prefill, one entry per answer given so far."""

    def answer(self, examples: Sequence[Example], max_new_tokens: int, constraint: Choice | None = None
               ) -> list[str]:
        out = []
        for ex in examples:
            res = self.pipe.generate(ex.question, images=[ex.image], max_new_tokens=max_new_tokens,
                                     constraint=constraint)
            self.decode_steps.append(res.metrics.decode_steps)
            out.append(res.text)
        return out


class PriorAnswerer:
    """The image-blind answer prior: for each question, the most frequent answer to it in ``n`` training examples
    (falling back to the most frequent answer of its kind). No model that ignores the image can do better on
    average, so it is the strongest "LM without the image" baseline."""

    def __init__(self, task_name: str, n: int = 20000) -> None:
        task = lookup(TASKS, task_name, what="task")
        source = DATASETS[task.train_dataset or task.dataset]
        by_question: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        by_kind: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
        for i in range(n):
            ex = source.example("train", i)
            by_question[ex.question][normalise_answer(ex.answer)] += 1
            by_kind[ex.kind][normalise_answer(ex.answer)] += 1
        self.by_question = {q: c.most_common(1)[0][0] for q, c in by_question.items()}
        self.by_kind = {k: c.most_common(1)[0][0] for k, c in by_kind.items()}
        self.name = f"answer-prior(n={n})"

    def answer(self, examples: Sequence[Example], max_new_tokens: int, constraint: Choice | None = None
               ) -> list[str]:
        return [self.by_question.get(ex.question) or self.by_kind.get(ex.kind, "") for ex in examples]
