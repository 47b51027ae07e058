"""A decoder step at fixed shapes, for NPU compilers (Qualcomm HTP through QNN): KV layout ``static-buffer``.

    inputs_embeds   float32 [1, 1, hidden]               one token (a prompt is fed one token per call)
    attention_mask  int64   [1, C]                       ones for positions 0..p (p = this token's), zeros after
    past K/V        float32 [1, kv_heads, C, head_dim]   C = max_context, rows > p-1 unused
      -> logits     float32 [1, 1, vocab]
      -> present K/V float32 [1, kv_heads, C, head_dim]  the past with row p replaced (Where on a one-hot row)

Every shape is static and every op is plain ONNX (no GroupQueryAttention, no Gather on int64 positions): the
position is ``sum(mask) - 1`` as a float, the rotary cos/sin are picked from their [C, head_dim] tables by a one-hot
multiply-and-sum (elementwise, so the MatMul-only QDQ pass leaves them float), and masked scores get a finite
-1e4 bias, not float32-min, whose calibrated range would flatten every real value in QDQ form.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from edgelmm.runtime.manifest import KVCacheSpec

MASK_BIAS = -1e4
"""Finite bias of masked attention scores (softmax weight e^-1e4 = 0 in float32 and fp16 alike)."""


class StaticLlamaStep(nn.Module):
    """One token through a Llama-architecture text decoder, KV rows written in place into fixed-size buffers."""

    def __init__(self, model: Any, max_context: int) -> None:
        super().__init__()
        text = model.config.get_text_config(decoder=True)
        decoder = model.get_decoder()
        self.layers = decoder.layers
        self.norm = decoder.norm
        self.lm_head = model.get_output_embeddings()
        self.heads = int(text.num_attention_heads)
        self.kv_heads = int(getattr(text, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(getattr(text, "head_dim", None) or text.hidden_size // self.heads)
        self.context = int(max_context)
        positions = torch.arange(self.context)
        with torch.no_grad():
            cos, sin = decoder.rotary_emb(torch.zeros(1, 1, self.head_dim), positions[None])
        self.register_buffer("cos", cos[0].float(), persistent=False)  # [C, head_dim]
        self.register_buffer("sin", sin[0].float(), persistent=False)
        self.register_buffer("rows", positions.float(), persistent=False)  # [C]

    def kv_spec(self) -> KVCacheSpec:
        return KVCacheSpec(layout="static-buffer", num_layers=len(self.layers), num_kv_heads=self.kv_heads,
                           head_dim=self.head_dim, max_length=self.context)

    def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, past: tuple[torch.Tensor, ...]
                ) -> tuple[torch.Tensor, ...]:
        valid = attention_mask.to(torch.float32)  # [1, C]
        position = valid.sum(-1, keepdim=True) - 1  # [1, 1]
        one_hot = (self.rows[None] == position).to(torch.float32)  # [1, C]
        cos = (one_hot[0, :, None] * self.cos).sum(0)  # [head_dim]: the row of this position
        sin = (one_hot[0, :, None] * self.sin).sum(0)
        bias = (1.0 - valid) * MASK_BIAS  # [1, C]
        write = one_hot[:, None, :, None] > 0  # [1, 1, C, 1]
        hidden, present = inputs_embeds, []
        for i, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = _rms_norm(layer.input_layernorm, hidden)
            q = attn.q_proj(x).view(1, 1, self.heads, self.head_dim).transpose(1, 2)  # [1, H, 1, d]
            k = attn.k_proj(x).view(1, 1, self.kv_heads, self.head_dim).transpose(1, 2)  # [1, K, 1, d]
            v = attn.v_proj(x).view(1, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = q * cos + _rotate_half(q) * sin, k * cos + _rotate_half(k) * sin
            keys = torch.where(write, k, past[2 * i])  # [1, K, C, d]: row p replaced, the rest kept
            values = torch.where(write, v, past[2 * i + 1])
            present += [keys, values]
            group = self.heads // self.kv_heads
            q = q.reshape(1, self.kv_heads, group, self.head_dim)  # heads of one KV group side by side
            scores = q @ keys.transpose(-1, -2) * attn.scaling + bias[:, None, None, :]  # [1, K, group, C]
            context = scores.softmax(-1) @ values  # [1, K, group, d]
            hidden = hidden + attn.o_proj(context.reshape(1, 1, self.heads * self.head_dim))
            hidden = hidden + layer.mlp(_rms_norm(layer.post_attention_layernorm, hidden))
        logits = self.lm_head(_rms_norm(self.norm, hidden))
        return (logits, *present)


def _rms_norm(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """LlamaRMSNorm, x / sqrt(mean(x*x) + eps) * w, computed on y = x / s with s = max |x| of the row:
    y / sqrt(mean(y*y) + eps / s^2) * w, the same value for any s > 0.

    Why scaled: the HTP runs the graph's float nodes in fp16 (max 65504), and SmolLM2's residual stream reaches
    |x| ~ 2.3e4 at its first token (an attention sink), so x*x overflows, the norm returns 0 and the sink's keys
    vanish for every later position; |y| <= 1 cannot overflow, and mean(y*y) >= 1 / hidden cannot underflow.
    Why written out: transformers' form (Pow, Sqrt, Reciprocal) is fused by the QNN EP into an RmsNorm op that the
    HTP simulator fails to allocate (QNN_COMMON_ERROR_MEM_ALLOC)."""
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", 1e-6))
    scale = x.abs().amax(-1, keepdim=True).clamp_min(1e-4)  # the floor only keeps an all-zero row finite
    y = x / scale
    floor = (eps ** 0.5 / scale) * (eps ** 0.5 / scale)  # eps / s^2 without s^2 underflowing in fp16
    return y / torch.sqrt((y * y).mean(-1, keepdim=True) + floor) * norm.weight


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def trace_inputs(step: StaticLlamaStep, hidden: int) -> tuple[Any, ...]:
    """A realistic step: position 3 of a 4-token sequence, random past rows."""
    mask = torch.zeros(1, step.context, dtype=torch.int64)
    mask[:, :4] = 1
    past = tuple(torch.randn(1, step.kv_heads, step.context, step.head_dim) for _ in range(2 * len(step.layers)))
    return (torch.randn(1, 1, hidden), mask, past)
