import json
import subprocess
import sys

import pytest
import torch

from edgelmm.train.base_model import side_by_side as _side_by_side
from edgelmm.train.data.tools import load_catalog
from tests.conftest import TRAIN_ENV


def test_two_lora_sets_side_by_side_sum_their_deltas():
    g = torch.Generator().manual_seed(0)
    base = {"q.lora_A": torch.randn(4, 6, generator=g), "q.lora_B": torch.randn(5, 4, generator=g)}
    new = {"q.lora_A": torch.randn(2, 6, generator=g), "q.lora_B": torch.randn(5, 2, generator=g),
           "v.lora_A": torch.randn(2, 6, generator=g), "v.lora_B": torch.randn(3, 2, generator=g)}
    both = _side_by_side(base, new)
    expected = base["q.lora_B"] @ base["q.lora_A"] + new["q.lora_B"] @ new["q.lora_A"]
    assert torch.allclose(both["q.lora_B"] @ both["q.lora_A"], expected, atol=1e-5)
    assert torch.allclose(both["v.lora_B"] @ both["v.lora_A"], new["v.lora_B"] @ new["v.lora_A"], atol=1e-5)
    assert both["q.lora_A"].shape[0] == both["v.lora_A"].shape[0] == 6


def tiny_tool_config(tmp_path, base_model: str, evals: list) -> str:
    from edgelmm.specs import to_dict
    from edgelmm.train.mllm_tool_presets import quick

    spec = to_dict(quick())
    spec["base_model"] = base_model
    spec["stages"][0].update(steps=3, batch_size=4)
    spec["evals"] = evals
    path = tmp_path / f"tool-{len(evals)}.json"
    path.write_text(json.dumps(spec))
    return str(path)


def train(config: str, out) -> None:
    done = subprocess.run([sys.executable, "-m", "edgelmm", "train", "--config", config, "--out", str(out),
                           "--no-progress"], env=TRAIN_ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.fixture(scope="module")
def tool_run(tmp_path_factory):
    """The quick preset on tiny-random (3 steps x 4 rows, eval on 4 val examples), run once."""
    tmp = tmp_path_factory.mktemp("tool-run")
    train(tiny_tool_config(tmp, "tiny-random", [{"task": "tool-selection", "split": "val", "n": 4}]), tmp / "run")
    return tmp / "run"


def test_quick_run_saves_a_tool_model_with_its_catalog_and_eval(tool_run):
    from edgelmm.models.weights import load_weights

    out = tool_run
    meta = json.loads((out / "model" / "meta.json").read_text())
    assert meta["tools"] == list(load_catalog().ids) and meta["lora"]["r"] == 32
    result = json.loads((out / "model" / "provenance.json").read_text())["eval"]["tool-selection:val"]
    assert result["n"] == 4 and {"accuracy", "hallucination_rate", "format_accuracy", "by_ambiguity"} <= set(result)
    assert load_weights(out / "model").tools == load_catalog().ids
    steps = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2, 3] and all(s["stage"] == "tool-instruct" for s in steps)


@pytest.mark.slow
def test_starting_from_a_trained_model_keeps_its_lora(tool_run, tmp_path):
    """From a weights directory with LoRA (an Imp run's model/, here the quick run's): both adapters are kept."""
    from safetensors.torch import load_file

    from edgelmm.models.weights import load_weights

    base = tool_run / "model"
    out = tmp_path / "from-trained"
    train(tiny_tool_config(tmp_path, str(base), []), out)
    imp_meta = json.loads((base / "meta.json").read_text())
    meta = json.loads((out / "model" / "meta.json").read_text())
    assert meta["lora"]["r"] == imp_meta["lora"]["r"] + 32 and meta["lora"]["alpha"] == meta["lora"]["r"]
    imp_model, tool_model = load_weights(base).model, load_weights(out / "model").model
    tensors = load_file(str(out / "model" / "model.safetensors"))
    path = next(k for k in tensors if k.endswith("q_proj.lora_A"))[: -len(".lora_A")]
    r1 = imp_meta["lora"]["r"]
    new_delta = tensors[f"{path}.lora_B"][:, r1:].float() @ tensors[f"{path}.lora_A"][r1:].float()
    weight = dict(imp_model.named_parameters())[f"{path}.weight"]
    tuned = dict(tool_model.named_parameters())[f"{path}.weight"]
    assert torch.allclose(tuned, weight + new_delta, atol=2e-3)  # fp16 storage


def test_a_tower_trained_with_lora_saves_plain_names_and_loads_merged(tmp_path):
    """peft wraps a LoRA'd Linear (``q_proj.base_layer.weight``): the saved tower must keep the plain names the
    loader reads, with the tower's adapters beside the LM's and merged on load."""
    from safetensors.torch import load_file

    from edgelmm.models.weights import load_weights

    config = json.loads(open(tiny_tool_config(tmp_path, "tiny-random", [])).read())
    config["stages"][0]["trainability"]["vision_tower"] = "lora"
    path = tmp_path / "tower-lora.json"
    path.write_text(json.dumps(config))
    train(str(path), tmp_path / "run")
    tensors = load_file(str(tmp_path / "run" / "model" / "model.safetensors"))
    assert not [k for k in tensors if ".base_layer." in k or ".default." in k]
    linear = next(k for k in tensors if k.startswith("model.vision_tower.") and k.endswith("q_proj.lora_A"))[:-7]
    model = load_weights(tmp_path / "run" / "model").model
    delta = tensors[f"{linear}.lora_B"].float() @ tensors[f"{linear}.lora_A"].float()
    merged = dict(model.named_parameters())[f"{linear}.weight"]
    assert torch.allclose(merged, tensors[f"{linear}.weight"].float() + delta, atol=1e-3)
