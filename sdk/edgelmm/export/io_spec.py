"""Per-role graph I/O, declared as data: names, dtypes and named dynamic axes (optimum's inputs/outputs dicts).

The same names go into the manifest. The decoder's KV names come from a KVCacheSpec template.
"""

from __future__ import annotations

import dataclasses

from edgelmm.runtime.manifest import KVCacheSpec
from edgelmm.specs import GraphRole

BATCH = "batch_size"
SEQ = "sequence_length"
PAST = "past_sequence_length"
TOTAL = "total_sequence_length"


@dataclasses.dataclass(frozen=True, slots=True)
class TensorIO:
    name: str
    dtype: str
    axes: dict[int, str]
    """Dynamic axes: position -> symbolic name."""


@dataclasses.dataclass(frozen=True, slots=True)
class RoleIO:
    role: GraphRole
    inputs: tuple[TensorIO, ...]
    outputs: tuple[TensorIO, ...]

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


def vision_io(*, dynamic_batch: bool = True) -> RoleIO:
    """pixel_values [B, 3, H, W] -> image_features [B, tokens, hidden]; B fixed when the family's vision module is
    built for one batch size (Qwen2-VL: 1)."""
    axes = {0: BATCH} if dynamic_batch else {}
    return RoleIO(
        GraphRole.VISION_ENCODER,
        inputs=(TensorIO("pixel_values", "float32", axes),),
        outputs=(TensorIO("image_features", "float32", axes),),
    )


def embedding_io() -> RoleIO:
    return RoleIO(
        GraphRole.TOKEN_EMBEDDING,
        inputs=(TensorIO("input_ids", "int64", {0: BATCH, 1: SEQ}),),
        outputs=(TensorIO("inputs_embeds", "float32", {0: BATCH, 1: SEQ}),),
    )


def decoder_io(kv: KVCacheSpec, *, position_rows: int = 1) -> RoleIO:
    """position_ids is [B, S], or [rows, B, S] for multi-row schemes (M-RoPE: 3)."""
    past = [
        TensorIO(name, kv.dtype, {0: BATCH, 2: PAST})
        for pair in zip(kv.names("past_key"), kv.names("past_value"))
        for name in pair
    ]
    present = [
        TensorIO(name, kv.dtype, {0: BATCH, 2: TOTAL})
        for pair in zip(kv.names("present_key"), kv.names("present_value"))
        for name in pair
    ]
    return RoleIO(
        GraphRole.DECODER,
        inputs=(
            TensorIO("inputs_embeds", "float32", {0: BATCH, 1: SEQ}),
            TensorIO("attention_mask", "int64", {0: BATCH, 1: TOTAL}),
            TensorIO("position_ids", "int64", {0: BATCH, 1: SEQ} if position_rows == 1 else {1: BATCH, 2: SEQ}),
            *past,
        ),
        outputs=(TensorIO("logits", "float32", {0: BATCH, 1: SEQ}), *present),
    )


def static_decoder_io(kv: KVCacheSpec) -> RoleIO:
    """The static-buffer step (export/static_decoder.py): every shape fixed, KV buffers of ``kv.max_length`` rows."""
    past = [TensorIO(n, kv.dtype, {}) for pair in zip(kv.names("past_key"), kv.names("past_value")) for n in pair]
    present = [TensorIO(n, kv.dtype, {}) for pair in zip(kv.names("present_key"), kv.names("present_value"))
               for n in pair]
    return RoleIO(
        GraphRole.DECODER,
        inputs=(TensorIO("inputs_embeds", "float32", {}), TensorIO("attention_mask", "int64", {}), *past),
        outputs=(TensorIO("logits", "float32", {}), *present),
    )
