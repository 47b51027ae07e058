"""The mllm-tool recipe's stage as data (torch-free: `edgelmm train --recipe mllm-tool --dry-run` prints it).

    edgelmm train --recipe mllm-tool --out runs/tool                  # full (~70 min, one thread, beside the blind run)
    edgelmm train --recipe mllm-tool --quick --out runs/tool-quick    # smoke run (~2 min)
    edgelmm train --recipe mllm-tool --preset blind --out runs/tool-blind   # image-blind baseline, same training
    edgelmm eval --model runs/tool --task tool-selection --constrained

MLLM-Tool (arXiv 2401.10727) tunes one stage: the projection + LoRA (r 32, alpha 32, dropout 0.1 on q/k/v/o) on
instructions whose answer is ``{'api_name': <tool>}``, lr 5e-4, 5 epochs. Here the base is ``smol-vqa`` (Imp's
stage-2 starting point); to start from a trained Imp run instead, dump the spec, set ``base_model`` to the run's
``model/`` directory and train with ``--config``:

    edgelmm train --recipe mllm-tool --dump > tool.json   # edit "base_model": "runs/imp/model"
    edgelmm train --config tool.json --out runs/tool
"""

from __future__ import annotations

import dataclasses

from edgelmm.specs import Trainability
from edgelmm.train.specs import ComponentTraining, DataSource, EvalRequest, LoraSpec, LossTerm, RecipeSpec, StageSpec

LORA_SPEC = LoraSpec(r=32, alpha=32, dropout=0.1, target_modules=("q_proj", "k_proj", "v_proj", "o_proj"))
"""MLLM-Tool's code/config/openllama_peft.yaml."""


def full() -> RecipeSpec:
    """Connector + LoRA on tool-selection rows: 800 steps x 16 rows (~13k rows; MLLM-Tool's lr 5e-4). 600 steps left
    the loss still falling (docs/tool-selection.md)."""
    return RecipeSpec(
        name="mllm-tool",
        base_model="smol-vqa",
        seed=0,
        stages=(
            StageSpec(
                name="tool-instruct",
                trainability=ComponentTraining(connector=Trainability.FULL, llm=Trainability.LORA),
                losses=(LossTerm(name="ce"),),
                data=(DataSource(dataset="tool-selection"),),
                format="qa",
                steps=800,
                batch_size=16,
                lr=5e-4,
                warmup=0.05,
                weight_decay=0.001,
                lora=LORA_SPEC,
            ),
        ),
        evals=(EvalRequest(task="tool-selection", split="val", n=300),),
    )


def quick() -> RecipeSpec:
    """40 steps x 8 rows: proves the pipeline end to end (format learnt, accuracy far below full)."""
    return _sized(full(), steps=40, batch_size=8, evals=(EvalRequest(task="tool-selection", split="val", n=60),))


def blind() -> RecipeSpec:
    """The full recipe with every image replaced by a plain grey square: a text-only model of the same size and
    training, the baseline the image model must beat on the ambiguous instructions."""
    spec = full()
    stage = dataclasses.replace(spec.stages[0], data=(DataSource(dataset="tool-selection-blind"),))
    return dataclasses.replace(spec, stages=(stage,),
                               evals=(EvalRequest(task="tool-selection-blind", split="val", n=300),))


def blind_quick() -> RecipeSpec:
    """The quick preset, image-blind."""
    spec = blind()
    return _sized(spec, steps=40, batch_size=8, evals=(EvalRequest(task="tool-selection-blind", split="val", n=60),))


def _sized(spec: RecipeSpec, *, steps: int, batch_size: int, evals: tuple[EvalRequest, ...]) -> RecipeSpec:
    stages = tuple(dataclasses.replace(s, steps=steps, batch_size=batch_size) for s in spec.stages)
    return dataclasses.replace(spec, stages=stages, evals=evals)


PRESETS = {"full": full, "quick": quick, "blind": blind, "blind-quick": blind_quick}
