"""The ilm recipe's phases as data (torch-free: `edgelmm train --recipe ilm --dry-run` prints them).

    edgelmm train --recipe ilm --out runs/ilm                     # Q-Former ILM on SmolLM2 (phase 1 + phase 2)
    edgelmm train --recipe ilm --preset random-qformer --out ...  # ablation: no phase 1 (random Q-Former)
    edgelmm train --recipe ilm --preset mlp --out runs/ilm-mlp    # the paper's baseline: MLP adaptor, no Q-Former
    edgelmm train --recipe ilm --quick --out runs/ilm-quick       # a few steps of each phase (smoke run)
    edgelmm eval --task rec --model runs/ilm/model                # HR@10 / NDCG@10 over held-out users

The recipe's ``base_model`` names an entry of edgelmm.models.item_encoder.ITEM_LMS (frozen LM + encoder shape);
each stage's data names an interaction dataset (train/data/interactions.py: a simulator preset or
``movielens:DIR``). Components: the Q-Former (with its phase-1 heads) trains as "vision_tower", the adaptor as
"connector"; the LM is always frozen. Before the stages, BPR fits the CF table on the training users.
Sizes: phase 1 is the Q-Former alone (~0.25 s/step at batch 32); a phase-2 step runs the 135M LM forward and
backward through ~100 tokens x 8 conversations (~4 s at one thread), so phase 2 is short: the presets are sized
for figures on a 2-core CPU (docs/item-language.md), far below the paper's scale.
"""

from __future__ import annotations

import dataclasses

from edgelmm.specs import Trainability
from edgelmm.train.specs import ComponentTraining, DataSource, LossTerm, RecipeSpec, StageSpec

FULL = Trainability.FULL
DATA = (DataSource(dataset="sim-movies"),)
PHASE2_STEPS = 300
"""Phase-2 steps of every SmolLM2 preset (the same for ILM and both baselines, so they compare at equal cost):
2400 conversations, ~10 per catalog item; ~20 min at one thread on an idle core (40 before, sized for a loaded
machine, taught nothing measurable: docs/item-language.md)."""


def _phase1(data: tuple[DataSource, ...], steps: int, batch: int) -> StageSpec:
    return StageSpec(name="item-text", trainability=ComponentTraining(vision_tower=FULL),
                     losses=(LossTerm(name="itc"), LossTerm(name="itg"), LossTerm(name="itm"), LossTerm(name="iic")),
                     data=data, format="item-text", steps=steps, batch_size=batch, lr=1e-3, weight_decay=0.05)


def _phase2(data: tuple[DataSource, ...], steps: int, batch: int, *, qformer: bool = True) -> StageSpec:
    # BLIP-2 stage 2 trains the Q-Former with the projection; the MLP baseline has only the "connector"
    train = ComponentTraining(vision_tower=FULL, connector=FULL) if qformer else ComponentTraining(connector=FULL)
    return StageSpec(name="item-chat", trainability=train, losses=(LossTerm(name="ce"),), data=data,
                     format="item-chat", steps=steps, batch_size=batch, lr=1e-3, warmup=0.1)


def full() -> RecipeSpec:
    """Phase 1 (Q-Former: ITC + ITG + ITM + IIC) then phase 2 (Q-Former + adaptor, frozen SmolLM2)."""
    return RecipeSpec(name="ilm", base_model="smol-ilm", seed=0,
                      stages=(_phase1(DATA, 200, 32), _phase2(DATA, PHASE2_STEPS, 8)))


def random_qformer() -> RecipeSpec:
    """Ablation: the same phase 2 from a randomly initialised Q-Former (no phase 1)."""
    return RecipeSpec(name="ilm", base_model="smol-ilm", seed=0, stages=(_phase2(DATA, PHASE2_STEPS, 8),))


def mlp() -> RecipeSpec:
    """The paper's baseline: an MLP adaptor from the CF vector to the K tokens (phase 2 only)."""
    return RecipeSpec(name="ilm", base_model="smol-ilm-mlp", seed=0,
                      stages=(_phase2(DATA, PHASE2_STEPS, 8, qformer=False),))


def quick() -> RecipeSpec:
    """A few steps of each phase on SmolLM2 (a smoke run; no useful accuracy)."""
    spec = full()
    return dataclasses.replace(spec, stages=tuple(dataclasses.replace(s, steps=n, batch_size=b)
                                                  for s, (n, b) in zip(spec.stages, ((20, 32), (4, 4)))))


def tiny() -> RecipeSpec:
    """Both phases for a few steps on the tiny random LM and the small simulator: what the tests run."""
    data = (DataSource(dataset="sim-movies-small"),)
    return RecipeSpec(name="ilm", base_model="tiny-ilm", seed=0, stages=(_phase1(data, 3, 8), _phase2(data, 3, 4)))


PRESETS = {"full": full, "quick": quick, "random-qformer": random_qformer, "mlp": mlp, "tiny": tiny}
