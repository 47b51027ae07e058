"""Losses as pure functions with shape docstrings. LOSSES names every loss a StageSpec may ask for.

IGNORE (-100) marks label positions that carry no loss (prompt, image slots, padding), as in LLaVA and transformers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

IGNORE = -100

LOSSES: dict[str, str] = {
    "siglip": "SigLIP sigmoid loss: pooled image embedding vs frozen text embeddings of its captions",
    "siglip-regional": "the same sigmoid loss per grid cell: a cell's pooled patch tokens vs its object's phrase",
    "attributes": "auxiliary cross-entropy of per-cell shape/colour/size heads and a digit head (labels of the "
                  "built-in datasets); a documented addition to SigLIP, see docs/training.md",
    "ce": "next-token cross-entropy on the labelled tokens only: the caption, or the answer (LLaVA masking)",
    "ground": "word grounding of the connector: each visual token vs the LM's own input embedding of the words "
              "that describe its cell (\"small red circle top left\", \"empty center\"), mean squared error",
    "itc": "ILM item-text contrastive: best-matching query output vs the text's [CLS] state, in-batch negatives",
    "itg": "ILM item-grounded generation: the Q-Former decodes the item's text from its queries (causal text mask)",
    "itm": "ILM item-text matching: binary match head on the queries after joint item+text attention",
    "iic": "ILM item-item contrastive: items engaged by the same user are positives, in-batch negatives",
}
"""name -> what it computes. Stages name their losses; the stage's step function computes exactly those."""


def sigmoid_loss(
    image_emb: torch.Tensor, text_emb: torch.Tensor, labels: torch.Tensor, log_scale: torch.Tensor, bias: torch.Tensor
) -> torch.Tensor:
    """SigLIP's pairwise sigmoid loss (Zhai et al. 2023, eq. 2), with any number of positives per image.

    image_emb: float [N, D] (normalised here); text_emb: float [M, D], unit norm (frozen MiniLM embeddings);
    labels: float [N, M], +1 where text j describes image i, else -1; log_scale, bias: scalar parameters
    (the paper initialises them at log 10 and -10). Returns the scalar ``-sum(log sigmoid(labels * logits)) / N``.
    Every pair is an independent binary decision, so several positives per image (one per object) need no
    change to the loss, unlike softmax contrastive losses.
    """
    logits = F.normalize(image_emb, dim=-1) @ text_emb.T * log_scale.exp() + bias
    return -F.logsigmoid(labels * logits).sum() / max(image_emb.shape[0], 1)


def masked_ce(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose target is not IGNORE.

    logits: float [K, V] (already gathered at the supervised positions, or [..., V] with matching targets);
    targets: int64 [K] (or [...]). Computed in float32 whatever the logits' dtype (bf16 on GPU).
    """
    if not bool((targets != IGNORE).any()):
        return logits.sum() * 0.0  # nothing supervised in this batch: zero, but still part of the graph (DDP)
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=IGNORE)


def supervised_positions(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where next-token targets exist: (mask [B, S] over the positions that predict, targets [K]).

    labels: int64 [B, S] with IGNORE on unsupervised tokens. Position t predicts labels[t + 1] (the causal shift),
    so the mask is True at t when labels[t + 1] != IGNORE; targets are those labels in row-major order.
    """
    shifted = labels[:, 1:]
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = shifted != IGNORE
    return mask, shifted[shifted != IGNORE]


def next_token_ce(hidden: torch.Tensor, labels: torch.Tensor, lm_head: torch.nn.Module) -> torch.Tensor:
    """Causal-LM loss evaluated only where there is a target.

    hidden: float [B, S, H] (the LM's last hidden states); labels: int64 [B, S] with IGNORE. The LM head
    ([H] -> [V], V = 49k for SmolLM2) runs only on the supervised positions: with answer-only labels that is a few
    rows per sequence instead of all of them, which saves most of the head's cost in training.
    """
    mask, targets = supervised_positions(labels)
    if targets.numel() == 0:
        return hidden.sum() * 0.0  # keeps the graph (DDP) while contributing nothing
    return masked_ce(lm_head(hidden[mask]), targets)


def word_grounding(tokens: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error between visual tokens and word-embedding targets, in units of a token's mean square.

    tokens, targets: float [B, T, H] (connector outputs and the targets at the LM's embedding scale); mask: bool
    [B, T], which tokens have a target. The error is divided by the targets' mean square per dimension, so 1.0 is
    "as far as predicting zero" and 0 is exact, whatever the LM's embedding scale. Zero when tokens == targets.
    """
    if not bool(mask.any()):
        return tokens.sum() * 0.0
    picked, goal = tokens[mask].float(), targets[mask].float()
    return F.mse_loss(picked, goal) / goal.pow(2).mean().clamp_min(1e-12)


# ----------------------------------------------------------------------------------------------------------------
# Distillation (LLaVA-KD, arXiv 2410.16236; shared/docs/methods.md section 2 gives the reference code's formulas)

LOSSES.update({
    "mdist-response": "LLaVA-KD MDist on the answer: forward KL(teacher || student) of next-token distributions at the "
                      "supervised positions after the shift, mean over answer tokens",
    "mdist-visual": "LLaVA-KD MDist on the image: the same KL at every visual-token position (unshifted), mean over "
                    "images x visual tokens",
    "rdist": "LLaVA-KD RDist: 1 - cosine between the flattened teacher and student Gram matrices of visual-position "
             "logits",
})

RDIST_CHUNK = 8192
"""Vocabulary columns per Gram-matrix partial product: bounds the float32 copy of a logits slice."""


def forward_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Mean over rows of KL(softmax(teacher / T) || softmax(student / T)), times T^2.

    student_logits, teacher_logits: float [K, V] (rows = positions, already selected; any dtype, computed in
    float32). Returns a scalar >= 0, zero when the rows are equal. The teacher distribution is the target (forward
    KL), as LLaVA-KD's ``KLDivLoss(reduction="batchmean")(log_softmax(student), softmax(teacher))`` with K rows.
    The T^2 factor (Hinton et al. 2015) keeps gradient sizes comparable across temperatures; at the paper's T = 1
    it is 1. With no rows the result is a graph-connected zero (DDP needs every step to touch the parameters).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ")
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    log_q = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    kl = F.kl_div(log_q, log_p, log_target=True, reduction="sum") / student_logits.shape[0]
    return kl * temperature**2


def mdist_response(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                   temperature: float = 1.0) -> torch.Tensor:
    """MDist on response tokens: forward KL at the positions that predict a supervised (answer) token.

    student_logits, teacher_logits: float [B, S, V] over the same input ids; labels: int64 [B, S] with IGNORE on
    prompt, image and padding tokens. Position t is kept when labels[t + 1] != IGNORE (the causal shift, as
    ``logits[..., :-1, :]`` against ``labels[..., 1:]`` in the reference), so the mean runs over the answer tokens.
    """
    mask, _ = supervised_positions(labels)
    return forward_kl(student_logits[mask], teacher_logits[mask], temperature)


def mdist_visual(student_logits: torch.Tensor, teacher_logits: torch.Tensor, visual_mask: torch.Tensor,
                 temperature: float = 1.0) -> torch.Tensor:
    """MDist on the image: forward KL at the visual-token positions themselves (no shift), mean over B x N_vis.

    student_logits, teacher_logits: float [B, S, V]; visual_mask: bool [B, S], True at the image-token slots
    (each image's N_vis positions). The reference keeps the 728 positions [s, s + 728) of one image per sample.
    """
    return forward_kl(student_logits[visual_mask], teacher_logits[visual_mask], temperature)


def gram(logits: torch.Tensor, chunk: int = RDIST_CHUNK) -> torch.Tensor:
    """Relation matrices Z Z^T over the vocabulary, accumulated in column chunks.

    logits: float [B, N, V] (visual-position logits of each image) -> float32 [B, N, N]. Summing partial products
    over vocab slices never materialises a float32 copy of the whole [B, N, V] tensor (V = 49k for SmolLM2; the
    paper's 152k x 728 positions is the memory hot-spot it warns about).
    """
    out = logits.new_zeros(logits.shape[0], logits.shape[1], logits.shape[1], dtype=torch.float32)
    for start in range(0, logits.shape[-1], chunk):
        block = logits[..., start: start + chunk].float()
        out = out + block @ block.transpose(1, 2)
    return out


def rdist(student_visual: torch.Tensor, teacher_visual: torch.Tensor, chunk: int = RDIST_CHUNK) -> torch.Tensor:
    """RDist: 1 - cos(vec(R_T), vec(R_S)) with R = Z Z^T of the visual-position logits (one cosine, whole batch).

    student_visual, teacher_visual: float [B, N_vis, V] logits at the image-token positions. Returns a scalar in
    [0, 2]: 0 when the student's token-to-token relations are a positive multiple of the teacher's.
    """
    if student_visual.shape != teacher_visual.shape:
        raise ValueError(f"student visual logits {tuple(student_visual.shape)} and teacher's "
                         f"{tuple(teacher_visual.shape)} differ")
    r_s, r_t = gram(student_visual, chunk).flatten(), gram(teacher_visual, chunk).flatten()
    return 1.0 - F.cosine_similarity(r_s, r_t, dim=0)


# ----------------------------------------------------------------------------------------------------------------
# Item-Language Model (phase 1)


def item_text_contrastive(query_emb: torch.Tensor, text_emb: torch.Tensor, temperature: torch.Tensor,
                          same: torch.Tensor | None = None) -> torch.Tensor:
    """BLIP-2's ITC with items for images: symmetric InfoNCE over the batch.

    query_emb: float [B, K, E], text_emb: float [B, E] (both normalised here); temperature: positive scalar.
    An item's similarity to a text is the max over its K query embeddings. ``same``: optional bool [B, B], True
    where item i and text j are the same item (duplicates in a batch are not negatives). Returns a scalar.
    """
    q, t = F.normalize(query_emb, dim=-1), F.normalize(text_emb, dim=-1)
    sim = torch.einsum("bke,ce->bck", q, t).amax(-1) / temperature  # [B items, B texts]
    return _symmetric_infonce(sim, same)


def item_item_contrastive(a: torch.Tensor, b: torch.Tensor, temperature: torch.Tensor,
                          same: torch.Tensor | None = None) -> torch.Tensor:
    """ILM's item-item contrastive loss: a[i] and b[i] were co-engaged (positives), other rows are negatives.

    a, b: float [B, E] (normalised here); ``same``: optional bool [B, B] marking pairs that are not true negatives
    (b[j] is a[i]'s item or also co-engaged with it). Returns a scalar.
    """
    sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / temperature
    return _symmetric_infonce(sim, same)


def _symmetric_infonce(sim: torch.Tensor, same: torch.Tensor | None) -> torch.Tensor:
    if same is not None:  # drop false negatives; keep the diagonal
        eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
        sim = sim.masked_fill(same & ~eye, torch.finfo(sim.dtype).min)
    target = torch.arange(sim.shape[0], device=sim.device)
    return (F.cross_entropy(sim, target) + F.cross_entropy(sim.T, target)) / 2


def item_text_matching(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ITM: cross-entropy of match logits float [N, 2] against labels int64 [N] (1 = the text is the item's)."""
    return F.cross_entropy(logits, labels)
