"""The imp recipe (Imp, arXiv 2405.12107, at 2-core scale): setup / train / save. Stages: imp_presets.py.

What is specific to this recipe is only which module each stage format trains and how its batches are built;
the step loop, checkpoints and logs are train/loop.py's.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from edgelmm.errors import SpecError, TrainingError
from edgelmm.models.loaded import LoadedModel
from edgelmm.registry import lookup
from edgelmm.specs import Trainability, to_dict
from edgelmm.train import checkpoint, loop, trainability
from edgelmm.train.base_model import load_base, saved_lora
from edgelmm.train.data import DATASETS
from edgelmm.train.data.collate import ChatCollator, contrastive_batch, ground_batch
from edgelmm.train.data.stream import stage_batches
from edgelmm.train.objectives import ContrastiveTower, LanguageModeling, WordGrounding
from edgelmm.train.specs import RecipeSpec, StageSpec

HEAD_PREFIX = "contrastive."
"""Checkpoint names of stage 0's pooling head and projections (scaffolding: not part of the saved model)."""


@dataclasses.dataclass(slots=True)
class State:
    spec: RecipeSpec
    ctx: loop.RunContext
    loaded: LoadedModel
    contrastive: ContrastiveTower
    collator: ChatCollator
    base_lm: str
    base_lora: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    """The trained base's LoRA (merged into ``loaded``), B scaled: saved beside this run's adapters."""
    resume: dict[str, Any] | None = None
    text_encoder: Any = None

    @property
    def model(self) -> torch.nn.Module:
        return self.loaded.model


def setup(spec: RecipeSpec, ctx: loop.RunContext, resume: dict[str, Any] | None = None) -> State:
    """Build the base model and load ``resume``'s tensors. An untrained base (``smol-vqa-init``) gets its tower and
    connector re-initialised from the recipe's seed; a trained one (``smol-vqa``, a run's ``model/``) keeps them, and
    its LoRA is saved beside the one this run trains (train/base_model.py)."""
    for stage in spec.stages:
        for source in stage.data:
            lookup(DATASETS, source.dataset, what="dataset")
    loaded, base_lm, base_lora = load_base(spec.base_model)
    model = loaded.model
    torch.manual_seed(spec.seed)
    if loaded.weights_dir is None:
        for module in (model.model.vision_tower, model.model.multi_modal_projector):
            module.apply(model._init_weights)
    from edgelmm.models.minilm import EMBED_DIM

    contrastive = ContrastiveTower(model.model.vision_tower, EMBED_DIM)
    collator = ChatCollator(tokenizer=loaded.tokenizer, chat_template=loaded.chat_template,
                            image_token=loaded.image_token, num_image_tokens=loaded.num_image_tokens,
                            preprocess_spec=loaded.preprocess)
    state = State(spec=spec, ctx=ctx, loaded=loaded, contrastive=contrastive, collator=collator,
                  base_lm=base_lm, base_lora=base_lora, resume=resume)
    if resume is not None:
        _load_snapshot(state, resume["tensors"], resume["stage_index"])
    model.to(ctx.dist.device)
    contrastive.to(ctx.dist.device)
    return state


def train(state: State) -> State:
    """Run the stages in order, from the resume point if any."""
    return run_stages(state, _stage)


def run_stages(state: Any, build: Any) -> Any:
    """Every recipe's train(): ``state.spec.stages`` from ``state.resume`` (or the start), each through
    ``build(state, stage, index) -> loop.Stage``, loss.png redrawn after each. ``state`` has spec, ctx, resume."""
    loop.run_stages(state.spec.stages, state.ctx, state.resume, functools.partial(build, state),
                    after_stage=functools.partial(plot_run, state.ctx))
    state.resume = None
    return state


def plot_run(ctx: loop.RunContext) -> None:
    """loss.png of the run so far (rank 0 only)."""
    if ctx.dist.main:
        plot_losses(ctx.out / loop.LOG_FILE, ctx.out / "loss.png")


def _stage(state: State, stage: StageSpec, index: int) -> loop.Stage:
    model, dist = state.model, state.ctx.dist
    trainability.apply(model, stage.trainability, stage.lora)
    if stage.format == "contrastive":
        if stage.trainability.vision_tower == Trainability.FROZEN:
            raise SpecError(f"stage '{stage.name}': a contrastive stage trains the vision tower")
        if state.text_encoder is None:
            from edgelmm.models.minilm import TextEncoder

            state.text_encoder = TextEncoder()
        module: torch.nn.Module = state.contrastive
        state.contrastive.losses = tuple(t.name for t in stage.losses)
        state.contrastive.train_heads()
        module.train()
        collate: Any = functools.partial(contrastive_batch, spec=state.loaded.preprocess,
                                         encode=state.text_encoder.encode)
    elif stage.format == "ground":
        module = WordGrounding(model)
        collate = functools.partial(ground_batch, spec=state.loaded.preprocess, tokenizer=state.loaded.tokenizer)
    else:
        module = LanguageModeling(model)
        collate = functools.partial(state.collator, fmt=stage.format, turns=stage.turns)

    def batches(start: int, rank: int) -> Any:
        return stage_batches(stage, seed=state.spec.seed, stage_index=index, start_step=start, rank=rank,
                             world=dist.world, collate=collate)

    return loop.Stage(spec=stage, index=index, module=module, batches=batches,
                      snapshot=functools.partial(snapshot, state, index))


def snapshot(state: State, stage_index: int) -> dict[str, torch.Tensor]:
    """What a checkpoint holds: tower, connector, LoRA adapters, stage 0's head, and the LM if a stage trains it."""
    model = state.model
    trains_llm = any(s.trainability.llm == Trainability.FULL for s in state.spec.stages[: stage_index + 1])
    keep = ("model.vision_tower.", "model.multi_modal_projector.") + (("model.language_model.", "lm_head.")
                                                                       if trains_llm else ())
    tensors = {n: p for n, p in model.named_parameters() if n.startswith(keep) or trainability.LORA_MARK in n}
    tensors.update({HEAD_PREFIX + n: p for n, p in state.contrastive.named_parameters() if not n.startswith("tower.")})
    return tensors


def _load_snapshot(state: State, tensors: dict[str, torch.Tensor], stage_index: int) -> None:
    for stage in state.spec.stages[: stage_index + 1]:
        if stage.trainability.uses_lora:
            trainability.apply(state.model, stage.trainability, stage.lora)  # injects the adapters to load into
    params = dict(state.model.named_parameters())
    params.update({HEAD_PREFIX + n: p for n, p in state.contrastive.named_parameters()})
    copy_into(params, tensors)


def copy_into(params: dict[str, torch.Tensor], tensors: dict[str, torch.Tensor]) -> None:
    """Copy checkpoint ``tensors`` into the recipe's ``params`` by name; a name it does not build is an error."""
    unknown = sorted(set(tensors) - set(params))
    if unknown:
        raise TrainingError(f"the checkpoint holds tensors this recipe does not build, e.g. '{unknown[0]}'")
    with torch.no_grad():
        for name, value in tensors.items():
            params[name].copy_(value)


# ----------------------------------------------------------------------------------------------------------------
# Saving the trained model


def save(state: State, out_dir: Path) -> Path:
    """Write the weights directory (fp16 tower + connector + LoRA; see models/weights.py) with its provenance."""
    from edgelmm.models.weights import FORMAT, SCHEMA_VERSION, TRAINED_PREFIXES

    model = state.model
    tensors = {n: p.to(torch.float16) for n, p in trainability.plain_weights(model, TRAINED_PREFIXES).items()}
    lora = next((s.lora for s in state.spec.stages if s.trainability.llm == Trainability.LORA), None)
    lora_tensors, lora_meta = saved_lora(model, lora, state.base_lora)
    tensors.update({n: p.to(torch.float16) for n, p in lora_tensors.items()})
    meta = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "name": "smol-vqa" if state.spec.base_model == "smol-vqa-init" else f"{state.spec.base_model}-trained",
        "base_lm": state.base_lm,
        "vision_config": vision_config_dict(model.config.vision_config),
        "lora": lora_meta,
        "dtype": "float16",
    }
    provenance = provenance_record(state)
    directory = Path(out_dir)
    checkpoint.save(directory, tensors, meta, files={"provenance.json": json.dumps(provenance, indent=2) + "\n"})
    return directory


VISION_KEYS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
               "image_size", "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout", "vision_use_head")


def vision_config_dict(config: Any) -> dict[str, Any]:
    return {k: getattr(config, k) for k in VISION_KEYS}


def provenance_record(state: State) -> dict[str, Any]:
    import peft
    import transformers

    return {
        "command": "edgelmm " + " ".join(sys.argv[1:]) if sys.argv else "",
        "recipe": to_dict(state.spec),
        "seed": state.spec.seed,
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "data_versions": {name: DATASETS[name].version for name in sorted(DATASETS)},
        "world_size": state.ctx.dist.world,
        "device": str(state.ctx.dist.device),
        "train_seconds": round(state.ctx.elapsed, 1),
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__},
        "eval": {},
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# ----------------------------------------------------------------------------------------------------------------
# Loss plot


def plot_losses(log: Path, out: Path) -> None:
    """One panel per stage: total loss per step (and a 20-step moving average), from log.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = loop.read_log(log)
    stages = list(dict.fromkeys(r["stage"] for r in records))
    if not stages:
        return
    fig, axes = plt.subplots(1, len(stages), figsize=(4.5 * len(stages), 3.2), squeeze=False)
    for ax, name in zip(axes[0], stages):
        steps = [r["step"] for r in records if r["stage"] == name]
        losses = [r["loss"] for r in records if r["stage"] == name]
        ax.plot(steps, losses, lw=0.6, alpha=0.5, label="loss")
        window = min(20, len(losses))
        smooth = [sum(losses[max(0, i - window + 1): i + 1]) / len(losses[max(0, i - window + 1): i + 1])
                  for i in range(len(losses))]
        ax.plot(steps, smooth, lw=1.5, label=f"mean of {window}")
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("loss")
    axes[0][0].legend()
    fig.tight_layout()
    tmp = out.with_name(out.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)
