"""Decoding without waste: the shared-buffer KV decoder and a bound token embedding (onnxruntime IOBinding).

Graph I/O of a ``shared-buffer`` decoder (B = 1 here; names from the manifest)::

    inputs_embeds   float32 [1, S, hidden]                     prompt chunk or one token
    attention_mask  int64   [1, past + S]                      all ones: its width tells the graph the length
    past/present K/V float32 [1, kv_heads, capacity, head_dim] ONE buffer per tensor, bound to both names
    logits_to_keep  int64   []                                 1: last position only; 0: every position
      -> logits     float32 [1, 1 or S, vocab]                 written into a preallocated buffer

Every buffer is a numpy array allocated once (the KV cache grows only when a longer generation needs it) and bound
by pointer: a decode step binds two pointers and runs. Nothing is concatenated, copied or converted per step.
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort

from edgelmm.errors import InputError, SpecError
from edgelmm.runtime.generate import Decoder, check_rewind
from edgelmm.runtime.manifest import KVCacheSpec
from edgelmm.runtime.sessions import graph_errors

CAPACITY_STEP = 64
"""KV buffers grow in multiples of this many positions (fewer regrowths; the unused tail costs memory only)."""


def _bind(binding: ort.IOBinding, name: str, array: np.ndarray, *, output: bool = False,
          shape: tuple[int, ...] | None = None) -> None:
    """Bind ``array``'s memory (no copy) as input or output ``name``; ``shape`` may view a prefix of it."""
    shape = list(array.shape if shape is None else shape)
    address = array.__array_interface__["data"][0]  # array.ctypes builds a ctypes object per call: 10x slower
    if output:
        binding.bind_output(name, "cpu", 0, array.dtype.type, shape, address)
    else:
        binding.bind_input(name, "cpu", 0, array.dtype.type, shape, address)


class SharedBufferDecoder:
    """Runs a ``shared-buffer`` decoder.onnx for one sequence; same interface as the past-present ``Decoder``."""

    def __init__(self, session: ort.InferenceSession, kv: KVCacheSpec, hidden_size: int) -> None:
        self.session = session
        self.kv = kv
        self.hidden_size = hidden_size
        self._pairs = [(kv.past_key.format(layer=i), kv.present_key.format(layer=i)) for i in range(kv.num_layers)]
        self._pairs += [(kv.past_value.format(layer=i), kv.present_value.format(layer=i))
                        for i in range(kv.num_layers)]
        vocab = session.get_outputs()[0].shape[-1]
        self._logits = np.zeros((1, 1, int(vocab)), np.float32)
        self._keep_last, self._keep_all = np.array(1, np.int64), np.array(0, np.int64)
        self._binding = session.io_binding()
        self._cache: list[np.ndarray] = []
        self._mask = np.ones((1, 0), np.int64)
        self.capacity = 0
        self.length = 0

    def reset(self) -> None:
        """Start a new sequence. The buffers are kept: rows beyond ``length`` are never read."""
        self.length = 0

    def rewind(self, length: int) -> None:
        """Forget every position from ``length`` on: the rows stay in the buffer, unread and then overwritten."""
        check_rewind(length, self.length)
        self.length = length

    def reserve(self, total: int) -> None:
        """Make room for ``total`` positions (prompt + generated) before generating, so no step reallocates."""
        if total > self.kv.max_length:
            raise InputError(f"{total} positions requested; this decoder graph addresses at most {self.kv.max_length}")
        if total <= self.capacity:
            return
        capacity = min(-(-total // CAPACITY_STEP) * CAPACITY_STEP, self.kv.max_length)
        shape = (1, self.kv.num_kv_heads, capacity, self.kv.head_dim)
        dtype = np.float16 if self.kv.dtype == "float16" else np.float32
        grown = [np.zeros(shape, dtype) for _ in self._pairs]
        for old, new in zip(self._cache, grown):  # only when a sequence outgrows its reservation
            new[:, :, : self.length] = old[:, :, : self.length]
        self._cache, self.capacity = grown, capacity
        self._mask = np.ones((1, capacity), np.int64)
        for (past, present), buffer in zip(self._pairs, self._cache):
            _bind(self._binding, past, buffer)
            _bind(self._binding, present, buffer, output=True)

    def forward(self, embeds: np.ndarray, positions: np.ndarray | None = None, *, all_logits: bool = False
                ) -> np.ndarray:
        """Append ``embeds`` float32 [1, S, hidden]; return logits float32 [vocab] of the last position (a view,
        valid until the next call), or [S, vocab] of every position with ``all_logits``.

        ``positions`` int64 [1, S] may be given (the past-present interface) but must continue the sequence: the
        graph derives positions from the attention mask's length."""
        if positions is not None and int(positions[0, 0]) != self.length:
            raise InputError(f"the shared-buffer decoder continues at position {self.length}, got {positions[0, 0]}")
        embeds = np.ascontiguousarray(embeds, dtype=np.float32)
        total = self.length + embeds.shape[1]
        self.reserve(total)
        binding = self._binding
        _bind(binding, "inputs_embeds", embeds)
        _bind(binding, "attention_mask", self._mask, shape=(1, total))
        if all_logits:
            logits = np.empty((1, embeds.shape[1], self._logits.shape[-1]), np.float32)
            _bind(binding, "logits_to_keep", self._keep_all)
            _bind(binding, "logits", logits, output=True)
        else:
            _bind(binding, "logits_to_keep", self._keep_last)
            _bind(binding, "logits", self._logits, output=True)
        with graph_errors("decoder"):
            self.session.run_with_iobinding(binding)
        self.length = total
        return logits[0] if all_logits else self._logits[0, 0]


class StaticBufferDecoder:
    """Runs a ``static-buffer`` decoder step (export/static_decoder.py): every shape fixed for an NPU compiler.

    A prompt goes through one token per call. Two sets of KV buffers alternate as past and present (the graph
    returns whole buffers; binding one buffer to both would let a provider read rows it is writing)."""

    def __init__(self, session: ort.InferenceSession, kv: KVCacheSpec, hidden_size: int) -> None:
        self.session = session
        self.kv = kv
        self.capacity = kv.max_length
        shape = (1, kv.num_kv_heads, kv.max_length, kv.head_dim)
        past = [n for pair in zip(kv.names("past_key"), kv.names("past_value")) for n in pair]
        present = [n for pair in zip(kv.names("present_key"), kv.names("present_value")) for n in pair]
        self._names = list(zip(past, present))
        self._buffers = [[np.zeros(shape, np.float32) for _ in past] for _ in range(2)]
        vocab = int(session.get_outputs()[0].shape[-1])
        self._logits = np.zeros((1, 1, vocab), np.float32)
        self._embeds = np.zeros((1, 1, hidden_size), np.float32)
        self._mask = np.zeros((1, kv.max_length), np.int64)
        self._binding = session.io_binding()
        self.length = 0

    def reset(self) -> None:
        self.length = 0
        self._mask[:] = 0

    def rewind(self, length: int) -> None:
        """Forget every position from ``length`` on. Both buffer sets hold the same rows below the length they
        were written at (each present is its past plus one row), so the set step ``length`` reads is intact."""
        check_rewind(length, self.length)
        self.length = length
        self._mask[0, length:] = 0

    def reserve(self, total: int) -> None:
        if total > self.capacity:
            raise InputError(f"{total} positions requested; this static decoder graph holds exactly {self.capacity}")

    def forward(self, embeds: np.ndarray, positions: np.ndarray | None = None, *, all_logits: bool = False
                ) -> np.ndarray:
        """Append ``embeds`` float32 [1, S, hidden], one step per token; logits [vocab] of the last token ([S, vocab]
        with ``all_logits``). ``positions``, if given, must continue the sequence (the mask carries it)."""
        if positions is not None and int(positions[0, 0]) != self.length:
            raise InputError(f"the static decoder continues at position {self.length}, got {positions[0, 0]}")
        self.reserve(self.length + embeds.shape[1])
        rows = []
        for token in range(embeds.shape[1]):
            logits = self._step(embeds[:, token : token + 1])  # every token steps, whatever is returned
            if all_logits:
                rows.append(logits.copy())
        return np.concatenate(rows) if all_logits else self._logits[0, 0]

    def next_feed(self, embed: np.ndarray) -> dict[str, np.ndarray]:
        """Copies of the inputs the next step would get for ``embed`` float32 [1, 1, hidden] (calibration data)."""
        mask = self._mask.copy()
        mask[0, self.length] = 1
        past = self._buffers[self.length % 2]
        return {"inputs_embeds": np.array(embed, np.float32), "attention_mask": mask,
                **{name: buffer.copy() for (name, _), buffer in zip(self._names, past)}}

    def _step(self, embed: np.ndarray) -> np.ndarray:
        self._embeds[:] = embed
        self._mask[0, self.length] = 1
        past, present = self._buffers[self.length % 2], self._buffers[1 - self.length % 2]
        binding = self._binding
        _bind(binding, "inputs_embeds", self._embeds)
        _bind(binding, "attention_mask", self._mask)
        for (past_name, present_name), src, dst in zip(self._names, past, present):
            _bind(binding, past_name, src)
            _bind(binding, present_name, dst, output=True)
        _bind(binding, "logits", self._logits, output=True)
        with graph_errors("decoder"):
            self.session.run_with_iobinding(binding)
        self.length += 1
        return self._logits[0]


class BoundEmbedding:
    """token_embedding.onnx for one token per call, into a preallocated [1, 1, hidden] buffer (a decode step)."""

    def __init__(self, session: ort.InferenceSession, hidden_size: int) -> None:
        self.session = session
        self._ids = np.zeros((1, 1), np.int64)
        self._out = np.zeros((1, 1, hidden_size), np.float32)
        self._binding = session.io_binding()
        _bind(self._binding, "input_ids", self._ids)
        _bind(self._binding, "inputs_embeds", self._out, output=True)

    def __call__(self, token: int) -> np.ndarray:
        """int id -> float32 [1, 1, hidden] (a view, overwritten by the next call)."""
        self._ids[0, 0] = token
        with graph_errors("token_embedding"):
            self.session.run_with_iobinding(self._binding)
        return self._out


DECODERS = {"past-present": Decoder, "shared-buffer": SharedBufferDecoder, "static-buffer": StaticBufferDecoder}
"""KV-cache layout (manifest kv_cache.layout) -> runtime decoder class."""


def open_decoder(session: ort.InferenceSession, kv: KVCacheSpec, hidden_size: int, position_rows: int = 1
                 ) -> Decoder | SharedBufferDecoder | StaticBufferDecoder:
    """The decoder class for the bundle's KV layout (the manifest validated the layout name already)."""
    if kv.layout == "past-present":
        return Decoder(session, kv, hidden_size, position_rows)
    if position_rows != 1:  # the exporter never pairs them; a hand-edited manifest could
        raise SpecError(f"the {kv.layout} KV layout takes linear positions only, not {position_rows} rows")
    return DECODERS[kv.layout](session, kv, hidden_size)
