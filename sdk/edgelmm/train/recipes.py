"""RECIPES: every training recipe by name. Entries are data; the recipe module is imported only when it runs.

A recipe module provides (torchtune's recipe interface, with the step loop shared in ``train/loop.py``):

    presets: dict[str, Callable[[], RecipeSpec]]   named specs ("full", "quick"), each saying why it differs
    setup(spec, ctx, resume) -> State              build models, data and text encoders; load a checkpoint
    train(state) -> State                          run the stages (each through loop.run_stage)
    save(state, out_dir) -> Path                   write the trained weights and their provenance
"""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path
from typing import Any, Protocol

from edgelmm.registry import lookup
from edgelmm.train.specs import RecipeSpec


class Recipe(Protocol):
    presets: dict[str, Any]

    def setup(self, spec: RecipeSpec, ctx: Any, resume: dict[str, Any] | None) -> Any: ...

    def train(self, state: Any) -> Any: ...

    def save(self, state: Any, out_dir: Path) -> Path: ...


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class RecipeEntry:
    name: str
    module: str
    """Module implementing the Recipe protocol; imported lazily (it imports torch)."""
    presets_module: str
    """Torch-free module with ``PRESETS: dict[str, () -> RecipeSpec]``, so --dry-run and --list stay cheap."""
    description: str


RECIPES: dict[str, RecipeEntry] = {
    # Imp (arXiv 2405.12107, MILVLG/imp): projector-only alignment on captions, then projector + LoRA on
    # instructions, vision frozen; preceded here by SigLIP pretraining of our own tower (no hub to download one).
    "imp": RecipeEntry(
        name="imp",
        module="edgelmm.train.imp",
        presets_module="edgelmm.train.imp_presets",
        description="SigLIP tower pretraining, then Imp's two stages (connector; connector + LoRA) -> smol-vqa",
    ),
    # MLLM-Tool (arXiv 2401.10727, MLLM-Tool/MLLM-Tool): one instruction-tuning stage, projection + LoRA (r 32,
    # alpha 32, q/k/v/o), answers {'api_name': <tool>}, one row per valid tool; here on smol-vqa and our catalog.
    "mllm-tool": RecipeEntry(
        name="mllm-tool",
        module="edgelmm.train.mllm_tool",
        presets_module="edgelmm.train.mllm_tool_presets",
        description="connector + LoRA fine-tune of smol-vqa to pick tools: {\"api_name\": <id>} (tool-selection)",
    ),
    # LLaVA-KD (arXiv 2410.16236): a shallower student learns from the teacher's output distributions (MDist) and
    # visual-token relations (RDist) in DPT -> SFT -> DFT.
    "llava-kd": RecipeEntry(
        name="llava-kd",
        module="edgelmm.train.llava_kd",
        presets_module="edgelmm.train.llava_kd_presets",
        description="LLaVA-KD distillation (DPT, SFT, DFT with MDist + RDist) of smol-vqa into smol-vqa-s",
    ),
    # Item-Language Model (arXiv 2406.02844): BPR item vectors -> Q-Former -> adaptor -> frozen SmolLM2.
    "ilm": RecipeEntry(
        name="ilm",
        module="edgelmm.train.item_lm",
        presets_module="edgelmm.train.item_lm_presets",
        description="BPR CF table, Q-Former item encoder (phase 1: ITC/ITG/ITM/IIC), then Q-Former + adaptor on "
                    "conversational recommendation with the LM frozen",
    ),
}


def presets(name: str) -> dict[str, Any]:
    entry = lookup(RECIPES, name, what="recipe")
    return importlib.import_module(entry.presets_module).PRESETS


def load(name: str) -> Recipe:
    return importlib.import_module(lookup(RECIPES, name, what="recipe").module)
