"""`edgelmm eval --task tool-selection`: MLLM-Tool's three metrics, by ambiguity type and input type (torch-free).

- accuracy: the answer's ``api_name`` is in the example's valid set (any id of any tool that serves it);
- hallucination rate: the answer parses but names a tool that is not in the catalog;
- format accuracy: the answer parses as ``{"api_name": "<string>"}``.

With ``constrained=True`` the answerer decodes under ``Choice(catalog ids)`` (runtime/constraint.py for bundles, the
same trie as transformers' ``prefix_allowed_tokens_fn`` for torch models). Bundles also report the mean number of
decoder calls after the prefill per answer (``decode_steps``).
"""

from __future__ import annotations

import collections
import dataclasses
import time
from typing import Any

from edgelmm.evals.runner import Answerer, _bar, examples
from edgelmm.evals.tasks import EvalTask
from edgelmm.runtime.constraint import Choice
from edgelmm.train.data.tool_selection import NONE, tool_of
from edgelmm.train.data.tools import load_catalog


def catalog_choice() -> Choice:
    """Every catalog id inside MLLM-Tool's JSON frame."""
    return Choice(load_catalog().ids)


@dataclasses.dataclass(slots=True)
class Tally:
    n: int = 0
    correct: int = 0
    formatted: int = 0
    hallucinated: int = 0

    def add(self, correct: bool, formatted: bool, hallucinated: bool) -> None:
        self.n += 1
        self.correct += correct
        self.formatted += formatted
        self.hallucinated += hallucinated

    def to_dict(self) -> dict[str, Any]:
        n = max(self.n, 1)
        return {"n": self.n, "accuracy": round(self.correct / n, 4), "format_accuracy": round(self.formatted / n, 4),
                "hallucination_rate": round(self.hallucinated / n, 4)}

    def line(self) -> str:
        n = max(self.n, 1)
        return (f"accuracy {self.correct / n:.1%}  hallucination {self.hallucinated / n:.1%}  "
                f"format {self.formatted / n:.1%}  (n={self.n})")


@dataclasses.dataclass(slots=True)
class ToolReport:
    task: str
    split: str
    model: str
    constrained: bool
    overall: Tally
    by_ambiguity: dict[str, Tally]
    """"none" plus each ambiguity type; "ambiguous" pools the types."""
    by_input: dict[str, Tally]
    by_intent: dict[str, Tally]
    """Per intent (the example's ``kind``: "read", "depth", "sentiment", "unknown", ...)."""
    seconds: float
    decode_steps: float | None
    """Mean decoder calls after the prefill per answer (bundles only)."""
    mistakes: list[dict[str, Any]]

    @property
    def n(self) -> int:
        return self.overall.n

    @property
    def accuracy(self) -> float:
        return self.overall.correct / max(self.overall.n, 1)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "split": self.split, "model": self.model, "constrained": self.constrained,
                **self.overall.to_dict(), "mean_decode_steps": self.decode_steps, "seconds": round(self.seconds, 1),
                "by_ambiguity": {k: t.to_dict() for k, t in sorted(self.by_ambiguity.items())},
                "by_input": {k: t.to_dict() for k, t in sorted(self.by_input.items())},
                "by_intent": {k: t.to_dict() for k, t in sorted(self.by_intent.items())}, "mistakes": self.mistakes}

    def summary(self) -> str:
        how = "constrained" if self.constrained else "free"
        steps = f"  decode steps/answer {self.decode_steps:.2f}" if self.decode_steps is not None else ""
        lines = [f"{self.task} [{self.split}] {self.model} ({how}): {self.overall.line()}{steps}"]
        lines += [f"  ambiguity {k:<10} {t.line()}" for k, t in sorted(self.by_ambiguity.items())]
        lines += [f"  input     {k:<10} {t.line()}" for k, t in sorted(self.by_input.items())]
        lines += [f"  intent    {k:<10} {t.line()}" for k, t in sorted(self.by_intent.items())]
        return "\n".join(lines)


def evaluate_tools(answerer: Answerer, task: EvalTask, *, split: str, n: int, batch_size: int = 32,
                   progress: bool = False, constrained: bool = False, keep_mistakes: int = 10) -> ToolReport:
    """Score ``answerer`` on the first ``n`` examples of ``split`` of the task's dataset."""
    catalog = load_catalog()
    known = set(catalog.ids)
    choice = catalog_choice() if constrained else None
    items = examples(task, split, n)
    overall = Tally()
    by_ambiguity: dict[str, Tally] = collections.defaultdict(Tally)
    by_input: dict[str, Tally] = collections.defaultdict(Tally)
    by_intent: dict[str, Tally] = collections.defaultdict(Tally)
    mistakes: list[dict[str, Any]] = []
    recorded = getattr(answerer, "decode_steps", None)  # bundles append one count per answer
    first = len(recorded) if recorded is not None else 0
    started = time.perf_counter()
    bar = _bar(progress, n, f"eval {task.name}")
    for start in range(0, n, batch_size):
        chunk = items[start : start + batch_size]
        answers = answerer.answer(chunk, task.max_new_tokens, constraint=choice)
        for ex, got in zip(chunk, answers):
            tool = tool_of(got)
            score = (tool in ex.valid, tool is not None, tool is not None and tool not in known)
            for tally in (overall, by_ambiguity[ex.ambiguity], by_input[ex.input_type], by_intent[ex.kind]):
                tally.add(*score)
            if ex.ambiguity != NONE:
                by_ambiguity["ambiguous"].add(*score)
            if not score[0] and len(mistakes) < keep_mistakes:
                mistakes.append({"question": ex.question, "input_type": ex.input_type, "valid": list(ex.tasks),
                                 "got": got})
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    steps = recorded[first:] if recorded is not None else []
    return ToolReport(task=task.name, split=split, model=answerer.name, constrained=constrained, overall=overall,
                      by_ambiguity=dict(by_ambiguity), by_input=dict(by_input), by_intent=dict(by_intent),
                      seconds=time.perf_counter() - started,
                      decode_steps=sum(steps) / len(steps) if steps else None, mistakes=mistakes)
