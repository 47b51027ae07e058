import io
import os
import subprocess
import sys

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


# -- hostile and unusual inputs (issue 14) --------------------------------------------------------------------------

from edgelmm.testing.strategies import encode_image, png_bytes  # noqa: E402


def _pixels(source):
    return np.asarray(load_image(source)).astype(int)


def test_bomb_header_is_refused_without_allocating(tmp_path):
    """A 57-byte PNG claiming 100000 x 100000 pixels (30 GB decoded): refused from the header, in a fresh process
    whose peak RSS shows nothing was allocated."""
    path = tmp_path / "bomb.png"
    path.write_bytes(png_bytes(100_000, 100_000))
    code = (
        "import resource, sys\n"
        "from edgelmm.runtime.preprocess import load_image\n"
        "from edgelmm.errors import InputError\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "try:\n    load_image(sys.argv[1])\nexcept InputError as e:\n    print(e)\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                          check=True)
    message, grown_mb = proc.stdout.strip().splitlines()
    assert "too large to decode safely (Image size (10000000000 pixels) exceeds limit" in message
    assert int(grown_mb) < 50


def test_header_between_the_limits_is_refused_with_our_numbers(monkeypatch):
    from PIL import ImageFile

    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoding started"))
    with pytest.raises(InputError, match=r"is 10000x7000 = 70000000 pixels; the limit is 67108864"):
        load_image(png_bytes(10_000, 7_000))


def test_only_photo_formats_are_decoded():
    for fmt in ("PPM", "ICO", "TGA", "PCX"):
        data = encode_image(Image.new("RGB", (8, 8), (1, 2, 3)), fmt)
        with pytest.raises(InputError, match=r"not a readable image \(not PNG, JPEG, GIF, WEBP, BMP, TIFF\)"):
            load_image(data)
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"  # Pillow would run Ghostscript
    with pytest.raises(InputError, match="not a readable image"):
        load_image(eps)


def test_cmyk_is_converted_by_value_not_by_mode():
    for fmt in ("JPEG", "TIFF"):
        red = encode_image(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), fmt)
        assert np.abs(_pixels(red)[4, 4] - [255, 0, 0]).max() <= 2
    black = encode_image(Image.new("CMYK", (4, 4), (0, 0, 0, 255)), "TIFF")
    assert _pixels(black)[0, 0].tolist() == [0, 0, 0]


def test_sixteen_bit_png_rgb_and_grey_keep_their_brightness():
    rows = b"".join(b"\x00" + bytes.fromhex("8000ffff0101") * 2 for _ in range(2))
    assert _pixels(png_bytes(2, 2, bit_depth=16, colour_type=2, rows=rows))[1, 1].tolist() == [128, 255, 1]
    grey = b"".join(b"\x00" + bytes.fromhex("8000") * 2 for _ in range(2))
    assert _pixels(png_bytes(2, 2, bit_depth=16, colour_type=0, rows=grey))[0, 0].tolist() == [128, 128, 128]


def test_palette_and_transparency_keys_are_composited():
    p = Image.new("P", (4, 4), 1)
    p.putpalette([0, 0, 0, 255, 0, 0, 0, 0, 255] + [0] * 759)
    assert _pixels(encode_image(p, "PNG"))[0, 0].tolist() == [255, 0, 0]
    assert _pixels(encode_image(p, "PNG", transparency=1))[0, 0].tolist() == [255, 255, 255]
    assert _pixels(encode_image(p, "GIF", transparency=1))[0, 0].tolist() == [255, 255, 255]
    grey_key = encode_image(Image.new("L", (2, 2), 50), "PNG", transparency=50)
    assert _pixels(grey_key)[0, 0].tolist() == [255, 255, 255]  # as transformers' convert_to_rgb
    assert _pixels(Image.new("RGBA", (2, 2), (0, 0, 255, 128)))[0, 0].tolist() == [127, 127, 255]


@pytest.mark.parametrize(("orientation", "red_at"), [(1, "left"), (3, "right"), (6, "top"), (8, "bottom")])
def test_exif_orientation_moves_the_pixels(orientation, red_at):
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))  # stored: left half red, right half blue
    exif = Image.Exif()
    exif[0x0112] = orientation
    pixels = _pixels(encode_image(image, "JPEG", exif=exif, quality=95))
    h, w = pixels.shape[:2]
    probe = {"left": (h // 2, 5), "right": (h // 2, w - 5), "top": (5, w // 2), "bottom": (h - 5, w // 2)}[red_at]
    assert (h, w) == ((20, 40) if orientation in (1, 3) else (40, 20))
    assert pixels[probe][0] > 200 and pixels[probe][2] < 60


def test_animated_webp_and_apng_use_first_frame():
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    for fmt in ("WEBP", "PNG", "GIF"):
        data = encode_image(frames[0], fmt, save_all=True, append_images=frames[1:], lossless=True)
        assert Image.open(io.BytesIO(data)).n_frames == 3
        r, g, b = _pixels(data)[4, 4]
        assert r > 200 and g < 50 and b < 50, fmt


def test_paths_that_are_not_files_never_block_or_crash(tmp_path):
    os.mkfifo(tmp_path / "fifo.png")
    (tmp_path / "zero.png").symlink_to("/dev/zero")
    cases = (("fifo.png", "is not a file"), ("zero.png", "is not a file"), ("x" * 300 + ".png", "cannot be read"))
    for name, message in cases:
        with pytest.raises(InputError, match=message):
            load_image(tmp_path / name)
    with pytest.raises(InputError, match=r"is not a valid path \(embedded null byte\)"):
        load_image(f"{tmp_path}/a\x00.png")
    with pytest.raises(InputError, match=r"'.*\\udcff\.png' does not exist"):  # undecodable bytes, shown escaped
        load_image(tmp_path / "\udcff.png")


def test_arrays_of_any_dtype_are_refused_or_converted_before_allocating():
    with pytest.raises(InputError, match="65536x65536 = 4294967296 pixels"):
        load_image(np.broadcast_to(np.zeros(1, np.uint8), (65536, 65536, 3)))  # a view: no memory behind it
    with pytest.raises(InputError, match="must hold integers or floats, got complex64"):
        load_image(np.zeros((4, 4, 3), np.complex64))
    with pytest.raises(InputError, match="NaN or inf"):
        load_image(np.full((4, 4), np.nan, np.float32))
    assert _pixels(np.ones((2, 2), bool))[0, 0].tolist() == [255, 255, 255]
    assert _pixels(np.full((2, 2, 3), 0.5, np.float16))[0, 0].tolist() == [128, 128, 128]


def test_unconvertible_pil_modes_and_lazy_truncated_images_are_input_errors(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, format="PNG")
    path = tmp_path / "t.png"
    path.write_bytes(buf.getvalue()[:80])
    with pytest.raises(InputError, match="not a readable image"):
        load_image(Image.open(path))  # the caller's lazily opened image fails on first decode
    with pytest.raises(InputError, match=r"not a readable image \(conversion from La to L not supported\)"):
        load_image(Image.new("La", (4, 4)))  # premultiplied alpha: main raised Pillow's bare ValueError here
