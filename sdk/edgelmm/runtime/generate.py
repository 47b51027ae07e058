"""The decoder with its KV cache, and the token loop (prefill once, then one token per step).

Graph I/O (names from the manifest; B = 1 here)::

    inputs_embeds   float32 [B, S, hidden]            from token_embedding and/or vision_encoder
    attention_mask  int64   [B, past + S]             1 for every real position
    position_ids    int64   [B, S]                    past .. past + S - 1 (or [3, B, S] for M-RoPE, see positions.py)
    past K / V      float32 [B, kv_heads, past, head_dim] x layers   (empty, past = 0, at prefill)
      -> logits     float32 [B, S, vocab]
      -> present K/V float32 [B, kv_heads, past + S, head_dim] x layers

Presents stay onnxruntime OrtValues and are fed back as the next step's past without a numpy round trip.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from edgelmm.errors import InputError
from edgelmm.runtime.manifest import KVCacheSpec
from edgelmm.runtime.sampling import choose_token
from edgelmm.runtime.sessions import graph_errors
from edgelmm.runtime.tokenizer import Tokenizer
from edgelmm.specs import GenerationSpec

_NONE = np.zeros(0, dtype=np.int64)
StreamCallback = Callable[[str], object]
"""Called with each new piece of text as soon as it is final (stop-string prefixes are held back)."""


class Decoder:
    """Runs a ``past-present`` decoder.onnx step by step for one sequence (batch 1)."""

    def __init__(self, session: ort.InferenceSession, kv: KVCacheSpec, hidden_size: int, position_rows: int = 1
                 ) -> None:
        self.session = session
        self.kv = kv
        self.hidden_size = hidden_size
        self.position_rows = position_rows
        """1: position_ids [B, S]; 3: M-RoPE position_ids [3, B, S]."""
        self._past_names = [n for pair in zip(kv.names("past_key"), kv.names("past_value")) for n in pair]
        self._present_names = [n for pair in zip(kv.names("present_key"), kv.names("present_value")) for n in pair]
        self._outputs = ["logits", *self._present_names]
        self._dtype = np.float16 if kv.dtype == "float16" else np.float32
        self.reset()

    def reset(self) -> None:
        empty = np.zeros((1, self.kv.num_kv_heads, 0, self.kv.head_dim), dtype=self._dtype)
        self._past = [ort.OrtValue.ortvalue_from_numpy(empty) for _ in self._past_names]
        self.length = 0
        self.next_position = 0

    def reserve(self, total: int) -> None:
        """Nothing to preallocate: every step returns a new present (see runtime.decoding for the shared buffer)."""

    def rewind(self, length: int) -> None:
        """Forget every position from ``length`` on (0 <= length <= self.length); the next forward continues there.
        Pass the next call's positions explicitly where they are not ``length`` on (M-RoPE after an image)."""
        check_rewind(length, self.length)
        if length < self.length:
            self._past = [ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v.numpy()[:, :, :length]))
                          for v in self._past]
        self.length = self.next_position = length

    def forward(self, embeds: np.ndarray, positions: np.ndarray | None = None, *, all_logits: bool = False
                ) -> np.ndarray:
        """Append ``embeds`` float32 [1, S, hidden] to the sequence; return float32 logits [vocab] of its last row
        ([S, vocab] of every row with ``all_logits``).

        ``positions``: int64 [position_rows, S] (see positions.py); default: the S positions after the last one.
        """
        s = embeds.shape[1]
        total = self.length + s
        if positions is None:
            positions = np.broadcast_to(np.arange(self.next_position, self.next_position + s, dtype=np.int64),
                                        (self.position_rows, s))
        ids = np.ascontiguousarray(positions, dtype=np.int64).reshape(self.position_rows, 1, s)
        feed = {
            "inputs_embeds": ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(embeds, dtype=np.float32)),
            "attention_mask": ort.OrtValue.ortvalue_from_numpy(np.ones((1, total), dtype=np.int64)),
            "position_ids": ort.OrtValue.ortvalue_from_numpy(ids[0] if self.position_rows == 1 else ids),
        }
        feed.update(zip(self._past_names, self._past))
        with graph_errors("decoder"):
            outputs = self.session.run_with_ort_values(self._outputs, feed)
        self._past = outputs[1:]
        self.length = total
        self.next_position = int(positions.max()) + 1
        logits = outputs[0].numpy()[0]
        return np.asarray(logits if all_logits else logits[-1], dtype=np.float32)


def check_rewind(length: int, current: int) -> None:
    if not 0 <= length <= current:
        raise InputError(f"cannot rewind a sequence of {current} positions to {length}")


@dataclasses.dataclass(slots=True)
class LoopResult:
    token_ids: list[int]
    text: str
    finish_reason: str
    """"eos", "stop" (a stop string) or "length"."""
    first_token_at: float
    """perf_counter() when the first token was chosen."""
    decode_s: float


def token_loop(
    first_logits: np.ndarray,
    step: Callable[[int], np.ndarray],
    *,
    spec: GenerationSpec,
    max_new_tokens: int,
    eos_ids: frozenset[int],
    prompt_ids: np.ndarray,
    tokenizer: Tokenizer,
    stream: StreamCallback | None,
) -> LoopResult:
    """Sample from ``first_logits``, then call ``step(token) -> logits`` until eos, a stop string or the limit."""
    rng = np.random.default_rng(spec.seed)
    masked = np.fromiter(eos_ids, dtype=np.int64) if spec.ignore_eos else _NONE
    penalised = spec.repetition_penalty != 1.0
    detok = tokenizer.stream()
    tokens: list[int] = []
    text = ""
    emitted = 0
    reason = "length"
    logits = first_logits
    first_at = 0.0
    decode_start = 0.0
    while True:
        seen = np.concatenate([prompt_ids, np.asarray(tokens, dtype=np.int64)]) if penalised else _NONE
        if masked.size:
            logits = logits.copy()
            logits[masked[masked < logits.shape[-1]]] = -np.inf
        token = choose_token(logits, spec, seen, rng)
        tokens.append(token)
        if len(tokens) == 1:
            first_at = decode_start = time.perf_counter()
        if token in eos_ids:
            reason = "eos"
            break
        text += detok.step(token)
        cut = _find_stop(text, spec.stop)
        if cut is not None:
            text = text[:cut]
            reason = "stop"
            break
        safe = len(text) - _held_back(text, spec.stop)
        if stream is not None and safe > emitted:
            stream(text[emitted:safe])
            emitted = safe
        if len(tokens) >= max_new_tokens:
            break
        logits = step(token)
    if stream is not None and len(text) > emitted:
        stream(text[emitted:])
    return LoopResult(tokens, text, reason, first_at, time.perf_counter() - decode_start)


def _find_stop(text: str, stops: tuple[str, ...]) -> int | None:
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(cuts) if cuts else None


def _held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest suffix of ``text`` that could still grow into a stop string."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best
