"""Items as inputs (the Item-Language Model): the prompt placeholder and the CF table file. numpy only.

A prompt names items with ``ITEM_TOKEN`` placeholders; each becomes ``num_item_tokens`` decoder positions filled by
the item encoder's output for the next item id of the request. The placeholder is never a tokenizer token: prompts
are split on it before tokenizing, so the LM's vocabulary and decoder graph stay those of the text-only bundle.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgelmm.errors import BundleError, InputError

ITEM_TOKEN = "<item>"
TABLE_MAGIC = b"EDGELMM-CF1\n"
"""The CF table file: this magic, a little-endian uint32 header length, a JSON-free fixed header
(uint32 rows, uint32 dim), then rows * dim little-endian float32 values. No pickle, no numpy.load."""


def split_on_items(text: str) -> list[str]:
    """Text pieces around the placeholders: ``n`` placeholders give ``n + 1`` pieces (possibly empty)."""
    return text.split(ITEM_TOKEN)


def splice_ids(pieces: list[list[int]], slot_id: int, num_item_tokens: int) -> tuple[list[int], list[int]]:
    """(input ids, slot positions): the token ids of the pieces with ``num_item_tokens`` slots between each two."""
    ids: list[int] = []
    slots: list[int] = []
    for i, piece in enumerate(pieces):
        if i:
            slots += range(len(ids), len(ids) + num_item_tokens)
            ids += [slot_id] * num_item_tokens
        ids += piece
    return ids, slots


def write_table(path: Path, table: np.ndarray) -> None:
    """Write float32 [rows, dim] in the table format (not atomic by itself: bundle writers stage the directory)."""
    table = np.ascontiguousarray(table, dtype="<f4")
    if table.ndim != 2:
        raise InputError(f"a CF table is 2-D [items, dim], got shape {table.shape}")
    header = np.array(table.shape, dtype="<u4").tobytes()
    path.write_bytes(TABLE_MAGIC + np.array([len(header)], dtype="<u4").tobytes() + header + table.tobytes())


def read_table(path: Path, *, rows: int, dim: int) -> np.ndarray:
    """float32 [rows, dim] from a table file, refusing any file whose shape or size differs from the manifest's."""
    data = Path(path).read_bytes()
    head = len(TABLE_MAGIC) + 4
    if not data.startswith(TABLE_MAGIC) or len(data) < head + 8:
        raise BundleError(f"'{path}' is not a CF table file (bad magic or too short)")
    header_len = int(np.frombuffer(data, dtype="<u4", count=1, offset=len(TABLE_MAGIC))[0])
    if header_len != 8:
        raise BundleError(f"'{path}': table header is {header_len} bytes, expected 8")
    shape = tuple(int(x) for x in np.frombuffer(data, dtype="<u4", count=2, offset=head))
    if shape != (rows, dim):
        raise BundleError(f"'{path}': table shape {shape} != manifest's ({rows}, {dim})")
    if len(data) != head + 8 + rows * dim * 4:
        raise BundleError(f"'{path}': {len(data)} bytes, expected {head + 8 + rows * dim * 4} for ({rows}, {dim})")
    table = np.frombuffer(data, dtype="<f4", offset=head + 8).reshape(rows, dim).astype(np.float32)
    if not np.isfinite(table).all():
        raise BundleError(f"'{path}': table holds non-finite values")
    return table


def check_item_ids(items: Sequence[object], *, n_items: int) -> np.ndarray:
    """int64 [n] item ids, each an int in [0, n_items) (one-line InputError otherwise)."""
    for item in items:
        if isinstance(item, bool) or not isinstance(item, int | np.integer):
            raise InputError(f"item ids must be integers, got {item!r:.30}")
    ids = np.asarray(items, dtype=np.int64).reshape(-1)
    bad = ids[(ids < 0) | (ids >= n_items)]
    if bad.size:
        raise InputError(f"item id {int(bad[0])} is outside the catalog [0, {n_items})")
    return ids
