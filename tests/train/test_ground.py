"""The ``ground`` stage: each visual token vs the LM's own embedding of its cell's words."""

import copy

import pytest
import torch

from edgelmm.specs import Trainability
from edgelmm.train import trainability
from edgelmm.train.data import DATASETS
from edgelmm.train.data.collate import cell_words, ground_batch
from edgelmm.train.losses import IGNORE, word_grounding
from edgelmm.train.objectives import WordGrounding
from edgelmm.train.specs import ComponentTraining


def test_word_grounding_is_zero_at_the_target_and_one_at_zero():
    torch.manual_seed(0)
    targets = torch.randn(2, 9, 16)
    mask = torch.ones(2, 9, dtype=torch.bool)
    assert float(word_grounding(targets.clone(), targets, mask)) == 0.0
    assert float(word_grounding(torch.zeros_like(targets), targets, mask)) == pytest.approx(1.0)


def test_word_grounding_counts_only_masked_tokens():
    torch.manual_seed(1)
    tokens, targets = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    direct = ((tokens[mask] - targets[mask]) ** 2).mean() / (targets[mask] ** 2).mean()
    assert float(word_grounding(tokens, targets, mask)) == pytest.approx(float(direct), rel=1e-6)
    tokens[~mask] += 100.0  # unmasked tokens carry no loss
    assert float(word_grounding(tokens, targets, mask)) == pytest.approx(float(direct), rel=1e-6)
    assert float(word_grounding(tokens, targets, torch.zeros_like(mask))) == 0.0


def test_cell_words_name_every_cell_with_its_position():
    example = DATASETS["shapes"].example("train", 3)
    words = cell_words(example)
    assert len(words) == 9 and words[0].endswith("top left") and words[4].endswith("center")
    for cell, said in zip(example.regions, words):
        assert said.startswith(cell.split(" ", 1)[1] if cell else "empty ")
    assert cell_words(DATASETS["digits"].example("train", 0)) == []


def test_ground_batch_targets_cells_of_scenes_and_the_digit_of_digits(tiny_llava):
    scene, digit = DATASETS["shapes"].example("train", 0), DATASETS["digits"].example("train", 0)
    batch = ground_batch([scene, digit], tiny_llava.preprocess, tiny_llava.tokenizer)
    assert batch.word_ids.shape[:2] == (2, 9) and batch.pooled_ids.shape[0] == 2
    assert bool((batch.word_ids[0] != IGNORE).any(dim=-1).all())  # every cell of a scene says something
    assert bool((batch.word_ids[1] == IGNORE).all())  # a digit has no layout ...
    said = [t for t in batch.pooled_ids[1].tolist() if t != IGNORE]
    assert tiny_llava.tokenizer.decode(said).strip() == digit.answer  # ... its tokens' mean says the digit
    assert bool((batch.pooled_ids[0] == IGNORE).all())


def test_grounding_trains_only_the_connector_and_reaches_the_targets(tiny_llava):
    model = copy.deepcopy(tiny_llava.model)
    trainability.apply(model, ComponentTraining(connector=Trainability.FULL))
    module = WordGrounding(model)
    examples = [DATASETS["shapes"].example("train", i) for i in range(4)]
    batch = ground_batch(examples, tiny_llava.preprocess, tiny_llava.tokenizer)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    params = [p for p in model.parameters() if p.requires_grad]
    assert params and all("multi_modal_projector" in n for n, p in model.named_parameters() if p.requires_grad)
    opt = torch.optim.Adam(params, lr=3e-3)
    first = float(module(batch)["ground"].detach())
    for _ in range(150):
        loss = module(batch)["ground"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss.detach()) < 0.5 * first
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)
