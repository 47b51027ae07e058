"""The modules ILM's two phases train: ``forward(batch) -> {loss name: scalar}`` for train/loop.py.

Phase 1 (:class:`ItemTextPretraining`): the Q-Former alone, BLIP-2's three objectives with items for images (ITC,
ITG, ITM) plus ILM's item-item contrastive loss (IIC). The Q-Former reads text through its own small embedding
table over the catalog's token ids (a compact vocabulary: the LM's 49k-row table would dwarf the Q-Former).
Phase 2 (:class:`ItemLanguageModel`): item tokens spliced into the frozen LM's input embeddings; next-token loss on
the answer only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from edgelmm.models.item_encoder import ItemEncoder, ItemTokenEncoder
from edgelmm.train import losses
from edgelmm.train.data.interactions import Interactions
from edgelmm.train.data.item_chat import ItemChatBatch

EMBED_DIM = 64
"""Width of the contrastive embeddings (BLIP-2 uses 256 at hidden 768)."""
MAX_TEXT = 48
"""Tokens of item text the Q-Former reads in phase 1 (title + genres + description fit)."""


@dataclasses.dataclass(slots=True)
class ItemTextBatch:
    item_ids: torch.Tensor
    """int64 [B]."""
    partner_ids: torch.Tensor
    """int64 [B]: an item co-engaged with item_ids[i] (IIC positive)."""
    text: torch.Tensor
    """int64 [B, T]: the item's text in the compact vocabulary; position 0 is the [CLS]/[DEC] slot (index 0)."""
    text_mask: torch.Tensor
    """int64 [B, T]."""

    def to(self, device: torch.device | str) -> ItemTextBatch:
        return ItemTextBatch(*(getattr(self, f.name).to(device) for f in dataclasses.fields(self)))

    @property
    def size(self) -> int:
        return int(self.item_ids.shape[0])


class CompactText:
    """The catalog's texts tokenized once, in a compact vocabulary (index 0 = [CLS], 1 = pad, then LM ids)."""

    def __init__(self, data: Interactions, tokenizer: Any) -> None:
        texts = [f"{it.title}. {it.description}" for it in data.items]
        ids = [list(tokenizer(t, add_special_tokens=False)["input_ids"])[: MAX_TEXT - 1] for t in texts]
        vocab = sorted({i for row in ids for i in row})
        index = {tok: n + 2 for n, tok in enumerate(vocab)}
        self.size = len(vocab) + 2
        self.rows = torch.ones(len(ids), MAX_TEXT, dtype=torch.int64)  # pad = 1
        self.mask = torch.zeros(len(ids), MAX_TEXT, dtype=torch.int64)
        for r, row in enumerate(ids):
            self.rows[r, 0] = 0
            self.rows[r, 1: len(row) + 1] = torch.tensor([index[t] for t in row])
            self.mask[r, : len(row) + 1] = 1

    def batch(self, item_ids: Sequence[int], partner_ids: Sequence[int]) -> ItemTextBatch:
        items = torch.tensor(list(item_ids), dtype=torch.int64)
        width = int(self.mask[items].sum(1).max())
        return ItemTextBatch(item_ids=items, partner_ids=torch.tensor(list(partner_ids), dtype=torch.int64),
                             text=self.rows[items, :width], text_mask=self.mask[items, :width])


def pretraining_batch(pairs: np.ndarray, text: CompactText, rng: np.random.Generator, size: int) -> ItemTextBatch:
    """``size`` co-engaged pairs drawn from ``pairs`` int64 [P, 2]."""
    rows = pairs[rng.integers(len(pairs), size=size)]
    return text.batch(rows[:, 0].tolist(), rows[:, 1].tolist())


class ItemTextPretraining(nn.Module):
    """Phase 1: the Q-Former with BLIP-2's heads; computes the losses named in ``self.losses``."""

    def __init__(self, encoder: ItemEncoder, table: torch.Tensor, vocab_size: int,
                 losses_: tuple[str, ...] = ("itc", "itg", "itm", "iic")) -> None:
        super().__init__()
        h = encoder.config.hidden
        self.encoder = encoder
        self.register_buffer("table", table.float(), persistent=False)
        self.losses = losses_
        self.word = nn.Embedding(vocab_size, h)
        nn.init.normal_(self.word.weight, std=0.02)  # BERT's init: the tied output head starts near uniform
        self.position = nn.Embedding(MAX_TEXT, h)
        self.item_proj = nn.Linear(h, EMBED_DIM)
        self.text_proj = nn.Linear(h, EMBED_DIM)
        self.itm_head = nn.Linear(h, 2)
        self.log_temp = nn.Parameter(torch.tensor(float(np.log(0.07))))

    def _text_embeds(self, text: torch.Tensor) -> torch.Tensor:
        return self.word(text) + self.position(torch.arange(text.shape[1], device=text.device))

    def forward(self, batch: ItemTextBatch) -> dict[str, torch.Tensor]:
        cf = self.table[batch.item_ids]
        temp = self.log_temp.exp().clamp(min=1e-3)
        same = batch.item_ids[:, None] == batch.item_ids[None, :]
        terms: dict[str, torch.Tensor] = {}
        queries = self.encoder.query_states(cf)  # [B, K, H]
        item_emb = self.item_proj(queries)
        text_emb = None
        if "itc" in self.losses or "itm" in self.losses:
            text_states = self.encoder.qformer(query_embeds=self._text_embeds(batch.text), query_length=0,
                                               attention_mask=batch.text_mask).last_hidden_state
            text_emb = self.text_proj(text_states[:, 0])
        if "itc" in self.losses:
            terms["itc"] = losses.item_text_contrastive(item_emb, text_emb, temp, same)
        if "iic" in self.losses:
            partner = self.item_proj(self.encoder.query_states(self.table[batch.partner_ids])).mean(1)
            same_pair = batch.item_ids[:, None] == batch.partner_ids[None, :]
            terms["iic"] = losses.item_item_contrastive(item_emb.mean(1), partner, temp, same_pair | same)
        if "itg" in self.losses:
            terms["itg"] = self._itg(cf, batch)
        if "itm" in self.losses:
            terms["itm"] = self._itm(cf, batch, item_emb, text_emb, same)
        return terms

    def _joint(self, cf: torch.Tensor, text: torch.Tensor, text_mask: torch.Tensor, causal: bool) -> torch.Tensor:
        """Q-Former over queries + text. causal (ITG): queries see queries; text sees queries and earlier text."""
        k, t = self.encoder.config.num_item_tokens, text.shape[1]
        allowed = torch.ones(k + t, k + t, dtype=torch.bool, device=text.device)
        if causal:
            allowed[:k, k:] = False
            allowed[k:, k:] = torch.tril(allowed[k:, k:])
        keys = torch.cat([torch.ones_like(text_mask[:, :k]), text_mask], dim=1).bool()  # [B, K + T]
        allowed = allowed[None] & keys[:, None, :]
        mask = torch.zeros(allowed.shape, dtype=torch.float32, device=text.device)
        mask = mask.masked_fill(~allowed, torch.finfo(torch.float32).min)[:, None]
        return self.encoder.query_states(cf, self._text_embeds(text), mask)

    def _itg(self, cf: torch.Tensor, batch: ItemTextBatch) -> torch.Tensor:
        states = self._joint(cf, batch.text, batch.text_mask, causal=True)[:, self.encoder.config.num_item_tokens:]
        logits = states[:, :-1] @ self.word.weight.T  # tied output head over the compact vocabulary
        targets = batch.text[:, 1:].masked_fill(batch.text_mask[:, 1:] == 0, losses.IGNORE)
        return losses.masked_ce(logits, targets)

    def _itm(self, cf: torch.Tensor, batch: ItemTextBatch, item_emb: torch.Tensor, text_emb: torch.Tensor,
             same: torch.Tensor) -> torch.Tensor:
        """Positives, plus for each item the hardest in-batch text that is not its own (BLIP-2's hard negatives)."""
        with torch.no_grad():
            sim = torch.einsum("bke,ce->bck", F.normalize(item_emb, dim=-1), F.normalize(text_emb, dim=-1)).amax(-1)
            negative = sim.masked_fill(same, float("-inf")).argmax(1)
        has_negative = ~same.all(1)
        cf_all = torch.cat([cf, cf[has_negative]])
        text_all = torch.cat([batch.text, batch.text[negative][has_negative]])
        mask_all = torch.cat([batch.text_mask, batch.text_mask[negative][has_negative]])
        states = self._joint(cf_all, text_all, mask_all, causal=False)[:, : self.encoder.config.num_item_tokens]
        labels = torch.cat([torch.ones(len(cf), dtype=torch.int64), torch.zeros(int(has_negative.sum()),
                                                                                   dtype=torch.int64)])
        return losses.item_text_matching(self.itm_head(states).mean(1), labels.to(cf.device))


class ItemLanguageModel(nn.Module):
    """Phase 2 and inference: the frozen LM reading item tokens at the batch's slots."""

    def __init__(self, lm: nn.Module, items: ItemTokenEncoder) -> None:
        super().__init__()
        self.lm = lm
        self.items = items

    def embed(self, input_ids: torch.Tensor, slot_mask: torch.Tensor, item_ids: torch.Tensor) -> torch.Tensor:
        """float32 [B, L, H]: token embeddings with item tokens written into the slots, in batch-major order."""
        embeds = self.lm.get_input_embeddings()(input_ids)
        if item_ids.numel() == 0:
            return embeds
        tokens = self.items(item_ids).reshape(-1, embeds.shape[-1])
        return embeds.masked_scatter(slot_mask[..., None], tokens.to(embeds.dtype))

    def forward(self, batch: ItemChatBatch) -> dict[str, torch.Tensor]:
        embeds = self.embed(batch.input_ids, batch.slot_mask, batch.item_ids)
        hidden = self.lm.model(inputs_embeds=embeds, attention_mask=batch.attention_mask).last_hidden_state
        return {"ce": losses.next_token_ce(hidden, batch.labels, self.lm.lm_head)}
