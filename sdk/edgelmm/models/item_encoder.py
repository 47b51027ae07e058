"""The Item-Language Model's item encoder (ILM, arXiv 2406.02844; shared/docs/methods.md section 3).

A collaborative-filtering (CF) item vector becomes K "item tokens" in the frozen LM's input-embedding space:

    cf [B, cf_dim] --linear--> M memory tokens [B, M, H] --(cross-attention)--> Q-Former(K learned queries)
        -> [B, K, H] --adaptor (linear)--> item tokens [B, K, lm_hidden]

The Q-Former is transformers' ``Blip2QFormerModel`` (BLIP-2's querying transformer) at a small config. A CF vector
is one vector, and cross-attention over a single key is a fixed linear map, so it is first spread into M memory
tokens by a learned linear layer (our choice; the paper does not say how it shapes the CF input).

``kind="mlp"`` is the paper's baseline (a CoLLM-style MLP projection): cf -> MLP -> K tokens, no Q-Former.
The phase-1 text side (item-text contrastive / matching / grounded generation) reuses the same Q-Former on text
embeddings, as BLIP-2 does; it lives in train/item_lm_objectives.py and is not part of the exported encoder.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn
from transformers import Blip2QFormerConfig, Blip2QFormerModel

from edgelmm.errors import SpecError
from edgelmm.specs import SPEC

ENCODER_KINDS = ("qformer", "mlp")


@dataclasses.dataclass(**SPEC)
class ItemEncoderConfig:
    cf_dim: int
    lm_hidden: int
    kind: str = "qformer"
    num_item_tokens: int = 4
    """K: decoder positions one item occupies."""
    memory_tokens: int = 4
    """M: cross-attention keys the CF vector is spread into."""
    hidden: int = 128
    layers: int = 2
    heads: int = 4
    intermediate: int = 256

    def __post_init__(self) -> None:
        if self.kind not in ENCODER_KINDS:
            raise SpecError(f"item encoder kind '{self.kind}' is not valid; valid: {', '.join(ENCODER_KINDS)}")
        sizes = (self.cf_dim, self.lm_hidden, self.num_item_tokens, self.memory_tokens, self.hidden, self.layers,
                 self.heads, self.intermediate)
        if min(sizes) < 1 or self.hidden % self.heads:
            raise SpecError(f"item encoder: sizes must be >= 1 and hidden divisible by heads; got {self}")


class ItemEncoder(nn.Module):
    """cf float32 [B, cf_dim] -> item tokens float32 [B, K, lm_hidden] (forward); query_states for phase 1."""

    def __init__(self, config: ItemEncoderConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        if c.kind == "mlp":
            self.mlp = nn.Sequential(nn.Linear(c.cf_dim, c.intermediate), nn.GELU(),
                                     nn.Linear(c.intermediate, c.num_item_tokens * c.lm_hidden))
            return
        self.memory = nn.Linear(c.cf_dim, c.memory_tokens * c.hidden)
        self.query_tokens = nn.Parameter(torch.randn(1, c.num_item_tokens, c.hidden) * 0.02)
        qconfig = Blip2QFormerConfig(hidden_size=c.hidden, num_hidden_layers=c.layers, num_attention_heads=c.heads,
                                     intermediate_size=c.intermediate, encoder_hidden_size=c.hidden,
                                     cross_attention_frequency=1, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0, use_qformer_text_input=True)
        # use_qformer_text_input: the text feed-forward BLIP-2 uses for ITC/ITG/ITM (phase 1); unused by item tokens
        qconfig._attn_implementation = "eager"  # exports to plain MatMul/Softmax ops (no SDPA) for any runtime
        self.qformer = Blip2QFormerModel(qconfig)
        self.adaptor = nn.Linear(c.hidden, c.lm_hidden)

    def memory_states(self, cf: torch.Tensor) -> torch.Tensor:
        """float32 [B, M, H]: the CF vector spread into the Q-Former's cross-attention keys."""
        return self.memory(cf).view(cf.shape[0], self.config.memory_tokens, self.config.hidden)

    def query_states(self, cf: torch.Tensor, text: torch.Tensor | None = None,
                     mask: torch.Tensor | None = None) -> torch.Tensor:
        """Q-Former outputs float32 [B, K (+ T), H] for the queries (and ``text`` embeddings [B, T, H] after them).

        ``mask``: additive float [B, 1, K + T, K + T] self-attention mask (None: everything sees everything).
        """
        queries = self.query_tokens.expand(cf.shape[0], -1, -1)
        embeds = queries if text is None else torch.cat([queries, text], dim=1)
        return self.qformer(query_embeds=embeds, query_length=queries.shape[1], attention_mask=mask,
                            encoder_hidden_states=self.memory_states(cf)).last_hidden_state

    def forward(self, cf: torch.Tensor) -> torch.Tensor:
        if self.config.kind == "mlp":
            return self.mlp(cf).view(cf.shape[0], self.config.num_item_tokens, self.config.lm_hidden)
        return self.adaptor(self.query_states(cf))


class ItemTokenEncoder(nn.Module):
    """What the bundle's ``item_encoder.onnx`` computes: item ids int64 [N] -> item tokens float32 [N, K, lm_hidden].

    The CF table is a buffer here only for training and parity checks; the exported graph takes the CF rows as
    input (the runtime gathers them from the bundle's table file), so a new catalog needs no new graph.
    """

    def __init__(self, encoder: ItemEncoder, table: torch.Tensor) -> None:
        super().__init__()
        self.encoder = encoder
        self.register_buffer("table", table.float(), persistent=False)

    def forward(self, item_ids: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.table[item_ids])


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class ItemLMEntry:
    """A base for the ilm recipe: which frozen LM, and the item encoder's shape (cf_dim and lm_hidden follow)."""

    lm: str
    """A registry LM (edgelmm.models.registry.MODELS)."""
    encoder: dict
    """ItemEncoderConfig fields other than cf_dim and lm_hidden."""
    cf_dim: int = 32


ITEM_LMS: dict[str, ItemLMEntry] = {
    # SmolLM2-135M (frozen) + a 2-layer Q-Former at hidden 128 (~0.6 M parameters with the adaptor), K = 4.
    "smol-ilm": ItemLMEntry(lm="smollm2-135m", encoder={"kind": "qformer"}),
    # The paper's baseline: an MLP from the CF vector to the same K tokens, no Q-Former (no phase 1 possible).
    "smol-ilm-mlp": ItemLMEntry(lm="smollm2-135m", encoder={"kind": "mlp"}),
    # Tiny random LM (hidden 32) for tests.
    "tiny-ilm": ItemLMEntry(lm="tiny-random-lm", cf_dim=16,
                            encoder={"kind": "qformer", "hidden": 32, "heads": 2, "intermediate": 64}),
    "tiny-ilm-mlp": ItemLMEntry(lm="tiny-random-lm", cf_dim=16, encoder={"kind": "mlp", "intermediate": 64}),
}


def encoder_config(base: str, lm_hidden: int) -> ItemEncoderConfig:
    from edgelmm.registry import lookup

    entry = lookup(ITEM_LMS, base, what="item-language base model")
    return ItemEncoderConfig(cf_dim=entry.cf_dim, lm_hidden=lm_hidden, **entry.encoder)


ILM_FORMAT = "edgelmm-ilm"
ILM_SCHEMA_VERSION = 1


def is_item_lm_dir(path: object) -> bool:
    """True when ``path`` is a directory written by `edgelmm train --recipe ilm` (its meta.json says so)."""
    import json
    from pathlib import Path

    meta = Path(str(path)) / "meta.json"
    try:
        return meta.is_file() and json.loads(meta.read_text()).get("format") == ILM_FORMAT
    except (OSError, ValueError):
        return False


def load_item_lm_dir(directory: object, *, with_lm: bool = True
                     ) -> tuple[Any, ItemEncoder, torch.Tensor, torch.Tensor, dict]:
    """(frozen LM LoadedModel (None unless ``with_lm``), item encoder (eval), CF item table float32
    [items, cf_dim], item bias [items], meta)."""
    from pathlib import Path

    from safetensors.torch import load_file

    from edgelmm.meta_json import read_versioned
    from edgelmm.models.registry import build_model
    from edgelmm.specs import from_dict

    directory = Path(str(directory))
    meta = read_versioned(directory / "meta.json", fmt=ILM_FORMAT, version=ILM_SCHEMA_VERSION,
                          what="an item-language model", missing=f"'{directory}' is not an ilm model directory")
    tensors = load_file(str(directory / "model.safetensors"))
    lm = build_model(meta["lm"]) if with_lm else None
    if lm is not None:
        lm.model.requires_grad_(False)
    encoder = ItemEncoder(from_dict(ItemEncoderConfig, meta["encoder"], where=str(directory / "meta.json")))
    encoder.load_state_dict({n[len("encoder."):]: t for n, t in tensors.items() if n.startswith("encoder.")},
                            strict=True)
    return lm, encoder.eval(), tensors["cf.item"].float(), tensors["cf.item_bias"].float(), meta
