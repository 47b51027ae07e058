import collections
import hashlib
import importlib.util
import json

import numpy as np
import pytest

from edgelmm.evals.runner import BundleAnswerer, evaluate
from edgelmm.train.data import DATASETS
from edgelmm.train.data.tool_images import PHOTOS_TEST, PHOTOS_TRAIN
from edgelmm.train.data.tool_selection import AMBIGUOUS, FAMILIES, HELD_OUT, tool_of
from edgelmm.train.data.tools import UNKNOWN, load_catalog

from tests.conftest import REPO

DATA = DATASETS["tool-selection"]


def test_catalog_is_generated_from_transformers_and_up_to_date():
    catalog = load_catalog()
    assert UNKNOWN in catalog.groups and len(catalog.ids) == len(set(catalog.ids)) > 60
    assert catalog.groups["depth-estimation"].ids[:2] == ("depth-estimation", "Intel/dpt-large")
    assert "predicts the depth" in catalog.groups["depth-estimation"].description
    spec = importlib.util.spec_from_file_location("build_tool_catalog", REPO / "scripts" / "build_tool_catalog.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    assert script.render() == script.OUT.read_text(), "rerun scripts/build_tool_catalog.py"


def test_examples_are_deterministic_and_splits_hold_out_templates():
    a, b = DATA.example("test", 7), DATA.example("test", 7)
    assert (a.question, a.valid) == (b.question, b.valid) and np.array_equal(np.asarray(a.image), np.asarray(b.image))
    held_out = {t for intent in AMBIGUOUS for t in intent.templates[-HELD_OUT:]}
    every_held_out = {t.split("{")[0] for family, _ in FAMILIES for i in family for t in i.templates[-HELD_OUT:]}
    train = [DATA.example("train", i) for i in range(60)]
    assert not any(q.startswith(h) for q in (e.question for e in train) for h in every_held_out)
    test = [DATA.example("test", i) for i in range(60)]
    assert not {e.question for e in train} & held_out
    assert {e.question for e in test if e.ambiguity != "none"} <= held_out
    for ex in train:  # a training row answers with one valid id, in the JSON frame
        assert tool_of(ex.answer) in ex.valid
    assert all(set(e.valid) <= set(load_catalog().ids) for e in test)


def test_val_and_test_stay_the_same_examples_across_data_versions():
    """Figures across data versions compare only if val/test do not move: new train phrasings go before each
    intent's held-out (last) template. A change here means every recorded tool-selection figure is stale."""
    digest = hashlib.sha256()
    for split in ("val", "test"):
        for i in range(40):
            ex = DATA.example(split, i)
            digest.update(repr((ex.question, ex.valid, ex.input_type, ex.kind)).encode())
    assert digest.hexdigest()[:16] == "8e54d7a2fa27f5ad"  # tool-selection-v1 and v2


def test_the_image_decides_ambiguous_instructions():
    seen = collections.defaultdict(set)
    for i in range(200):
        ex = DATA.example("val", i)
        if ex.ambiguity != "none":
            seen[ex.question].add(ex.tasks)
    assert seen and all(len(tasks) > 1 for tasks in seen.values())  # same words, different right tools
    assert {"scene", "digit", "text", "chart", "photo"} == {DATA.example("test", i).input_type for i in range(60)}
    assert not set(PHOTOS_TEST) & set(PHOTOS_TRAIN)  # test photographs are never cropped for training


def test_tool_of_parses_json_and_the_papers_single_quotes():
    assert tool_of('{"api_name": "sam"}') == "sam" and tool_of("{'api_name': 'sam'}") == "sam"
    assert tool_of("sam") is None and tool_of('{"api_name": 3}') is None and tool_of('{"tool": "x"}') is None


class Scripted:
    """Answers from a rule, and records the constraint it was given."""

    def __init__(self, rule):
        self.rule, self.name, self.constraints = rule, "scripted", []

    def answer(self, examples, max_new_tokens, constraint=None):
        self.constraints.append(constraint)
        return [self.rule(ex) for ex in examples]


def test_metrics_count_the_valid_set_hallucinations_and_format():
    oracle = evaluate(Scripted(lambda ex: json.dumps({"api_name": ex.valid[-1]})), "tool-selection", n=40,
                      batch_size=16)
    assert oracle.accuracy == 1 and oracle.overall.hallucinated == 0 and oracle.overall.formatted == 40
    assert set(oracle.by_input) <= {"scene", "digit", "text", "chart", "photo"} and "ambiguous" in oracle.by_ambiguity
    assert sum(t.n for t in oracle.by_intent.values()) == 40
    assert set(oracle.to_dict()["by_intent"]) == set(oracle.by_intent)
    made_up = evaluate(Scripted(lambda ex: '{"api_name": "magic-tool"}'), "tool-selection", n=20)
    assert made_up.accuracy == 0 and made_up.overall.hallucinated == 20
    chatty = Scripted(lambda ex: "I would use a depth model.")
    report = evaluate(chatty, "tool-selection", n=20, constrained=True)
    assert report.overall.formatted == 0 and report.overall.hallucinated == 0
    assert chatty.constraints[0] is not None and set(chatty.constraints[0].options) == set(load_catalog().ids)
    assert "hallucination" in report.summary() and report.to_dict()["by_ambiguity"]["ambiguous"]["n"] > 0


@pytest.mark.parametrize("constrained", [False, True])
def test_bundle_eval_constrained_is_always_a_catalog_tool(tiny_bundle, constrained):
    answerer = BundleAnswerer(tiny_bundle)
    report = evaluate(answerer, "tool-selection", n=6, constrained=constrained)
    if constrained:  # a random model: it still always answers a catalog tool, in the frame, in few decoder steps
        assert report.overall.formatted == 6 and report.overall.hallucinated == 0
        assert report.decode_steps is not None and report.decode_steps < 10
    else:
        assert report.overall.formatted < 6


def test_torch_and_bundle_pick_the_same_tools_under_the_constraint(tiny_llava, tiny_bundle):
    from edgelmm.evals.tool_selection import catalog_choice
    from edgelmm.evals.torch_answerer import TorchAnswerer

    items = [DATA.example("test", i) for i in range(4)]
    choice = catalog_choice()
    torch_answers = TorchAnswerer(tiny_llava, device="cpu").answer(items, 8, constraint=choice)
    bundle_answers = BundleAnswerer(tiny_bundle).answer(items, 8, constraint=choice)
    assert torch_answers == bundle_answers and all(choice.parse(a) for a in torch_answers)
