"""LoRA as a side path of the fast decoder graph: ``y = x·Wᵀ + scale · (x·Aᵀ)·Bᵀ``, W quantized, A and B float32.

Merging LoRA into W and then quantizing W loses the deltas: they are far smaller than one int4 step, and min-max
int4 (the grid SmolLM2's own Q4_1 weights sit on) rounds them back to the base weights exactly (docs/training.md).
Kept apart, W is the registry LM's weight, quantized as losslessly as for the base model, and the deltas stay
float (onnxruntime-genai runs its adapters the same way). One path per fused projection, three nodes::

    x ─┬─► MatMul W [in, Σout] (MatMulNBits once quantized) ──────────────────────────► Add ─► y
       └─► lora_A/MatMul [in, Σr] ─► lora_B/MatMul [Σr, Σout] ─────────────────────────┘
           (the fused Linears' A side by side)  (their B block-diagonal, scale folded in)

The fused projections (qkv, gate|up) have one input, so one A MatMul and one B MatMul per group cost the same node
count as a single Linear: decode pays per node dispatched (docs/quantization.md has the measured cost). The
quantizers skip every node whose name holds ``LORA_TAG`` (export/quantize.py), so A and B stay float32.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgelmm.models.loaded import LoraAdapters

LORA_TAG = "/lora_"
"""In the name of every side-path node: export/quantize.py leaves those MatMuls float."""


def fused_factors(lora: LoraAdapters, paths: Sequence[str], outs: Sequence[int]
                  ) -> tuple[np.ndarray, np.ndarray] | None:
    """The side path of Linears fused side by side along their outputs, or None when none of them has LoRA.

    ``paths``: the Linears' module paths in output order; ``outs``: their output sizes. Returns A float32
    [in, Σr] (each Linear's Aᵀ side by side) and B float32 [Σr, Σout] (each ``scale·Bᵀ`` on the block diagonal,
    zeros elsewhere; a Linear without LoRA contributes zero rows and its columns of zeros)."""
    ranks = [int(lora.a[p].shape[0]) if p in lora.a else 0 for p in paths]
    if not any(ranks):
        return None
    width = next(int(lora.a[p].shape[1]) for p in paths if p in lora.a)
    a = np.zeros((width, sum(ranks)), np.float32)
    b = np.zeros((sum(ranks), sum(outs)), np.float32)
    r0 = o0 = 0
    for path, rank, out in zip(paths, ranks, outs):
        if rank:
            a[:, r0 : r0 + rank] = lora.a[path].float().numpy().T
            b[r0 : r0 + rank, o0 : o0 + out] = lora.scale * lora.b[path].float().numpy().T
        r0, o0 = r0 + rank, o0 + out
    return a, b


def add_side_path(g: Any, prefix: str, x: str, main: str, a: np.ndarray, b: np.ndarray) -> str:
    """Nodes ``main + (x @ a) @ b`` under ``prefix`` (``g``: llama_graph's node collector); returns the sum's name.

    x float32 [B, S, in]; main float32 [B, S, Σout] (the base projection's output); a [in, Σr]; b [Σr, Σout]."""
    low = g.node("MatMul", [x, g.init(f"{prefix}/lora_A/weight", a)], 1, f"{prefix}/lora_A/MatMul")[0]
    delta = g.node("MatMul", [low, g.init(f"{prefix}/lora_B/weight", b)], 1, f"{prefix}/lora_B/MatMul")[0]
    return g.node("Add", [main, delta], 1, f"{prefix}/lora_add/Add")[0]


def side_path_nodes(nodes: Sequence[Any]) -> list[str]:
    """Names of the side-path MatMuls among graph ``nodes`` (what the quantizers must leave float)."""
    return [n.name for n in nodes if n.op_type == "MatMul" and LORA_TAG in n.name]


def fuse_with_corrections(graph: Any, correction_add_suffix: str) -> int:
    """Turn each ``Add(Add(nbits, correction), delta)`` into one ``Sum(nbits, correction, delta)``; returns how many.

    Min-max int4 ends every projection with an Add of its zero-point correction (export/quantize.py
    ``_integer_zero_points``), so the side path's Add right after it is a second elementwise node per projection
    at every decode step; one three-input Sum does both (120 fewer nodes on SmolLM2). ``graph``: an
    onnx.GraphProto, rewritten in place; ``correction_add_suffix``: how those correction Adds' names end."""
    producers = {out: node for node in graph.node for out in node.output}
    readers = Counter(name for node in graph.node for name in node.input)
    fused: set[str] = set()
    for node in graph.node:
        first = producers.get(node.input[0]) if node.op_type == "Add" and LORA_TAG in node.name else None
        if first is None or first.op_type != "Add" or not first.name.endswith(correction_add_suffix):
            continue
        if readers[node.input[0]] != 1:  # the corrected output feeds something else too: keep it
            continue
        terms = [*first.input, node.input[1]]
        node.op_type, node.name = "Sum", node.name.rsplit("/", 1)[0] + "/Sum"
        del node.input[:]
        node.input.extend(terms)
        fused.add(first.name)
    kept = [n for n in graph.node if n.name not in fused]
    del graph.node[:]
    graph.node.extend(kept)
    return len(fused)


def record(lora: LoraAdapters, proto: Any) -> dict[str, Any]:
    """What the manifest's decoder options say about the side path (``proto``: the decoder graph that has it)."""
    matmuls = side_path_nodes(proto.graph.node)
    return {
        "form": "side-path",
        "rank": lora.rank,
        "scale": lora.scale,
        "adapted_linears": len(lora.a),
        "side_paths": len(matmuls) // 2,
        "dtype": "float32",
        "note": "LoRA kept unmerged: the quantized MatMuls hold the base LM's weights and each adapted projection "
                "adds scale * (x A^T) B^T in float32 (lora_A/lora_B MatMuls, not quantized)",
    }
