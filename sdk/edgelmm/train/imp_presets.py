"""The imp recipe's stages as data (torch-free: `edgelmm train --recipe imp --dry-run` prints them).

    edgelmm train --recipe imp --out runs/imp              # the full recipe (sized for <= 60 min, untimed)
    edgelmm train --recipe imp --quick --out runs/quick    # a smoke run of every stage (sized for ~3 min)
    torchrun --nproc-per-node 2 -m edgelmm train --recipe imp --out runs/imp   # DDP (gloo on CPU, nccl on GPU)

Stage 0 trains our own SigLIP-architecture tower (no pretrained tower can be downloaded here) with SigLIP's
sigmoid loss against frozen all-MiniLM-L6-v2 embeddings. Stages 1 and 2 are Imp's: (1) the mlp2x_gelu connector
alone on captions, tower and LM frozen; (2) connector + LoRA on the LM on question/answer pairs, tower frozen.
Batch sizes and step counts are sized for a 2-core CPU: an LM step costs ~4 ms per token (shared/docs/pitfalls.md),
so the LM stages are short and the cheap tower stage is long.
"""

from __future__ import annotations

from edgelmm.specs import Trainability
from edgelmm.train.specs import (
    ComponentTraining,
    DataSource,
    EvalRequest,
    LoraSpec,
    LossTerm,
    RecipeSpec,
    StageSpec,
)

FROZEN, FULL, LORA = Trainability.FROZEN, Trainability.FULL, Trainability.LORA
MIXTURE = (DataSource(dataset="shapes", weight=3.0), DataSource(dataset="digits", weight=1.0))
LORA_SPEC = LoraSpec(r=16, alpha=32)
INSTRUCT_STEPS = 900
INSTRUCT_TURNS = 1
"""Questions per scene in one conversation. Four turns (the image and prompt paid once per four answers) were
measured no better per second of CPU than one (docs/training.md), so the preset asks one, as the eval does."""


def full() -> RecipeSpec:
    """The recipe for smol-vqa's trained weights (at this scale it does not yet reach the targets: docs/training.md)."""
    return RecipeSpec(
        name="imp",
        base_model="smol-vqa-init",
        seed=0,
        stages=(
            StageSpec(
                name="vision-pretrain",
                trainability=ComponentTraining(vision_tower=FULL),
                # SigLIP's loss is the stage's image-text objective; the supervised per-cell heads ("attributes")
                # carry the weight because, measured here, SigLIP alone or at equal weight left a per-cell probe
                # at ~45% after 800 steps while the heads alone reached 95% in 600 (docs/training.md).
                losses=(LossTerm(name="siglip", weight=0.1), LossTerm(name="attributes")),
                data=(DataSource(dataset="shapes", weight=1.0), DataSource(dataset="digits", weight=1.0)),
                format="contrastive",
                steps=1500,  # digits learn far slower than shapes' cells (docs/training.md): half of each batch
                batch_size=64,
                lr=1e-3,
                warmup=0.05,
                weight_decay=1e-4,
            ),
            StageSpec(
                name="ground",
                trainability=ComponentTraining(connector=FULL),
                # Before any LM step, the connector learns to say each cell in the LM's own words: its token is
                # pulled to the mean input embedding of "small red circle top left" / "empty center" (and an
                # image's mean token to its digit). Tower + connector only: 300 x 64 took 52 s. Measured: +10-15
                # points of val exact match at equal LM steps in short probes (docs/training.md).
                losses=(LossTerm(name="ground"),),
                data=MIXTURE,
                format="ground",
                steps=300,
                batch_size=64,
                lr=1e-3,
            ),
            StageSpec(
                name="align",
                trainability=ComponentTraining(connector=FULL),
                losses=(LossTerm(name="ce"),),
                data=MIXTURE,
                format="caption",
                steps=60,  # grounding did most of the aligning: captions cost 3.7 s/step, LM steps buy more below
                batch_size=16,
                lr=1e-3,  # Imp stage 1: 1e-3, cosine, 3% warm-up
            ),
            StageSpec(
                name="instruct",
                trainability=ComponentTraining(connector=FULL, llm=LORA),
                losses=(LossTerm(name="ce"),),
                data=MIXTURE,
                format="qa",
                steps=INSTRUCT_STEPS,
                batch_size=16,
                lr=2e-4,  # Imp stage 2: 2e-4 for the LoRA weights
                connector_lr=1e-3,  # the connector keeps stage 1's rate (LLaVA trains its projector faster)
                turns=INSTRUCT_TURNS,
                lora=LORA_SPEC,
            ),
        ),
        evals=(EvalRequest(task="shapes", split="val", n=300), EvalRequest(task="digits", split="val", n=200)),
    )


def quick() -> RecipeSpec:
    """Every stage for a few steps: a smoke run for tests and first-time users (sized for ~3 min on 2 idle cores;
    accuracy far below the full preset)."""
    spec = full()
    steps = {"vision-pretrain": (120, 32), "ground": (30, 32), "align": (6, 8), "instruct": (40, 8)}
    stages = tuple(_resize(s, *steps[s.name]) for s in spec.stages)
    return RecipeSpec(name=spec.name, base_model=spec.base_model, seed=spec.seed, stages=stages,
                      evals=(EvalRequest(task="shapes", split="val", n=60), EvalRequest(task="digits", split="val", n=60)))


def _resize(stage: StageSpec, steps: int, batch_size: int) -> StageSpec:
    import dataclasses

    return dataclasses.replace(stage, steps=steps, batch_size=batch_size)


PRESETS = {"full": full, "quick": quick}
