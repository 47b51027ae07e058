"""A decoder graph made for speed, built node by node from Hugging Face Llama weights (onnx.helper).

One layer (``/decoder/layers.{i}/...``); the residual stream rides in SkipSimplifiedLayerNormalization::

    residual ─┬────────────────────────────────────────────────────────────┐
              │                                                            │
    (prev out)┴► SkipSimplifiedLayerNorm ─► MatMul qkv ─► GroupQueryAttention ─► MatMul o ─► SkipSimplifiedLayerNorm
                     (input_layernorm)       [H, (n+2k)d]   rotary inside,        [nd, H]    (post_attention_layernorm)
                                                            KV in a shared buffer                  │
                  ◄── MatMul down ◄── silu(gate) * up ◄── Split ◄── MatMul gate|up [H, 2I] ◄──────┘

The KV cache of each layer is one preallocated buffer ``[B, kv_heads, max_cache, head_dim]``: the runtime binds the
same memory as ``past_key_values.{i}.key`` and ``present.{i}.key``, and GroupQueryAttention writes only the new
rows (no concatenation, no copy of the past). Positions and lengths come from ``attention_mask``
(``seqlens_k = sum(mask) - 1``, ``total = mask.shape[1]``); rotary uses cos/sin caches computed by the model's
own rotary module (so rope scaling variants are whatever transformers computes). ``logits_to_keep`` (int64
scalar) keeps the last K positions before the LM head (0 keeps all: validation and teacher forcing).

Given the LM's LoRA unmerged (``LoadedModel.lora``), each projection MatMul holds the base weight and gets a float
side path beside it (export/lora_graph.py): qkv, o, gate|up and down, three more nodes each.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

from edgelmm.export.lora_graph import add_side_path, fused_factors
from edgelmm.models.loaded import LoraAdapters
from edgelmm.runtime.manifest import KVCacheSpec

MS_DOMAIN = "com.microsoft"
OPSET = 18
"""GroupQueryAttention, MatMulNBits and the fused norms are com.microsoft contrib ops; the rest stays at opset 18."""
ROPE_TYPES = ("default", "linear", "llama3", "yarn")
"""Rope types whose cos/sin do not depend on the sequence length (dynamic NTK and longrope do)."""


@dataclasses.dataclass(frozen=True, slots=True)
class LlamaGeometry:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    eps: float


def unsupported_reason(model: Any) -> str | None:
    """Why this builder cannot express ``model``'s text decoder, or None when it can."""
    text = model.config.get_text_config(decoder=True)
    rope = (getattr(text, "rope_parameters", None) or getattr(text, "rope_scaling", None) or {}) or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    problems = []
    if getattr(text, "hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {text.hidden_act}")
    if getattr(text, "attention_bias", False) or getattr(text, "mlp_bias", False):
        problems.append("biases in attention or MLP")
    if rope_type not in ROPE_TYPES:
        problems.append(f"rope type {rope_type}")
    if getattr(text, "partial_rotary_factor", 1.0) != 1.0:
        problems.append("partial rotary")
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    if head_dim % 16:
        problems.append(f"head_dim {head_dim} (GroupQueryAttention needs a multiple of 16)")
    return ", ".join(problems) or None


def geometry(model: Any) -> LlamaGeometry:
    text = model.config.get_text_config(decoder=True)
    heads = int(text.num_attention_heads)
    return LlamaGeometry(
        hidden=int(text.hidden_size),
        intermediate=int(text.intermediate_size),
        layers=int(text.num_hidden_layers),
        heads=heads,
        kv_heads=int(getattr(text, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(text, "head_dim", None) or text.hidden_size // heads),
        vocab=int(model.get_output_embeddings().weight.shape[0]),
        eps=float(text.rms_norm_eps),
    )


def _language_model(model: Any) -> Any:
    """The LlamaModel (layers, norm, rotary_emb) of a LlamaForCausalLM or of a LLaVA's text half."""
    base = model.model
    return getattr(base, "language_model", base)


def rotary_caches(model: Any, length: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
    """cos, sin float32 [length, head_dim / 2] from the model's own rotary module (scaling included)."""
    rotary = _language_model(model).rotary_emb
    positions = torch.arange(length, dtype=torch.int64)[None]
    with torch.no_grad():
        cos, sin = rotary(torch.zeros(1, dtype=torch.float32), positions)
    half = head_dim // 2
    # transformers duplicates the half-dim table (rotate_half layout); GroupQueryAttention wants one half.
    return cos[0, :, :half].float().numpy().copy(), sin[0, :, :half].float().numpy().copy()


def kv_spec_shared(geo: LlamaGeometry, max_length: int) -> KVCacheSpec:
    return KVCacheSpec(layout="shared-buffer", num_layers=geo.layers, num_kv_heads=geo.kv_heads,
                       head_dim=geo.head_dim, max_length=max_length)


class _Graph:
    """Collects nodes and initializers with path-like names."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def init(self, name: str, array: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str] | int, name: str, *, domain: str = "",
             **attrs: Any) -> list[str]:
        if isinstance(outputs, int):
            outputs = [f"{name}/output_{i}" for i in range(outputs)]
        self.nodes.append(helper.make_node(op, inputs, outputs, name=name, domain=domain or None, **attrs))
        return outputs


def _t(weight: torch.Tensor) -> np.ndarray:
    """nn.Linear weight [out, in] -> MatMul B [in, out], float32."""
    return weight.detach().float().numpy().T


class _Weights:
    """Where projection weights come from: the model's Linears, or their base weights + LoRA side paths."""

    def __init__(self, model: Any, lora: LoraAdapters | None) -> None:
        self.lora = lora
        self.paths = {module: name for name, module in model.named_modules()} if lora else {}

    def projection(self, g: _Graph, prefix: str, x: str, linears: list[Any]) -> str:
        """x [B, S, in] @ the Linears' weights side by side [in, Σout] (+ their LoRA side path); the output name."""
        paths = [self.paths.get(linear, "") for linear in linears]
        base = self.lora.base if self.lora else {}
        weight = np.concatenate([_t(base.get(p, lin.weight)) for p, lin in zip(paths, linears)], axis=1)
        out = g.node("MatMul", [x, g.init(f"{prefix}/weight", weight)], 1, f"{prefix}/MatMul")[0]
        factors = fused_factors(self.lora, paths, [lin.out_features for lin in linears]) if self.lora else None
        return out if factors is None else add_side_path(g, prefix, x, out, *factors)


def build_llama_decoder(model: Any, max_length: int, lora: LoraAdapters | None = None
                        ) -> tuple[onnx.ModelProto, KVCacheSpec]:
    """The fp32 decoder graph of ``model``'s Llama text decoder and its KV-cache spec.

    Inputs: inputs_embeds float32 [B, S, hidden]; attention_mask int64 [B, past + S] (1 = real token; right-aligned
    rows only, no left padding); past_key_values.{i}.key/value float32 [B, kv_heads, max_cache, head_dim] (a shared
    buffer; rows past ``past`` are ignored); logits_to_keep int64 [] (0 = all). Outputs: logits float32
    [B, K or S, vocab]; present.{i}.key/value float32 [B, kv_heads, max_cache, head_dim] (same shape as past: bind
    the same memory). ``max_length`` bounds positions (size of the cos/sin caches). ``lora``: build the projections
    from its base weights with LoRA side paths (``model`` then holds the merged weights, used for nothing else).
    """
    geo = geometry(model)
    lm = _language_model(model)
    kv = kv_spec_shared(geo, max_length)
    g = _Graph()
    _lengths(g)
    cos, sin = rotary_caches(model, max_length, geo.head_dim)
    g.init("/decoder/rotary/cos_cache", cos)
    g.init("/decoder/rotary/sin_cache", sin)

    previous, residual, weights = "inputs_embeds", None, _Weights(model, lora)
    for i, layer in enumerate(lm.layers):
        previous, residual = _layer(g, geo, kv, i, layer, previous, residual, weights)
    final = "/decoder/norm"
    normed = _skip_norm(g, final, previous, residual, lm.norm.weight, geo.eps)[0]
    starts = g.node("Neg", ["logits_to_keep_1d"], 1, "/decoder/lm_head/Neg")[0]
    kept = g.node("Slice", [normed, starts, g.init("/decoder/lm_head/ends", np.array([2**62], np.int64)),
                            g.init("/decoder/lm_head/axes", np.array([1], np.int64))], 1, "/decoder/lm_head/Slice")[0]
    head = g.init("/decoder/lm_head/weight", _t(model.get_output_embeddings().weight))
    g.node("MatMul", [kept, head], ["logits"], "/decoder/lm_head/MatMul")

    past_shape = ["batch_size", geo.kv_heads, "max_cache_length", geo.head_dim]
    inputs = [
        helper.make_tensor_value_info("inputs_embeds", TensorProto.FLOAT, ["batch_size", "sequence_length", geo.hidden]),
        helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch_size", "total_sequence_length"]),
        *[helper.make_tensor_value_info(n, TensorProto.FLOAT, past_shape)
          for pair in zip(kv.names("past_key"), kv.names("past_value")) for n in pair],
        helper.make_tensor_value_info("logits_to_keep", TensorProto.INT64, []),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch_size", "logits_length", geo.vocab]),
        *[helper.make_tensor_value_info(n, TensorProto.FLOAT, past_shape)
          for pair in zip(kv.names("present_key"), kv.names("present_value")) for n in pair],
    ]
    graph = helper.make_graph(g.nodes, "decoder", inputs, outputs, initializer=g.inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET), helper.make_opsetid(MS_DOMAIN, 1)],
                              producer_name="edgelmm")
    proto.ir_version = 10
    return proto, kv


def _lengths(g: _Graph) -> None:
    """seqlens_k int32 [B] = real tokens - 1; total_sequence_length int32 [] = mask width; logits_to_keep as [1]."""
    p = "/decoder/lengths"
    summed = g.node("ReduceSum", ["attention_mask", g.init(f"{p}/axes", np.array([1], np.int64))], 1,
                    f"{p}/ReduceSum", keepdims=0)[0]
    minus = g.node("Sub", [summed, g.init(f"{p}/one", np.array(1, np.int64))], 1, f"{p}/Sub")[0]
    g.node("Cast", [minus], ["seqlens_k"], f"{p}/Cast_seqlens", to=TensorProto.INT32)
    shape = g.node("Shape", ["attention_mask"], 1, f"{p}/Shape", start=1, end=2)[0]
    total = g.node("Squeeze", [shape], 1, f"{p}/Squeeze")[0]
    g.node("Cast", [total], ["total_sequence_length"], f"{p}/Cast_total", to=TensorProto.INT32)
    g.node("Reshape", ["logits_to_keep", g.init(f"{p}/shape1", np.array([1], np.int64))], ["logits_to_keep_1d"],
           f"{p}/Reshape_keep")


def _skip_norm(g: _Graph, prefix: str, x: str, residual: str | None, weight: torch.Tensor,
               eps: float) -> tuple[str, str]:
    """RMSNorm of x (+ residual when given): returns (normed, new residual)."""
    w = g.init(f"{prefix}/weight", weight.detach().float().numpy())
    if residual is None:
        out = g.node("SimplifiedLayerNormalization", [x, w], [f"{prefix}/output_0"], f"{prefix}/SimplifiedLayerNorm",
                     epsilon=eps, axis=-1, stash_type=1)
        return out[0], x
    out = g.node("SkipSimplifiedLayerNormalization", [x, residual, w],
                 [f"{prefix}/output_0", "", "", f"{prefix}/output_3"], f"{prefix}/SkipSimplifiedLayerNorm",
                 domain=MS_DOMAIN, epsilon=eps)
    return out[0], out[3]


def _layer(g: _Graph, geo: LlamaGeometry, kv: KVCacheSpec, i: int, layer: Any, x: str,
           residual: str | None, weights: _Weights) -> tuple[str, str]:
    """One transformer block; returns (block output before the residual add, residual stream)."""
    p = f"/decoder/layers.{i}"
    attn, mlp = layer.self_attn, layer.mlp
    normed, residual = _skip_norm(g, f"{p}/input_layernorm", x, residual, layer.input_layernorm.weight, geo.eps)
    qkv = weights.projection(g, f"{p}/attn/qkv_proj", normed, [attn.q_proj, attn.k_proj, attn.v_proj])
    names = [kv.past_key.format(layer=i), kv.past_value.format(layer=i)]
    presents = [kv.present_key.format(layer=i), kv.present_value.format(layer=i)]
    out = g.node(
        "GroupQueryAttention",
        [qkv, "", "", *names, "seqlens_k", "total_sequence_length", "/decoder/rotary/cos_cache",
         "/decoder/rotary/sin_cache"],
        [f"{p}/attn/GroupQueryAttention/output_0", *presents],
        f"{p}/attn/GroupQueryAttention", domain=MS_DOMAIN,
        num_heads=geo.heads, kv_num_heads=geo.kv_heads, do_rotary=1, rotary_interleaved=0,
        scale=float(getattr(attn, "scaling", geo.head_dim**-0.5)),
    )[0]
    o = weights.projection(g, f"{p}/attn/o_proj", out, [attn.o_proj])
    normed, residual = _skip_norm(g, f"{p}/post_attention_layernorm", o, residual,
                                  layer.post_attention_layernorm.weight, geo.eps)
    gate_up = weights.projection(g, f"{p}/mlp/gate_up_proj", normed, [mlp.gate_proj, mlp.up_proj])
    gate, up = g.node("Split", [gate_up], 2, f"{p}/mlp/Split", axis=-1, num_outputs=2)
    sig = g.node("Sigmoid", [gate], 1, f"{p}/mlp/act/Sigmoid")[0]
    silu = g.node("Mul", [gate, sig], 1, f"{p}/mlp/act/Mul")[0]
    hidden = g.node("Mul", [silu, up], 1, f"{p}/mlp/Mul")[0]
    down = weights.projection(g, f"{p}/mlp/down_proj", hidden, [mlp.down_proj])
    return down, residual
