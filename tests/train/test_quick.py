"""`edgelmm train --recipe imp --quick` on the real SmolLM2 and MiniLM: every stage's loss falls, the trained
model beats the image-blind answer prior on held-out shapes, and the LM's text perplexity stays within 5%
(the issue's smoke run: 191 s of CPU time single-threaded, measured on a loaded machine)."""

import json
import subprocess
import sys

import pytest

from edgelmm.evals.runner import PriorAnswerer, evaluate
from edgelmm.train.loop import read_log

from ..conftest import TRAIN_ENV


@pytest.mark.real_weights
def test_quick_recipe_loss_falls_and_beats_the_blind_baseline(tmp_path):
    out = tmp_path / "quick"
    env = {**TRAIN_ENV, "OMP_NUM_THREADS": "2"}
    # ~3 min on 2 idle cores; the timeout leaves room for a shared, loaded machine.
    subprocess.run([sys.executable, "-m", "edgelmm", "train", "--recipe", "imp", "--quick", "--out", str(out),
                    "--no-progress"], env=env, capture_output=True, text=True, timeout=1800, check=True)
    records = read_log(out / "log.jsonl")
    # Last quarter vs first quarter of each stage. Measured: 0.64, 0.86-0.92 (align has only 8 steps; the ratio moves
    # with the thread count), 0.32.
    for stage, bound in (("vision-pretrain", 0.8), ("ground", 0.8), ("align", 1.0), ("instruct", 0.6)):
        losses = [r["loss"] for r in records if r["stage"] == stage]
        k = max(2, len(losses) // 4)
        assert sum(losses[-k:]) / k < bound * sum(losses[:k]) / k, (stage, losses)
    # Measured (2026-11-24): shapes val 40.0% (1 thread) / 38.3% (2 threads) vs the prior's 25.0%. Digits are not
    # reliably learnt (8.3% / 13.3% vs the prior's 11.7%): recorded in the provenance, not asserted.
    report = json.loads((out / "model" / "provenance.json").read_text())["eval"]["shapes:val"]
    prior = evaluate(PriorAnswerer("shapes", n=2000), "shapes", split="val", n=report["n"])
    assert report["accuracy"] > prior.accuracy + 0.05, (report["accuracy"], prior.accuracy)
    # Text ability kept: LoRA-merged perplexity within the issue's 5% of SmolLM2's (measured +3.8%).
    ppl = subprocess.run([sys.executable, "-m", "edgelmm", "eval", "--model", str(out), "--perplexity", "--json"],
                         env=env, capture_output=True, text=True, timeout=600, check=True)
    assert json.loads(ppl.stdout.strip().splitlines()[-1])["rise"] <= 0.05
