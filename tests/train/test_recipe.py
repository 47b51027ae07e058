"""The imp recipe end to end on a tiny random model: outputs, resume, stop on signal, DDP with torchrun."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from edgelmm.train.loop import read_log

from ..conftest import TRAIN_ENV as ENV
from ..conftest import tiny_recipe


def edgelmm(*args, check=True, **kwargs):
    return subprocess.run([sys.executable, "-m", "edgelmm", *args], env=ENV, capture_output=True, text=True,
                          timeout=600, check=check, **kwargs)


def test_run_writes_log_plot_checkpoint_and_model(tiny_run):
    records = read_log(tiny_run / "log.jsonl")
    assert [(r["stage"], r["step"]) for r in records] == [
        ("vision-pretrain", 1), ("vision-pretrain", 2), ("vision-pretrain", 3), ("ground", 1), ("ground", 2),
        ("align", 1), ("align", 2), ("instruct", 1), ("instruct", 2), ("instruct", 3)]
    assert set(records[0]["terms"]) == {"siglip", "attributes"} and set(records[-1]["terms"]) == {"ce"}
    assert set(records[3]["terms"]) == {"ground"}
    assert (tiny_run / "loss.png").stat().st_size > 10_000
    meta = json.loads((tiny_run / "checkpoint" / "meta.json").read_text())
    assert (meta["stage"], meta["step"]) == ("instruct", 3)
    weights = load_file(str(tiny_run / "model" / "model.safetensors"))
    assert all(t.dtype == torch.float16 for t in weights.values())
    assert any(k.endswith(".lora_A") for k in weights) and any(k.startswith("model.vision_tower.") for k in weights)
    assert not any(k.startswith("contrastive.") for k in weights)  # stage-0 scaffolding is not shipped
    provenance = json.loads((tiny_run / "model" / "provenance.json").read_text())
    assert provenance["seed"] == 0 and provenance["data_versions"]["shapes"] == "shapes-v2"
    assert provenance["eval"]["digits:val"]["n"] == 6 and "command" in provenance


def test_stop_after_steps_then_resume_gives_the_same_model(tiny_run, tiny_recipe_config, tmp_path):
    out = tmp_path / "run"
    first = edgelmm("train", "--config", str(tiny_recipe_config), "--out", str(out), "--stop-after-steps", "6",
                    "--no-progress", "--no-eval")
    assert "continue with: edgelmm train --resume" in first.stderr
    assert json.loads((out / "checkpoint" / "meta.json").read_text())["stage"] == "align"
    assert not (out / "model").exists()
    edgelmm("train", "--resume", str(out), "--no-progress", "--no-eval")
    assert [r["step"] for r in read_log(out / "log.jsonl")] == [r["step"] for r in read_log(tiny_run / "log.jsonl")]
    resumed = load_file(str(out / "model" / "model.safetensors"))
    reference = load_file(str(tiny_run / "model" / "model.safetensors"))
    assert resumed.keys() == reference.keys()
    assert all(torch.equal(resumed[k], reference[k]) for k in reference)


def test_continuing_from_a_trained_model_keeps_tower_connector_and_lora(tiny_run, tmp_path):
    """base_model = a trained weights directory: only an untrained base is re-initialised; the base's LoRA is saved
    beside the new one, so the saved model = the base with the new adapters' delta added."""
    from edgelmm.models.weights import load_weights

    spec = tiny_recipe()
    spec["base_model"] = str(tiny_run / "model")
    spec["stages"] = [spec["stages"][-1]]  # one more instruct stage (connector + LoRA)
    spec["evals"] = []
    config = tmp_path / "more.json"
    config.write_text(json.dumps(spec))
    edgelmm("train", "--config", str(config), "--out", str(tmp_path / "more"), "--no-progress")
    base, more = load_file(str(tiny_run / "model" / "model.safetensors")), load_file(
        str(tmp_path / "more" / "model" / "model.safetensors"))
    tower = [k for k in base if k.startswith("model.vision_tower.")]
    assert tower and all(torch.equal(base[k], more[k]) for k in tower)  # frozen and not re-initialised
    r1, r2 = (json.loads((d / "meta.json").read_text())["lora"]["r"] for d in (tiny_run / "model", tmp_path / "more" / "model"))
    assert r2 == r1 + spec["stages"][0]["lora"]["r"]
    base_model = dict(load_weights(tiny_run / "model").model.named_parameters())
    tuned = dict(load_weights(tmp_path / "more" / "model").model.named_parameters())
    path = next(k for k in more if k.endswith("q_proj.lora_A"))[: -len(".lora_A")]
    delta = more[f"{path}.lora_B"][:, r1:].float() @ more[f"{path}.lora_A"][r1:].float()
    assert torch.allclose(tuned[f"{path}.weight"], base_model[f"{path}.weight"] + delta, atol=2e-3)


def test_sigterm_checkpoints_and_exits_130(tmp_path):
    config = tmp_path / "long.json"
    config.write_text(json.dumps(tiny_recipe(steps=(400, 2, 2, 2))))
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "edgelmm", "train", "--config", str(config), "--out", str(out),
                             "--no-progress"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(read_log(out / "log.jsonl")) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    meta = json.loads((out / "checkpoint" / "meta.json").read_text())
    assert meta["stage"] == "vision-pretrain" and 2 <= meta["step"] < 400
    assert meta["step"] == read_log(out / "log.jsonl")[-1]["step"]
    assert edgelmm("train", "--config", str(config), "--out", str(out), check=False).returncode == 2  # no overwrite


def test_torchrun_two_processes_equal_one_process_accumulating(tmp_path):
    """DDP over 2 CPU processes (gloo) with batch b == 1 process with batch b and 2 accumulation steps: the same
    examples in the same micro-batches, gradients averaged the same way."""
    spec = tiny_recipe(steps=(2, 1, 1, 2))
    (tmp_path / "ddp.json").write_text(json.dumps(spec))
    for stage in spec["stages"]:
        stage["grad_accum"] = 2
    (tmp_path / "accum.json").write_text(json.dumps(spec))
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    "-m", "edgelmm", "train", "--config", str(tmp_path / "ddp.json"), "--out", str(tmp_path / "ddp"),
                    "--no-progress", "--no-eval"], env=ENV, capture_output=True, text=True, timeout=600, check=True)
    edgelmm("train", "--config", str(tmp_path / "accum.json"), "--out", str(tmp_path / "accum"), "--no-progress",
            "--no-eval")
    ddp_log, accum_log = read_log(tmp_path / "ddp" / "log.jsonl"), read_log(tmp_path / "accum" / "log.jsonl")
    assert [r["examples"] for r in ddp_log] == [r["examples"] for r in accum_log] == [16, 16, 16, 8, 8, 8]
    for a, b in zip(ddp_log, accum_log):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
    ddp = load_file(str(tmp_path / "ddp" / "model" / "model.safetensors"))
    accum = load_file(str(tmp_path / "accum" / "model" / "model.safetensors"))
    assert all(torch.allclose(ddp[k].float(), accum[k].float(), atol=2e-3) for k in ddp)
