"""The llava-kd recipe (LLaVA-KD, arXiv 2410.16236): setup / train / save. Stages: llava_kd_presets.py.

The student (models/student.py) is built from the teacher: its tower copied, a fresh connector, the base model's
registry LM cut to ``distill.student_layers``. Stages with a distillation term train through
objectives.Distillation (teacher under no_grad in the same step); plain stages through LanguageModeling. The step
loop, DDP, checkpoints and resume are train/loop.py's, as for the imp recipe.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import torch

from edgelmm.errors import SpecError
from edgelmm.models.loaded import LoadedModel
from edgelmm.models.registry import MODELS, build_model
from edgelmm.models.student import build_student
from edgelmm.registry import lookup
from edgelmm.specs import ModelKind
from edgelmm.train import checkpoint, loop, trainability
from edgelmm.train.data import DATASETS
from edgelmm.train.data.collate import ChatCollator
from edgelmm.train.data.stream import stage_batches
from edgelmm.train.imp import copy_into, provenance_record, run_stages, vision_config_dict
from edgelmm.train.llava_kd_presets import DISTILL_TERMS
from edgelmm.train.objectives import Distillation, LanguageModeling
from edgelmm.train.specs import RecipeSpec, StageSpec

TOWER, CONNECTOR, LM = "model.vision_tower.", "model.multi_modal_projector.", ("model.language_model.", "lm_head.")


@dataclasses.dataclass(slots=True)
class State:
    spec: RecipeSpec
    ctx: loop.RunContext
    loaded: LoadedModel
    """The student."""
    teacher: LoadedModel
    collator: ChatCollator
    base_lm: str
    resume: dict[str, Any] | None = None

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model


def setup(spec: RecipeSpec, ctx: loop.RunContext, resume: dict[str, Any] | None = None) -> State:
    """Load the teacher (frozen, eval), build the student from it, and load ``resume``'s tensors."""
    from edgelmm.evals.torch_answerer import load_model

    if spec.distill is None:
        raise SpecError(f"recipe '{spec.name}' needs a distill section (teacher, student_layers)")
    entry = lookup(MODELS, spec.base_model, what="model")
    if entry.kind != ModelKind.LLAVA or not entry.base_lm:
        raise SpecError(f"base model '{spec.base_model}' is not an image+text model built on a registry LM")
    for stage in spec.stages:
        if stage.format not in ("caption", "qa"):
            raise SpecError(f"stage '{stage.name}': llava-kd trains on caption or qa batches, not '{stage.format}'")
        for source in stage.data:
            lookup(DATASETS, source.dataset, what="dataset")
    teacher = load_model(spec.distill.teacher)
    if teacher.kind != ModelKind.LLAVA:
        raise SpecError(f"teacher '{spec.distill.teacher}' is not an image+text (LLaVA) model")
    teacher.model.eval().requires_grad_(False)
    student = build_student(teacher, build_model(entry.base_lm), layers=spec.distill.student_layers, seed=spec.seed,
                            name=spec.base_model)
    collator = ChatCollator(tokenizer=student.tokenizer, chat_template=student.chat_template,
                            image_token=student.image_token, num_image_tokens=student.num_image_tokens,
                            preprocess_spec=student.preprocess)
    state = State(spec=spec, ctx=ctx, loaded=student, teacher=teacher, collator=collator, base_lm=entry.base_lm,
                  resume=resume)
    if resume is not None:
        copy_into(dict(student.model.named_parameters()), resume["tensors"])
    student.model.to(ctx.dist.device)
    teacher.model.to(ctx.dist.device)
    return state


def train(state: State) -> State:
    return run_stages(state, _stage)


def _stage(state: State, stage: StageSpec, index: int) -> loop.Stage:
    model, dist = state.model, state.ctx.dist
    trainability.apply(model, stage.trainability, stage.lora)
    losses = tuple(t.name for t in stage.losses)
    if any(name in DISTILL_TERMS for name in losses):
        module: torch.nn.Module = Distillation(model, state.teacher.model, image_token_id=state.loaded.image_token_id,
                                               losses=losses, temperature=state.spec.distill.temperature)
    else:
        module = LanguageModeling(model)  # no distillation term: the teacher is not run at all
    collate = functools.partial(state.collator, fmt=stage.format, turns=stage.turns)

    def batches(start: int, rank: int) -> Any:
        return stage_batches(stage, seed=state.spec.seed, stage_index=index, start_step=start, rank=rank,
                             world=dist.world, collate=collate)

    return loop.Stage(spec=stage, index=index, module=module, batches=batches,
                      snapshot=functools.partial(trained_tensors, state))


def trained_tensors(state: State) -> dict[str, torch.Tensor]:
    """What a checkpoint and the saved model hold: tower (copied from the teacher, frozen), connector and LM."""
    return {n: p for n, p in state.model.named_parameters() if n.startswith((TOWER, CONNECTOR, *LM))}


def save(state: State, out_dir: Path) -> Path:
    """Write the student as a weights directory (models/weights.py): fp16 tower + connector + the cut LM."""
    from edgelmm.models.weights import FORMAT, SCHEMA_VERSION

    tensors = {n: p.detach().to(torch.float16) for n, p in trained_tensors(state).items()}
    meta = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "name": state.spec.base_model if state.spec.base_model == "smol-vqa-s" else f"{state.spec.base_model}-kd",
        "base_lm": state.base_lm,
        "lm_layers": state.spec.distill.student_layers,
        "vision_config": vision_config_dict(state.model.config.vision_config),
        "lora": None,
        "dtype": "float16",
    }
    provenance = provenance_record(state) | {"teacher": state.spec.distill.teacher}
    directory = Path(out_dir)
    checkpoint.save(directory, tensors, meta, files={"provenance.json": json.dumps(provenance, indent=2) + "\n"})
    return directory
