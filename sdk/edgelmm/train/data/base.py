"""What every built-in dataset yields: an image with a caption and one question/answer pair (torch-free).

Datasets are generated on the fly and deterministic: example ``i`` of split ``s`` is drawn from
``numpy.random.default_rng(SEED_BASES[s] + i)``, so the same index always gives the same image, caption and
question, on any machine, and the seed ranges of train, val and test never overlap.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol

from PIL import Image

from edgelmm.errors import SpecError

SPLIT_SIZE = 1_000_000_000
"""Indices per split; split ``s`` uses seeds ``[SEED_BASES[s], SEED_BASES[s] + SPLIT_SIZE)``."""
SEED_BASES = {"train": 0, "val": 1 * SPLIT_SIZE, "test": 2 * SPLIT_SIZE}
GRID = 3
"""Scenes are laid out on a GRID x GRID grid of cells (positions "top left" ... "bottom right")."""


@dataclasses.dataclass(frozen=True, slots=True)
class Example:
    """One training or evaluation example."""

    image: Image.Image
    """RGB, any size; models resize it as their preprocessing says."""
    caption: str
    """A full description: every object with its size, colour, shape and position (stages 0 and 1)."""
    phrases: tuple[str, ...]
    """Short texts that are each true of the whole image ("a small red circle at the top left", "a black
    background"): the positives of the image in stage 0's sigmoid loss. A small closed set, so their text embeddings
    cache well (full captions are combinatorial)."""
    question: str
    answer: str
    """The exact-match target: lower case, no trailing punctuation."""
    kind: str
    """Question type (colour, shape, count, exist, position, relation, digit): accuracy is also reported per kind."""
    regions: tuple[str, ...] = ()
    """Row-major GRID x GRID cells: the phrase of the object in each cell without its position ("a small red
    circle"), "" for an empty cell; () when the dataset has no layout (digits). Stage 0's regional positives."""
    more: tuple[tuple[str, str, str], ...] = ()
    """Further (question, answer, kind) about the same image: the later turns of a multi-turn conversation when a
    "qa" stage asks for ``turns`` > 1 (LLaVA's instruction data asks several questions per image)."""


class Dataset(Protocol):
    """A built-in dataset: ``example(split, index)`` is a pure function of its arguments."""

    name: str
    version: str
    """Bumped whenever generation changes, so a checkpoint's provenance names the data it saw."""
    splits: tuple[str, ...]

    def example(self, split: str, index: int) -> Example: ...


def seed_for(split: str, index: int, splits: tuple[str, ...]) -> int:
    """The generator seed of example ``index`` of ``split`` (validated: one line on bad input)."""
    if split not in splits:
        raise SpecError(f"unknown split '{split}'; valid: {', '.join(splits)}")
    if not 0 <= index < SPLIT_SIZE:
        raise SpecError(f"example index must be in [0, {SPLIT_SIZE}), got {index}")
    return SEED_BASES[split] + index


def normalise_answer(text: str) -> str:
    """The exact-match normal form: lower case, single spaces, no surrounding punctuation or quotes."""
    return " ".join(text.strip().lower().split()).strip(" .!?,;:'\"")
