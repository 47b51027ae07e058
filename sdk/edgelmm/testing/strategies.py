"""Hypothesis strategies for hostile inputs: JSON documents, byte mutations, images, prompts, argv.

Mutations are pure functions of (seed document, list of operations), so a failing case found by hypothesis shrinks
to a short list of operations on a real bundle's file, and reproduces from its printed repr.
"""

from __future__ import annotations

import copy
import io
import struct
import zlib
from collections.abc import Sequence
from typing import Any

from edgelmm._extras import require

require("hypothesis", "test")

import numpy as np  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from PIL import Image  # noqa: E402

# -- text ---------------------------------------------------------------------------------------------------------

SURROGATES = st.integers(0xD800, 0xDFFF).map(chr)
"""Lone surrogates: what invalid UTF-8 becomes after ``surrogateescape`` (argv, file names) or a bad JSON escape."""

NASTY_STRINGS = (
    "",
    " ",
    "\x00",
    "\r\n",
    "\x1b[31m",
    "\u2028",
    "\u202e",
    "\ufeff",
    "\U0010ffff",
    "\ud800",
    "\udcff",
    "../",
    "/etc/passwd",
    "C:\\x",
    "a" * 300,
    "{{",
    "{%",
    "{#",
    "}}",
    "%}",
)
"""Short strings that broke parsers somewhere: NUL, line separators, bidi overrides, BOM, surrogates, paths, jinja."""

any_text = st.text(alphabet=st.one_of(st.characters(codec=None), SURROGATES), max_size=40)
"""Any code points, lone surrogates included (hypothesis excludes them by default)."""


def pieces_text(specials: Sequence[str], max_pieces: int = 8) -> st.SearchStrategy[str]:
    """Concatenations of arbitrary text and the given special strings (tokens, placeholders, template syntax)."""
    piece = st.one_of(any_text, st.sampled_from(NASTY_STRINGS), st.sampled_from(list(specials) or [""]))
    return st.lists(piece, max_size=max_pieces).map("".join)


# -- JSON documents -----------------------------------------------------------------------------------------------

INTERESTING_VALUES: tuple[Any, ...] = (
    None,
    True,
    False,
    0,
    1,
    -1,
    2,
    2**31,
    2**63,
    -(2**63),
    10**30,
    0.5,
    -0.0,
    1e308,
    float("nan"),
    float("inf"),
    "",
    "x",
    "../decoder.onnx",
    "/etc/passwd",
    "a/../../b",
    "decoder.onnx",
    "tokenizer.json",
    "\x00",
    "\ud800",
    "0" * 64,
    [],
    {},
    [1, 2, 3],
    ["a"],
    {"a": 1},
)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(), any_text, st.sampled_from(INTERESTING_VALUES)
)
json_values = st.recursive(
    json_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(any_text, c, max_size=4), max_leaves=12
)

MUTATIONS = ("set", "delete", "add", "copy", "wrap")


def _nodes(doc: Any, path: tuple = ()) -> list[tuple]:
    """Every path into ``doc`` (the root included), depth first, dict keys in order."""
    out = [path]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _nodes(v, (*path, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _nodes(v, (*path, i))
    return out


def _get(doc: Any, path: tuple) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def apply_json_ops(doc: Any, ops: Sequence[tuple[str, int, int, Any]]) -> Any:
    """Apply mutations to a deep copy of ``doc``.

    Each op is (kind, target index, other index, value); indices pick nodes modulo the current node count:
    set (replace the node), delete (remove it from its parent), add (insert a key/item), copy (replace the node
    with a copy of another node: type confusion between real fields), wrap (put the node in a list).
    """
    doc = copy.deepcopy(doc)
    for kind, target, other, value in ops:
        # hypothesis may hand the same object to two ops: inserting it twice (or into itself) made a cycle that
        # _nodes then recursed through forever (found by the device-profile target)
        value = copy.deepcopy(value)
        nodes = _nodes(doc)
        path = nodes[target % len(nodes)]
        if kind == "copy":
            value = copy.deepcopy(_get(doc, nodes[other % len(nodes)]))
        elif kind == "wrap":
            value = [copy.deepcopy(_get(doc, path))]
        if kind in ("set", "copy", "wrap"):
            if not path:
                doc = value
            else:
                _get(doc, path[:-1])[path[-1]] = value
        elif kind == "delete" and path:
            del _get(doc, path[:-1])[path[-1]]
        elif kind == "add":
            node = _get(doc, path)
            if isinstance(node, dict):
                node[str(value)[:20]] = value
            elif isinstance(node, list):
                node.insert(other % (len(node) + 1), value)
    return doc


def json_ops(max_ops: int = 4) -> st.SearchStrategy[list[tuple[str, int, int, Any]]]:
    op = st.tuples(st.sampled_from(MUTATIONS), st.integers(0, 2**16), st.integers(0, 2**16), json_values)
    return st.lists(op, min_size=1, max_size=max_ops)


def mutated_json(doc: Any, max_ops: int = 4) -> st.SearchStrategy[Any]:
    """``doc`` with 1..max_ops structural mutations (see :func:`apply_json_ops`)."""
    return json_ops(max_ops).map(lambda ops: apply_json_ops(doc, ops))


# -- YAML spec files ----------------------------------------------------------------------------------------------

YAML_ATTACKS = (
    "a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: [*b, *b, *b, *b, *b, *b, *b]\n",
    "!!python/object/apply:os.system [echo pwned]\n",
    "a: !!binary aGVsbG8=\n",
    "a: 1\na: 2\n",
    "<<: {a: 1}\n",
    "a: .nan\n",
    "a: .inf\n",
    "a: 0x10\n",
    "a: 1_000\n",
    "a: [no, yes, on, off]\n",
    "a: 2024-01-01\n",
    "? [a, b]\n: 1\n",
    "\ufeffa: 1\n",
    "a:\n\t- 1\n",
    "---\na: 1\n---\nb: 2\n",
    'a: "\\ud800"\n',
    "[" * 2000,
    "a: " + "9" * 5000 + "\n",
    "%YAML 1.1\n---\na: 1\n",
)
"""Alias bomb, python tags, duplicate keys, merge keys, NaN, YAML 1.1 booleans (the Norway problem), complex keys,
BOM, tabs, multiple documents, surrogate escapes, deep nesting, a 5000-digit integer, directives."""


def yaml_cases(doc: Any) -> st.SearchStrategy[bytes]:
    """YAML text for a spec loader: the seed document mutated then dumped, its text byte-mutated, and attacks."""
    import yaml

    dumped = mutated_json(doc).map(lambda d: yaml.safe_dump(d, allow_unicode=True).encode("utf-8", "surrogatepass"))
    text = yaml.safe_dump(doc).encode()
    attacks = st.sampled_from(YAML_ATTACKS).map(lambda t: t.encode("utf-8", "surrogatepass"))
    return st.one_of(dumped, mutated_bytes([text], fix_png_crc=False), attacks)


# -- bytes --------------------------------------------------------------------------------------------------------

BYTE_MUTATIONS = ("flip", "set", "int32", "insert", "delete", "truncate", "duplicate")
_INT32 = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def apply_byte_ops(data: bytes, ops: Sequence[tuple[str, int, int, bytes]]) -> bytes:
    """Apply byte-level mutations (offsets modulo the current length), the moves of a dumb mutational fuzzer."""
    buf = bytearray(data)
    for kind, pos, arg, blob in ops:
        n = len(buf)
        i = pos % (n + 1)
        if kind == "flip" and n:
            buf[i % n] ^= (arg % 255) + 1
        elif kind == "set" and n:
            buf[i % n] = (0, 0xFF, 0x7F, 0x80)[arg % 4]
        elif kind == "int32" and n >= 4:
            j = i % (n - 3)
            buf[j : j + 4] = struct.pack(">I", _INT32[arg % len(_INT32)])
        elif kind == "insert":
            buf[i:i] = blob
        elif kind == "delete":
            del buf[i : i + 1 + arg % 64]
        elif kind == "truncate":
            del buf[i:]
        elif kind == "duplicate":
            buf[i:i] = buf[i : i + 1 + arg % 64]
    return bytes(buf)


def byte_ops(max_ops: int = 6) -> st.SearchStrategy[list[tuple[str, int, int, bytes]]]:
    op = st.tuples(
        st.sampled_from(BYTE_MUTATIONS), st.integers(0, 2**32), st.integers(0, 2**16), st.binary(max_size=16)
    )
    return st.lists(op, min_size=1, max_size=max_ops)


def mutated_bytes(seeds: Sequence[bytes], max_ops: int = 6, *, fix_png_crc: bool = True) -> st.SearchStrategy[bytes]:
    """A seed file with byte mutations; PNG chunk CRCs are repaired half the time so mutants reach the decoder."""
    mutant = st.tuples(st.sampled_from(list(seeds)), byte_ops(max_ops), st.booleans())

    def build(t: tuple[bytes, list, bool]) -> bytes:
        data = apply_byte_ops(t[0], t[1])
        return repair_png_crcs(data) if fix_png_crc and t[2] else data

    return mutant.map(build)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def repair_png_crcs(data: bytes) -> bytes:
    """Recompute every PNG chunk CRC that still has room, so header mutations are not rejected by the CRC check."""
    if not data.startswith(PNG_MAGIC):
        return data
    buf = bytearray(data)
    pos = len(PNG_MAGIC)
    while pos + 12 <= len(buf):
        length = struct.unpack(">I", buf[pos : pos + 4])[0]
        end = pos + 8 + length
        if end + 4 > len(buf):
            break
        buf[end : end + 4] = struct.pack(">I", zlib.crc32(buf[pos + 4 : end]) & 0xFFFFFFFF)
        pos = end + 4
    return bytes(buf)


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, *, bit_depth: int = 8, colour_type: int = 2, rows: bytes | None = None) -> bytes:
    """A PNG written by hand: any header (a bomb claiming 10^10 pixels, 16-bit RGB Pillow cannot write), any data."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    idat = zlib.compress(rows if rows is not None else b"\x00" * 16)
    return PNG_MAGIC + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


# -- images -------------------------------------------------------------------------------------------------------

IMAGE_MODES = ("RGB", "RGBA", "L", "LA", "P", "PA", "1", "I;16", "I", "F", "CMYK", "YCbCr", "LAB", "HSV")
IMAGE_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "TIFF", "BMP")


def encode_image(image: Image.Image, fmt: str, **params: Any) -> bytes | None:
    """``image`` saved as ``fmt``, or None if Pillow cannot write that mode in that format."""
    buf = io.BytesIO()
    try:
        image.save(buf, format=fmt, **params)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return buf.getvalue()


def sample_image(mode: str, size: tuple[int, int] = (13, 9), seed: int = 0) -> Image.Image:
    """A small image with varied pixels in ``mode`` (gradients, so resampling and conversion bugs show)."""
    rng = np.random.default_rng(seed)
    rgb = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    if mode in ("I;16", "I", "F"):
        array = rng.integers(0, 65536, (size[1], size[0]))
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        return Image.fromarray(array.astype(dtype))
    if mode == "PA":
        return rgb.convert("P").convert("PA")
    if mode == "LAB":  # Pillow converts to LAB only through ImageCms: build the bytes directly
        return Image.frombytes("LAB", size, rng.integers(0, 256, size[0] * size[1] * 3, dtype=np.uint8).tobytes())
    image = rgb.convert(mode)
    if mode in ("RGBA", "LA"):
        image.putalpha(Image.fromarray(rng.integers(0, 256, (size[1], size[0]), dtype=np.uint8)))
    return image


def image_seed_corpus() -> list[bytes]:
    """Valid files: every mode x format Pillow writes, palette transparency, EXIF rotation, animation, 16-bit RGB."""
    seeds = []
    for mode in IMAGE_MODES:
        image = sample_image(mode)
        for fmt in IMAGE_FORMATS:
            if (data := encode_image(image, fmt)) is not None:
                seeds.append(data)
    p = sample_image("P")
    seeds.append(encode_image(p, "PNG", transparency=3))
    seeds.append(encode_image(p, "GIF", transparency=3))
    exif = Image.Exif()
    exif[0x0112] = 6
    seeds.append(encode_image(sample_image("RGB"), "JPEG", exif=exif))
    frames = [sample_image("RGB", seed=i) for i in range(3)]
    for fmt in ("GIF", "WEBP", "PNG"):
        seeds.append(encode_image(frames[0], fmt, save_all=True, append_images=frames[1:]))
    rows = b"".join(b"\x00" + bytes(range(6 * 4)) for _ in range(3))  # 4x3 16-bit RGB, filter byte per row
    seeds.append(png_bytes(4, 3, bit_depth=16, colour_type=2, rows=rows))
    return [s for s in seeds if s]


def bomb_headers() -> list[bytes]:
    """Small files whose headers claim enormous images: must be refused from the header, never decoded."""
    bombs = [png_bytes(100_000, 100_000), png_bytes(2**31 - 1, 1), png_bytes(1, 2**31 - 1), png_bytes(0, 5)]
    gif = (
        b"GIF89a"
        + struct.pack("<HH", 65535, 65535)
        + b"\x00\x00\x00"
        + b",\x00\x00\x00\x00"
        + struct.pack("<HH", 65535, 65535)
        + b"\x00\x02\x02\x44\x01\x00;"
    )
    bombs.append(gif)
    sof = b"\xff\xc0\x00\x11\x08" + struct.pack(">HH", 65500, 65500) + b"\x03\x01\x22\x00\x02\x11\x01\x03\x11\x01"
    bombs.append(b"\xff\xd8" + sof + b"\xff\xd9")
    return bombs


def image_bytes(seeds: Sequence[bytes]) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, crafted bomb headers, valid files of every format and mode, and their mutants."""
    return st.one_of(
        st.binary(max_size=256), st.sampled_from(bomb_headers()), st.sampled_from(list(seeds)), mutated_bytes(seeds)
    )


def image_arrays() -> st.SearchStrategy[np.ndarray]:
    """numpy arrays of any numeric dtype, rank 0-4, with NaN, inf and negative values."""
    from hypothesis.extra import numpy as hnp

    dtypes = st.sampled_from(
        ["uint8", "uint16", "int32", "int64", "float16", "float32", "float64", "bool", "complex64", "int8"]
    )
    shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=12)
    return st.tuples(dtypes, shapes).flatmap(lambda t: hnp.arrays(t[0], t[1]))
