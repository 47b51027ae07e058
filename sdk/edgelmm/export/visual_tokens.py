"""Visual-token budget: fewer image tokens for a faster prefill, the cost measured by the export's accuracy check.

Two levers, both applied to the vision graph at export time and recorded in the manifest (``visual_tokens`` and
``text.num_image_tokens``, ``preprocess.image_size``), so the runtime resizes to the exported size and places the
right number of image slots:

    (a) image_size: the tower runs at a smaller square size; its learned position embeddings [grid^2, D] are
        resized bicubically to the new grid once (what SigLIP's ``interpolate_pos_encoding`` does per call),
        so the graph holds the resized table and no resize op.
    (b) pool: k x k average pooling of the connector's output grid [B, g*g, D] -> [B, (g/k)^2, D] (k = 2: 4x fewer).

A model trained at its native size loses accuracy under both; Imp recovered its 196 px variant by fine-tuning at
that size. Recipes say so in ``retraining``; training recipes can take the same budget (pool after the connector).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import types
from typing import Any

import torch
from torch import nn

from edgelmm.errors import SpecError
from edgelmm.models.loaded import LoadedModel
from edgelmm.models.vision import image_features
from edgelmm.runtime.manifest import VisualTokenSpec
from edgelmm.specs import SPEC


@dataclasses.dataclass(**SPEC)
class VisualBudget:
    """How many visual tokens a bundle spends per image."""

    image_size: int | None = None
    """Square input size in pixels for the tower (None: the model's own); a multiple of its patch size."""
    pool: int = 1
    """k x k average pooling of the visual tokens after the connector (1: off; 2: a quarter of the tokens)."""
    retraining: str = ""
    """What recovers the accuracy this budget costs (empty: measured as is)."""

    def __post_init__(self) -> None:
        if self.pool < 1:
            raise SpecError(f"budget.pool must be >= 1, got {self.pool}")
        if self.image_size is not None and self.image_size < 1:
            raise SpecError(f"budget.image_size must be >= 1 pixel, got {self.image_size}")

    @property
    def active(self) -> bool:
        return self.image_size is not None or self.pool > 1


def check_budget(loaded: LoadedModel, budget: VisualBudget) -> VisualTokenSpec:
    """What ``budget`` gives for ``loaded``, or SpecError (every problem at once) if the architecture cannot reach
    it. Cheap: runs before any export work."""
    if not loaded.has_vision:
        raise SpecError(f"model '{loaded.name}' has no vision encoder: a visual-token budget does not apply")
    vision = getattr(loaded.config, "vision_config", None)
    embeddings = _embeddings(loaded)
    if loaded.family_name != "llava" or embeddings is None:
        raise SpecError(f"visual-token budgets need a LLaVA-family model with a learned position table (SigLIP);"
                        f" '{loaded.name}' is family {loaded.family_name}")
    patch = int(vision.patch_size)
    native = loaded.preprocess.image_size
    size = budget.image_size or native[0]
    problems = []
    if native[0] != native[1]:
        problems.append(f"the model's images are not square ({native[0]}x{native[1]})")
    if size % patch:
        problems.append(f"image size {size} is not a multiple of the patch size {patch}")
    if size > native[0]:
        problems.append(f"image size {size} exceeds the model's own {native[0]} (a budget only shrinks)")
    grid = size // patch
    if loaded.config.vision_feature_select_strategy != "full":
        problems.append("pooling needs the full patch grid (vision_feature_select_strategy 'full')")
    if grid % budget.pool:
        problems.append(f"a {grid}x{grid} token grid cannot be pooled {budget.pool}x{budget.pool}")
    if problems:
        raise SpecError("visual-token budget not reachable: " + "; ".join(problems))
    tokens = (grid // budget.pool) ** 2
    return VisualTokenSpec(native_image_size=int(native[0]), image_size=size, native_tokens=loaded.num_image_tokens,
                           pool=budget.pool, tokens=tokens, retraining=budget.retraining)


def apply_budget(loaded: LoadedModel, budget: VisualBudget) -> tuple[LoadedModel, nn.Module, VisualTokenSpec]:
    """``loaded`` as the bundle describes it under ``budget`` (image size, token count) and its vision module."""
    spec = check_budget(loaded, budget)
    size = (spec.image_size, spec.image_size)
    loaded = dataclasses.replace(loaded, num_image_tokens=spec.tokens,
                                 preprocess=dataclasses.replace(loaded.preprocess, image_size=size))
    return loaded, BudgetVision(loaded.model, spec), spec


class BudgetVision(nn.Module):
    """LLaVA's tower + connector at ``spec.image_size``, then ``spec.pool`` x ``spec.pool`` average pooling.

    pixel_values float32 [B, 3, S, S] (normalised as the manifest says) -> image_features [B, tokens, lm_hidden].
    The model itself is not modified: the tower is a copy with a resized position table.
    """

    batch_size = None

    def __init__(self, model: Any, spec: VisualTokenSpec) -> None:
        super().__init__()
        self.tower = _resized_tower(model.model.vision_tower, spec.image_size)
        self.projector = model.model.multi_modal_projector
        self.pool = spec.pool
        # image_features reads model.config and model.model.{vision_tower, multi_modal_projector}: give it ours
        self._view = types.SimpleNamespace(config=model.config, model=types.SimpleNamespace(
            vision_tower=self.tower, multi_modal_projector=self.projector))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = image_features(self._view, pixel_values)
        if self.pool == 1:
            return features
        batch, tokens, dim = features.shape
        grid = math.isqrt(tokens)
        grid_view = features.transpose(1, 2).reshape(batch, dim, grid, grid)
        pooled = nn.functional.avg_pool2d(grid_view, self.pool)
        return pooled.flatten(2).transpose(1, 2)


def _embeddings(loaded: LoadedModel) -> Any:
    tower = getattr(getattr(loaded.model, "model", None), "vision_tower", None)
    embeddings = getattr(getattr(tower, "vision_model", tower), "embeddings", None)
    return embeddings if isinstance(getattr(embeddings, "position_embedding", None), nn.Embedding) else None


def _resized_tower(tower: nn.Module, size: int) -> nn.Module:
    """A copy of ``tower`` whose position table is resized bicubically from its native grid to ``size``'s."""
    tower = copy.deepcopy(tower)
    embeddings = getattr(tower, "vision_model", tower).embeddings
    table = embeddings.position_embedding.weight.detach()  # [grid^2, D]
    native = math.isqrt(table.shape[0])
    grid = size // embeddings.patch_size
    if grid != native:
        square = table.reshape(1, native, native, -1).permute(0, 3, 1, 2)
        resized = nn.functional.interpolate(square, size=(grid, grid), mode="bicubic", align_corners=False)
        embeddings.position_embedding = nn.Embedding.from_pretrained(
            resized.permute(0, 2, 3, 1).reshape(grid * grid, -1).contiguous(), freeze=True)
        embeddings.num_patches = embeddings.num_positions = grid * grid
        embeddings.register_buffer("position_ids", torch.arange(grid * grid).expand((1, -1)), persistent=False)
    embeddings.image_size = size
    tower.config = copy.copy(tower.config)
    tower.config.image_size = size
    return tower
