"""Runtime side of the family fields: optional manifest fields, their invariants, M-RoPE positions, tile prompts."""

import json

import numpy as np
import pytest

from edgelmm.errors import BundleError, InputError, SpecError
from edgelmm.runtime.manifest import ImagePromptSpec, PositionSpec, parse_manifest
from edgelmm.runtime.positions import prompt_positions
from edgelmm.runtime.prompt import expand_image

IDEFICS3 = ImagePromptSpec(
    single="<fake_token_around_image><global-img>{image}<fake_token_around_image>",
    tile="<fake_token_around_image><row_{row}_col_{col}>{image}",
    row_end="\n",
    overview="\n<fake_token_around_image><global-img>{image}<fake_token_around_image>",
)


@pytest.fixture
def manifest_dict(tiny_bundle):
    return json.loads((tiny_bundle / "manifest.json").read_text())


def test_a_manifest_without_the_new_optional_fields_still_loads(manifest_dict):
    del manifest_dict["positions"], manifest_dict["text"]["image_prompt"]
    manifest = parse_manifest(manifest_dict)
    assert manifest.positions == PositionSpec() and manifest.text.image_prompt == ImagePromptSpec()


@pytest.mark.parametrize(("edit", "message"), [
    (lambda m: m["preprocess"].update(mode="tiles", longest_edge=64), "preprocess.mode tiles and text.image_prompt"),
    (lambda m: m["positions"].update(scheme="mrope", image_grid=[3, 3]), "image_grid \\(3, 3\\) does not hold"),
    (lambda m: m["positions"].update(scheme="mrope", image_grid=[4, 4]), "decoder position_ids has rank 2; .*needs 3"),
    (lambda m: m["positions"].update(scheme="alibi"), "positions.scheme 'alibi' is not supported"),
    (lambda m: m["text"]["image_prompt"].update(single="<x>"), "must contain '\\{image\\}' exactly once"),
])
def test_inconsistent_family_fields_are_refused_at_load(manifest_dict, edit, message):
    edit(manifest_dict)
    with pytest.raises(BundleError, match=message):
        parse_manifest(manifest_dict)


def test_mrope_positions_by_hand():
    # 2 text tokens, a 2 x 3 image grid (6 tokens), 1 text token, a second image, 2 text tokens
    spec = PositionSpec(scheme="mrope", image_grid=(2, 3))
    got = prompt_positions(spec, 2 + 6 + 1 + 6 + 2, [(2, 6), (9, 6)])
    text = [0, 1]
    image1 = ([2] * 6, [2, 2, 2, 3, 3, 3], [2, 3, 4, 2, 3, 4])  # start 2: rows 2-3, cols 2-4
    after = 2 + 3  # start + max(rows, cols)
    image2 = ([after + 1] * 6, [6, 6, 6, 7, 7, 7], [6, 7, 8, 6, 7, 8])
    tail = [9, 10]
    expected = [text + image1[r] + [after] + image2[r] + tail for r in range(3)]
    assert got.tolist() == expected
    assert prompt_positions(PositionSpec(), 4, []).tolist() == [[0, 1, 2, 3]]
    with pytest.raises(InputError, match="does not fit the bundle's 2x3 M-RoPE grid"):
        prompt_positions(spec, 10, [(0, 4)])


def test_tile_prompt_expansion():
    pieces = expand_image(IDEFICS3, (1, 2))
    text = "".join("{image}" if p is None else p for p in pieces)
    assert text == ("<fake_token_around_image><row_1_col_1>{image}<fake_token_around_image><row_1_col_2>{image}\n"
                    "\n<fake_token_around_image><global-img>{image}<fake_token_around_image>")
    assert pieces.count(None) == 3
    assert expand_image(ImagePromptSpec(), (0, 0)) == ["", None, ""]
    with pytest.raises(InputError, match="one tile; got a 2x2 grid"):
        expand_image(ImagePromptSpec(), (2, 2))


def test_image_prompt_and_position_specs_validate():
    with pytest.raises(SpecError, match="tile and overview are set together"):
        ImagePromptSpec(tile="<t>{image}")
    with pytest.raises(SpecError, match="image_grid must be two positive integers"):
        PositionSpec(scheme="mrope")
    assert PositionSpec(scheme="mrope", image_grid=(1, 1)).rows == 3 and PositionSpec().rows == 1


def test_decoder_feeds_multi_row_positions_and_continues_after_the_largest():
    from edgelmm.runtime.generate import Decoder
    from edgelmm.runtime.manifest import KVCacheSpec

    fed = []

    class Session:  # records what the decoder feeds; returns logits and presents of the right shapes
        def run_with_ort_values(self, names, feed):
            import onnxruntime as ort

            fed.append(feed["position_ids"].numpy())
            s = feed["inputs_embeds"].shape()[1]
            total = feed["attention_mask"].shape()[1]
            present = ort.OrtValue.ortvalue_from_numpy(np.zeros((1, 1, total, 2), dtype=np.float32))
            return [ort.OrtValue.ortvalue_from_numpy(np.zeros((1, s, 5), dtype=np.float32)), present, present]

    decoder = Decoder(Session(), KVCacheSpec(layout="past-present", num_layers=1, num_kv_heads=1, head_dim=2), 4, 3)
    prompt = np.array([[0, 1, 2, 2, 4], [0, 1, 2, 3, 4], [0, 1, 2, 3, 4]])
    decoder.forward(np.zeros((1, 5, 4), dtype=np.float32), prompt)
    decoder.forward(np.zeros((1, 1, 4), dtype=np.float32))
    assert fed[0].shape == (3, 1, 5) and fed[1].tolist() == [[[5]], [[5]], [[5]]]
