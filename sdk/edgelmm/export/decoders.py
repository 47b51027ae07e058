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


DECODER_BUILDERS: dict[str, DecoderBuilder] = {
    # LlamaForCausalLM (SmolLM2, TinyLlama, Llama 2/3...) and the Llama inside LlavaForConditionalGeneration.
    "llama": DecoderBuilder(model_type="llama", build="edgelmm.export.llama_graph:build_llama_decoder",
                            unsupported="edgelmm.export.llama_graph:unsupported_reason"),
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


def build_decoder(builder: DecoderBuilder, model: Any, max_length: int) -> tuple[Any, Any]:
    return _resolve(builder.build)(model, max_length)
