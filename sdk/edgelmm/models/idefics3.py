"""Idefics3 and SmolVLM: a NaViT SigLIP tower, a pixel-shuffle connector, a Llama LM, image splitting into tiles.

Everything the runtime needs goes into the manifest as data: preprocess mode ``tiles`` (or ``longest-edge-squash``
when the processor does not split), the image-prompt recipe with the processor's exact tile tags, and the tokens per
tile (``image_seq_len``). The processor classes below are transformers' own, minus the video processor: that needs
torchvision (absent from CPU-only installs) and images never touch it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import AutoImageProcessor, AutoTokenizer
from transformers.processing_utils import ProcessorMixin

from edgelmm.errors import UnsupportedModelError
from edgelmm.models.lmm import image_text_loaded, preprocess_spec
from edgelmm.models.loaded import LoadedModel
from edgelmm.runtime.manifest import ImagePromptSpec


class SmolVLMProcessor(transformers.SmolVLMProcessor):
    """transformers' SmolVLMProcessor without its video processor (torchvision) and num2words (video captions)."""

    def __init__(self, image_processor: Any, tokenizer: Any, image_seq_len: int = 169, chat_template: str | None = None,
                 **kwargs: Any) -> None:
        # SmolVLMProcessor.__init__ minus the num2words check; the attributes are the ones its __call__ reads.
        self.fake_image_token = getattr(tokenizer, "fake_image_token", "<fake_token_around_image>")
        self.image_token = getattr(tokenizer, "image_token", "<image>")
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.end_of_utterance_token = getattr(tokenizer, "end_of_utterance_token", "<end_of_utterance>")
        self.global_image_token = getattr(tokenizer, "global_image_token", "<global-img>")
        self.image_seq_len = image_seq_len
        self.video_token = getattr(tokenizer, "video_token", "<video>")
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template, **kwargs)

    def apply_chat_template(self, conversation: Any, chat_template: str | None = None, **kwargs: Any) -> Any:
        # SmolVLMProcessor's override only adds video frame defaults.
        return ProcessorMixin.apply_chat_template(self, conversation, chat_template, **kwargs)


def load_idefics3(root: Path) -> LoadedModel:
    """A saved Idefics3ForConditionalGeneration directory."""
    model = transformers.Idefics3ForConditionalGeneration.from_pretrained(root, dtype=torch.float32).eval()
    processor = transformers.Idefics3Processor.from_pretrained(root)
    return idefics3_loaded(root.name, model, processor)


def load_smolvlm(root: Path) -> LoadedModel:
    """A saved SmolVLMForConditionalGeneration directory (images only)."""
    model = transformers.SmolVLMForConditionalGeneration.from_pretrained(root, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(root)
    image_processor = AutoImageProcessor.from_pretrained(root)
    processor = SmolVLMProcessor.from_pretrained(root, image_processor=image_processor, tokenizer=tokenizer)
    return idefics3_loaded(root.name, model, processor)


def idefics3_loaded(name: str, model: Any, processor: Any) -> LoadedModel:
    """LoadedModel of an Idefics3 / SmolVLM model and its processor (image_seq_len must match the model)."""
    config = model.config
    vision = config.vision_config
    tokens = (vision.image_size // vision.patch_size) ** 2 // config.scale_factor**2
    if processor.image_seq_len != tokens:
        raise UnsupportedModelError(f"the processor's image_seq_len {processor.image_seq_len} does not match the"
                                    f" model's {tokens} tokens per tile")
    image_processor = processor.image_processor
    tile = int(image_processor.max_image_size["longest_edge"])
    if tile != vision.image_size:
        raise UnsupportedModelError(f"the processor's tile size {tile} is not the tower's image size"
                                    f" {vision.image_size}")
    tiles = bool(image_processor.do_image_splitting)
    layout = {"image_size": (tile, tile), "mode": "tiles" if tiles else "longest-edge-squash",
              "longest_edge": int(image_processor.size["longest_edge"])}
    fake = processor.fake_image_token
    overview = f"{fake}{_global_token(processor)}{{image}}{fake}"  # processing_idefics3 / _smolvlm, verbatim
    family = "smolvlm" if config.model_type == "smolvlm" else "idefics3"
    return image_text_loaded(
        name, family, model, processor,
        num_image_tokens=tokens,
        preprocess=preprocess_spec(image_processor, **layout),
        image_prompt=ImagePromptSpec(
            single=overview,
            tile=f"{fake}<row_{{row}}_col_{{col}}>{{image}}" if tiles else "",
            row_end="\n" if tiles else "",
            overview=f"\n{overview}" if tiles else "",
        ),
    )


def _global_token(processor: Any) -> str:
    # Idefics3Processor calls it global_image_tag, SmolVLMProcessor global_image_token.
    return getattr(processor, "global_image_token", None) or processor.global_image_tag
