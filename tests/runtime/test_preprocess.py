import io

import numpy as np
import pytest
from PIL import Image

from edgelmm.errors import InputError
from edgelmm.runtime.manifest import PreprocessSpec
from edgelmm.runtime.preprocess import load_image, preprocess, to_rgb

SIGLIP = PreprocessSpec(image_size=(32, 48))


def test_matches_transformers_siglip_pil_processor(sample_images):
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    hf = SiglipImageProcessorPil(size={"height": 32, "width": 48}, resample=3)
    ours = preprocess(sample_images, SIGLIP)
    theirs = hf(images=sample_images, return_tensors="np")["pixel_values"]
    assert ours.shape == theirs.shape == (3, 3, 32, 48) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() < 1e-5
    assert ours.min() >= -1.0 and ours.max() <= 1.0


def test_matches_transformers_clip_pil_processor(sample_images):
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    from edgelmm.models.lmm import preprocess_spec

    hf = CLIPImageProcessorPil(size={"shortest_edge": 40}, crop_size={"height": 36, "width": 36})
    spec = preprocess_spec(hf)
    assert spec.mode == "shortest-edge-crop" and spec.image_size == (36, 36)
    ours = preprocess(sample_images, spec)
    theirs = hf(images=sample_images, return_tensors="np")["pixel_values"]
    assert np.abs(ours - theirs).max() < 1e-5


def test_alpha_is_composited_over_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    assert np.asarray(to_rgb(rgba))[0, 0].tolist() == [255, 255, 255]
    half = Image.new("LA", (2, 2), (0, 128))
    assert np.asarray(to_rgb(half))[0, 0].tolist() == [127, 127, 127]


def test_sixteen_bit_grey_is_scaled_not_clipped():
    array = np.full((3, 3), 257 * 100, dtype=np.uint16)  # 100/255 of the 16-bit range
    image = Image.fromarray(array)
    assert image.mode == "I;16"
    assert np.asarray(to_rgb(image))[0, 0].tolist() == [100, 100, 100]  # clipping would give 255


def test_exif_rotation_is_applied(tmp_path):
    image = Image.new("RGB", (20, 10), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    path = tmp_path / "rot.jpg"
    image.save(path, exif=exif)
    assert load_image(path).size == (10, 20)


def test_animated_gif_uses_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    pixel = np.asarray(load_image(path))[0, 0]
    assert pixel[0] > 200 and pixel[1] < 50


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"", "is empty"), (b"this is text, not an image", "not a readable image"), (None, "truncated|not a readable")],
)
def test_bad_files_give_one_line_input_errors(tmp_path, content, message):
    path = tmp_path / "bad.png"
    if content is None:
        buf = io.BytesIO()
        Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="PNG")
        content = buf.getvalue()[:60]
    path.write_bytes(content)
    with pytest.raises(InputError, match=message) as err:
        load_image(path)
    assert "\n" not in str(err.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(InputError, match="is not a file"):
        load_image(tmp_path)


def test_pixel_limit_is_checked_before_decoding(tmp_path):
    path = tmp_path / "big.png"
    Image.new("L", (3000, 3000)).save(path)
    with pytest.raises(InputError, match="3000x3000 = 9000000 pixels; the limit is 1000000"):
        load_image(path, max_pixels=1_000_000)


def test_arrays_and_bytes_are_accepted():
    array = np.zeros((5, 7, 3), dtype=np.uint8)
    assert load_image(array).size == (7, 5)
    buf = io.BytesIO()
    Image.new("P", (3, 3)).save(buf, format="PNG")
    assert load_image(buf.getvalue()).mode == "RGB"
    with pytest.raises(InputError, match="shape"):
        load_image(np.zeros((2, 2, 2)))
