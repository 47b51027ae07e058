"""Issue 14's interrupted-write rule for training checkpoints: SIGKILL mid-save leaves the previous one whole."""

import sys

import pytest
import torch

from edgelmm.testing.kill import sigkill_when
from edgelmm.train import checkpoint

# Saves a ~64 MB checkpoint over and over into the same directory until killed.
WRITER = """
import sys, torch
from edgelmm.train import checkpoint
out = sys.argv[1]
big = {"w": torch.ones(16 * 2**20)}
for step in range(10**6):
    checkpoint.save(out, big, checkpoint.checkpoint_meta(step=step), optimizer={"w/exp_avg": big["w"]})
"""


def test_sigkill_mid_checkpoint_save_keeps_previous_checkpoint(tmp_path):
    out = tmp_path / "ckpt"
    before = {"w": torch.arange(6.0)}
    checkpoint.save(out, before, checkpoint.checkpoint_meta(step=-1))
    sigkill_when([sys.executable, "-c", WRITER, str(out)],
                 lambda: any((p / checkpoint.MODEL).exists() for p in tmp_path.glob(".ckpt.partial-*")))
    tensors, meta = checkpoint.load(out)  # either the old checkpoint or a complete new one, never a half
    if meta["step"] == -1:
        assert torch.equal(tensors["w"], before["w"])
    else:
        assert tensors["w"].numel() == 16 * 2**20 and checkpoint.load_optimizer(out) is not None
    partials = [p for p in tmp_path.glob(".ckpt.partial-*") if not (p / checkpoint.META).exists()]
    assert partials  # killed while its tensors were being written: the stage has no meta.json yet
    with pytest.raises(Exception, match="not a checkpoint"):
        checkpoint.load(partials[0])  # a half-written stage is never taken for a checkpoint
