"""`edgelmm eval`: one evaluation loop for torch models and bundles, the answer prior, one-line errors."""

import json
import subprocess
import sys

import pytest

from edgelmm.cli import main
from edgelmm.evals.runner import BundleAnswerer, PriorAnswerer, evaluate
from edgelmm.evals.tasks import TASKS, exact_match
from edgelmm.train.data import DATASETS


@pytest.fixture(scope="module")
def tiny_trained_bundle(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles") / "tiny-trained"
    assert main(["export", "--model", str(tiny_run / "model"), "--out", str(out)]) == 0
    return out


def test_bundle_and_torch_model_give_the_same_answers(tiny_run, tiny_trained_bundle):
    from edgelmm.evals.torch_answerer import TorchAnswerer, load_model

    torch_model = TorchAnswerer(load_model(str(tiny_run)))
    bundle = BundleAnswerer(tiny_trained_bundle)
    for task in ("digits", "shapes"):
        examples = [DATASETS[task].example("val", i) for i in range(6)]
        assert torch_model.answer(examples, 8) == bundle.answer(examples, 8)
    a = evaluate(torch_model, "shapes", split="val", n=6, batch_size=4)
    b = evaluate(bundle, "shapes", split="val", n=6)
    assert (a.correct, a.per_kind) == (b.correct, b.per_kind)


def test_eval_cli_json_report_and_bundle_path_is_torch_free(tiny_trained_bundle):
    code = ("import sys, json, contextlib, io\nfrom edgelmm.cli import main\nbuf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n"
            f"    rc = main(['eval', '--bundle', {str(tiny_trained_bundle)!r}, '--task', 'digits', '-n', '3', '--json'])\n"
            "print(json.dumps({'rc': rc, 'report': json.loads(buf.getvalue()),"
            " 'heavy': [m for m in ('torch', 'transformers', 'onnx') if m in sys.modules]}))")
    out = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                                    check=True).stdout)
    assert out["rc"] == 0 and out["heavy"] == []
    report = out["report"]
    assert report["task"] == "digits" and report["split"] == "test" and report["n"] == 3
    assert sum(k["n"] for k in report["per_kind"].values()) == 3 and 0 <= report["accuracy"] <= 1


def test_answer_prior_is_the_majority_answer_per_question():
    prior = PriorAnswerer("shapes", n=2000)
    report = evaluate(prior, "shapes", split="test", n=400)
    assert 0.25 < report.accuracy < 0.5  # yes/no ~50%, counts ~25-40%, colours ~17%: about a third overall
    assert prior.by_question["Is there a red circle?"] in ("yes", "no")
    digits = evaluate(PriorAnswerer("digits", n=500), "digits", n=200)
    assert digits.accuracy < 0.2  # ten balanced classes


def test_exact_match_normalises_case_and_punctuation():
    ex = DATASETS["digits"].example("test", 0)
    assert exact_match(f" {ex.answer}. ", ex) and not exact_match(f"the digit {ex.answer}", ex)


def test_every_task_has_its_dataset_and_list_covers_them(capsys):
    assert all(t.name == k and t.dataset in DATASETS for k, t in TASKS.items())
    assert main(["eval", "--list"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == [*TASKS, "rec"]  # rec (ilm models) has its own evaluator, not a TASKS entry


def test_bad_input_is_one_line_exit_2(capsys, tmp_path):
    assert main(["eval", "--prior", "--task", "shape"]) == 2
    assert "unknown task 'shape'" in capsys.readouterr().err
    assert main(["eval", "--bundle", str(tmp_path), "--task", "shapes"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("edgelmm: error:")


def test_perplexity_is_exp_of_the_lm_loss_and_a_llava_scores_text_like_its_lm(tiny_llava, tiny_lm):
    import math

    import torch

    from edgelmm.evals.perplexity import perplexity, text_set

    texts = text_set()
    assert len(texts) == 5 and all(len(t) > 500 for t in texts)
    ids = tiny_lm.tokenizer(texts[0], add_special_tokens=False, return_tensors="pt")["input_ids"][:, :64]
    with torch.no_grad():
        expected = math.exp(float(tiny_lm.model(input_ids=ids, labels=ids).loss))
    assert perplexity(tiny_lm, texts[:1], max_tokens=64).value == pytest.approx(expected, rel=1e-4)
    # tiny-random is built on tiny-random-lm: text alone goes through the same LM weights.
    assert perplexity(tiny_llava, texts, max_tokens=64).nll == pytest.approx(
        perplexity(tiny_lm, texts, max_tokens=64).nll, rel=1e-5)


def test_eval_perplexity_cli_compares_with_the_base_lm(tiny_run, capsys):
    assert main(["eval", "--model", str(tiny_run), "--perplexity", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["base"] == "tiny-random-lm" and report["tokens"] > 1000
    assert report["rise"] == pytest.approx(report["perplexity"] / report["base_perplexity"] - 1, abs=1e-3)
    assert main(["eval", "--bundle", "x", "--perplexity"]) == 2
