"""Vision tower + connector as one traceable function (what ``vision_encoder.onnx`` computes)."""

from __future__ import annotations

from typing import Any

import torch


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
