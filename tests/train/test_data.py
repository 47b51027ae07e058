"""Built-in datasets: deterministic by index, disjoint splits, held-out pairs, answerable questions."""

import subprocess
import sys

import numpy as np
import pytest

from edgelmm.errors import SpecError
from edgelmm.train.data import DATASETS, normalise_answer
from edgelmm.train.data.digits import TEST_IMAGES, VAL_IMAGES, _source
from edgelmm.train.data.shapes import COLOURS, HELD_OUT, POSITIONS, SHAPES, sample_question, sample_scene

N = 300


def pixels(example):
    return np.asarray(example.image)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_examples_are_deterministic_and_splits_differ(name):
    dataset = DATASETS[name]
    a, b = dataset.example(dataset.splits[-1], 7), dataset.example(dataset.splits[-1], 7)
    assert np.array_equal(pixels(a), pixels(b)) and (a.question, a.answer, a.caption) == (b.question, b.answer, b.caption)
    other = dataset.example(dataset.splits[0], 7)
    assert not np.array_equal(pixels(a), pixels(other))
    assert a.answer == normalise_answer(a.answer)


def test_bad_split_and_index_are_one_line_errors():
    with pytest.raises(SpecError, match="unknown split 'dev'; valid: train, val, test"):
        DATASETS["shapes"].example("dev", 0)
    with pytest.raises(SpecError, match="index must be in"):
        DATASETS["digits"].example("test", -1)
    with pytest.raises(SpecError, match="valid: val, test"):  # the compositional split has no training data
        DATASETS["shapes-compositional"].example("train", 0)


def _objects(example):
    return [r for r in example.regions if r]


def test_held_out_pairs_never_appear_outside_the_compositional_split():
    held = {f"{c} {s}" for c, s in HELD_OUT}
    for split in ("train", "val", "test"):
        for i in range(N):
            ex = DATASETS["shapes"].example(split, i)
            assert not any(" ".join(r.split()[-2:]) in held for r in _objects(ex)), (split, i, ex.caption)
    for i in range(N):
        ex = DATASETS["shapes-compositional"].example("test", i)
        assert any(" ".join(r.split()[-2:]) in held for r in _objects(ex)), ex.caption


def test_compositional_questions_are_about_held_out_objects():
    held = [f"{c} {s}" for c, s in HELD_OUT]
    about = 0
    for i in range(N):
        ex = DATASETS["shapes-compositional"].example("test", i)
        if ex.kind in ("position", "exist", "relation"):
            assert any(h in ex.question for h in held), ex.question
        about += any(h in ex.question for h in held) or ex.answer in {c for c, _ in HELD_OUT} | set(SHAPES)
    assert about > 0.6 * N


def test_questions_cover_every_kind_with_valid_answers():
    kinds = {}
    for i in range(N):
        ex = DATASETS["shapes"].example("train", i)
        kinds.setdefault(ex.kind, set()).add(ex.answer)
    assert set(kinds) == {"colour", "shape", "count", "exist", "position", "relation"}
    assert kinds["colour"] <= set(COLOURS) and kinds["shape"] <= set(SHAPES)
    assert kinds["position"] <= {p for row in POSITIONS for p in row}
    assert kinds["exist"] == {"yes", "no"} and kinds["relation"] == {"yes", "no"}
    assert kinds["count"] <= {"0", "1", "2", "3", "4"}


def test_answers_agree_with_the_scene():
    rng = np.random.default_rng(0)
    for _ in range(200):
        scene = sample_scene(rng)
        question, answer, kind = sample_question(rng, scene)
        if question.startswith("How many objects") or question.startswith("How many shapes"):
            assert answer == str(len(scene.objects))
        if kind == "position":
            noun = question.split("the ", 1)[1].split("?")[0].replace(" in the image", "")
            assert [o.position for o in scene.objects if o.noun() == noun] == [answer]
        if kind == "exist":
            noun = question.split(" ", 3)[3].split("?")[0].replace(" in the image", "")
            assert (answer == "yes") == any(o.noun() == noun for o in scene.objects), question


def test_caption_and_phrases_describe_every_object():
    ex = DATASETS["shapes"].example("train", 3)
    objects = _objects(ex)
    assert 1 <= len(objects) <= 4 and len(ex.phrases) == len(objects) + 1
    for region in objects:
        assert region in ex.caption
    assert ex.phrases[-1].endswith("background")


def test_digit_splits_use_disjoint_source_images():
    _, _, ids = _source()
    assert len(ids["test"]) == TEST_IMAGES and len(ids["val"]) == VAL_IMAGES
    assert not set(ids["test"]) & set(ids["train"]) and not set(ids["val"]) & set(ids["train"])
    answers = {DATASETS["digits"].example("test", i).answer for i in range(200)}
    assert answers == {str(d) for d in range(10)}


def test_datasets_and_eval_tasks_import_without_torch():
    code = ("import sys\nimport edgelmm.train.data, edgelmm.evals.runner, edgelmm.evals.cli, edgelmm.train.specs\n"
            "edgelmm.train.data.DATASETS['digits'].example('test', 0)\n"
            "print([m for m in ('torch', 'transformers', 'peft') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"
