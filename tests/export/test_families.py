"""Parity of every exported family (models/families.py): tiny random configs built here, exported once per module.

For each case and each of 2 images x 2 prompts: the runtime's prompt ids and pixel values equal the transformers
processor's, the bundle's image features equal transformers' own get_image_features, M-RoPE positions equal
get_rope_index, and the bundle's greedy 16 tokens equal transformers' generate. The export's per-graph parity report
must cover every graph within the tolerance table. The case ids are the ``verified_by`` entries of the registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from edgelmm.errors import SpecError
from edgelmm.export import validate
from edgelmm.export.exporter import export_model
from edgelmm.models.families import FAMILIES
from edgelmm.models.loaded import LoadedModel
from edgelmm.runtime import Pipeline
from edgelmm.runtime.positions import prompt_positions
from edgelmm.runtime.preprocess import prepare

from ..conftest import draw_scene
from . import tiny_families as tiny

PROMPTS = ("What is in this image?", "Describe the colours.")


def _photo(size: tuple[int, int]) -> Image.Image:
    from skimage import data as skdata

    return Image.fromarray(skdata.astronaut()).resize(size)


@dataclasses.dataclass(frozen=True)
class Case:
    build: Callable[[], LoadedModel]
    images: Callable[[], list[Image.Image]]


ASPECTS = lambda: [draw_scene(0), _photo((200, 160))]  # noqa: E731 - 4:3 and 5:4, both unlike the tower's square
SQUARES = lambda: [draw_scene(0, (64, 64)), _photo((96, 96))]  # noqa: E731 - what transformers resizes to the grid
CASES: dict[str, Case] = {
    "llava-clip-llama": Case(lambda: tiny.tiny_llava("llama", "clip", "default"), ASPECTS),  # LLaVA-1.5
    "llava-siglip-qwen2": Case(lambda: tiny.tiny_llava("qwen2", "siglip", "full"), ASPECTS),  # LLaVA-KD
    "llava-siglip-phi": Case(lambda: tiny.tiny_llava("phi", "siglip", "full"), ASPECTS),  # Imp-v1.5-3B
    "llava-siglip-phi3": Case(lambda: tiny.tiny_llava("phi3", "siglip", "full"), ASPECTS),  # Imp-v1.5-4B
    "llava-clip-gemma": Case(lambda: tiny.tiny_llava("gemma", "clip", "full"), ASPECTS),  # CLS token kept
    # 96x72 -> 2 x 2 tiles, 200x80 -> 1 x 2 tiles (+ overview each)
    "idefics3": Case(lambda: tiny.tiny_idefics3(smolvlm=False, split=True), lambda: [draw_scene(0), _photo((200, 80))]),
    "smolvlm": Case(lambda: tiny.tiny_idefics3(smolvlm=True, split=False), ASPECTS),  # one tile per image
    "qwen2-vl": Case(lambda: tiny.tiny_qwen2_vl(v2_5=False), SQUARES),
    # a 32 x 48 px grid (4 x 6 tokens, 6 windows): images of that 2:3 aspect, which transformers resizes to it too
    "qwen2.5-vl": Case(lambda: tiny.tiny_qwen2_vl(v2_5=True, image_size=(32, 48)),
                       lambda: [draw_scene(0, (96, 64)), _photo((144, 96))]),
}


@dataclasses.dataclass
class Exported:
    name: str
    loaded: LoadedModel
    pipe: Pipeline
    images: list[Image.Image]


@pytest.fixture(scope="module", params=list(CASES))
def case(request, tmp_path_factory) -> Exported:
    spec = CASES[request.param]
    loaded = spec.build()
    bundle = tmp_path_factory.mktemp("families") / request.param
    export_model(loaded, bundle)
    return Exported(request.param, loaded, Pipeline.load(bundle), spec.images())


def _hf_inputs(loaded: LoadedModel, prompt: str, image: Image.Image) -> Any:
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
    text = loaded.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return loaded.processor(images=[image], text=text, return_tensors="pt")


def _hf_pixels_as_runtime(loaded: LoadedModel, enc: Any, tiles: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """transformers' pixel_values and the runtime's tiles [T, 3, H, W], in one layout."""
    pixels = enc["pixel_values"].numpy()
    if "image_grid_thw" in enc:  # Qwen2-VL: the processor's flat patches; patchify ours with its own function
        ip = loaded.processor.image_processor
        ours = ip.patchify(tiles[0], ip.patch_size, ip.merge_size, ip.temporal_patch_size)[0]
        return pixels, ours
    if pixels.ndim == 5:  # Idefics3 / SmolVLM: [batch, tiles, 3, H, W] with a pixel mask, all ones for whole tiles
        assert enc["pixel_attention_mask"].all()
        return pixels[0], tiles
    return pixels, tiles


def _hf_image_features(loaded: LoadedModel, enc: Any) -> np.ndarray:
    keys = ("pixel_values", "pixel_attention_mask", "image_grid_thw")
    with torch.no_grad():
        out = loaded.model.get_image_features(**{k: enc[k] for k in keys if k in enc})
    return torch.cat([f.reshape(-1, f.shape[-1]) for f in out.pooler_output]).numpy()


def test_bundle_matches_transformers_for_2_images_x_2_prompts(case):
    loaded, pipe = case.loaded, case.pipe
    atol, rtol = validate.TOLERANCES[pipe.manifest.graphs["vision_encoder"].precision]["vision_encoder"]
    generated = set()
    for image in case.images:
        tiles = prepare(image, pipe.manifest.preprocess)
        for prompt in PROMPTS:
            enc = _hf_inputs(loaded, prompt, image)
            ids = pipe.prompts.build(prompt, 1, grids=[tiles.grid])
            assert ids.ids.tolist() == enc["input_ids"][0].tolist()
            theirs, ours = _hf_pixels_as_runtime(loaded, enc, tiles.pixels)
            assert theirs.shape == ours.shape and np.abs(theirs - ours).max() < 1e-5
            features = pipe.encode_images([tiles]).reshape(-1, pipe.manifest.model.hidden_size)
            expected = _hf_image_features(loaded, enc)
            assert features.shape == expected.shape
            assert np.all(np.abs(features - expected) <= atol + rtol * np.abs(expected))
            if "mm_token_type_ids" in enc:  # M-RoPE: the runtime's numpy positions = transformers' get_rope_index
                rope, _ = loaded.model.model.get_rope_index(enc["input_ids"], enc["mm_token_type_ids"],
                                                            enc["image_grid_thw"])
                positions = prompt_positions(pipe.manifest.positions, len(ids), ids.image_slots)
                assert positions.tolist() == rope[:, 0].tolist()
            with torch.no_grad():
                out = loaded.model.generate(**enc, do_sample=False, max_new_tokens=16, min_new_tokens=16)
            expected_ids = out[0, enc["input_ids"].shape[1] :].tolist()
            assert pipe.generate(prompt, images=[image], max_new_tokens=16).token_ids == expected_ids
            generated.add(tuple(expected_ids))
    assert len(generated) > 1, "every image and prompt gave the same tokens: the test would not see a broken image path"


def test_two_images_in_one_prompt(case):
    """Slot order across images (tiles included) and M-RoPE across two images, against transformers."""
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Compare"},
                                             {"type": "image"}, {"type": "text", "text": "these."}]}]
    processor, pipe = case.loaded.processor, case.pipe
    text = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    enc = processor(images=case.images, text=text, return_tensors="pt")
    grids = [prepare(image, pipe.manifest.preprocess).grid for image in case.images]
    assert pipe.prompts.build(messages, 2, grids=grids).ids.tolist() == enc["input_ids"][0].tolist()
    with torch.no_grad():
        out = case.loaded.model.generate(**enc, do_sample=False, max_new_tokens=8, min_new_tokens=8)
    expected = out[0, enc["input_ids"].shape[1] :].tolist()
    assert pipe.generate(messages, images=case.images, max_new_tokens=8).token_ids == expected


def test_each_graph_within_the_tolerance_table(case):
    validation = case.pipe.manifest.validation
    family = FAMILIES[case.loaded.family_name]
    assert validation["passed"] is True
    graphs = {c["graph"] for c in validation["cases"]}
    assert graphs == {str(g) for g in family.graphs}
    for c in validation["cases"]:
        precision = case.pipe.manifest.graphs[c["graph"]].precision
        assert (c["atol"], c["rtol"]) == validate.TOLERANCES[precision][c["graph"]]
        assert c["passed"], c


def test_saved_directory_loads_back_through_load_local(case, tmp_path):
    """save_pretrained -> load_local (the `edgelmm export --model DIR` path) gives the same model and bundle data."""
    from edgelmm.models.lmm import load_local

    case.loaded.save_pretrained(tmp_path)
    fixed_grid = FAMILIES[case.loaded.family_name].fixed_grid
    loaded = load_local(tmp_path, image_size=case.loaded.preprocess.image_size if fixed_grid else None)
    fields = ("family", "kind", "preprocess", "image_prompt", "positions", "num_image_tokens", "image_token",
              "image_token_id", "chat_template", "eos_token_ids")
    assert {f: getattr(loaded, f) for f in fields} == {f: getattr(case.loaded, f) for f in fields}
    ids = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        assert torch.equal(loaded.model(input_ids=ids).logits, case.loaded.model(input_ids=ids).logits)
    if not fixed_grid:
        with pytest.raises(SpecError, match="take the image size the model was trained for"):
            load_local(tmp_path, image_size=(64, 64))
        return
    resized = load_local(tmp_path, image_size=(64, 48))  # --image-size: 64x48 px in 8 px merged patches
    assert (resized.num_image_tokens, resized.positions.image_grid, resized.preprocess.image_size) == (48, (8, 6),
                                                                                                       (64, 48))


TEXT_CASES = {"causal-lm": ("Say something.", "Count to three.")}


@pytest.mark.parametrize("name", list(TEXT_CASES))
def test_text_only_lm_matches_transformers_for_2_prompts(name, tiny_lm, tiny_lm_bundle):
    pipe = Pipeline.load(tiny_lm_bundle)
    for prompt in TEXT_CASES[name]:
        enc = tiny_lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                    return_tensors="pt", return_dict=True)
        assert pipe.prompts.build(prompt).ids.tolist() == enc["input_ids"][0].tolist()
        with torch.no_grad():
            out = tiny_lm.model.generate(**enc, do_sample=False, max_new_tokens=16, min_new_tokens=16)
        assert pipe.generate(prompt, max_new_tokens=16).token_ids == out[0, enc["input_ids"].shape[1] :].tolist()
    validation = pipe.manifest.validation
    assert validation["passed"] and {c["graph"] for c in validation["cases"]} == {"token_embedding", "decoder"}
