"""Log-likelihood of given answers (ranking candidates: a recommender's titles, a classifier's labels).

The prompt is prefilled once; each answer then continues the same KV cache, which is rewound to the prompt's end
before the next one: cost ~ prompt + the answers' tokens, not answers x (prompt + answer).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np


class Rewindable(Protocol):
    length: int

    def forward(self, embeds: np.ndarray, positions: np.ndarray | None = None, *, all_logits: bool = False
                ) -> np.ndarray: ...

    def rewind(self, length: int) -> None: ...


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float32 [..., vocab] -> float64 log-probabilities over the last axis."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def score_continuations(decoder: Rewindable, embed: Callable[[np.ndarray], np.ndarray], first_logits: np.ndarray,
                        next_position: int, rows: int, continuations: Sequence[Sequence[int]]) -> np.ndarray:
    """Sum of log p(token | prompt, earlier tokens) over each continuation's tokens: float64 [len(continuations)].

    ``decoder`` holds the prefilled prompt; ``first_logits`` float32 [vocab] are its last position's logits;
    ``next_position`` the position id after the prompt (not the length under M-RoPE), ``rows`` the position rows
    (1, or 3 for M-RoPE); ``embed``: int64 ids [S] -> float32 [1, S, hidden]. Leaves the decoder at the prompt.
    """
    start, first = decoder.length, log_softmax(first_logits)
    scores = np.empty(len(continuations), dtype=np.float64)
    for i, tokens in enumerate(continuations):
        total = first[tokens[0]]
        if len(tokens) > 1:
            decoder.rewind(start)
            feed = np.asarray(tokens[:-1], dtype=np.int64)
            positions = np.broadcast_to(np.arange(next_position, next_position + len(feed), dtype=np.int64),
                                        (rows, len(feed)))
            logp = log_softmax(decoder.forward(embed(feed), positions, all_logits=True))
            total += logp[np.arange(len(feed)), np.asarray(tokens[1:])].sum()
        scores[i] = total
    decoder.rewind(start)
    return scores
