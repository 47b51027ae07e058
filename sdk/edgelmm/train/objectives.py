"""Stage modules: ``forward(batch) -> {loss name: scalar}``. The loop weights and sums the terms a stage names.

- ContrastiveTower (stage 0): the vision tower plus SigLIP's attention-pooling head and projections into the frozen
  text encoder's embedding space. Only the tower is kept afterwards; head and projections are stage-0 scaffolding,
  as SigLIP's own head is dropped by LLaVA-style models.
- LanguageModeling (stages 1 and 2): the whole LLaVA; next-token cross-entropy on the labelled tokens.
- Distillation (llava-kd's DPT and DFT): the student's CE plus LLaVA-KD's MDist / RDist against a frozen teacher
  that sees the same batch in the same step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.siglip.modeling_siglip import SiglipMultiheadAttentionPoolingHead

from edgelmm.errors import TrainingError
from edgelmm.train.data.base import GRID
from edgelmm.train.data.shapes import COLOURS, SHAPES, SIZES
from edgelmm.train.data.collate import ContrastiveBatch, GroundBatch, LMBatch
from edgelmm.train.losses import (
    IGNORE,
    masked_ce,
    mdist_response,
    mdist_visual,
    next_token_ce,
    rdist,
    sigmoid_loss,
    supervised_positions,
    word_grounding,
)


def cell_weights(image_size: int, patch_size: int, grid: int = GRID) -> torch.Tensor:
    """float32 [grid * grid, patches]: each row averages the patch tokens by their area of overlap with one cell."""
    side = image_size // patch_size
    weights = torch.zeros(grid * grid, side * side)
    for cell in range(grid * grid):
        r, c = divmod(cell, grid)
        for patch in range(side * side):
            pr, pc = divmod(patch, side)
            dy = min((r + 1) / grid, (pr + 1) / side) - max(r / grid, pr / side)
            dx = min((c + 1) / grid, (pc + 1) / side) - max(c / grid, pc / side)
            weights[cell, patch] = max(dy, 0.0) * max(dx, 0.0)
    return weights / weights.sum(dim=1, keepdim=True)


class ContrastiveTower(nn.Module):
    """SigLIP pretraining of a SiglipVisionModel against frozen text embeddings of dimension ``embed_dim``."""

    def __init__(self, tower: nn.Module, embed_dim: int, losses: tuple[str, ...] = ("siglip", "siglip-regional")) -> None:
        super().__init__()
        config = tower.config
        self.tower = tower
        self.losses = losses
        self.head = SiglipMultiheadAttentionPoolingHead(config)  # SigLIP's MAP head: a learned query attends
        self.proj = nn.Linear(config.hidden_size, embed_dim)
        self.region_proj = nn.Linear(config.hidden_size, embed_dim)
        # The text encoder stays frozen; a linear adapter on its output (identity at the start) lets training spread
        # MiniLM's embeddings of our near-identical phrases ("a small red circle" / "a small red square": cosine
        # ~0.8) apart, which SigLIP's learnable temperature alone does only over far longer schedules than ours.
        self.text_adapter = nn.Linear(embed_dim, embed_dim)
        with torch.no_grad():
            self.text_adapter.weight.copy_(torch.eye(embed_dim))
            self.text_adapter.bias.zero_()
        n_shapes, n_colours, n_sizes = len(SHAPES) + 1, len(COLOURS), len(SIZES)
        self.attribute_split = (n_shapes, n_colours, n_sizes)
        self.cell_head = nn.Linear(config.hidden_size, n_shapes + n_colours + n_sizes)
        self.digit_head = nn.Linear(config.hidden_size, 10)
        # SigLIP initialises t' = log 10 and b = -10 so that the many negatives start near zero loss.
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = nn.Parameter(torch.tensor(-10.0))
        self.region_bias = nn.Parameter(torch.tensor(-10.0))
        self.register_buffer("cells", cell_weights(int(config.image_size), int(config.patch_size)), persistent=False)

    def train_heads(self) -> None:
        """Make the scaffolding of the requested losses trainable and the rest frozen (DDP needs every trainable
        parameter to get a gradient). The tower's own trainability is the stage's to set."""
        unused = {"siglip-regional": ("region_proj.", "region_bias"), "attributes": ("cell_head.", "digit_head.")}
        skip = tuple(p for loss, prefixes in unused.items() if loss not in self.losses for p in prefixes)
        for name, param in self.named_parameters():
            if not name.startswith("tower."):
                param.requires_grad_(not name.startswith(skip))

    def text(self, emb: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_adapter(emb), dim=-1)

    def forward(self, batch: ContrastiveBatch) -> dict[str, torch.Tensor]:
        out = self.tower(batch.pixel_values, output_hidden_states=True)
        pooled = self.head(out.last_hidden_state)  # [B, hidden]
        terms = {"siglip": sigmoid_loss(self.proj(pooled), self.text(batch.text_emb), batch.labels, self.log_scale,
                                        self.bias)}
        # The LM reads the last layer's patch tokens (before post_layernorm): the cell terms train exactly those.
        tokens = out.hidden_states[-1]  # [B, patches, hidden]
        regions = torch.einsum("rp,bph->brh", self.cells.to(tokens.dtype), tokens)  # [B, cells, hidden]
        if "siglip-regional" in self.losses:
            # sigmoid_loss averages over its rows (cells); times cells per image it sums per image, as "siglip" does.
            terms["siglip-regional"] = sigmoid_loss(
                self.region_proj(regions.flatten(0, 1)), self.text(batch.region_emb), batch.region_labels,
                self.log_scale, self.region_bias) * self.cells.shape[0]
        if "attributes" in self.losses:
            # The digit head reads the mean of the same tokens: through SigLIP's attention-pooling head it stayed near
            # chance (18% after 400 steps of digits alone, vs 41% for the mean; docs/training.md).
            logits = self.cell_head(regions).split(self.attribute_split, dim=-1)
            terms["attributes"] = sum(masked_ce(lg, batch.attributes[..., i]) for i, lg in enumerate(logits)) \
                + masked_ce(self.digit_head(tokens.mean(dim=1)), batch.digits)
        return terms


class WordGrounding(nn.Module):
    """The connector learns to emit, at each cell's visual token, what the LM's own input embeddings of that cell's
    words ("small red circle top left", "empty center") average to, at the embedding table's median norm.

    Why: trained on captions and answers alone, smol-vqa's connector ended at 7x the text-embedding norm with the
    nine tokens of a scene at 0.60 mean pairwise cosine (docs/training.md): the LM then has to learn to read a
    foreign code through LoRA. Starting from tokens that already sit among the words the LM knows is cheap (tower +
    connector only, no LM forward: 0.12 s per 64 images vs 1.9 s per 16 for an instruct step) and measured better
    (docs/training.md). With one visual token per grid cell (smol-vqa's 96 px / patch 32 tower) each token is
    grounded itself; other towers ground the cell averages of their tokens (cell_weights). The LM and the tower are
    not touched.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        tower = model.config.vision_config
        table = model.get_input_embeddings().weight.detach()
        self.register_buffer("target_norm", table.norm(dim=-1).median(), persistent=False)
        self.register_buffer("cells", cell_weights(int(tower.image_size), int(tower.patch_size)), persistent=False)

    def _targets(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids int64 [..., L] (IGNORE-padded) -> (targets float [..., H] at target_norm, mask bool [...])."""
        valid = ids != IGNORE
        table = self.model.get_input_embeddings().weight.detach()
        summed = (table[ids.clamp_min(0)] * valid.unsqueeze(-1)).sum(dim=-2)
        mean = summed / valid.sum(dim=-1, keepdim=True).clamp_min(1)
        return F.normalize(mean, dim=-1) * self.target_norm, valid.any(dim=-1)

    def forward(self, batch: GroundBatch) -> dict[str, torch.Tensor]:
        config = self.model.config
        out = self.model.model.get_image_features(
            pixel_values=batch.pixel_values, vision_feature_layer=config.vision_feature_layer,
            vision_feature_select_strategy=config.vision_feature_select_strategy)
        tokens = torch.stack(list(out.pooler_output))  # [B, T, H]: what the LM reads
        regions = torch.einsum("rp,bph->brh", self.cells.to(tokens.dtype), tokens)  # [B, cells, H]
        cell_targets, cell_mask = self._targets(batch.word_ids)
        pooled_targets, pooled_mask = self._targets(batch.pooled_ids)
        pieces = torch.cat([regions, tokens.mean(dim=1, keepdim=True)], dim=1)
        return {"ground": word_grounding(pieces, torch.cat([cell_targets, pooled_targets[:, None]], dim=1),
                                         torch.cat([cell_mask, pooled_mask[:, None]], dim=1))}


class LanguageModeling(nn.Module):
    """LLaVA forward with the LM head applied only where labels exist ("ce": caption or answer tokens)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: LMBatch) -> dict[str, torch.Tensor]:
        out = self.model.model(input_ids=batch.input_ids, pixel_values=batch.pixel_values,
                               attention_mask=batch.attention_mask, use_cache=False)
        return {"ce": next_token_ce(out.last_hidden_state, batch.labels, self.model.lm_head)}


class Distillation(nn.Module):
    """Student LLaVA trained on CE + LLaVA-KD's distillation terms; the teacher runs under no_grad, same batch.

    The teacher is held outside the module tree (not a submodule): it never reaches the optimizer, DDP or a
    checkpoint. Both models must share token ids and the number of visual tokens per image (llava-kd builds the
    student with the teacher's tower and tokenizer). Logits are computed at every position ([B, S, V]): the answer
    and visual positions the terms need are most of a short VQA sequence.
    """

    def __init__(self, model: nn.Module, teacher: nn.Module, *, image_token_id: int, losses: tuple[str, ...],
                 temperature: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self._teacher = (teacher,)
        self.image_token_id = image_token_id
        self.losses = losses
        self.temperature = temperature

    def _logits(self, model: nn.Module, batch: LMBatch) -> torch.Tensor:
        out = model.model(input_ids=batch.input_ids, pixel_values=batch.pixel_values,
                          attention_mask=batch.attention_mask, use_cache=False)
        return model.lm_head(out.last_hidden_state)  # [B, S, V]

    def forward(self, batch: LMBatch) -> dict[str, torch.Tensor]:
        student = self._logits(self.model, batch)
        mask, targets = supervised_positions(batch.labels)
        terms = {"ce": masked_ce(student[mask], targets)}
        with torch.no_grad():
            teacher = self._logits(self._teacher[0], batch)
        visual = batch.input_ids == self.image_token_id  # [B, S]: each image's N_vis slots
        if "mdist-response" in self.losses:
            terms["mdist-response"] = mdist_response(student, teacher, batch.labels, self.temperature)
        if "mdist-visual" in self.losses:
            terms["mdist-visual"] = mdist_visual(student, teacher, visual, self.temperature)
        if "rdist" in self.losses:
            rows = int(visual.sum(dim=1)[0])
            if not bool((visual.sum(dim=1) == rows).all()):
                raise TrainingError("rdist needs the same number of visual tokens in every sequence of a batch")
            terms["rdist"] = rdist(student[visual].view(-1, rows, student.shape[-1]),
                                   teacher[visual].view(-1, rows, teacher.shape[-1]))
        return terms
