"""The llava-kd recipe's stages as data (torch-free: `edgelmm train --recipe llava-kd --dry-run` prints them).

    edgelmm train --recipe llava-kd --out runs/kd                      # DPT -> SFT -> DFT into smol-vqa-s
    edgelmm train --recipe llava-kd --teacher runs/imp/model           # a trained teacher directory
    edgelmm train --recipe llava-kd --ablate mdist --out runs/kd-mdist  # -MDist (also: rdist, dpt, distill)
    edgelmm train --recipe llava-kd --quick --out runs/kd-quick        # every stage, a few steps

LLaVA-KD (arXiv 2410.16236; shared/docs/methods.md section 2): (1) DPT trains the connector alone on captions with
CE + MDist (response and visual) + RDist against the teacher; (2) SFT trains connector + the whole LM on
instructions with CE; (3) DFT trains the same with CE + MDist + RDist. All weights 1, temperature 1, as the
reference code. The student is the teacher's architecture with SmolLM2 cut to its first N layers (smol-vqa-s).

Ablations are the same stages with loss terms removed (ABLATIONS), so every variant sees the same data and steps:
``distill`` removes every distillation term, which is the TinyLLaVA-style baseline (PT -> SFT -> FT, CE only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from edgelmm.specs import Trainability
from edgelmm.train.specs import ComponentTraining, DataSource, DistillSpec, EvalRequest, LossTerm, RecipeSpec, StageSpec

FROZEN, FULL = Trainability.FROZEN, Trainability.FULL
MIXTURE = (DataSource(dataset="shapes", weight=3.0), DataSource(dataset="digits", weight=1.0))
MDIST = ("mdist-response", "mdist-visual")
DISTILL_TERMS = (*MDIST, "rdist")
KD_LOSSES = (LossTerm(name="ce"), *(LossTerm(name=n) for n in DISTILL_TERMS))
PLAIN_NAMES = {"dpt": "pt", "dft": "ft"}
"""A distilled stage with every distillation term removed is the plain stage it replaces."""


def full() -> RecipeSpec:
    """smol-vqa -> smol-vqa-s. Learning rates: the paper's 1e-3 for the connector; 1e-4 instead of 2e-5 for the LM
    stages, which here run a few hundred steps of batch 8 instead of ~5000 of batch 128 and must re-fit an LM cut
    to 7 of its 30 layers. Step counts are sized so that the five-run comparison fits 120 min (docs/distillation.md).
    """
    connector, lm = ComponentTraining(connector=FULL), ComponentTraining(connector=FULL, llm=FULL)
    return RecipeSpec(
        name="llava-kd",
        base_model="smol-vqa-s",
        seed=0,
        distill=DistillSpec(teacher="smol-vqa", student_layers=7),
        stages=(
            StageSpec(name="dpt", trainability=connector, losses=KD_LOSSES, data=MIXTURE, format="caption",
                      steps=120, batch_size=8, lr=1e-3, warmup=0.03),
            StageSpec(name="sft", trainability=lm, losses=(LossTerm(name="ce"),), data=MIXTURE, format="qa",
                      steps=240, batch_size=8, lr=1e-4, warmup=0.03),
            StageSpec(name="dft", trainability=lm, losses=KD_LOSSES, data=MIXTURE, format="qa",
                      steps=240, batch_size=8, lr=1e-4, warmup=0.03),
        ),
        evals=(EvalRequest(task="shapes", split="val", n=200), EvalRequest(task="digits", split="val", n=200)),
    )


def quick() -> RecipeSpec:
    """Every stage for 4 steps of 4 examples: a smoke run (accuracy meaningless)."""
    spec = full()
    stages = tuple(dataclasses.replace(s, steps=4, batch_size=4) for s in spec.stages)
    return dataclasses.replace(spec, stages=stages, evals=(EvalRequest(task="shapes", split="val", n=20),))


PRESETS = {"full": full, "quick": quick}


def drop_terms(spec: RecipeSpec, names: tuple[str, ...], stages: tuple[str, ...] | None = None) -> RecipeSpec:
    """``spec`` without the loss terms ``names`` (in ``stages``, default all); a stage left with no distillation
    term takes its plain name (dpt -> pt, dft -> ft)."""
    out = []
    for stage in spec.stages:
        if stages is None or stage.name in stages:
            losses = tuple(t for t in stage.losses if t.name not in names)
            distils = any(t.name in DISTILL_TERMS for t in losses)
            stage = dataclasses.replace(stage, losses=losses,
                                        name=stage.name if distils else PLAIN_NAMES.get(stage.name, stage.name))
        out.append(stage)
    return dataclasses.replace(spec, stages=tuple(out))


ABLATIONS: dict[str, Callable[[RecipeSpec], RecipeSpec]] = {
    "mdist": lambda spec: drop_terms(spec, MDIST),
    "rdist": lambda spec: drop_terms(spec, ("rdist",)),
    "dpt": lambda spec: drop_terms(spec, DISTILL_TERMS, stages=("dpt",)),  # DPT -> plain PT, DFT kept
    "distill": lambda spec: drop_terms(spec, DISTILL_TERMS),  # the no-distillation baseline
}
"""`edgelmm train --ablate NAME`: the paper's ablations (-MDist, -RDist, -DPT) and the no-distillation baseline."""
