import numpy as np

from edgelmm.runtime.sampling import apply_repetition_penalty, choose_token
from edgelmm.specs import GenerationSpec


def test_greedy_is_argmax():
    logits = np.array([0.1, 3.0, -1.0, 2.9], dtype=np.float32)
    assert choose_token(logits, GenerationSpec(), np.zeros(0, np.int64), np.random.default_rng(0)) == 1


def test_repetition_penalty_matches_transformers():
    import torch
    from transformers.generation.logits_process import RepetitionPenaltyLogitsProcessor

    logits = np.array([2.0, -1.0, 0.5, 3.0], dtype=np.float32)
    seen = np.array([0, 1, 1], dtype=np.int64)
    ours = apply_repetition_penalty(logits, seen, 1.3)
    theirs = RepetitionPenaltyLogitsProcessor(1.3)(torch.tensor(seen)[None], torch.tensor(logits)[None])[0].numpy()
    assert np.allclose(ours, theirs)


def test_top_k_one_is_greedy_and_top_p_keeps_the_head():
    rng = np.random.default_rng(0)
    logits = np.array([1.0, 5.0, 4.9, 0.0], dtype=np.float32)
    spec = GenerationSpec(temperature=1.0, top_k=1)
    assert {choose_token(logits, spec, np.zeros(0, np.int64), rng) for _ in range(50)} == {1}
    spec = GenerationSpec(temperature=1.0, top_p=0.6)
    assert {choose_token(logits, spec, np.zeros(0, np.int64), rng) for _ in range(200)} <= {1, 2}


def test_seeded_sampling_is_reproducible():
    logits = np.linspace(0, 1, 50, dtype=np.float32)
    spec = GenerationSpec(temperature=2.0, seed=5)
    a = [choose_token(logits, spec, np.zeros(0, np.int64), np.random.default_rng(5)) for _ in range(5)]
    b = [choose_token(logits, spec, np.zeros(0, np.int64), np.random.default_rng(5)) for _ in range(5)]
    assert a == b
