"""Apply a ComponentTraining to a LLaVA model: full (all weights train), lora (peft adapters train), frozen.

Components of a ``LlavaForConditionalGeneration``: ``vision_tower`` (model.vision_tower), ``connector``
(model.multi_modal_projector) and ``llm`` (model.language_model plus lm_head when it is not tied). LoRA adapters are
injected once with peft's ``inject_adapter_in_model`` (the module tree keeps its names; each target Linear gains
``lora_A`` / ``lora_B``); later stages reuse them.
"""

from __future__ import annotations

import torch
from torch import nn

from edgelmm.errors import SpecError
from edgelmm.specs import Trainability
from edgelmm.train.specs import ComponentTraining, LoraSpec

LORA_MARK = ".lora_"
CONNECTOR_MARK = "multi_modal_projector."
"""In the name of every LLaVA connector parameter (``model.multi_modal_projector.*``)."""


def components(model: nn.Module) -> dict[str, list[nn.Module]]:
    """component name -> its modules in ``model`` (a LlavaForConditionalGeneration)."""
    llm: list[nn.Module] = [model.model.language_model]
    if not model.config.tie_word_embeddings:
        llm.append(model.lm_head)
    return {
        "vision_tower": [model.model.vision_tower],
        "connector": [model.model.multi_modal_projector],
        "llm": llm,
    }


def has_lora(module: nn.Module) -> bool:
    return any(LORA_MARK in name for name, _ in module.named_parameters())


def _has_targets(module: nn.Module, spec: LoraSpec) -> bool:
    return any(isinstance(m, nn.Linear) and name.rsplit(".", 1)[-1] in spec.target_modules
               for name, m in module.named_modules())


def inject_lora(module: nn.Module, spec: LoraSpec) -> None:
    """Add peft LoRA adapters (B initialised to zero, so the model is unchanged) to ``module``'s target Linears."""
    from peft import LoraConfig, inject_adapter_in_model

    config = LoraConfig(r=spec.r, lora_alpha=spec.alpha, lora_dropout=spec.dropout,
                        target_modules=list(spec.target_modules), bias="none")
    try:
        inject_adapter_in_model(config, module)
    except ValueError as exc:  # peft: "Target modules ... not found in the base model"
        raise SpecError(f"lora target modules {list(spec.target_modules)} do not match the model: {exc}") from None


def apply(model: nn.Module, training: ComponentTraining, lora: LoraSpec | None = None) -> list[str]:
    """Set requires_grad per component; inject LoRA where asked. Returns the names of the trainable parameters.

    Frozen components are put in eval mode (no dropout, no batch statistics); trainable ones in train mode.
    """
    parts = components(model)
    for name, mode in training.items():
        if mode == Trainability.LORA:
            if lora is None:
                raise SpecError(f"{name}: lora training needs a LoraSpec")
            targets = [m for m in parts[name] if _has_targets(m, lora)]
            if not targets:
                raise SpecError(f"{name}: lora target modules {list(lora.target_modules)} match no layer of it")
            for module in targets:
                if not has_lora(module):
                    inject_lora(module, lora)
        for module in parts[name]:
            for pname, param in module.named_parameters():
                is_lora = LORA_MARK in pname
                # full training of a LoRA'd LM trains the base weights, not the (then redundant) adapters
                param.requires_grad_(is_lora if mode == Trainability.LORA else mode == Trainability.FULL and not is_lora)
            module.train(mode != Trainability.FROZEN)
    return [n for n, p in model.named_parameters() if p.requires_grad]


def plain_weights(model: nn.Module, prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Parameters under ``prefixes`` named as in the plain (peft-free) model, LoRA adapters left out (``lora_tensors``
    has them): a LoRA-wrapped Linear's ``q_proj.base_layer.weight`` is saved as ``q_proj.weight``, which is what
    loading a weights directory looks for (a tower trained with LoRA, say)."""
    return {n.replace(".base_layer.", "."): p.detach() for n, p in model.named_parameters()
            if n.startswith(prefixes) and LORA_MARK not in n}


def lora_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """LoRA weights under peft-free names: ``<linear path>.lora_A`` [r, in] and ``<linear path>.lora_B`` [out, r]."""
    out = {}
    for name, param in model.named_parameters():
        if LORA_MARK in name:
            # "...q_proj.lora_A.default.weight" -> "...q_proj.lora_A"
            head, _, tail = name.partition(LORA_MARK)
            out[f"{head}.lora_{tail.split('.')[0]}"] = param
    return out
