"""Training core on tiny random models: losses, collate vs the runtime's prompts, trainability, LoRA merge,
checkpoints and optimizer state."""

import copy

import pytest
import torch
import torch.nn.functional as F

from edgelmm.errors import BundleError
from edgelmm.runtime.prompt import PromptBuilder
from edgelmm.runtime.tokenizer import Tokenizer
from edgelmm.specs import Trainability
from edgelmm.train import checkpoint, trainability
from edgelmm.train.data import DATASETS
from edgelmm.train.data.collate import ChatCollator
from edgelmm.train.losses import IGNORE, next_token_ce, sigmoid_loss
from edgelmm.train.objectives import LanguageModeling, cell_weights
from edgelmm.train.specs import ComponentTraining, LoraSpec

FULL, LORA, FROZEN = Trainability.FULL, Trainability.LORA, Trainability.FROZEN


def collator_for(loaded):
    return ChatCollator(tokenizer=loaded.tokenizer, chat_template=loaded.chat_template, image_token=loaded.image_token,
                        num_image_tokens=loaded.num_image_tokens, preprocess_spec=loaded.preprocess)


@pytest.fixture()
def llava(tiny_llava):
    return copy.deepcopy(tiny_llava)


def test_sigmoid_loss_equals_the_pairwise_definition():
    torch.manual_seed(0)
    img, txt = torch.randn(3, 8), F.normalize(torch.randn(5, 8), dim=-1)
    labels = torch.tensor([[1, -1, 1, -1, -1], [-1, 1, -1, -1, -1], [-1, -1, -1, -1, -1]], dtype=torch.float32)
    t, b = torch.tensor(1.5), torch.tensor(-2.0)
    naive = 0.0
    for i in range(3):
        for j in range(5):
            z = float(F.normalize(img[i], dim=0) @ txt[j]) * float(t.exp()) + float(b)
            naive -= float(F.logsigmoid(torch.tensor(float(labels[i, j]) * z)))
    assert torch.isclose(sigmoid_loss(img, txt, labels, t, b), torch.tensor(naive / 3), atol=1e-5)


def test_next_token_ce_equals_transformers_loss_on_labelled_tokens(tiny_lm):
    model = tiny_lm.model
    ids = torch.randint(0, 250, (2, 9))
    labels = torch.full_like(ids, IGNORE)
    labels[0, 6:], labels[1, 4:7] = ids[0, 6:], ids[1, 4:7]
    with torch.no_grad():
        expected = model(input_ids=ids, labels=labels).loss
        hidden = model.model(input_ids=ids).last_hidden_state
        assert torch.isclose(next_token_ce(hidden, labels, model.lm_head), expected, atol=1e-5)
        assert next_token_ce(hidden, torch.full_like(ids, IGNORE), model.lm_head) == 0


def test_cell_weights_partition_the_patches():
    w = cell_weights(64, 16)  # 3x3 cells over 4x4 patches
    assert w.shape == (9, 16) and torch.allclose(w.sum(1), torch.ones(9))
    assert torch.allclose(w.sum(0) * 16 / 9, torch.ones(16), atol=1e-6)  # every patch is covered equally
    assert w[0, 0] > 0 and w[0, 3] == 0 and w[8, 15] > 0


def test_prompts_equal_the_runtimes_and_only_answers_are_labelled(tiny_llava, tiny_bundle):
    from edgelmm.runtime.manifest import load_bundle

    manifest = load_bundle(tiny_bundle)
    builder = PromptBuilder(manifest.text, Tokenizer(tiny_bundle / manifest.text.tokenizer_file), has_vision=True)
    collator = collator_for(tiny_llava)
    examples = [DATASETS["shapes"].example("train", i) for i in range(3)]
    for ex in examples:
        assert list(collator.prompt_ids(ex.question)) == builder.build(ex.question, 1).ids.tolist()
    batch = collator(examples, "qa")
    assert batch.pixel_values.shape == (3, 3, 32, 32) and batch.input_ids.shape == batch.labels.shape
    end = tiny_llava.tokenizer.convert_tokens_to_ids("<|im_end|>")
    for row, ex in enumerate(examples):
        labelled = batch.labels[row][batch.labels[row] != IGNORE].tolist()
        assert labelled == tiny_llava.tokenizer(ex.answer, add_special_tokens=False)["input_ids"] + [end]
        assert int((batch.input_ids[row] == tiny_llava.image_token_id).sum()) == tiny_llava.num_image_tokens
    captions = collator(examples, "caption")
    assert tiny_llava.tokenizer.decode(captions.labels[0][captions.labels[0] != IGNORE]) == examples[0].caption + "<|im_end|>"


def test_multi_turn_conversations_render_as_the_chat_template_and_label_every_answer(tiny_llava):
    collator = collator_for(tiny_llava)
    tok = tiny_llava.tokenizer
    ex = DATASETS["shapes"].example("train", 5)
    assert len(ex.more) == 3
    turns = [(ex.question, ex.answer), *((q, a) for q, a, _ in ex.more)]
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": turns[0][0]}]}]
    messages.append({"role": "assistant", "content": turns[0][1]})
    for q, a in turns[1:]:
        messages += [{"role": "user", "content": [{"type": "text", "text": q}]}, {"role": "assistant", "content": a}]
    rendered = tok.apply_chat_template(messages, chat_template=tiny_llava.chat_template, tokenize=False)
    expected = []
    for t in tok(rendered, add_special_tokens=False)["input_ids"]:
        expected += [t] * tiny_llava.num_image_tokens if t == tiny_llava.image_token_id else [t]
    ids, labels = collator.conversation(ex, "qa", turns=4)
    assert ids == expected[: len(ids)] and expected[len(ids):] == tok("\n", add_special_tokens=False)["input_ids"]
    end = tok.convert_tokens_to_ids("<|im_end|>")
    answers = [tok(a, add_special_tokens=False)["input_ids"] + [end] for _, a in turns]
    assert [t for t in labels if t != IGNORE] == [t for a in answers for t in a]
    assert collator.conversation(ex, "qa", turns=1) == collator.conversation(ex, "qa")  # one turn: as before
    digit = DATASETS["digits"].example("train", 0)
    assert collator.conversation(digit, "qa", turns=4) == collator.conversation(digit, "qa")  # nothing more to ask


def test_trainability_per_component_and_lora_only_in_the_lm(llava):
    model = llava.model
    names = trainability.apply(model, ComponentTraining(connector=FULL))
    assert names and all(n.startswith("model.multi_modal_projector.") for n in names)
    lora = LoraSpec(r=4, alpha=8)
    names = trainability.apply(model, ComponentTraining(connector=FULL, llm=LORA), lora)
    assert any(".lora_A." in n for n in names) and any(n.startswith("model.multi_modal_projector.") for n in names)
    assert all(n.startswith(("model.multi_modal_projector.", "model.language_model.")) for n in names)
    assert not any(trainability.LORA_MARK in n for n, _ in model.model.vision_tower.named_parameters())
    names = trainability.apply(model, ComponentTraining(vision_tower=FULL))
    assert all(n.startswith("model.vision_tower.") for n in names)
    assert not model.model.language_model.training and model.model.vision_tower.training


def test_lora_tensors_merge_to_the_same_model(llava, tiny_llava):
    """What ships (LoRA A/B merged by models.weights) computes what the peft-wrapped model computed."""
    from edgelmm.models.weights import merge_lora

    model = llava.model
    lora = LoraSpec(r=4, alpha=8)
    trainability.apply(model, ComponentTraining(llm=LORA), lora)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if trainability.LORA_MARK in name:
                p.normal_(0, 0.2)
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits
    plain = copy.deepcopy(tiny_llava.model)
    tensors = {k: v.detach() for k, v in trainability.lora_tensors(model).items()}
    assert merge_lora(plain, tensors, scale=lora.scale) == 2 * 7  # 2 layers x 7 target Linears
    with torch.no_grad():
        assert torch.allclose(plain(input_ids=ids).logits, expected, atol=1e-5)
    with pytest.raises(BundleError, match="does not match a Linear"):
        merge_lora(plain, {"model.nope.lora_A": torch.zeros(1, 1), "model.nope.lora_B": torch.zeros(1, 1)}, scale=1.0)


def test_checkpoint_round_trip_and_optimizer_state_resumes_exactly(tmp_path, llava):
    model = llava.model
    trainability.apply(model, ComponentTraining(connector=FULL))
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    names = {id(p): n for n, p in params.items()}
    batch = collator_for(llava)([DATASETS["digits"].example("train", i) for i in range(2)], "qa")
    objective = LanguageModeling(model)

    def step(opt):
        opt.zero_grad()
        objective(batch)["ce"].backward()
        opt.step()

    opt = torch.optim.AdamW(params.values(), lr=1e-2)
    step(opt)
    tensors, scalars = checkpoint.optimizer_tensors(opt, names)
    checkpoint.save(tmp_path / "ck", params, checkpoint.checkpoint_meta(step=1, optimizer_scalars=scalars), optimizer=tensors)
    step(opt)
    expected = {n: p.detach().clone() for n, p in params.items()}

    loaded, meta = checkpoint.load(tmp_path / "ck")
    assert meta["step"] == 1 and set(loaded) == set(params)
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(loaded[n])
    fresh = torch.optim.AdamW(params.values(), lr=1e-2)
    checkpoint.restore_optimizer(fresh, names, checkpoint.load_optimizer(tmp_path / "ck"), meta["optimizer_scalars"])
    step(fresh)
    assert all(torch.equal(p, expected[n]) for n, p in params.items())


def test_checkpoint_writes_are_atomic_and_checked(tmp_path):
    target = tmp_path / "ck"
    checkpoint.save(target, {"a": torch.ones(2)}, checkpoint.checkpoint_meta(step=1))
    checkpoint.save(target, {"a": torch.zeros(2)}, checkpoint.checkpoint_meta(step=2))
    tensors, meta = checkpoint.load(target)
    assert meta["step"] == 2 and torch.equal(tensors["a"], torch.zeros(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no partial or old directories left behind
    (target / "meta.json").write_text('{"format": "something-else", "schema_version": 1}')
    with pytest.raises(BundleError, match="not a training checkpoint"):
        checkpoint.load(target)
