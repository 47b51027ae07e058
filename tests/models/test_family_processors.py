"""The runtime's image splitting and tile prompts equal transformers' Idefics3 / SmolVLM processors, across shapes."""

import numpy as np
import pytest
from PIL import Image
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.smolvlm.processing_smolvlm import get_image_prompt_string

from edgelmm.models.lmm import preprocess_spec
from edgelmm.runtime.manifest import ImagePromptSpec
from edgelmm.runtime.preprocess import prepare
from edgelmm.runtime.prompt import expand_image

from ..runtime.test_family_fields import IDEFICS3

SHAPES = [(10, 10), (100, 40), (40, 100), (64, 64), (65, 33), (33, 65), (700, 20), (20, 700), (97, 131)]


def _image(width, height):
    rng = np.random.default_rng(width * 1000 + height)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("split", [True, False])
def test_tiles_and_grids_equal_the_idefics3_processor(split):
    processor = Idefics3ImageProcessorPil(size={"longest_edge": 96}, max_image_size={"longest_edge": 32},
                                          do_image_splitting=split)
    layout = {"image_size": (32, 32), "mode": "tiles" if split else "longest-edge-squash", "longest_edge": 96}
    spec = preprocess_spec(processor, **layout)
    for width, height in SHAPES:
        image = _image(width, height)
        theirs = processor(images=[image], return_tensors="np", return_row_col_info=True)
        ours = prepare(image, spec)
        assert ours.grid == (theirs["rows"][0][0], theirs["cols"][0][0]), (width, height)
        assert ours.pixels.shape == theirs["pixel_values"][0].shape, (width, height)
        assert np.abs(ours.pixels - theirs["pixel_values"][0]).max() < 1e-5, (width, height)


@pytest.mark.parametrize("grid", [(0, 0), (1, 2), (3, 1), (2, 2)])
def test_tile_prompt_text_equals_transformers(grid):
    pieces = expand_image(IDEFICS3, grid)
    ours = "".join("<image>" * 5 if p is None else p for p in pieces)
    assert ours == get_image_prompt_string(*grid, 5, "<fake_token_around_image>", "<image>", "<global-img>")
    assert expand_image(ImagePromptSpec(), (0, 0)).count(None) == 1
