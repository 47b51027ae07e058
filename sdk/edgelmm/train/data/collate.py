"""Examples -> tensors. LLaVA-style: the image placeholder expands to the model's visual-token count, and labels are
IGNORE everywhere except the target text (the caption, or the answer) and the end-of-turn token after it.

The prompt is rendered with the model's chat template exactly as the runtime renders it (a user turn holding the
image and the text, then the generation prompt), so training and inference see the same tokens.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from edgelmm.runtime.manifest import PreprocessSpec
from edgelmm.runtime.preprocess import preprocess
from edgelmm.train.data.base import Example
from edgelmm.train.losses import IGNORE

CAPTION_PROMPT = "Describe the image."
"""The user text of caption examples (stage 1): LLaVA's pretraining pairs an image with its caption."""


@dataclasses.dataclass(slots=True)
class LMBatch:
    """input_ids, attention_mask, labels: int64 [B, S] (right-padded); pixel_values: float32 [B, 3, H, W]."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor

    def to(self, device: torch.device | str) -> LMBatch:
        return LMBatch(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())


class ChatCollator:
    """Builds LMBatches for one model: its tokenizer, chat template, image token and preprocessing."""

    def __init__(self, *, tokenizer: Any, chat_template: str, image_token: str, num_image_tokens: int,
                 preprocess_spec: PreprocessSpec, end_of_turn: str = "<|im_end|>", turn_glue: str = "\n") -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.image_token_id = int(tokenizer.convert_tokens_to_ids(image_token))
        self.num_image_tokens = num_image_tokens
        self.preprocess_spec = preprocess_spec
        self.end_ids = tokenizer(end_of_turn, add_special_tokens=False)["input_ids"]
        self.turn_glue = turn_glue
        """What the chat template writes between an answer's end-of-turn and the next turn (ChatML: a newline)."""
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.end_ids[0])

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - questions repeat; the collator lives as long as its run
    def prompt_ids(self, text: str, with_image: bool = True) -> tuple[int, ...]:
        """Token ids of a user turn (the image, then ``text``) plus the generation prompt, image slots expanded."""
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": text}]
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": content}], chat_template=self.chat_template,
            add_generation_prompt=True, tokenize=False,
        )
        ids = self.tokenizer(rendered, add_special_tokens=False)["input_ids"]
        out: list[int] = []
        for token in ids:
            out.extend([token] * self.num_image_tokens if token == self.image_token_id else [token])
        return tuple(out)

    def target_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"] + list(self.end_ids)

    @functools.lru_cache(maxsize=4096)  # noqa: B019 - as prompt_ids
    def next_turn_ids(self, text: str) -> tuple[int, ...]:
        """A later user turn (text only) and the generation prompt, glued after the previous answer's end-of-turn."""
        rendered = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": [{"type": "text", "text": text}]}], chat_template=self.chat_template,
            add_generation_prompt=True, tokenize=False)
        return tuple(self.tokenizer(self.turn_glue + rendered, add_special_tokens=False)["input_ids"])

    def conversation(self, example: Example, fmt: str, turns: int = 1) -> tuple[list[int], list[int]]:
        """(input ids, labels) of one example: the image and the first question (or the caption prompt), then up to
        ``turns`` - 1 of ``example.more`` as later turns; labels hold only the answers and their end-of-turn."""
        if fmt != "qa":
            p, t = list(self.prompt_ids(CAPTION_PROMPT)), self.target_ids(example.caption)
            return p + t, [IGNORE] * len(p) + t
        ids: list[int] = []
        labels: list[int] = []
        for k, (question, answer, *_) in enumerate([(example.question, example.answer), *example.more][:turns]):
            p = list(self.prompt_ids(question) if k == 0 else self.next_turn_ids(question))
            t = self.target_ids(answer)
            ids += p + t
            labels += [IGNORE] * len(p) + t
        return ids, labels

    def __call__(self, examples: Sequence[Example], fmt: str, turns: int = 1) -> LMBatch:
        """``fmt`` "qa": prompt = the question, target = the answer (``turns`` > 1: a conversation of up to that many
        questions about the image); "caption": the caption prompt and caption."""
        rows = [self.conversation(ex, fmt, turns) for ex in examples]
        width = max(len(ids) for ids, _ in rows)
        input_ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        labels = np.full((len(rows), width), IGNORE, dtype=np.int64)
        mask = np.zeros((len(rows), width), dtype=np.int64)
        for i, (ids, lab) in enumerate(rows):
            input_ids[i, : len(ids)], labels[i, : len(ids)], mask[i, : len(ids)] = ids, lab, 1
        pixels = preprocess([ex.image for ex in examples], self.preprocess_spec)
        return LMBatch(torch.from_numpy(input_ids), torch.from_numpy(mask), torch.from_numpy(labels),
                       torch.from_numpy(pixels))


@dataclasses.dataclass(slots=True)
class ContrastiveBatch:
    """Stage 0. pixel_values float32 [B, 3, H, W]; text_emb float32 [M, D] (unique texts of the batch, unit norm);
    labels float32 [B, M] (+1 where text j is true of image i, else -1); region_emb [R, D] and region_labels
    [B * GRID * GRID, R] the same per grid cell (empty cells and layout-free images: all -1)."""

    pixel_values: torch.Tensor
    text_emb: torch.Tensor
    labels: torch.Tensor
    region_emb: torch.Tensor
    region_labels: torch.Tensor
    attributes: torch.Tensor
    """int64 [B, GRID * GRID, 3]: per cell (shape with 0 = empty, colour, size) class ids, IGNORE where unknown."""
    digits: torch.Tensor
    """int64 [B]: the digit of digit images, IGNORE for the others."""

    def to(self, device: torch.device | str) -> ContrastiveBatch:
        return ContrastiveBatch(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))

    @property
    def size(self) -> int:
        return int(self.pixel_values.shape[0])


def contrastive_batch(examples: Sequence[Example], spec: PreprocessSpec, encode: Any) -> ContrastiveBatch:
    """``encode(texts) -> float32 [N, D]`` is the frozen text encoder (MiniLM, cached per string)."""
    from edgelmm.train.data.base import GRID

    texts = sorted({t for ex in examples for t in ex.phrases})
    labels = torch.tensor([[1.0 if t in ex.phrases else -1.0 for t in texts] for ex in examples])
    cells = [ex.regions or ("",) * (GRID * GRID) for ex in examples]
    region_texts = sorted({t for c in cells for t in c if t})
    region_labels = torch.tensor([[1.0 if t == cell else -1.0 for t in region_texts] for c in cells for cell in c])
    return ContrastiveBatch(
        pixel_values=torch.from_numpy(preprocess([ex.image for ex in examples], spec)),
        text_emb=encode(texts),
        labels=labels,
        region_emb=encode(region_texts),
        region_labels=region_labels.reshape(len(cells) * GRID * GRID, len(region_texts)),
        attributes=torch.tensor([[_attributes(cell) for cell in ex.regions] if ex.regions
                                 else [(IGNORE, IGNORE, IGNORE)] * (GRID * GRID) for ex in examples], dtype=torch.long),
        digits=torch.tensor([int(ex.answer) if ex.kind == "digit" else IGNORE for ex in examples], dtype=torch.long),
    )


@dataclasses.dataclass(slots=True)
class GroundBatch:
    """The ``ground`` format. pixel_values float32 [B, 3, H, W]; word_ids int64 [B, T, L]: LM token ids of the words
    each visual token should say (T = GRID * GRID cells, row-major like the patches; padded with IGNORE);
    pooled_ids int64 [B, L]: words for the mean of an image's tokens (digits: the digit), all IGNORE when none."""

    pixel_values: torch.Tensor
    word_ids: torch.Tensor
    pooled_ids: torch.Tensor

    def to(self, device: torch.device | str) -> GroundBatch:
        return GroundBatch(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))

    @property
    def size(self) -> int:
        return int(self.pixel_values.shape[0])


def cell_words(example: Example) -> list[str]:
    """What each grid cell's visual token should say: "small red circle top left" / "empty center"; [] for
    images without a layout."""
    from edgelmm.train.data.base import GRID
    from edgelmm.train.data.shapes import POSITIONS

    if not example.regions:
        return []
    return [f"{cell.split(' ', 1)[1] if cell else 'empty'} {POSITIONS[i // GRID][i % GRID]}"
            for i, cell in enumerate(example.regions)]


def ground_batch(examples: Sequence[Example], spec: PreprocessSpec, tokenizer: Any) -> GroundBatch:
    """Examples -> GroundBatch. Words are tokenized with a leading space (as they appear mid-sentence)."""
    from edgelmm.train.data.base import GRID

    cells = GRID * GRID

    def ids(text: str) -> list[int]:
        return tokenizer(" " + text, add_special_tokens=False)["input_ids"]

    per_token = [[ids(w) for w in cell_words(ex)] or [[]] * cells for ex in examples]
    pooled = [ids(ex.answer) if ex.kind == "digit" else [] for ex in examples]
    width = max(1, *(len(i) for rows in per_token for i in rows), *(len(i) for i in pooled))
    word_ids = np.full((len(examples), cells, width), IGNORE, dtype=np.int64)
    pooled_ids = np.full((len(examples), width), IGNORE, dtype=np.int64)
    for b, (rows, pool) in enumerate(zip(per_token, pooled)):
        for t, row in enumerate(rows):
            word_ids[b, t, : len(row)] = row
        pooled_ids[b, : len(pool)] = pool
    return GroundBatch(pixel_values=torch.from_numpy(preprocess([ex.image for ex in examples], spec)),
                       word_ids=torch.from_numpy(word_ids), pooled_ids=torch.from_numpy(pooled_ids))


def _attributes(cell: str) -> tuple[int, int, int]:
    """"a small red circle" -> (shape id + 1, colour id, size id); "" -> (0 = empty, IGNORE, IGNORE)."""
    from edgelmm.train.data.shapes import COLOURS, SHAPES, SIZES

    if not cell:
        return 0, IGNORE, IGNORE
    _, size, colour, shape = cell.split()
    return SHAPES.index(shape) + 1, list(COLOURS).index(colour), list(SIZES).index(size)
