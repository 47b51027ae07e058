"""The static NPU step's pieces that the HTP runs in fp16."""

import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm

from edgelmm.export.static_decoder import _rms_norm


def test_rms_norm_equals_llama_and_survives_fp16_sink_activations():
    norm = LlamaRMSNorm(576, eps=1e-5)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    x = torch.randn(3, 576)
    x[0, 7] = 22552.0  # SmolLM2's first-token residual stream reaches this (x*x = 5e8 > fp16 max)
    x[1] *= 1e-3  # small rows stay exact too
    reference = norm(x)
    torch.testing.assert_close(_rms_norm(norm, x), reference, rtol=1e-5, atol=1e-6)
    half = _rms_norm(norm.half(), x.half()).float()
    assert torch.isfinite(half).all()
    torch.testing.assert_close(half, reference, rtol=2e-2, atol=2e-3)
    naive = x.half() / torch.sqrt((x.half() * x.half()).mean(-1, keepdim=True) + 1e-5)
    assert naive[0].abs().max() == 0  # what the unscaled form gave the sink token in fp16
    assert torch.isfinite(_rms_norm(norm.float(), torch.zeros(1, 576))).all()


def test_static_calibration_picks_sink_last_and_spread_positions():
    from edgelmm.export.qdq import STATIC_STEPS, static_picks

    assert static_picks(1) == [0] and static_picks(2) == [0, 1] and static_picks(5) == [0, 1, 2, 3, 4]
    picks = static_picks(38)
    assert picks[:2] == [0, 1] and picks[-1] == 37 and len(picks) <= STATIC_STEPS
    assert max(b - a for a, b in zip(picks, picks[1:])) <= 3  # no long stretch of the prompt left uncalibrated
