"""The mllm-tool recipe (MLLM-Tool, arXiv 2401.10727, at 2-core scale): setup / train / save. Stage: mllm_tool_presets.

One stage fine-tunes an image+text model (a registry name such as ``smol-vqa``, or a trained weights directory such
as an Imp run's ``model/``) to answer ``{"api_name": "<tool id>"}``: connector + LoRA, tower frozen. The step loop,
checkpoints and logs are train/loop.py's; saving writes the same weights format as imp, with the tool ids.

Starting from a weights directory whose LoRA is already merged into the LM (an Imp run), the saved adapters are the
base's and the new ones side by side (rank r1 + r2, scale 1: B = [s1 B1 | s2 B2], A = [A1; A2]), so the saved
directory rebuilds exactly the trained model on top of the registry LM.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from edgelmm.errors import SpecError, TrainingError
from edgelmm.models.loaded import LoadedModel
from edgelmm.specs import ModelKind
from edgelmm.train import checkpoint, imp, loop, trainability
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


def load_base(spec: str) -> tuple[LoadedModel, str, dict[str, torch.Tensor]]:
    """(model, its registry LM, the base's scaled LoRA tensors) for a registry name or a weights directory."""
    from edgelmm.models.registry import MODELS, build_model
    from edgelmm.models.weights import is_weights_dir, load_weights, read_meta
    from edgelmm.registry import lookup

    path = Path(spec)
    directory = path / "model" if is_weights_dir(path / "model") else path
    if not is_weights_dir(directory):
        entry = lookup(MODELS, spec, what="model")
        if entry.kind != ModelKind.LLAVA or not entry.base_lm:
            raise SpecError(f"base model '{spec}' is not an image+text model built on a registry LM")
        return build_model(spec), entry.base_lm, {}
    meta = read_meta(directory)
    lora: dict[str, torch.Tensor] = {}
    if meta.get("lora"):
        scale = float(meta["lora"]["alpha"]) / float(meta["lora"]["r"])
        tensors = load_file(str(directory / "model.safetensors"))
        lora = {k: v.float() * (scale if k.endswith(".lora_B") else 1.0) for k, v in tensors.items()
                if k.endswith((".lora_A", ".lora_B"))}
    return load_weights(directory), meta["base_lm"], lora


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
        params = dict(loaded.model.named_parameters())
        unknown = sorted(set(resume["tensors"]) - set(params))
        if unknown:
            raise TrainingError(f"the checkpoint holds tensors this recipe does not build, e.g. '{unknown[0]}'")
        with torch.no_grad():
            for name, value in resume["tensors"].items():
                params[name].copy_(value)
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
    """Connector and LoRA adapters: everything this recipe trains."""
    return {n: p for n, p in state.model.named_parameters()
            if n.startswith("model.multi_modal_projector.") or trainability.LORA_MARK in n}


def save(state: State, out_dir: Path) -> Path:
    """The weights directory (fp16 tower + connector + LoRA, see models/weights.py) plus the tool ids it picks from."""
    from edgelmm.models.weights import FORMAT, SCHEMA_VERSION

    model, stage = state.model, state.spec.stages[0]
    tensors = {n: p.detach().float() for n, p in model.named_parameters()
               if n.startswith(("model.vision_tower.", "model.multi_modal_projector."))}
    scale = stage.lora.alpha / stage.lora.r
    new = {k: v.detach().float() * (scale if k.endswith(".lora_B") else 1.0)
           for k, v in trainability.lora_tensors(model).items()}
    lora = _side_by_side(state.base_lora, new)
    tensors.update(lora)
    rank = max((v.shape[0] for k, v in lora.items() if k.endswith(".lora_A")), default=0)
    catalog = load_catalog()
    meta = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "name": "smol-vqa-tool",
        "base_lm": state.base_lm,
        "vision_config": imp.vision_config_dict(model.config.vision_config),
        # scale 1: the scales are folded into lora_B (two adapter sets of different ranks side by side)
        "lora": {"r": rank, "alpha": rank, "target_modules": list(stage.lora.target_modules)} if rank else None,
        "dtype": "float16",
        "tools": list(catalog.ids),
    }
    provenance = imp.provenance_record(state)  # reads spec, ctx: the fields both recipes' states share
    provenance["tool_catalog"] = catalog.provenance
    checkpoint.save(Path(out_dir), {k: v.to(torch.float16) for k, v in tensors.items()}, meta,
                    files={"provenance.json": json.dumps(provenance, indent=2) + "\n"})
    return Path(out_dir)


def _side_by_side(base: dict[str, torch.Tensor], new: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Two LoRA sets (B already scaled) as one: A = [A1; A2], B = [B1 | B2], so B @ A = B1 A1 + B2 A2.

    Linears adapted by only one set get zero rows/columns for the other, so every adapted Linear has one rank."""
    paths = sorted({k.rsplit(".", 1)[0] for k in (*base, *new)})
    if not base:
        return new
    r1 = max(v.shape[0] for k, v in base.items() if k.endswith(".lora_A"))
    r2 = max(v.shape[0] for k, v in new.items() if k.endswith(".lora_A"))
    out = {}
    for path in paths:
        ref = base.get(f"{path}.lora_A", new.get(f"{path}.lora_A"))
        ref_b = base.get(f"{path}.lora_B", new.get(f"{path}.lora_B"))
        a1 = base.get(f"{path}.lora_A", torch.zeros(r1, ref.shape[1]))
        a2 = new.get(f"{path}.lora_A", torch.zeros(r2, ref.shape[1]))
        b1 = base.get(f"{path}.lora_B", torch.zeros(ref_b.shape[0], r1))
        b2 = new.get(f"{path}.lora_B", torch.zeros(ref_b.shape[0], r2))
        out[f"{path}.lora_A"] = torch.cat([a1, a2], 0)
        out[f"{path}.lora_B"] = torch.cat([b1, b2], 1)
    return out
