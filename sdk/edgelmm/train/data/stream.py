"""A stage's examples as a deterministic stream: the same (seed, stage, step, rank) always gives the same batch.

Example number ``n`` of a stage picks its data source by the mixture weights (from an rng seeded by ``n``) and is
example ``offset + n`` of that source's split, where ``offset`` depends on the run seed and the stage. Step ``s``,
micro-batch ``m`` of process ``r`` (of ``w``) holds the examples ``((s * accum + m) * w + r) * batch + [0, batch)``,
so a resumed run starts exactly where it stopped and the processes of a DDP run never share an example.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from edgelmm.errors import SpecError
from edgelmm.registry import lookup
from edgelmm.train.data import DATASETS
from edgelmm.train.data.base import Example
from edgelmm.train.specs import DataSource, StageSpec

SEED_STRIDE = 1_000_000
"""Each (run seed, stage) reads its own window of a million training examples: stage i of seed s starts at
example (10 s + i) * SEED_STRIDE."""
MAX_SEED, MAX_STAGES = 99, 10


def example_at(sources: tuple[DataSource, ...], n: int, offset: int) -> Example:
    weights = np.array([s.weight for s in sources], dtype=np.float64)
    pick = int(np.random.default_rng([n, 0x313]).choice(len(sources), p=weights / weights.sum()))
    source = sources[pick]
    return lookup(DATASETS, source.dataset, what="dataset").example(source.split, offset + n)


def stage_batches(stage: StageSpec, *, seed: int, stage_index: int, start_step: int, rank: int, world: int,
                  collate: Callable[[list[Example]], Any]) -> Iterator[Any]:
    """Micro-batches of process ``rank`` from optimizer step ``start_step`` on, collated; ends after the last step."""
    if not (0 <= seed <= MAX_SEED and 0 <= stage_index < MAX_STAGES):
        raise SpecError(f"seed must be in [0, {MAX_SEED}] and stages fewer than {MAX_STAGES}")
    if stage.steps * stage.examples_per_step * world > SEED_STRIDE:
        raise SpecError(f"stage '{stage.name}' reads more than {SEED_STRIDE} examples: reduce steps or batch")
    offset = (seed * MAX_STAGES + stage_index) * SEED_STRIDE
    for step in range(start_step, stage.steps):
        for micro in range(stage.grad_accum):
            first = ((step * stage.grad_accum + micro) * world + rank) * stage.batch_size
            yield collate([example_at(stage.data, n, offset) for n in range(first, first + stage.batch_size)])
