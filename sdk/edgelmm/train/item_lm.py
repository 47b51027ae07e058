"""The ilm recipe (Item-Language Model, arXiv 2406.02844, at 2-core scale): setup / train / save / load.

Stages: item_lm_presets.py. Setup fits the BPR CF table on the training users (held-out users never train
anything), builds the frozen LM and the item encoder; phase 1 trains the Q-Former with its BLIP-2 heads, phase 2
the Q-Former + adaptor through the frozen LM. The step loop, checkpoints and logs are train/loop.py's.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgelmm.errors import SpecError
from edgelmm.models.item_encoder import (
    ILM_FORMAT,
    ILM_SCHEMA_VERSION,
    ITEM_LMS,
    ItemEncoder,
    ItemTokenEncoder,
    encoder_config,
    load_item_lm_dir,
)
from edgelmm.models.registry import build_model
from edgelmm.registry import lookup
from edgelmm.specs import Trainability, to_dict
from edgelmm.train import checkpoint, loop
from edgelmm.train.bpr import CFTables, train_bpr
from edgelmm.train.data import item_chat
from edgelmm.train.data.interactions import Interactions, co_engaged_pairs, load_dataset
from edgelmm.train.item_lm_objectives import CompactText, ItemLanguageModel, ItemTextPretraining, pretraining_batch
from edgelmm.train.specs import RecipeSpec, StageSpec

SPLIT_SEED = 0
"""Which users are held out. Fixed (not the recipe seed), so every model and baseline is scored on the same users."""
HELD_OUT = 0.2
PHASE1_PREFIX = "phase1."
"""Checkpoint names of phase 1's heads and text embeddings (scaffolding: not part of the saved model)."""


@dataclasses.dataclass(slots=True)
class State:
    spec: RecipeSpec
    ctx: loop.RunContext
    data: Interactions
    train_users: np.ndarray
    cf: CFTables
    lm: Any
    """LoadedModel of the frozen LM."""
    encoder: ItemEncoder
    pretraining: ItemTextPretraining | None
    resume: dict[str, Any] | None = None


def setup(spec: RecipeSpec, ctx: loop.RunContext, resume: dict[str, Any] | None = None) -> State:
    entry = lookup(ITEM_LMS, spec.base_model, what="item-language base model")
    names = {s.dataset for stage in spec.stages for s in stage.data}
    if len(names) != 1:
        raise SpecError(f"recipe 'ilm': every stage must name the same interaction dataset, got {sorted(names)}")
    if any(s.format == "item-text" for s in spec.stages) and entry.encoder.get("kind") != "qformer":
        raise SpecError(f"base model '{spec.base_model}' has no Q-Former: phase 1 (item-text) needs one")
    data = load_dataset(names.pop())
    train_users, _ = data.split_users(HELD_OUT, SPLIT_SEED)
    torch.manual_seed(spec.seed)
    if resume is not None and "cf.item" in resume["tensors"]:  # the checkpoint holds the table this run fitted
        tensors = resume["tensors"]
        cf = CFTables(item=tensors["cf.item"].numpy().copy(), item_bias=tensors["cf.item_bias"].numpy().copy(),
                      user=np.zeros((data.n_users, entry.cf_dim), dtype=np.float32))
    else:
        cf = train_bpr(data, train_users, dim=entry.cf_dim, seed=spec.seed)
    lm = build_model(entry.lm)
    lm.model.requires_grad_(False)
    config = encoder_config(spec.base_model, lm.model.config.hidden_size)
    encoder = ItemEncoder(config)
    pretraining = None
    if any(s.format == "item-text" for s in spec.stages):
        text = CompactText(data, lm.tokenizer)
        pretraining = ItemTextPretraining(encoder, torch.from_numpy(cf.item), text.size)
    state = State(spec=spec, ctx=ctx, data=data, train_users=train_users, cf=cf, lm=lm, encoder=encoder,
                  pretraining=pretraining, resume=resume)
    if resume is not None:
        _load_snapshot(state, resume["tensors"])
    for module in (lm.model, encoder, pretraining):
        if module is not None:
            module.to(ctx.dist.device)
    return state


def train(state: State) -> State:
    from edgelmm.train.imp import run_stages

    return run_stages(state, _stage)


def _stage(state: State, stage: StageSpec, index: int) -> loop.Stage:
    if stage.trainability.llm != Trainability.FROZEN:
        raise SpecError(f"stage '{stage.name}': the ilm recipe keeps the LM frozen (llm must be frozen)")
    encoder = state.encoder
    encoder.requires_grad_(False)
    if encoder.config.kind == "qformer":
        for name, p in encoder.named_parameters():
            part = "connector" if name.startswith("adaptor.") else "vision_tower"
            p.requires_grad_(getattr(stage.trainability, part) == Trainability.FULL)
    else:
        encoder.requires_grad_(stage.trainability.connector == Trainability.FULL)
    seed = (state.spec.seed, index)
    if stage.format == "item-text":
        module: torch.nn.Module = state.pretraining
        module.losses = tuple(t.name for t in stage.losses)
        for name, p in module.named_parameters():
            if not name.startswith("encoder."):
                p.requires_grad_(True)
        pairs = co_engaged_pairs(state.data, state.train_users)
        text = CompactText(state.data, state.lm.tokenizer)
        make: Any = functools.partial(pretraining_batch, pairs, text)
    elif stage.format == "item-chat":
        module = ItemLanguageModel(state.lm.model, ItemTokenEncoder(encoder, torch.from_numpy(state.cf.item)))
        # the LM's own chat template (SmolLM2's adds its default system prompt): the bundle renders prompts with it,
        # so the item tokens are trained in the context they meet at run time
        collate = item_chat.ItemChatCollator(tokenizer=state.lm.tokenizer, chat_template=state.lm.chat_template,
                                             num_item_tokens=encoder.config.num_item_tokens)

        def make(rng: np.random.Generator, size: int) -> item_chat.ItemChatBatch:
            return collate([item_chat.sample(state.data, state.train_users, rng) for _ in range(size)])
    else:
        raise SpecError(f"stage '{stage.name}': format '{stage.format}' is not an ilm format (item-text, item-chat)")
    module.to(state.ctx.dist.device).train()
    state.lm.model.eval()  # frozen and deterministic (no dropout) whatever module.train() set

    def batches(start: int, rank: int) -> Iterator[Any]:
        for step in range(start, stage.steps):
            for micro in range(stage.grad_accum):
                rng = np.random.default_rng((*seed, step, micro, rank))  # a resumed run sees the same batches
                yield make(rng, stage.batch_size)

    return loop.Stage(spec=stage, index=index, module=module, batches=batches,
                      snapshot=functools.partial(snapshot, state))


def snapshot(state: State) -> dict[str, torch.Tensor]:
    """Encoder, phase-1 heads and the CF table (everything this run made; the LM is frozen and not saved)."""
    tensors = {f"encoder.{n}": p for n, p in state.encoder.named_parameters()}
    if state.pretraining is not None:
        tensors.update({PHASE1_PREFIX + n: p for n, p in state.pretraining.named_parameters()
                        if not n.startswith("encoder.")})
    tensors.update({"cf.item": torch.from_numpy(state.cf.item), "cf.item_bias": torch.from_numpy(state.cf.item_bias)})
    return tensors


def _load_snapshot(state: State, tensors: dict[str, torch.Tensor]) -> None:
    from edgelmm.train.imp import copy_into

    copy_into(dict(snapshot(state)), tensors)


def save(state: State, out_dir: Path) -> Path:
    """The trained item encoder, the CF table and what to rebuild them with (fp32: they are small)."""
    from edgelmm.train.imp import provenance_record

    tensors = {f"encoder.{n}": p.detach() for n, p in state.encoder.named_parameters()}
    tensors.update({"cf.item": torch.from_numpy(state.cf.item), "cf.item_bias": torch.from_numpy(state.cf.item_bias)})
    meta = {"format": ILM_FORMAT, "schema_version": ILM_SCHEMA_VERSION, "base_model": state.spec.base_model,
            "lm": ITEM_LMS[state.spec.base_model].lm, "encoder": to_dict(state.encoder.config),
            "dataset": state.spec.stages[0].data[0].dataset, "split_seed": SPLIT_SEED, "held_out": HELD_OUT,
            "phases": [s.format for s in state.spec.stages]}
    provenance = provenance_record(state)  # type: ignore[arg-type]  # reads spec, ctx only
    provenance["data_versions"] = {meta["dataset"]: state.data.name}
    checkpoint.save(Path(out_dir), tensors, meta, files={"provenance.json": json.dumps(provenance, indent=2) + "\n"})
    return Path(out_dir)


# ----------------------------------------------------------------------------------------------------------------
# Loading a trained item-language model


@dataclasses.dataclass(slots=True)
class TrainedILM:
    model: ItemLanguageModel | None
    lm: Any
    """LoadedModel of the frozen LM."""
    data: Interactions
    cf: CFTables
    train_users: np.ndarray
    held_out_users: np.ndarray
    meta: dict[str, Any]


def load(directory: str | Path, *, with_lm: bool = True) -> TrainedILM:
    """A saved ilm model directory -> the model, its data and CF table (the data are rebuilt from their name).
    ``with_lm=False``: no LM is built (``model`` and ``lm`` are None): enough for the CF and popularity baselines."""
    lm, encoder, item, item_bias, meta = load_item_lm_dir(directory, with_lm=with_lm)
    data = load_dataset(meta["dataset"])
    train_users, held_out = data.split_users(meta["held_out"], meta["split_seed"])
    if item.shape[0] != data.n_items:
        raise SpecError(f"'{directory}': CF table has {item.shape[0]} rows, dataset '{meta['dataset']}' "
                        f"{data.n_items} items")
    cf = CFTables(item=item.numpy(), item_bias=item_bias.numpy(),
                  user=np.zeros((data.n_users, item.shape[1]), dtype=np.float32))
    model = ItemLanguageModel(lm.model, ItemTokenEncoder(encoder, item)).eval() if lm is not None else None
    return TrainedILM(model=model, lm=lm, data=data, cf=cf, train_users=train_users, held_out_users=held_out,
                      meta=meta)
