"""Conversational-recommendation examples with items interleaved in text, and their collation (ILM phase 2).

Three tasks (ILM's multitask phase 2 at small scale), each a user turn with ``<item>`` placeholders and an
assistant answer:

    next      "I watched <item> The Iron Bridge, <item> ... What should I watch next?"  -> "The Quiet Garden"
    describe  "What is <item>?"                                   -> "The Quiet Garden: A drama film set in ..."
    compare   "Compare <item> and <item>."                        -> "The Quiet Garden is drama; ... They share ..."

``items=False`` renders the same conversation without placeholders: the frozen LM reading titles as text.
Examples are a pure function of (seed, index), so a resumed run sees the same batches.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from edgelmm.runtime.items import ITEM_TOKEN, splice_ids, split_on_items
from edgelmm.train.data.interactions import Interactions
from edgelmm.train.losses import IGNORE

TASK_WEIGHTS = {"next": 0.6, "describe": 0.25, "compare": 0.15}
HISTORY = 5
"""Items of history shown in a next-item prompt (the most recent ones)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Conversation:
    prompt: str
    """User text; each ``<item>`` stands for the item tokens of the next entry of ``items``."""
    items: tuple[int, ...]
    answer: str
    task: str


def history_prompt(data: Interactions, history: Sequence[int], *, items: bool = True) -> str:
    shown = ", ".join(f"{ITEM_TOKEN} {data.items[i].title}" if items else data.items[i].title for i in history)
    return f"I watched {shown}. What should I watch next?"


def next_item(data: Interactions, user: int, end: int, *, items: bool = True) -> Conversation:
    """The user's item at position ``end`` given the HISTORY items before it."""
    h = data.histories[user]
    history = h[max(0, end - HISTORY): end]
    return Conversation(prompt=history_prompt(data, history, items=items), items=tuple(history) if items else (),
                        answer=data.items[h[end]].title, task="next")


def describe(data: Interactions, item: int) -> Conversation:
    it = data.items[item]
    return Conversation(prompt=f"What is {ITEM_TOKEN}?", items=(item,), answer=f"{it.title}: {it.description}",
                        task="describe")


def compare(data: Interactions, a: int, b: int) -> Conversation:
    ia, ib = data.items[a], data.items[b]
    shared = [g for g in ia.genres if g in ib.genres]
    tail = f"They share {' and '.join(shared)}." if shared else "They share no genre."
    answer = f"{ia.title} is {' and '.join(ia.genres)}; {ib.title} is {' and '.join(ib.genres)}. {tail}"
    return Conversation(prompt=f"Compare {ITEM_TOKEN} and {ITEM_TOKEN}.", items=(a, b), answer=answer, task="compare")


def sample(data: Interactions, users: np.ndarray, rng: np.random.Generator) -> Conversation:
    """One training conversation from ``users``' histories (task drawn by TASK_WEIGHTS)."""
    task = rng.choice(list(TASK_WEIGHTS), p=np.array(list(TASK_WEIGHTS.values())))
    user = int(users[rng.integers(len(users))])
    h = data.histories[user]
    if task == "next":
        return next_item(data, user, int(rng.integers(1, len(h))))
    if task == "describe":
        return describe(data, int(h[rng.integers(len(h))]))
    i, j = rng.choice(len(h), size=2, replace=False)
    return compare(data, int(h[i]), int(h[j]))


# ----------------------------------------------------------------------------------------------------------------
# Collation


@dataclasses.dataclass(slots=True)
class ItemChatBatch:
    input_ids: torch.Tensor
    """int64 [B, L]; item slots hold ``slot_id`` (their embeddings are replaced by item tokens)."""
    attention_mask: torch.Tensor
    """int64 [B, L], right padding."""
    labels: torch.Tensor
    """int64 [B, L]: the answer's tokens (and end of turn), IGNORE elsewhere."""
    slot_mask: torch.Tensor
    """bool [B, L]: item-token positions, ``num_item_tokens`` per item in prompt order."""
    item_ids: torch.Tensor
    """int64 [N]: the items of all slot groups, batch-major, prompt order (N * K == slot_mask.sum())."""

    def to(self, device: torch.device | str) -> ItemChatBatch:
        return ItemChatBatch(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())


class ItemChatCollator:
    """Renders conversations with the LM's chat template and splices ``num_item_tokens`` slots per ``<item>``."""

    def __init__(self, *, tokenizer: Any, chat_template: str, num_item_tokens: int) -> None:
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.num_item_tokens = num_item_tokens
        self.slot_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.end_ids = self._encode(tokenizer.eos_token + "\n") if tokenizer.eos_token else []

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def prompt_ids(self, prompt: str) -> tuple[list[int], list[int]]:
        """(ids, slot positions) of the templated user turn plus the assistant header."""
        text = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], chat_template=self.chat_template,
                                                  tokenize=False, add_generation_prompt=True)
        return splice_ids([self._encode(p) for p in split_on_items(text)], self.slot_id, self.num_item_tokens)

    def answer_ids(self, answer: str) -> list[int]:
        return self._encode(answer) + self.end_ids

    def __call__(self, conversations: Sequence[Conversation]) -> ItemChatBatch:
        rows, labels, slots, items = [], [], [], []
        for conv in conversations:
            ids, slot = self.prompt_ids(conv.prompt)
            answer = self.answer_ids(conv.answer)
            rows.append(ids + answer)
            labels.append([IGNORE] * len(ids) + answer)
            slots.append(slot)
            items += conv.items
        width = max(len(r) for r in rows)
        batch = len(rows)
        input_ids = torch.full((batch, width), self.slot_id, dtype=torch.int64)
        label_t = torch.full((batch, width), IGNORE, dtype=torch.int64)
        mask = torch.zeros((batch, width), dtype=torch.int64)
        slot_mask = torch.zeros((batch, width), dtype=torch.bool)
        for b, (row, lab, slot) in enumerate(zip(rows, labels, slots)):
            input_ids[b, : len(row)] = torch.tensor(row)
            label_t[b, : len(lab)] = torch.tensor(lab)
            mask[b, : len(row)] = 1
            slot_mask[b, slot] = True
        return ItemChatBatch(input_ids=input_ids, attention_mask=mask, labels=label_t, slot_mask=slot_mask,
                             item_ids=torch.tensor(items, dtype=torch.int64))
