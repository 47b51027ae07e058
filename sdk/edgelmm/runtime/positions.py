"""Decoder position ids for a prompt, as the manifest's ``positions`` scheme says (numpy only).

linear: 0 .. S-1, shape [1, S]. mrope (Qwen2-VL / Qwen2.5-VL multimodal RoPE), shape [3, S] for (time, row, column):
text tokens carry their running index in all three rows; the tokens of one image share time = start and take
start + row and start + column of the image's token grid (row-major, as the vision merger emits them); the text after
an image continues from start + max(rows, cols). This is transformers' ``Qwen2VLModel.get_rope_index`` for still
images. Tokens generated afterwards continue from max(prompt positions) + 1 in every row (its ``rope_deltas``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgelmm.errors import InputError
from edgelmm.runtime.manifest import PositionSpec


def prompt_positions(spec: PositionSpec, length: int, image_slots: Sequence[tuple[int, int]]) -> np.ndarray:
    """int64 [spec.rows, length] position ids for a prompt whose image runs are ``image_slots`` (start, length)."""
    if spec.scheme == "linear":
        return np.arange(length, dtype=np.int64)[None]
    rows, cols = spec.image_grid
    out = np.empty((3, length), dtype=np.int64)
    position = index = 0
    for start, run in image_slots:
        if run != rows * cols:
            raise InputError(f"an image run of {run} tokens does not fit the bundle's {rows}x{cols} M-RoPE grid")
        out[:, index:start] = position + np.arange(start - index)
        position += start - index
        out[0, start : start + run] = position
        out[1, start : start + run] = position + np.repeat(np.arange(rows), cols)
        out[2, start : start + run] = position + np.tile(np.arange(cols), rows)
        position += max(rows, cols)
        index = start + run
    out[:, index:] = position + np.arange(length - index)
    return out
