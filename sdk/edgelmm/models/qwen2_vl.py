"""Qwen2-VL and Qwen2.5-VL at one fixed image size per bundle, with M-RoPE positions computed by the runtime.

The vision tower takes any grid in transformers, but its grid-dependent parts do not export (see models/vision.py),
so a bundle is built for one image size: the runtime squashes every image to it, the vision graph emits
(rows x cols) merged tokens, and the manifest's ``positions`` (scheme mrope, that grid) lets the runtime compute the
3-D position ids transformers' ``get_rope_index`` would. The default size is what transformers' own resize gives a
448 x 448 image under the processor's pixel limits (256 tokens for the released checkpoints).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoImageProcessor, AutoTokenizer
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

from edgelmm.errors import SpecError
from edgelmm.models.lmm import image_text_loaded, preprocess_spec
from edgelmm.models.loaded import LoadedModel
from edgelmm.runtime.manifest import PositionSpec

DEFAULT_SIDE = 448


class Qwen2VLProcessor(transformers.Qwen2VLProcessor):
    """transformers' Qwen2VLProcessor without its video processor (it needs torchvision; images never use it)."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None,
                 **kwargs: Any) -> None:
        # The parent passes (image_processor, tokenizer, None) to ProcessorMixin, which zips them with this
        # signature's two attributes, so the missing video processor is never type-checked.
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class Qwen2_5_VLProcessor(transformers.Qwen2_5_VLProcessor):  # noqa: N801 - transformers' name
    """transformers' Qwen2_5_VLProcessor without its video processor."""

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: str | None = None,
                 **kwargs: Any) -> None:
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


def load_qwen2_vl(root: Path, image_size: tuple[int, int] | None = None) -> LoadedModel:
    """A saved Qwen2VLForConditionalGeneration or Qwen2_5_VLForConditionalGeneration directory (images only); the
    bundle takes ``image_size`` (H, W) images (default: :func:`default_image_size`)."""
    model = transformers.AutoModelForImageTextToText.from_pretrained(root, dtype=torch.float32).eval()
    processor_cls = Qwen2_5_VLProcessor if model.config.model_type == "qwen2_5_vl" else Qwen2VLProcessor
    tokenizer = AutoTokenizer.from_pretrained(root)
    processor = processor_cls.from_pretrained(root, image_processor=AutoImageProcessor.from_pretrained(root),
                                              tokenizer=tokenizer)
    return qwen2_vl_loaded(root.name, model, processor, image_size)


def default_image_size(image_processor: Any) -> tuple[int, int]:
    """The size transformers resizes a DEFAULT_SIDE square image to under the processor's pixel limits."""
    factor = image_processor.patch_size * image_processor.merge_size
    size = image_processor.size
    return smart_resize(DEFAULT_SIDE, DEFAULT_SIDE, factor, size["shortest_edge"], size["longest_edge"])


def qwen2_vl_loaded(name: str, model: Any, processor: Any, image_size: tuple[int, int] | None = None) -> LoadedModel:
    """LoadedModel of a Qwen2-VL / Qwen2.5-VL model and processor whose bundle takes ``image_size`` (H, W) images."""
    vision = model.config.vision_config
    image_processor = processor.image_processor
    if (image_processor.patch_size, image_processor.merge_size) != (vision.patch_size, vision.spatial_merge_size):
        raise SpecError("the image processor's patch_size / merge_size differ from the vision tower's")
    height, width = image_size or default_image_size(image_processor)
    factor = vision.patch_size * vision.spatial_merge_size
    if height % factor or width % factor:
        raise SpecError(f"image size {height}x{width} must be a multiple of patch x merge = {factor} on both sides")
    grid = (height // factor, width // factor)
    family = "qwen2.5-vl" if model.config.model_type == "qwen2_5_vl" else "qwen2-vl"
    return image_text_loaded(
        name, family, model, processor,
        num_image_tokens=grid[0] * grid[1],
        preprocess=preprocess_spec(image_processor, image_size=(height, width)),
        positions=PositionSpec(scheme="mrope", image_grid=grid),
    )
