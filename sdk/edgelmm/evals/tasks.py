"""TASKS: what `edgelmm eval --task NAME` measures. A plain dict; later issues add their tasks here.

A task draws examples from a built-in dataset (edgelmm.train.data.DATASETS) and scores a model's answer against the
example's answer. Scores are exact match after normalisation (lower case, single spaces, surrounding punctuation
stripped), as VQA-style short-answer benchmarks do.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from edgelmm.train.data.base import Example, normalise_answer


def exact_match(prediction: str, example: Example) -> bool:
    return normalise_answer(prediction) == normalise_answer(example.answer)


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class EvalTask:
    name: str
    dataset: str
    """A key of edgelmm.train.data.DATASETS."""
    description: str
    default_split: str = "test"
    train_dataset: str | None = None
    """The dataset whose train split models learn this task from (default: ``dataset``); the answer prior uses it."""
    score: Callable[[str, Example], bool] = exact_match
    max_new_tokens: int = 8
    """Answers are a word or two; generation stops at end-of-turn long before this."""
    evaluator: str = ""
    """``module:function`` scoring the task its own way instead of exact match (imported when the task runs)."""


TASKS: dict[str, EvalTask] = {
    "shapes": EvalTask(name="shapes", dataset="shapes",
                       description="drawn scenes: colour, shape, count, existence, position, relation questions"),
    "shapes-compositional": EvalTask(
        name="shapes-compositional", dataset="shapes-compositional",
        description="scenes with colour+shape pairs never seen in training; questions about those objects",
        train_dataset="shapes"),
    "digits": EvalTask(name="digits", dataset="digits",
                       description="held-out scikit-learn digits, upscaled and augmented: which digit is this?"),
    # MLLM-Tool's metrics (accuracy in the valid set, hallucination, format) by ambiguity and input type
    "tool-selection": EvalTask(
        name="tool-selection", dataset="tool-selection", max_new_tokens=32,
        description="image + instruction -> {\"api_name\": <tool id>}; ambiguous instructions resolved by the image",
        evaluator="edgelmm.evals.tool_selection:evaluate_tools"),
    "tool-selection-blind": EvalTask(
        name="tool-selection-blind", dataset="tool-selection-blind", max_new_tokens=32,
        description="tool-selection with plain grey images: what the instruction alone decides",
        evaluator="edgelmm.evals.tool_selection:evaluate_tools"),
}
