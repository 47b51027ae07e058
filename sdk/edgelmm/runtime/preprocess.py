"""Image -> pixel_values exactly as the manifest says (Pillow + numpy only).

Images are untrusted: files are size- and pixel-count-checked before decoding (decompression bombs), decode errors
become one-line ``InputError``s, EXIF orientation is applied, and every mode is converted to RGB the way
transformers' ``convert_to_rgb`` does (alpha composited over white). Animated images use their first frame.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import stat
import warnings
from typing import Any

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from edgelmm.errors import InputError
from edgelmm.runtime.manifest import PreprocessSpec

MAX_IMAGE_PIXELS = 64 * 2**20  # 64 Mpx: above any phone camera, far below what exhausts a phone's memory
MAX_IMAGE_FILE_BYTES = 64 * 2**20
MAX_RESIZED_SIDE = 4096  # transformers' Idefics3 MAX_IMAGE_SIZE: no resized side exceeds it

IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF")
"""The only decoders Pillow may use (JPEG includes the multi-picture MPO files of phone cameras). Pillow knows ~40
formats; the rest
(EPS runs Ghostscript, FITS, SPIDER, PSD...) are attack surface that no photo a phone app receives needs."""

_RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}

ImageInput = Any
"""A path (str / PathLike), raw bytes, a PIL image, or an HxW, HxWx1, HxWx3 or HxWx4 numpy array."""


def load_image(source: ImageInput, *, max_pixels: int = MAX_IMAGE_PIXELS) -> Image.Image:
    """Open ``source`` as an RGB PIL image, refusing anything unreadable or too large, with a one-line error."""
    if isinstance(source, Image.Image):
        return _decode(source, "image", max_pixels)
    if isinstance(source, np.ndarray):
        return to_rgb(_from_array(source, max_pixels))
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        if not data:
            raise InputError("image bytes are empty (0 bytes)")
        if len(data) > MAX_IMAGE_FILE_BYTES:
            raise InputError(f"image bytes are {len(data)} bytes; the limit is {MAX_IMAGE_FILE_BYTES}")
        return _open(data, "image bytes", max_pixels)
    if isinstance(source, str | os.PathLike):
        path = os.fsdecode(source)
        return _open(_read_file(path), f"'{path}'", max_pixels)
    raise InputError(f"unsupported image input of type {type(source).__name__}; give a path, bytes, PIL image or array")


def _read_file(path: str) -> bytes:
    """The file's bytes, refusing anything that is not a regular file of sane size. One open: no check-then-use race,
    and O_NONBLOCK so a FIFO swapped in for the file cannot hang the reader."""
    label = f"image '{path}'"
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise InputError(f"{label} does not exist") from None
    except ValueError as exc:  # embedded NUL
        raise InputError(f"{label} is not a valid path ({exc})") from None
    except OSError as exc:
        raise InputError(f"{label} cannot be read ({exc.strerror})") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise InputError(f"{label} is not a file")
    with os.fdopen(fd, "rb") as f:
        if st.st_size == 0:
            raise InputError(f"{label} is empty (0 bytes)")
        if st.st_size > MAX_IMAGE_FILE_BYTES:
            raise InputError(f"{label} is {st.st_size} bytes; the limit is {MAX_IMAGE_FILE_BYTES}")
        try:
            data = f.read(MAX_IMAGE_FILE_BYTES + 1)
        except OSError as exc:
            raise InputError(f"{label} cannot be read ({exc.strerror})") from None
    if not data or len(data) > MAX_IMAGE_FILE_BYTES:
        raise InputError(f"{label} changed while it was read ({len(data)} bytes)")
    return data


def _open(data: bytes, label: str, max_pixels: int) -> Image.Image:
    with warnings.catch_warnings():
        # Pillow warns above its own 89 Mpx; our lower limit below decides, with the numbers in the message.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        except UnidentifiedImageError:
            raise InputError(f"{label} is not a readable image (not {', '.join(IMAGE_FORMATS)})") from None
        except Image.DecompressionBombError as exc:  # above twice Pillow's limit: refused from the header
            raise InputError(f"{label} is too large to decode safely ({_reason(exc)})") from None
        except Exception as exc:  # noqa: BLE001 - see _decode
            raise InputError(f"{label} is not a readable image ({_reason(exc)})") from None
        _check_pixels(image.size, label, max_pixels)  # header only: nothing decoded yet
        return _decode(image, label, max_pixels, from_file=True)


def _decode(image: Image.Image, label: str, max_pixels: int, *, from_file: bool = False) -> Image.Image:
    """Decode and convert to RGB. A file is read from its first frame (by design, for animated GIF/WebP/APNG) and
    turned upright by its EXIF orientation; a caller's PIL image is taken as it is (frame and orientation)."""
    _check_pixels(image.size, label, max_pixels)
    try:
        if from_file:
            image.seek(0)
        image.load()  # a caller's lazily opened image decodes here, inside this handler, not later in resize
        if from_file:
            image = ImageOps.exif_transpose(image)
        return to_rgb(image)
    except Exception as exc:  # noqa: BLE001 - Pillow's decoders raise OSError, SyntaxError, ValueError, EOFError,
        # struct.error, ZeroDivisionError... on hostile bytes; at this boundary every one of them means "unreadable"
        raise InputError(f"{label} is not a readable image ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return "truncated file" if "truncated" in text else (text.split("\n")[0][:100] or type(exc).__name__)


def _check_pixels(size: tuple[int, int], label: str, max_pixels: int) -> None:
    width, height = size
    if width < 1 or height < 1:
        raise InputError(f"{label} has no pixels ({width}x{height})")
    if width * height > max_pixels:
        raise InputError(f"{label} is {width}x{height} = {width * height} pixels; the limit is {max_pixels}")


def _from_array(array: np.ndarray, max_pixels: int) -> Image.Image:
    if array.ndim == 2:
        array = array[:, :, None]
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise InputError(f"image array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {array.shape}")
    _check_pixels((array.shape[1], array.shape[0]), "image array", max_pixels)  # before any conversion allocates
    if array.dtype == np.bool_:
        array = array.astype(np.uint8) * np.uint8(255)
    elif array.dtype != np.uint8:
        if array.dtype.kind not in "iuf":
            raise InputError(f"image array must hold integers or floats, got {array.dtype}")
        array = array.astype(np.float64)
        if not np.isfinite(array).all():
            raise InputError("image array must be finite numbers (it has NaN or inf)")
        scale = 255.0 if array.max(initial=0) <= 1.0 else 1.0
        array = np.clip(array * scale, 0, 255).round().astype(np.uint8)
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    return Image.fromarray(np.ascontiguousarray(array))


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    Alpha (RGBA, LA, PA, or a transparency key in P/L) is composited over white, as transformers' ``convert_to_rgb``
    does; 16-bit and 32-bit integer grey is scaled from the 16-bit range and float grey by its maximum, rather than
    clipped at 255 as ``Image.convert`` would.
    """
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        array = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        top = max(float(array.max(initial=0)), 1.0) if mode == "F" else 65535.0
        grey = np.clip(array / top * 255.0, 0, 255).round().astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def resize(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """Resize (and crop) an RGB image to spec.image_size, as the transformers PIL image processors do.

    Not for mode tiles, which makes several tiles of one image (see :func:`split_tiles`).
    """
    height, width = spec.image_size
    resample = _RESAMPLE[spec.resize]
    if spec.mode == "squash":
        return image.resize((width, height), resample=resample)
    if spec.mode == "longest-edge-squash":
        return _longest_edge(image, spec).resize((width, height), resample=resample)
    w, h = image.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = spec.shortest_edge, int(spec.shortest_edge * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    image = image.resize((new_w, new_h), resample=resample)
    top, left = (new_h - height) // 2, (new_w - width) // 2
    return image.crop((left, top, left + width, top + height))


def _longest_edge(image: Image.Image, spec: PreprocessSpec) -> Image.Image:
    """Long side to spec.longest_edge keeping aspect, the other side rounded up to even (and <= 4096), as
    transformers' Idefics3 / SmolVLM image processors do (upscaling included)."""
    w, h = image.size
    aspect = w / h
    if w >= h:
        w, h = spec.longest_edge, int(spec.longest_edge / aspect)
        h += h % 2
    else:
        h, w = spec.longest_edge, int(spec.longest_edge * aspect)
        w += w % 2
    h, w = max(h, 1), max(w, 1)
    if w >= h and w > MAX_RESIZED_SIDE:
        w, h = MAX_RESIZED_SIDE, int(MAX_RESIZED_SIDE / (w / h))
    elif h > w and h > MAX_RESIZED_SIDE:
        h, w = MAX_RESIZED_SIDE, int(MAX_RESIZED_SIDE * (w / h))
    return image.resize((max(w, 1), max(h, 1)), resample=_RESAMPLE[spec.resize])


def split_tiles(image: Image.Image, spec: PreprocessSpec) -> tuple[list[Image.Image], tuple[int, int]]:
    """Mode tiles (Idefics3 / SmolVLM image splitting): tiles row by row, then the whole image as one more tile.

    The long side goes to spec.longest_edge, both sides up to multiples of the tile size, the result is cut into
    (rows x cols) tiles and also squashed into one overview tile. Returns the tiles and (rows, cols); an image
    that fits one tile is returned alone with grid (0, 0), as transformers does.
    """
    tile = spec.image_size[0]
    resample = _RESAMPLE[spec.resize]
    image = _longest_edge(image, spec)
    w, h = image.size
    aspect = w / h
    if w >= h:
        w = math.ceil(w / tile) * tile
        h = math.ceil(int(w / aspect) / tile) * tile
    else:
        h = math.ceil(h / tile) * tile
        w = math.ceil(int(h * aspect) / tile) * tile
    image = image.resize((w, h), resample=resample)
    if w <= tile and h <= tile:
        return [image], (0, 0)
    rows, cols = h // tile, w // tile
    tiles = [image.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile)) for r in range(rows) for c in range(cols)]
    return [*tiles, image.resize((tile, tile), resample=resample)], (rows, cols)


@dataclasses.dataclass(frozen=True, slots=True)
class ImageTiles:
    """One preprocessed image: the tiles the vision encoder sees, in prompt order."""

    pixels: np.ndarray
    """float32 [tiles, 3, H, W] (NCHW; [tiles, H, W, 3] for NHWC), normalised as the manifest says."""
    grid: tuple[int, int]
    """(rows, cols) of a split image (its last tile is the overview); (0, 0) for a single tile."""


def prepare(source: ImageInput, spec: PreprocessSpec) -> ImageTiles:
    """Load one image and turn it into the vision encoder's input tiles."""
    image = load_image(source)
    if spec.mode == "tiles":
        frames, grid = split_tiles(image, spec)
    else:
        frames, grid = [resize(image, spec)], (0, 0)
    return ImageTiles(_normalise(frames, spec), grid)


def preprocess(images: list[ImageInput], spec: PreprocessSpec) -> np.ndarray:
    """Images -> pixel_values: every tile of every image, in order.

    Returns float32 [N, 3, H, W] (NCHW, or [N, H, W, 3] if spec.layout is NHWC) in spec.channel_order, values
    ``(pixel * rescale_factor - mean) / std``, i.e. within ``spec.value_range`` ([-1, 1] for SigLIP's 0.5/0.5).
    N is the number of images except in mode tiles. Resizing follows spec.mode on the 8-bit image, as the
    transformers PIL backends do (see :func:`resize`).
    """
    return np.concatenate([prepare(source, spec).pixels for source in images]) if images else _normalise([], spec)


def _normalise(frames: list[Image.Image], spec: PreprocessSpec) -> np.ndarray:
    height, width = spec.image_size
    mean = np.asarray(spec.mean, dtype=np.float32)
    std = np.asarray(spec.std, dtype=np.float32)
    out = np.empty((len(frames), height, width, 3), dtype=np.float32)
    for i, image in enumerate(frames):
        out[i] = (np.asarray(image, dtype=np.float32) * np.float32(spec.rescale_factor) - mean) / std
    if spec.channel_order == "BGR":
        out = out[..., ::-1]
    if spec.layout == "NCHW":
        out = out.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(out, dtype=np.float32)
