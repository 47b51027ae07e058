"""ORT-vs-torch parity of each exported graph at shapes that differ from the trace shapes.

Every export runs this; the numbers go into the manifest's ``validation`` section. Tolerances live in one table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch

from edgelmm.errors import ExportShapeError, ExportToleranceError
from edgelmm.export.graphs import position_ids
from edgelmm.runtime.manifest import KVCacheSpec
from edgelmm.runtime.sessions import SessionConfig, session_options
from edgelmm.specs import GraphRole, Precision

# (atol, rtol) per precision and role: a case passes when |ort - torch| <= atol + rtol * |torch| everywhere.
# fp32 bounds are ~100x the differences seen on SmolLM2 (decoder logits ~1e-4, vision ~1e-6): float summation
# order differs between onnxruntime's kernels and torch's, nothing else should.
TOLERANCES: dict[Precision, dict[GraphRole, tuple[float, float]]] = {
    Precision.FP32: {
        GraphRole.VISION_ENCODER: (1e-3, 1e-3),
        GraphRole.TOKEN_EMBEDDING: (1e-6, 0.0),
        GraphRole.DECODER: (1e-2, 1e-3),
        GraphRole.ITEM_ENCODER: (1e-3, 1e-3),
    },
}

# Quantized graphs are compared with the fp32 torch model too. The bounds are ~3x the worst difference measured on
# SmolLM2-135M (docs/performance.md); their accuracy is judged by token agreement, these only catch a broken graph.
TOLERANCES[Precision.INT4] = {GraphRole.TOKEN_EMBEDDING: (0.5, 0.0), GraphRole.DECODER: (50.0, 0.0)}
TOLERANCES[Precision.W8] = {GraphRole.TOKEN_EMBEDDING: (0.5, 0.0), GraphRole.DECODER: (50.0, 0.0)}
TOLERANCES[Precision.INT8] = {GraphRole.TOKEN_EMBEDDING: (0.5, 0.0), GraphRole.DECODER: (50.0, 0.0)}
# Quantized vision encoders (int8 dynamic, static QDQ) and static-QDQ decoders: the same "broken graph" bounds; the
# features of a working 8-bit tower differ by ~1-5% of their scale (docs/quantization.md), agreement judges the rest.
for _precision in (Precision.INT8, Precision.INT4, Precision.W8, Precision.A8W8, Precision.A16W8):
    TOLERANCES.setdefault(_precision, {}).update({GraphRole.VISION_ENCODER: (0.5, 0.1)})
for _precision in (Precision.A8W8, Precision.A16W8):
    TOLERANCES[_precision][GraphRole.DECODER] = (50.0, 0.0)


def tolerance(precision: Precision, role: GraphRole) -> tuple[float, float]:
    """(atol, rtol) of one graph at ``precision``; fp32 graphs of a quantized bundle use the fp32 row."""
    return TOLERANCES.get(precision, TOLERANCES[Precision.FP32]).get(role, TOLERANCES[Precision.FP32][role])


# (batch, sequence, past): prefill from an empty cache, one decode step, a batch; none equals the trace shape
# (graphs.TRACE_*; a test checks).
DECODER_CASES = ((1, 6, 0), (1, 1, 9), (3, 2, 5))
# The shared-buffer graph (GroupQueryAttention on CPU) takes a prompt chunk after a past only at batch 1, so its
# batch case is a decode step; (1, 3, 5) is a second prompt chunk (chunked prefill, multi-turn).
SHARED_DECODER_CASES = ((1, 6, 0), (1, 1, 9), (3, 1, 5), (1, 3, 5))
SHARED_CACHE_SLACK = 3
"""Validation buffers are this much longer than the sequence: rows beyond it must be ignored by the graph."""


@dataclasses.dataclass(frozen=True, slots=True)
class Case:
    graph: str
    shape: str
    max_abs_diff: float
    atol: float
    rtol: float
    passed: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def compare(graph: str, shape: str, ort_out: list[np.ndarray], torch_out: list[np.ndarray], atol: float,
            rtol: float) -> Case:
    """One case: shapes must match exactly; values within atol + rtol * |torch|."""
    worst, excess = 0.0, -np.inf
    for a, b in zip(ort_out, torch_out, strict=True):
        if a.shape != b.shape:
            raise ExportShapeError(f"{graph} at {shape}: onnxruntime output shape {a.shape} != torch {b.shape}")
        diff = np.abs(a.astype(np.float64) - b.astype(np.float64))
        if diff.size:
            worst = max(worst, float(diff.max()))
            excess = max(excess, float((diff - rtol * np.abs(b)).max()))
    return Case(graph, shape, worst, atol, rtol, bool(excess <= atol))


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), session_options(SessionConfig()), providers=["CPUExecutionProvider"])


def _run_case(session: ort.InferenceSession, module: torch.nn.Module, feed: dict[str, np.ndarray],
              args: tuple[Any, ...]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    ort_out = session.run(None, feed)
    with torch.no_grad():
        ref = module(*args)
    ref = ref if isinstance(ref, tuple | list) else (ref,)
    return ort_out, [r.detach().numpy() for r in ref]


def validate_vision(path: Path, module: torch.nn.Module, image_size: tuple[int, int], tol: tuple[float, float],
                    value_range: tuple[float, float]) -> list[Case]:
    """Batches 1 and 3 (the trace used 2), or the one batch size a fixed-batch module takes."""
    session, cases = _session(path), []
    lo, hi = value_range
    fixed = getattr(module, "batch_size", None)
    for batch in (fixed,) if fixed else (1, 3):
        pixels = torch.rand(batch, 3, *image_size, generator=torch.Generator().manual_seed(batch)) * (hi - lo) + lo
        o, t = _run_case(session, module, {"pixel_values": pixels.numpy()}, (pixels,))
        cases.append(compare("vision_encoder", f"pixel_values[{batch},3,{image_size[0]},{image_size[1]}]", o, t, *tol))
    return cases


def validate_item_encoder(path: Path, module: torch.nn.Module, table: torch.Tensor,
                          tol: tuple[float, float]) -> list[Case]:
    """1 and 5 CF rows (the trace used 2), real rows of the table (the scales the runtime feeds)."""
    session, cases = _session(path), []
    for rows in (1, 5):
        cf = table[torch.arange(rows) % table.shape[0]]
        o, t = _run_case(session, module, {"item_cf": cf.numpy()}, (cf,))
        cases.append(compare("item_encoder", f"item_cf[{rows},{table.shape[1]}]", o, t, *tol))
    return cases


def validate_embedding(path: Path, module: torch.nn.Module, vocab: int, tol: tuple[float, float]) -> list[Case]:
    session, cases = _session(path), []
    for batch, seq in ((1, 5), (3, 1)):
        ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(seq))
        o, t = _run_case(session, module, {"input_ids": ids.numpy()}, (ids,))
        cases.append(compare("token_embedding", f"input_ids[{batch},{seq}]", o, t, *tol))
    return cases


def validate_decoder(path: Path, module: torch.nn.Module, embed: Callable[[torch.Tensor], torch.Tensor],
                     kv: KVCacheSpec, vocab: int, tol: tuple[float, float], input_names: list[str],
                     position_rows: int = 1) -> list[Case]:
    """Decoder cases use real token embeddings and a past produced by the torch model itself (realistic scales)."""
    session, cases = _session(path), []
    gen = torch.Generator().manual_seed(7)
    for batch, seq, past_len in DECODER_CASES:
        past = _real_past(module, embed, kv, vocab, batch, past_len, gen, position_rows)
        embeds = embed(torch.randint(0, vocab, (batch, seq), generator=gen))
        mask = torch.ones(batch, past_len + seq, dtype=torch.int64)
        positions = position_ids(position_rows, batch, past_len, seq)
        args = (embeds, mask, positions, past)
        feed = dict(zip(input_names, [embeds.numpy(), mask.numpy(), positions.numpy(), *[p.numpy() for p in past]]))
        o, t = _run_case(session, module, feed, args)
        cases.append(compare("decoder", f"batch {batch}, seq {seq}, past {past_len}", o, t, *tol))
    return cases


def validate_shared_decoder(path: Path, module: torch.nn.Module, embed: Callable[[torch.Tensor], torch.Tensor],
                            kv: KVCacheSpec, vocab: int, tol: tuple[float, float]) -> list[Case]:
    """The shared-buffer graph against the torch model (through the past-present wrapper ``module``).

    The past goes into a zero-padded buffer longer than needed; compared: every position's logits and the rows
    of each present buffer that hold real positions (the rest must be untouched zeros).
    """
    session, cases = _session(path), []
    gen = torch.Generator().manual_seed(7)
    for batch, seq, past_len in SHARED_DECODER_CASES:
        past = _real_past(module, embed, kv, vocab, batch, past_len, gen, 1)
        embeds = embed(torch.randint(0, vocab, (batch, seq), generator=gen))
        total = past_len + seq
        positions = torch.arange(past_len, total, dtype=torch.int64).expand(batch, seq).contiguous()
        capacity = total + SHARED_CACHE_SLACK
        buffers = []
        for p in past:
            buffer = np.zeros((batch, kv.num_kv_heads, capacity, kv.head_dim), np.float32)
            buffer[:, :, :past_len] = p.numpy()
            buffers.append(buffer)
        names = [n for pair in zip(kv.names("past_key"), kv.names("past_value")) for n in pair]
        feed = {"inputs_embeds": embeds.numpy(), "attention_mask": np.ones((batch, total), np.int64),
                "logits_to_keep": np.array(0, np.int64), **dict(zip(names, buffers))}
        ort_out = session.run(None, feed)
        with torch.no_grad():
            ref = module(embeds, torch.ones(batch, total, dtype=torch.int64), positions, past)
        ours = [ort_out[0]] + [o[:, :, :total] for o in ort_out[1:]]
        stray = max(float(np.abs(o[:, :, total:]).max()) for o in ort_out[1:])
        if stray != 0.0:
            raise ExportShapeError(f"decoder at batch {batch}, seq {seq}, past {past_len}: the graph wrote KV rows"
                                   f" beyond the sequence (max |value| {stray:.3g})")
        cases.append(compare("decoder", f"batch {batch}, seq {seq}, past {past_len} (shared buffer)", ours,
                             [r.detach().numpy() for r in ref], *tol))
    return cases


def _real_past(module: torch.nn.Module, embed: Callable[[torch.Tensor], torch.Tensor], kv: KVCacheSpec,
               vocab: int, batch: int, length: int, gen: torch.Generator, position_rows: int
               ) -> tuple[torch.Tensor, ...]:
    empty = tuple(torch.zeros(batch, kv.num_kv_heads, 0, kv.head_dim) for _ in range(2 * kv.num_layers))
    if length == 0:
        return empty
    embeds = embed(torch.randint(0, vocab, (batch, length), generator=gen))
    positions = position_ids(position_rows, batch, 0, length)
    with torch.no_grad():
        out = module(embeds, torch.ones(batch, length, dtype=torch.int64), positions, empty)
    return tuple(t.detach() for t in out[1:])


def check(cases: list[Case]) -> None:
    """Raise ExportToleranceError naming every failing case."""
    failed = [c for c in cases if not c.passed]
    if failed:
        detail = "; ".join(f"{c.graph} at {c.shape}: max |diff| {c.max_abs_diff:.3g} > atol {c.atol:g} + rtol {c.rtol:g}"
                           for c in failed)
        raise ExportToleranceError(f"exported graphs differ from torch beyond the tolerance table: {detail}")


STATIC_STEPS = 6
"""Tokens fed one step at a time to a static-buffer decoder during validation."""


def validate_static_decoder(path: Path, module: torch.nn.Module, embed: Callable[[torch.Tensor], torch.Tensor],
                            kv: KVCacheSpec, vocab: int, tol: tuple[float, float]) -> list[Case]:
    """The static-buffer step graph, fed STATIC_STEPS tokens one by one through its own buffers, against the torch
    model's logits for the whole sequence at once (``module``: the past-present wrapper)."""
    session = _session(path)
    gen = torch.Generator().manual_seed(7)
    embeds = embed(torch.randint(0, vocab, (1, STATIC_STEPS), generator=gen))
    shape = (1, kv.num_kv_heads, kv.max_length, kv.head_dim)
    buffers = [np.zeros(shape, np.float32) for _ in range(2 * kv.num_layers)]
    names = [n for pair in zip(kv.names("past_key"), kv.names("past_value")) for n in pair]
    mask = np.zeros((1, kv.max_length), np.int64)
    steps = []
    for t in range(STATIC_STEPS):
        mask[0, t] = 1
        out = session.run(None, {"inputs_embeds": embeds[:, t : t + 1].numpy(), "attention_mask": mask,
                                 **dict(zip(names, buffers))})
        steps.append(out[0])
        buffers = out[1:]
    empty = tuple(torch.zeros(1, kv.num_kv_heads, 0, kv.head_dim) for _ in range(2 * kv.num_layers))
    with torch.no_grad():
        ref = module(embeds, torch.ones(1, STATIC_STEPS, dtype=torch.int64),
                     torch.arange(STATIC_STEPS)[None], empty)
    ours = [np.concatenate(steps, axis=1)] + [b[:, :, :STATIC_STEPS] for b in buffers]
    return [compare("decoder", f"{STATIC_STEPS} single-token steps (static buffer {kv.max_length})", ours,
                    [r.detach().numpy() for r in ref], *tol)]
