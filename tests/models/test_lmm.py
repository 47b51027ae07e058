import json

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, LlavaForConditionalGeneration

from edgelmm.errors import UnsupportedModelError
from edgelmm.models.lmm import _grow_vocab, load_local
from edgelmm.models.tiny import build_tiny_lm
from edgelmm.runtime import Pipeline


def test_tiny_llava_is_a_plain_transformers_llava(tiny_llava):
    model = tiny_llava.model
    assert type(model) is LlavaForConditionalGeneration
    assert model.config.projector_hidden_act == "gelu"  # mlp2x_gelu
    assert model.config.vision_feature_select_strategy == "full"  # SigLIP has no CLS token
    assert tiny_llava.num_image_tokens == (32 // 8) ** 2
    assert tiny_llava.tokenizer.convert_tokens_to_ids("<image>") == model.config.image_token_id


def test_save_pretrained_loads_back_in_transformers_and_exports(tiny_llava, tmp_path, sample_images):
    directory = tmp_path / "hf"
    tiny_llava.save_pretrained(directory)
    model = LlavaForConditionalGeneration.from_pretrained(directory).eval()
    processor = AutoProcessor.from_pretrained(directory)
    assert processor.chat_template == tiny_llava.chat_template
    ids = torch.tensor([[1, 2, 3]])
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids).logits, tiny_llava.model(input_ids=ids).logits)
    loaded = load_local(directory)
    assert loaded.num_image_tokens == 16 and loaded.preprocess == tiny_llava.preprocess

    from edgelmm.cli import main

    assert main(["export", "--model", str(directory), "--out", str(tmp_path / "bundle")]) == 0
    pipe = Pipeline.load(tmp_path / "bundle")
    res = pipe.generate("What?", images=[sample_images[0]], max_new_tokens=6)
    assert len(res.token_ids) == 6


def test_grown_vocabulary_row_never_wins_greedy():
    lm = build_tiny_lm()
    model = lm.model
    with torch.no_grad():
        before = model(input_ids=torch.tensor([[5, 6, 7]])).logits[0, -1]
    _grow_vocab(model, model.config.vocab_size + 1)
    with torch.no_grad():
        after = model(input_ids=torch.tensor([[5, 6, 7]])).logits[0, -1]
    assert after.shape[0] == before.shape[0] + 1
    assert torch.allclose(after[:-1], before) and torch.isclose(after[-1], before.mean(), atol=1e-5)
    assert int(after.argmax()) == int(before.argmax())


def test_unsupported_architecture_fails_in_one_line(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["WhisperForConditionalGeneration"]}))
    with pytest.raises(UnsupportedModelError, match="architecture 'WhisperForConditionalGeneration' .* cannot be exported"):
        load_local(tmp_path)


def test_vision_function_equals_llava_get_image_features(tiny_llava):
    from edgelmm.models.vision import image_features

    pixels = torch.rand(2, 3, 32, 32) * 2 - 1
    model = tiny_llava.model
    with torch.no_grad():
        ours = image_features(model, pixels)
        theirs = model.model.get_image_features(pixel_values=pixels, vision_feature_layer=-1,
                                                vision_feature_select_strategy="full").pooler_output
    assert np.allclose(ours.numpy(), torch.stack(list(theirs)).numpy())
