"""The mllm-tool recipe (MLLM-Tool, arXiv 2401.10727, at 2-core scale): setup / train / save. Stage: mllm_tool_presets.

One stage fine-tunes an image+text model (a registry name such as ``smol-vqa``, or a trained weights directory such
as an Imp run's ``model/``) to answer ``{"api_name": "<tool id>"}``: connector + LoRA, tower frozen. The step loop,
checkpoints and logs are train/loop.py's; saving writes the same weights format as imp, with the tool ids.

A trained base (smol-vqa, an Imp run) keeps its tower and connector, and its LoRA is saved beside the new one
(train/base_model.py), so the saved directory rebuilds exactly the trained model on top of the registry LM.
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
from edgelmm.specs import Trainability
from edgelmm.train import checkpoint, imp, loop, trainability
from edgelmm.train.base_model import load_base, saved_lora
from edgelmm.train.data.collate import ChatCollator
from edgelmm.train.data.stream import stage_batches
from edgelmm.train.data.tools import load_catalog
from edgelmm.train.objectives import LanguageModeling
from edgelmm.train.specs import RecipeSpec


@dataclasses.dataclass(slots=True)
class State:
    spec: RecipeSpec
    ctx: loop.RunContext
    loaded: LoadedModel
    collator: ChatCollator
    base_lm: str
    base_lora: dict[str, torch.Tensor]
    """LoRA of the base weights directory (already merged into the model), scaled: ``<path>.lora_B`` holds s * B."""
    resume: dict[str, Any] | None = None

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model


def setup(spec: RecipeSpec, ctx: loop.RunContext, resume: dict[str, Any] | None = None) -> State:
    """Build the base model (trained weights kept: this recipe fine-tunes) and load ``resume``'s tensors."""
    if len(spec.stages) != 1 or spec.stages[0].format != "qa":
        raise SpecError("mllm-tool trains one 'qa' stage (instructions -> {\"api_name\": ...})")
    loaded, base_lm, base_lora = load_base(spec.base_model)
    torch.manual_seed(spec.seed)
    collator = ChatCollator(tokenizer=loaded.tokenizer, chat_template=loaded.chat_template,
                            image_token=loaded.image_token, num_image_tokens=loaded.num_image_tokens,
                            preprocess_spec=loaded.preprocess)
    state = State(spec=spec, ctx=ctx, loaded=loaded, collator=collator, base_lm=base_lm, base_lora=base_lora,
                  resume=resume)
    stage = spec.stages[0]
    trainability.apply(loaded.model, stage.trainability, stage.lora)
    if resume is not None:
        imp.copy_into(dict(loaded.model.named_parameters()), resume["tensors"])
    loaded.model.to(ctx.dist.device)
    return state


def train(state: State) -> State:
    stage, dist = state.spec.stages[0], state.ctx.dist
    resume = state.resume or {"stage_index": 0, "step": 0}

    def batches(start: int, rank: int) -> Any:
        return stage_batches(stage, seed=state.spec.seed, stage_index=0, start_step=start, rank=rank,
                             world=dist.world, collate=functools.partial(state.collator, fmt="qa"))

    module = LanguageModeling(state.model)
    loop.run_stage(loop.Stage(spec=stage, index=0, module=module, batches=batches,
                              snapshot=functools.partial(snapshot, state)),
                   state.ctx, start_step=resume["step"], optimizer_state=resume.get("optimizer") if resume["step"]
                   else None)
    if dist.main:
        imp.plot_losses(state.ctx.out / loop.LOG_FILE, state.ctx.out / "loss.png")
    state.resume = None
    return state


def snapshot(state: State) -> dict[str, torch.Tensor]:
    """Connector and LoRA adapters, plus the tower when the stage trains it in full: everything this recipe trains."""
    full_tower = state.spec.stages[0].trainability.vision_tower == Trainability.FULL
    keep = ("model.multi_modal_projector.",) + (("model.vision_tower.",) if full_tower else ())
    return {n: p for n, p in state.model.named_parameters() if n.startswith(keep) or trainability.LORA_MARK in n}


def save(state: State, out_dir: Path) -> Path:
    """The weights directory (fp16 tower + connector + LoRA, see models/weights.py) plus the tool ids it picks from."""
    from edgelmm.models.weights import FORMAT, SCHEMA_VERSION, TRAINED_PREFIXES

    model, stage = state.model, state.spec.stages[0]
    tensors = {n: p.float() for n, p in trainability.plain_weights(model, TRAINED_PREFIXES).items()}
    lora, lora_meta = saved_lora(model, stage.lora, state.base_lora)
    tensors.update(lora)
    catalog = load_catalog()
    meta = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "name": "smol-vqa-tool",
        "base_lm": state.base_lm,
        "vision_config": imp.vision_config_dict(model.config.vision_config),
        "lora": lora_meta,
        "dtype": "float16",
        "tools": list(catalog.ids),
    }
    provenance = imp.provenance_record(state)  # reads spec, ctx: the fields both recipes' states share
    provenance["tool_catalog"] = catalog.provenance
    checkpoint.save(Path(out_dir), {k: v.to(torch.float16) for k, v in tensors.items()}, meta,
                    files={"provenance.json": json.dumps(provenance, indent=2) + "\n"})
    return Path(out_dir)
