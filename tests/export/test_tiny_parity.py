"""Figure 1 of the spine: the tiny LLaVA bundle's greedy tokens equal transformers' generate, token for token."""

import numpy as np
import pytest
import torch

from edgelmm.runtime import Pipeline
from edgelmm.runtime.preprocess import preprocess

PROMPTS = ("What is in this image?", "Describe the colours.", "How many objects are there?")


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return Pipeline.load(tiny_bundle)


def _hf_generate(loaded, prompt, image, n):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = loaded.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = loaded.processor(images=[image], text=text, return_tensors="pt")
    with torch.no_grad():
        out = loaded.model.generate(**enc, do_sample=False, max_new_tokens=n, min_new_tokens=n)
    return out[0, enc["input_ids"].shape[1] :].tolist(), enc


@pytest.mark.parametrize("image_index", [0, 1, 2])
@pytest.mark.parametrize("prompt", PROMPTS)
def test_greedy_16_tokens_equal_transformers(pipe, tiny_llava, sample_images, image_index, prompt):
    image = sample_images[image_index]
    expected, enc = _hf_generate(tiny_llava, prompt, image, 16)
    # The runtime's own inputs equal the processor's: same ids, same pixels.
    assert pipe.prompts.build(prompt, 1).ids.tolist() == enc["input_ids"][0].tolist()
    assert np.abs(preprocess([image], pipe.manifest.preprocess) - enc["pixel_values"].numpy()).max() < 1e-5
    result = pipe.generate(prompt, images=[image], max_new_tokens=16)
    assert result.token_ids == expected


def test_text_only_tiny_lm_matches_transformers(tiny_lm, tiny_lm_bundle):
    pipe = Pipeline.load(tiny_lm_bundle)
    enc = tiny_lm.tokenizer.apply_chat_template([{"role": "user", "content": "Say something."}],
                                                add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = tiny_lm.model.generate(**enc, do_sample=False, max_new_tokens=16, min_new_tokens=16)
    assert pipe.generate("Say something.", max_new_tokens=16).token_ids == out[0, enc["input_ids"].shape[1] :].tolist()
    assert "vision_encoder" not in {str(r) for r in pipe.manifest.graphs}
