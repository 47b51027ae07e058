"""LLaVA-KD: the distillation losses against direct computations, the student, the stages as data, a tiny run."""

import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from edgelmm.errors import SpecError, UnknownNameError
from edgelmm.specs import from_dict, to_dict
from edgelmm.train.llava_kd_presets import ABLATIONS, DISTILL_TERMS, full, quick
from edgelmm.train.loop import read_log
from edgelmm.train.losses import IGNORE, forward_kl, gram, mdist_response, mdist_visual, rdist
from edgelmm.train.specs import RecipeSpec

from ..conftest import TRAIN_ENV


def direct_kl(student, teacher, t=1.0):
    """sum_v p log(p / q) per row, mean over rows, times t^2: the textbook definition, in float64."""
    p = torch.softmax(teacher.double() / t, -1)
    q = torch.softmax(student.double() / t, -1)
    return float((p * (p.log() - q.log())).sum(-1).mean() * t * t)


def test_forward_kl_matches_the_definition_and_is_not_symmetric():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(5, 11, generator=g) * 3, torch.randn(5, 11, generator=g) * 3
    assert float(forward_kl(s, t)) == pytest.approx(direct_kl(s, t), rel=1e-5)
    assert float(forward_kl(s, t, temperature=2.0)) == pytest.approx(direct_kl(s, t, 2.0), rel=1e-5)
    assert float(forward_kl(s, t)) != pytest.approx(float(forward_kl(t, s)), rel=1e-3)  # teacher is the target
    assert float(forward_kl(t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(forward_kl(s[:0], t[:0])) == 0.0


def test_mdist_response_uses_the_positions_before_each_answer_token():
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 6, 7, generator=g), torch.randn(2, 6, 7, generator=g)
    labels = torch.full((2, 6), IGNORE)
    labels[0, 3:5] = 4  # answer tokens at 3, 4 -> predicted from positions 2, 3
    labels[1, 5] = 1  # answer at 5 -> position 4
    rows = [(0, 2), (0, 3), (1, 4)]
    expected = direct_kl(torch.stack([s[b, i] for b, i in rows]), torch.stack([t[b, i] for b, i in rows]))
    assert float(mdist_response(s, t, labels)) == pytest.approx(expected, rel=1e-5)
    assert float(mdist_response(t, t, labels)) == pytest.approx(0.0, abs=1e-6)


def test_mdist_visual_averages_over_every_visual_slot_unshifted():
    g = torch.Generator().manual_seed(2)
    s, t = torch.randn(2, 6, 7, generator=g), torch.randn(2, 6, 7, generator=g)
    visual = torch.zeros(2, 6, dtype=torch.bool)
    visual[:, 1:4] = True
    expected = direct_kl(s[:, 1:4].reshape(-1, 7), t[:, 1:4].reshape(-1, 7))
    assert float(mdist_visual(s, t, visual)) == pytest.approx(expected, rel=1e-5)
    assert float(mdist_visual(s, s, visual)) == pytest.approx(0.0, abs=1e-6)


def test_rdist_is_one_minus_cosine_of_gram_matrices_in_chunks():
    g = torch.Generator().manual_seed(3)
    s, t = torch.randn(2, 4, 10, generator=g), torch.randn(2, 4, 10, generator=g)
    rs, rt = (s.double() @ s.double().transpose(1, 2)).flatten(), (t.double() @ t.double().transpose(1, 2)).flatten()
    expected = 1 - float(rs @ rt / (rs.norm() * rt.norm()))
    assert torch.allclose(gram(s, chunk=3), gram(s, chunk=100), atol=1e-5)  # chunks of 3, 3, 3, 1 columns
    assert float(rdist(s, t, chunk=3)) == pytest.approx(expected, rel=1e-5)
    assert float(rdist(t, t)) == pytest.approx(0.0, abs=1e-6)
    assert float(rdist(2 * t, t)) == pytest.approx(0.0, abs=1e-6)  # relations, not scale
    with pytest.raises(ValueError):
        rdist(s, t[:, :3])


def test_stages_are_data_and_ablations_drop_terms():
    spec = full()
    assert [s.name for s in spec.stages] == ["dpt", "sft", "dft"]
    assert [str(s.trainability) for s in spec.stages] == [
        "vision_tower=frozen connector=full llm=frozen", *["vision_tower=frozen connector=full llm=full"] * 2]
    names = lambda s: [[t.name for t in st.losses] for st in s.stages]  # noqa: E731
    assert names(spec) == [["ce", *DISTILL_TERMS], ["ce"], ["ce", *DISTILL_TERMS]]
    assert all(t.weight == 1.0 for st in spec.stages for t in st.losses) and spec.distill.temperature == 1.0
    assert names(ABLATIONS["mdist"](spec))[0] == ["ce", "rdist"]
    assert names(ABLATIONS["rdist"](spec))[2] == ["ce", "mdist-response", "mdist-visual"]
    no_dpt = ABLATIONS["dpt"](spec)
    assert [s.name for s in no_dpt.stages] == ["pt", "sft", "dft"] and names(no_dpt)[0] == ["ce"]
    baseline = ABLATIONS["distill"](spec)
    assert [s.name for s in baseline.stages] == ["pt", "sft", "ft"] and names(baseline) == [["ce"]] * 3
    assert [(s.steps, s.batch_size, s.lr) for s in baseline.stages] == [(s.steps, s.batch_size, s.lr)
                                                                         for s in spec.stages]
    assert from_dict(RecipeSpec, to_dict(quick())) == quick()
    with pytest.raises(SpecError):
        from_dict(RecipeSpec, {**to_dict(spec), "distill": {"teacher": "smol-vqa", "student_layers": 0}})


def test_student_copies_the_tower_and_cuts_the_lm(tiny_llava):
    from edgelmm.models.student import build_student
    from edgelmm.models.tiny import build_tiny_lm

    student = build_student(tiny_llava, build_tiny_lm(), layers=1, seed=5, name="s")
    sm, tm = student.model.model, tiny_llava.model.model
    assert len(sm.language_model.layers) == 1 and student.model.config.text_config.num_hidden_layers == 1
    assert all(torch.equal(a, b) for a, b in zip(sm.vision_tower.state_dict().values(),
                                                  tm.vision_tower.state_dict().values()))
    assert not torch.equal(sm.multi_modal_projector.linear_1.weight, tm.multi_modal_projector.linear_1.weight)
    with pytest.raises(SpecError):
        build_student(tiny_llava, build_tiny_lm(), layers=3, seed=5, name="s")


@pytest.mark.real_weights
def test_smol_vqa_s_is_registered_with_seven_smollm2_layers():
    from edgelmm.models.registry import build_model
    from edgelmm.models.student import SMOL_VQA_S_LAYERS

    student = build_model("smol-vqa-s")  # warns while smol-vqa (its tower's source) ships no trained weights
    assert SMOL_VQA_S_LAYERS == 7 and len(student.model.model.language_model.layers) == 7
    assert student.num_image_tokens == 9 and student.model.config.text_config.num_hidden_layers == 7


def test_distillation_terms_vanish_when_the_student_is_the_teacher(tiny_llava):
    from edgelmm.train.data.collate import ChatCollator
    from edgelmm.train.data import DATASETS
    from edgelmm.train.objectives import Distillation

    loaded = tiny_llava
    collator = ChatCollator(tokenizer=loaded.tokenizer, chat_template=loaded.chat_template,
                            image_token=loaded.image_token, num_image_tokens=loaded.num_image_tokens,
                            preprocess_spec=loaded.preprocess)
    dataset = DATASETS["shapes"]
    batch = collator([dataset.example("train", i) for i in range(3)], fmt="qa")
    module = Distillation(loaded.model, loaded.model, image_token_id=loaded.image_token_id,
                          losses=("ce", *DISTILL_TERMS))
    terms = module(batch)
    assert set(terms) == {"ce", *DISTILL_TERMS} and float(terms["ce"]) > 0
    assert all(abs(float(terms[n])) < 1e-5 for n in DISTILL_TERMS), terms
    assert not any(n.startswith("_teacher") for n, _ in module.named_parameters())


def tiny_kd_config(tmp_path):
    spec = to_dict(quick())
    spec["base_model"] = "tiny-random"
    spec["distill"] = {"teacher": "tiny-random", "student_layers": 1, "temperature": 1.0}
    for stage in spec["stages"]:
        stage["steps"], stage["batch_size"] = 2, 4
    spec["evals"] = [{"task": "digits", "split": "val", "n": 4}]
    path = tmp_path / "tiny-kd.json"
    path.write_text(json.dumps(spec))
    return path


def edgelmm(*args):
    return subprocess.run([sys.executable, "-m", "edgelmm", *args], env=TRAIN_ENV, capture_output=True, text=True,
                          timeout=600, check=True)


def test_tiny_kd_run_logs_every_term_and_saves_a_loadable_student(tmp_path):
    from edgelmm.models.weights import load_weights

    out = tmp_path / "kd"
    edgelmm("train", "--config", str(tiny_kd_config(tmp_path)), "--out", str(out), "--no-progress")
    records = read_log(out / "log.jsonl")
    assert [(r["stage"], r["step"]) for r in records] == [
        ("dpt", 1), ("dpt", 2), ("sft", 1), ("sft", 2), ("dft", 1), ("dft", 2)]
    assert set(records[0]["terms"]) == {"ce", *DISTILL_TERMS} and set(records[2]["terms"]) == {"ce"}
    assert all(records[i]["terms"]["rdist"] > 0 for i in (0, 4))  # a fresh connector and a cut LM differ
    weights = load_file(str(out / "model" / "model.safetensors"))
    assert any(k.startswith("model.language_model.layers.0.") for k in weights)
    assert not any(k.startswith("model.language_model.layers.1.") for k in weights)
    student = load_weights(out / "model")
    assert len(student.model.model.language_model.layers) == 1
    assert torch.equal(student.model.lm_head.weight.half(), weights["lm_head.weight"])
    provenance = json.loads((out / "model" / "provenance.json").read_text())
    assert provenance["teacher"] == "tiny-random" and provenance["eval"]["digits:val"]["n"] == 4


def test_ablate_and_teacher_flags_rewrite_the_spec(tmp_path):
    config = str(tiny_kd_config(tmp_path))
    dumped = json.loads(edgelmm("train", "--config", config, "--ablate", "distill", "--teacher", "x", "--dump").stdout)
    assert [s["name"] for s in dumped["stages"]] == ["pt", "sft", "ft"] and dumped["distill"]["teacher"] == "x"
    with pytest.raises(UnknownNameError):
        from edgelmm.train.cli import main

        main(["--config", config, "--ablate", "nope", "--dump"])


@pytest.mark.real_weights
def test_quick_preset_distils_smol_vqa_into_smol_vqa_s(tmp_path):
    """`edgelmm train --recipe llava-kd --quick`: the real teacher (30 layers) and student (7). Measured: 41 s of CPU
    (one thread; 7 min wall on a loaded machine); sft CE 29.4 -> 19.7, dft total 42.9 -> 28.3 over 4 steps."""
    out = tmp_path / "quick"
    subprocess.run([sys.executable, "-m", "edgelmm", "train", "--recipe", "llava-kd", "--quick", "--out", str(out),
                    "--no-progress"], env=TRAIN_ENV, capture_output=True, text=True, timeout=1800, check=True)
    records = read_log(out / "log.jsonl")
    assert [r["stage"] for r in records] == ["dpt"] * 4 + ["sft"] * 4 + ["dft"] * 4
    for stage in ("sft", "dft"):
        losses = [r["loss"] for r in records if r["stage"] == stage]
        assert losses[-1] < 0.9 * losses[0], (stage, losses)
    meta = json.loads((out / "model" / "meta.json").read_text())
    assert meta["name"] == "smol-vqa-s" and meta["lm_layers"] == 7
    assert json.loads((out / "model" / "provenance.json").read_text())["eval"]["shapes:val"]["n"] == 20
