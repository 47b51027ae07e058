"""Memory estimate of a bundle on a device, checked against the profile's budget before any session is created.

    total = runtime + weights + max(load transient, KV cache + activations)

Each term follows what onnxruntime's CPU provider does with our graphs (measured with ``scripts/bench_budget.py``;
the figures and the check against measured peak RSS are in docs/profiles.md):

- runtime: Python, numpy and onnxruntime after import, a fixed cost per session (session state, kernel code paged
  in), and the parsed tokenizer (a multiple of its JSON size).
- weights: every graph's bytes times what its precision's kernels keep resident (a token-embedding table in external
  data: only the rows of the context's tokens, since it is mapped and gathered from). External data is memory-mapped
  (page-aligned offsets) or read, then the CPU kernels prepack the weights into their own layout and release the
  original: fp32 GEMM keeps ~1 copy, int8 (MatMulInteger) ~1.1, int4 MatMulNBits prepacked for int8 compute ~1.6
  (block sums and scales beside the 4-bit blocks, part of the file staying mapped).
- load transient: a graph with weights *inside* the .onnx is parsed into a protobuf and then copied into tensors, so
  for a moment it is held twice; mapped external data has no such double.
- KV cache: from :class:`KVCacheSpec` at the profile's context. ``past-present`` holds two caches during a step
  (the past fed in and the present coming out); ``shared-buffer`` updates one buffer in place, holds one, and never
  more rows than its graph's ``max_length``.
- activations: one decoder call on a prefill chunk of ``c`` tokens at context ``T``: logits ``c x vocab`` twice
  (onnxruntime's output and its numpy copy; ``1 x vocab`` for ``shared-buffer`` graphs, which keep the last position) and the attention probabilities ``heads x c x T`` a few times over
  (scores, softmax, their mask-add), plus the vision encoder's for one image.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edgelmm.runtime.manifest import KVCacheSpec, Manifest
from edgelmm.specs import GraphRole, Precision

MB = 2**20
RUNTIME_BASE_MB = 62.0
"""RSS of a Python process after ``import edgelmm.runtime`` (numpy, onnxruntime, tokenizers) on x86-64 Linux."""
SESSION_MB = 12.0
"""RSS one more onnxruntime CPU session adds beyond its weights (``bench_budget.py --residency``: 10-23 MB)."""
TOKENIZER_FACTOR = 8.5
"""Resident bytes of a loaded tokenizers.Tokenizer per byte of its tokenizer.json (SmolLM2: 3.5 MB -> ~30 MB)."""
WEIGHT_RESIDENCY = {Precision.FP32: 1.0, Precision.INT8: 1.11, Precision.INT4: 1.58}
"""Resident bytes per graph-file byte after the CPU kernels prepacked the weights, by graph precision
(``bench_budget.py --residency`` on SmolLM2, less SESSION_MB: fp32 0.97-1.02, int8 1.11, int4 with block 32 and
accuracy level 4 1.58).
Other precisions count 1.0: QDQ graphs keep int8 weights; on an NPU the context binary lives outside this process."""
KV_COPIES = {"past-present": 2, "shared-buffer": 1, "static-buffer": 2}
"""Caches alive at once during a decode step, per layout (an unknown layout is assumed to need two)."""
LOGITS_COPIES = 2
ATTENTION_COPIES = 3
HIDDEN_COPIES = 16
"""Per-token float32 vectors of width hidden alive in a layer (residual, norms, q/k/v, MLP up/gate at ~3x width)."""
VISION_COPIES = 64
"""Per-visual-token float32 vectors of width hidden alive while the vision tower runs (patch embeddings, MLP)."""


@dataclasses.dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """What loading and running one bundle at ``context`` tokens should take, in MiB (RSS)."""

    runtime_mb: float
    weights_mb: float
    load_transient_mb: float
    kv_mb: float
    activations_mb: float
    context: int
    prefill_chunk: int

    @property
    def total_mb(self) -> float:
        return self.runtime_mb + self.weights_mb + max(self.load_transient_mb, self.kv_mb + self.activations_mb)

    def summary(self) -> str:
        """``612 MB (runtime 80 + weights 480 + KV 32 + activations 20 at 2048 tokens)``."""
        return (
            f"{self.total_mb:.0f} MB (runtime {self.runtime_mb:.0f} + weights {self.weights_mb:.0f}"
            f" + KV {self.kv_mb:.0f} + activations {self.activations_mb:.0f} at {self.context} tokens)"
        )

    def to_dict(self) -> dict[str, float]:
        out = {f.name: round(getattr(self, f.name), 1) for f in dataclasses.fields(self)}
        out["total_mb"] = round(self.total_mb, 1)
        return out


def kv_cache_bytes(kv: KVCacheSpec, tokens: int) -> int:
    """Bytes of one K and one V cache per layer for ``tokens`` positions (batch 1)."""
    itemsize = np.dtype(kv.dtype).itemsize
    return 2 * kv.num_layers * kv.num_kv_heads * kv.head_dim * tokens * itemsize


def kv_rows(kv: KVCacheSpec, context: int) -> int:
    """Positions the KV cache holds at ``context`` tokens: a shared buffer never exceeds its graph's max_length; a
    static buffer is always exactly that long (fixed shapes)."""
    if kv.layout == "static-buffer":
        return kv.max_length
    return min(context, kv.max_length) if kv.layout == "shared-buffer" else context


def activation_bytes(manifest: Manifest, chunk: int, context: int) -> int:
    """Peak activations of one decoder call on ``chunk`` new tokens with ``context`` positions in all (float32)."""
    hidden, vocab, kv = manifest.model.hidden_size, manifest.model.vocab_size, manifest.kv_cache
    heads = max(hidden // kv.head_dim, kv.num_kv_heads)  # attention heads (Llama-style: hidden = heads x head_dim)
    fused = kv.layout == "shared-buffer"  # GroupQueryAttention: one score buffer, last-position logits only
    logits = LOGITS_COPIES * (1 if fused else chunk) * vocab
    attention = (1 if fused else ATTENTION_COPIES) * heads * chunk * context + 2 * heads * context * kv.head_dim
    per_token = HIDDEN_COPIES * chunk * hidden
    return 4 * (logits + attention + per_token)


def vision_bytes(manifest: Manifest) -> int:
    """Activations of the vision encoder for one image (its arena keeps them while the pipeline lives)."""
    if GraphRole.VISION_ENCODER not in manifest.graphs:
        return 0
    tokens = manifest.text.num_image_tokens
    return 4 * VISION_COPIES * tokens * manifest.model.hidden_size


def graph_bytes(manifest: Manifest, role: GraphRole) -> tuple[int, int]:
    """(bytes inside the .onnx file, bytes in its external-data files) of one graph, from the manifest's records."""
    graph = manifest.graphs[role]
    external = sum(manifest.files[name].bytes for name in graph.external_data)
    return manifest.files[graph.file].bytes, external


def resident_weight_bytes(manifest: Manifest, role: GraphRole, context: int) -> float:
    """Weight bytes one graph keeps resident. A token-embedding table in external data is mapped and gathered
    from, never prepacked: at most the rows of ``context`` distinct tokens become resident."""
    inline, external = graph_bytes(manifest, role)
    if role is GraphRole.TOKEN_EMBEDDING and external:
        return inline + external * min(context, manifest.model.vocab_size) / manifest.model.vocab_size
    return WEIGHT_RESIDENCY.get(manifest.graphs[role].precision, 1.0) * (inline + external)


def estimate_memory(manifest: Manifest, *, context: int | None = None, prefill_chunk: int | None = None) -> MemoryEstimate:
    """Estimate RSS for ``manifest`` at ``context`` tokens (default: the bundle's max) with prefill chunks of
    ``prefill_chunk`` tokens (default: the whole prompt in one call). Reads only the manifest."""
    context = min(context or manifest.text.max_context, manifest.text.max_context)
    chunk = min(prefill_chunk or context, context)
    inline = {role: graph_bytes(manifest, role)[0] for role in manifest.graphs}
    weights = sum(resident_weight_bytes(manifest, role, context) for role in manifest.graphs)
    tokenizer = manifest.files[manifest.text.tokenizer_file].bytes
    copies = KV_COPIES.get(manifest.kv_cache.layout, 2)
    return MemoryEstimate(
        runtime_mb=RUNTIME_BASE_MB + SESSION_MB * len(manifest.graphs) + TOKENIZER_FACTOR * tokenizer / MB,
        weights_mb=weights / MB,
        load_transient_mb=max(inline.values(), default=0) / MB,
        kv_mb=copies * kv_cache_bytes(manifest.kv_cache, kv_rows(manifest.kv_cache, context)) / MB,
        activations_mb=(activation_bytes(manifest, chunk, context) + vision_bytes(manifest)) / MB,
        context=context,
        prefill_chunk=chunk,
    )


def manifest_precision(manifest: Manifest) -> str:
    """A bundle's precision for variant choice: its decoder's (the graph that dominates size and speed)."""
    return str(manifest.graphs[GraphRole.DECODER].precision)
