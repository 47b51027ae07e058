"""Next-token choice from logits (numpy): greedy, or temperature / top-k / top-p with repetition penalty."""

from __future__ import annotations

import numpy as np

from edgelmm.specs import GenerationSpec


def apply_repetition_penalty(logits: np.ndarray, seen: np.ndarray, penalty: float) -> np.ndarray:
    """CTRL penalty as transformers applies it: positive logits / penalty, negative * penalty, for seen ids."""
    if penalty == 1.0 or seen.size == 0:
        return logits
    logits = logits.copy()
    ids = np.unique(seen[(seen >= 0) & (seen < logits.shape[-1])])
    values = logits[ids]
    logits[ids] = np.where(values > 0, values / penalty, values * penalty)
    return logits


def choose_token(logits: np.ndarray, spec: GenerationSpec, seen: np.ndarray, rng: np.random.Generator) -> int:
    """Pick the next id from float32 logits [V]. ``seen`` holds prompt + generated ids for the penalty."""
    logits = apply_repetition_penalty(logits.astype(np.float32, copy=False), seen, spec.repetition_penalty)
    if spec.greedy:
        return int(np.argmax(logits))
    scaled = logits.astype(np.float64) / spec.temperature
    if spec.top_k > 0 and spec.top_k < scaled.shape[-1]:
        kth = np.partition(scaled, -spec.top_k)[-spec.top_k]
        scaled = np.where(scaled < kth, -np.inf, scaled)
    probs = np.exp(scaled - scaled.max())
    probs /= probs.sum()
    if spec.top_p < 1.0:
        order = np.argsort(-probs, kind="stable")
        cumulative = np.cumsum(probs[order])
        keep = cumulative - probs[order] < spec.top_p  # always keeps the most likely token
        mask = np.zeros_like(probs, dtype=bool)
        mask[order[keep]] = True
        probs = np.where(mask, probs, 0.0)
        probs /= probs.sum()
    return int(rng.choice(probs.shape[-1], p=probs))
