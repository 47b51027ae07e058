"""DECODER_BUILDERS: hand-built fast decoder graphs per text architecture; everything else takes torch.onnx.

A builder turns Hugging Face weights directly into an onnxruntime-optimised graph (fused attention with the KV cache
in one shared buffer, fused norms, last-position logits). Architectures without one keep the generic torch.onnx
export (past-present KV), which handles any causal LM transformers can run.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from typing import Any

from edgelmm.errors import SpecError

DECODER_GRAPHS = ("auto", "fast", "generic")
"""auto: the fast builder when the architecture has one and supports the config, else generic; fast: the builder
or an error; generic: always torch.onnx (the past-present baseline)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class DecoderBuilder:
    model_type: str
    """The text config's model_type (LlavaForConditionalGeneration's text half included)."""
    build: str
    """"module:function" (model, max_length) -> (onnx.ModelProto, KVCacheSpec), fp32."""
    unsupported: str
    """"module:function" (model) -> why this config cannot be built, or None."""
    lora_side_path: bool = False
    """``build`` takes ``lora=`` (LoadedModel.lora): base weights plus float LoRA side paths (export/lora_graph.py)."""


DECODER_BUILDERS: dict[str, DecoderBuilder] = {
    # LlamaForCausalLM (SmolLM2, TinyLlama, Llama 2/3...) and the Llama inside LlavaForConditionalGeneration.
    "llama": DecoderBuilder(model_type="llama", build="edgelmm.export.llama_graph:build_llama_decoder",
                            unsupported="edgelmm.export.llama_graph:unsupported_reason", lora_side_path=True),
}


def _resolve(target: str) -> Callable[..., Any]:
    module, func = target.split(":")
    return getattr(importlib.import_module(module), func)


def select_builder(model: Any, mode: str) -> tuple[DecoderBuilder | None, str]:
    """The builder to use for ``model`` under ``mode`` (see DECODER_GRAPHS) and a one-line reason for the record."""
    if mode not in DECODER_GRAPHS:
        raise SpecError(f"decoder graph '{mode}' is not valid; valid: {', '.join(DECODER_GRAPHS)}")
    model_type = str(model.config.get_text_config(decoder=True).model_type)
    if mode == "generic":
        return None, "generic torch.onnx export requested"
    builder = DECODER_BUILDERS.get(model_type)
    reason = None if builder else f"no fast builder for model_type '{model_type}' (have: {', '.join(DECODER_BUILDERS)})"
    if builder is not None:
        problem = _resolve(builder.unsupported)(model)
        reason = f"the fast {model_type} builder does not support {problem}" if problem else None
    if reason is None:
        return builder, f"fast {model_type} builder"
    if mode == "fast":
        raise SpecError(f"cannot build a fast decoder: {reason}; use decoder graph 'auto' or 'generic'")
    return None, f"generic torch.onnx export: {reason}"


def build_decoder(builder: DecoderBuilder, model: Any, max_length: int, lora: Any = None) -> tuple[Any, Any]:
    """(fp32 graph, KVCacheSpec); ``lora`` (LoadedModel.lora, builders with ``lora_side_path`` only): base weights
    with LoRA side paths instead of ``model``'s merged weights."""
    if lora is None:
        return _resolve(builder.build)(model, max_length)
    if not builder.lora_side_path:
        raise SpecError(f"the {builder.model_type} decoder builder has no LoRA side path; export LoRA merged")
    return _resolve(builder.build)(model, max_length, lora=lora)


LORA_FORMS = ("auto", "merged", "side-path")
"""How an export carries the LM's unmerged LoRA (LoadedModel.lora): auto (a side path for int4 / w8 decoders where
possible, merged otherwise), merged (into the weights, then quantized), side-path (float beside the base weights)."""


def side_path_problem(loaded: Any, mode: str, *, static_shapes: bool, static_qdq: bool) -> str | None:
    """Why ``loaded``'s LoRA cannot be exported as a side path under decoder graph ``mode``, or None when it can."""
    if loaded.lora is None:
        return "the model has no unmerged LoRA (no LoRA, or a fully trained LM)"
    if static_shapes or static_qdq:
        return "static-shape and static QDQ decoders take merged weights"
    if loaded.positions.rows != 1:
        return f"the generic torch.onnx decoder ({loaded.positions.scheme} positions) has no side path"
    builder, how = select_builder(loaded.model, mode)
    if builder is None or not builder.lora_side_path:
        return f"the decoder has no side path ({how})"
    return None
