"""Split a transformers model into the bundle's role graphs and export each with torch.onnx (dynamo).

    pixel_values ──► [vision_encoder: tower -> connector (models/vision.py)] ──► image_features ─┐
    input_ids ─────► [token_embedding: Gather] ──────────────────────────► inputs_embeds ──┴─► (runtime merges)
    inputs_embeds, attention_mask, position_ids, past K/V ──► [decoder] ──► logits, present K/V

Each wrapper takes and returns flat tensors only; the decoder rebuilds a transformers DynamicCache inside.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from edgelmm.errors import ExportError
from edgelmm.export.io_spec import RoleIO
from edgelmm.models import families
from edgelmm.models.loaded import LoadedModel
from edgelmm.runtime.manifest import KVCacheSpec

TRACE_BATCH, TRACE_SEQ, TRACE_PAST = 2, 3, 4
"""Dummy sizes for tracing: never 0 or 1 (the exporter specialises on them), and unlike the validation shapes."""


def vision_encoder(loaded: LoadedModel) -> nn.Module:
    """The family's vision module (models/vision.py): pixel_values float32 [B, 3, H, W] (normalised, see
    manifest.preprocess) -> image_features [B, T, hidden]; its ``batch_size`` is None or the one B it takes."""
    family = families.get(loaded.family_name)
    module, name = family.vision.split(":")
    return getattr(importlib.import_module(module), name)(loaded.model, loaded.preprocess.image_size)


class TokenEmbedding(nn.Module):
    """input_ids int64 [B, S] in [0, vocab) -> inputs_embeds float32 [B, S, hidden] (any embedding scale included)."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.embed = model.get_input_embeddings()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids)


class Decoder(nn.Module):
    """The LM with a flat KV cache.

    inputs_embeds float32 [B, S, hidden]; attention_mask int64 [B, P + S] (1 = attend); position_ids int64 [B, S];
    past: 2 * layers tensors float32 [B, kv_heads, P, head_dim] (key, value per layer; P may be 0).
    Returns logits float32 [B, S, vocab] and the present K/V [B, kv_heads, P + S, head_dim], same order as past.
    """

    def __init__(self, model: Any, num_layers: int) -> None:
        super().__init__()
        from transformers.cache_utils import DynamicCache

        self.model = model
        self.num_layers = num_layers
        self._cache_cls = DynamicCache
        params = inspect.signature(model.forward).parameters
        # transformers 5 renamed past_key_values to cache (the old name warns, and goes in 5.40).
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def forward(self, inputs_embeds, attention_mask, position_ids, past):  # noqa: ANN001, ANN201 - traced
        cache = self._cache_cls(ddp_cache_data=[(past[2 * i], past[2 * i + 1]) for i in range(self.num_layers)])
        out = self.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            use_cache=True,
            return_dict=True,
            **{self._cache_kw: cache},
        )
        cache = out.cache if hasattr(out, "cache") and out.cache is not None else out.past_key_values
        present = []
        for layer in cache.layers:
            present += [layer.keys, layer.values]
        return (out.logits, *present)


def kv_spec(model: Any) -> KVCacheSpec:
    """KV cache geometry of the model's text decoder."""
    text = model.config.get_text_config(decoder=True)
    heads = text.num_attention_heads
    return KVCacheSpec(
        layout="past-present",
        num_layers=text.num_hidden_layers,
        num_kv_heads=getattr(text, "num_key_value_heads", None) or heads,
        head_dim=getattr(text, "head_dim", None) or text.hidden_size // heads,
    )


def trace_inputs_vision(image_size: tuple[int, int], batch: int | None = None) -> tuple[torch.Tensor, ...]:
    return (torch.rand(batch or TRACE_BATCH, 3, *image_size) * 2 - 1,)


def trace_inputs_embedding(vocab: int) -> tuple[torch.Tensor, ...]:
    return (torch.randint(0, vocab, (TRACE_BATCH, TRACE_SEQ), dtype=torch.int64),)


def trace_inputs_decoder(hidden: int, kv: KVCacheSpec, position_rows: int = 1) -> tuple[Any, ...]:
    b, s, p = TRACE_BATCH, TRACE_SEQ, TRACE_PAST
    past = tuple(torch.randn(b, kv.num_kv_heads, p, kv.head_dim) for _ in range(2 * kv.num_layers))
    positions = position_ids(position_rows, b, p, s)
    return (torch.randn(b, s, hidden) * 0.02, torch.ones(b, p + s, dtype=torch.int64), positions, past)


def position_ids(rows: int, batch: int, start: int, length: int) -> torch.Tensor:
    """int64 [batch, length] positions start.. (rows 1), or [rows, batch, length] whose rows differ (an image's
    M-RoPE rows do), so every rotary section of a multi-row scheme sees its own positions."""
    base = torch.arange(start, start + length, dtype=torch.int64)
    if rows == 1:
        return base.expand(batch, length).contiguous()
    return torch.stack([base // (r + 1) for r in range(rows)])[:, None].expand(rows, batch, length).contiguous()


def dynamic_shapes(io_spec: RoleIO, module: nn.Module) -> dict[str, Any]:
    """torch.export dynamic_shapes keyed by forward argument; varargs past as one nested tuple (pitfalls.md)."""
    args = list(inspect.signature(module.forward).parameters)
    shapes: dict[str, Any] = {}
    tensors = list(io_spec.inputs)
    for arg in args:
        if arg == "past":
            shapes[arg] = tuple(t.axes for t in tensors)
            tensors = []
        else:
            shapes[arg] = tensors.pop(0).axes
    return shapes


def export_role(module: nn.Module, args: tuple[Any, ...], io_spec: RoleIO, path: Path, *, opset: int,
                external_data: bool) -> None:
    """Export one wrapper to ``path`` with the dynamo exporter; exporter chatter is swallowed unless it fails."""
    chatter = io.StringIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)  # "torchvision is not installed" and such
    try:
        with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module.eval(),
                args,
                str(path),
                input_names=io_spec.input_names,
                output_names=io_spec.output_names,
                dynamic_shapes=dynamic_shapes(io_spec, module),
                dynamo=True,
                opset_version=opset,
                external_data=external_data,
                optimize=True,
            )
    except Exception as exc:  # the exporter raises many types; report the first line with the role
        first = str(exc).strip().split("\n")[0][:300]
        raise ExportError(f"torch.onnx export of {io_spec.role} failed: {type(exc).__name__}: {first}") from exc
