"""Vision tower + connector of each family as one traceable module (what ``vision_encoder.onnx`` computes).

Every module maps pixel_values float32 [B, 3, H, W] (normalised as the manifest's preprocess says) to image features
float32 [B, tokens, lm_hidden], already in LM embedding space. ``batch_size`` is None when B may vary, or the one
batch size the module was built for (the runtime then calls the graph per image).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def image_features(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
    """LLaVA's get_image_features, batched and export-friendly (no per-image Python list).

    pixel_values: float32 [B, 3, H, W], RGB, normalised as the manifest's preprocess says (SigLIP: [-1, 1]).
    Returns float32 [B, num_image_tokens, lm_hidden]: the selected tower layer's patch tokens (CLS dropped under
    the "default" strategy), passed through the multi-modal projector, i.e. already in LM embedding space.
    """
    config = model.config
    llava = model.model
    outputs = llava.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
    layers = config.vision_feature_layer
    layer_ids = [layers] if isinstance(layers, int) else list(layers)
    selected = [outputs.hidden_states[i] for i in layer_ids]
    if config.vision_feature_select_strategy == "default":
        selected = [h[:, 1:] for h in selected]
    hidden = selected[0] if len(selected) == 1 else torch.cat(selected, dim=-1)
    return llava.multi_modal_projector(hidden)


class LlavaVision(nn.Module):
    """LlavaForConditionalGeneration: tower -> selected layer -> projector (see :func:`image_features`)."""

    batch_size = None

    def __init__(self, model: Any, image_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return image_features(self.model, pixel_values)


class Idefics3Vision(nn.Module):
    """Idefics3 / SmolVLM: one tile per batch row -> NaViT tower (every patch real) -> pixel-shuffle connector.

    transformers passes a patch mask for padded images; the runtime's tiles are always whole (mode tiles or a squash
    to one tile), so the tower's own all-ones default is the same computation.
    """

    batch_size = None

    def __init__(self, model: Any, image_size: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.vision_model = model.model.vision_model
        self.connector = model.model.connector

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = self.vision_model(pixel_values=pixel_values).last_hidden_state
        return self.connector(hidden)


class Qwen2VLVision(nn.Module):
    """Qwen2-VL / Qwen2.5-VL at one fixed image size, one image per call.

    The image processor's patchify (reshape into merge blocks, the still image repeated over temporal_patch_size) is
    done here in torch, so the bundle's pixel_values stay plain NCHW. Everything that depends on the grid (rotary
    position ids, attention spans, Qwen2.5-VL's window order) is computed once here, because the tower computes it
    with data-dependent ops that do not export (see transformers.vision_utils). Vision attention runs "eager": the
    sdpa path guards on span lengths, which are data-dependent under torch.export.
    """

    batch_size = 1

    def __init__(self, model: Any, image_size: tuple[int, int]) -> None:
        super().__init__()
        from transformers import vision_utils

        self.visual = model.model.visual
        config = self.visual.config
        self.patch, self.merge, self.temporal = config.patch_size, config.spatial_merge_size, config.temporal_patch_size
        rows, cols = (side // self.patch for side in image_size)
        if rows % self.merge or cols % self.merge:
            raise ValueError(f"image size {image_size} is not a multiple of patch {self.patch} x merge {self.merge}")
        self.grid = torch.tensor([[1, rows, cols]])
        self._precomputed = {
            "position_ids": vision_utils.get_vision_position_ids(self.grid, self.merge),
            "cu_seqlens": vision_utils.get_vision_cu_seqlens(self.grid),
        }
        if hasattr(self.visual, "fullatt_block_indexes"):  # Qwen2.5-VL's windowed attention
            window, spans = vision_utils.get_vision_window_index(self.grid, self.merge, config.window_size, self.patch)
            self._precomputed.update(window_index=window, cu_window_seqlens=spans)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        channels, rows, cols = pixel_values.shape[1], int(self.grid[0, 1]), int(self.grid[0, 2])
        p, m = self.patch, self.merge
        x = pixel_values[0].reshape(channels, rows // m, m, p, cols // m, m, p).permute(1, 4, 2, 5, 0, 3, 6)
        x = x.unsqueeze(5).expand(*x.shape[:5], self.temporal, p, p)
        patches = x.reshape(rows * cols, channels * self.temporal * p * p)
        config = self.visual.config
        attention, config._attn_implementation = config._attn_implementation, "eager"
        try:
            out = self.visual(patches, grid_thw=self.grid, **dict(self._precomputed))  # the tower pops what it uses
        finally:
            config._attn_implementation = attention
        return out.pooler_output.unsqueeze(0)
