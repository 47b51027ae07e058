"""LLaVA-style LMMs from named parts: any SigLIP/CLIP tower + mlp2x_gelu connector + any causal LM.

The result is a plain transformers ``LlavaForConditionalGeneration`` with a ``LlavaProcessor``, so
``save_pretrained`` output loads back in transformers and in anything that reads LLaVA checkpoints.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AddedToken,
    AutoModelForCausalLM,
    AutoProcessor,
    AutoTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    SiglipVisionConfig,
)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

from edgelmm.errors import BundleError, SpecError, UnsupportedModelError
from edgelmm.models.loaded import CHATML_TEMPLATE, LoadedModel
from edgelmm.runtime.manifest import PreprocessSpec
from edgelmm.specs import ModelKind

IMAGE_TOKEN = "<image>"
_PIL_FILTERS = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic"}


def smol_vqa_vision_config() -> SiglipVisionConfig:
    """The smol-vqa tower: SigLIP architecture sized for a 2-core CPU.

    96 px in 32 px patches -> 9 visual tokens, one per cell of the built-in scenes' 3x3 grid. Training cost is
    dominated by LM steps at ~4 ms per token (shared/docs/pitfalls.md), so few visual tokens buy more LM steps; and
    cell-aligned patches make the tower's job local: a per-cell attribute probe on this tower reached 95% of
    occupied cells right after 600 steps of batch 64, against 25% after 100 steps (and 46% after 800 steps with
    SigLIP losses) for 64 px / patch 16, whose 4x4 patches straddle the cells (docs/training.md). Hidden 256 /
    6 layers / 4 heads: ~5.5M parameters, cheap to pretrain, 11 MB at fp16.
    """
    return SiglipVisionConfig(
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=6,
        num_attention_heads=4,
        image_size=96,
        patch_size=32,
        vision_use_head=False,  # LLaVA reads patch tokens; the pooling head would be dead weight
    )


def build_smol_vqa() -> LoadedModel:
    """smol-vqa: the trained tower + connector + LoRA shipped in the package, on the real SmolLM2-135M-Instruct.

    Until trained weights ship (models/weights/smol-vqa, see docs/training.md) this is the untrained architecture,
    with a warning: exporting and running it still works, but it cannot see.
    """
    import warnings

    from edgelmm.models.weights import SHIPPED, is_weights_dir, load_weights

    if is_weights_dir(SHIPPED / "smol-vqa"):
        return load_weights(SHIPPED / "smol-vqa", name="smol-vqa")
    warnings.warn("smol-vqa: no trained weights ship in this checkout; using the untrained (random) tower and "
                  "connector. Train them with: edgelmm train --recipe imp", stacklevel=2)
    return build_smol_vqa_init(name="smol-vqa")


def build_smol_vqa_init(name: str = "smol-vqa-init") -> LoadedModel:
    """smol-vqa's architecture untrained: random tower + connector (seeded) and the real SmolLM2-135M-Instruct."""
    from edgelmm.models.smollm2 import build_smollm2

    return assemble_llava(name=name, vision_config=smol_vqa_vision_config(), lm=build_smollm2(), seed=0)


def assemble_llava(
    *,
    name: str,
    vision_config: Any,
    lm: LoadedModel,
    seed: int,
    vision_feature_layer: int = -1,
    vision_feature_select_strategy: str = "full",
    chat_template: str = CHATML_TEMPLATE,
) -> LoadedModel:
    """Tower (random, seeded) + mlp2x_gelu connector (random) + the LM of ``lm`` (weights kept).

    The image token is added to the tokenizer; if that grows the vocabulary, the new embedding row (tied to the
    LM head when the LM ties them) is the exact mean of the old rows, so its logit is the mean logit and greedy
    decoding of text is unchanged.
    """
    tokenizer = lm.tokenizer
    if tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) in (None, tokenizer.unk_token_id):
        tokenizer.add_special_tokens({"additional_special_tokens": [AddedToken(IMAGE_TOKEN, special=True, normalized=False)]})
    image_token_id = int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    text_model = lm.model
    if image_token_id >= text_model.get_input_embeddings().num_embeddings:
        _grow_vocab(text_model, len(tokenizer))
    config = LlavaConfig(
        vision_config=vision_config,
        text_config=text_model.config,
        image_token_id=image_token_id,
        projector_hidden_act="gelu",  # Linear -> GELU -> Linear: Imp's mlp2x_gelu
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy=vision_feature_select_strategy,
        multimodal_projector_bias=True,
        tie_word_embeddings=text_model.config.tie_word_embeddings,
    )
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config)
    model.model.language_model.load_state_dict(text_model.model.state_dict())
    if not config.tie_word_embeddings:
        head = dict(text_model.lm_head.state_dict())
        bias = head.pop("bias", None)
        if bias is not None and bool(bias.any()):  # Phi-2's head has one; LlavaForConditionalGeneration's has none
            raise UnsupportedModelError(f"{type(text_model).__name__}'s lm_head has a bias, which"
                                        " LlavaForConditionalGeneration cannot hold: the LLaVA model would not"
                                        " reproduce this LM")
        model.lm_head.load_state_dict(head)
    model.eval()
    model.generation_config.eos_token_id = list(lm.eos_token_ids)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    clip = vision_config.model_type == "clip_vision_model"
    processor = LlavaProcessor(
        image_processor=_tower_image_processor(vision_config),
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=vision_feature_select_strategy,
        chat_template=chat_template,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1 if clip else 0,  # CLIP's CLS token
    )
    tokenizer.chat_template = chat_template
    return _llava_loaded(name, model, processor, chat_template, lm.eos_token_ids, lm.max_context)


def _tower_image_processor(vision_config: Any) -> Any:
    """The tower's own preprocessing: CLIP resizes the short side and centre-crops (OpenAI mean/std); SigLIP
    squashes to the square input with mean = std = 0.5."""
    size = _as_pair(vision_config.image_size)
    if vision_config.model_type == "clip_vision_model":
        return CLIPImageProcessorPil(size={"shortest_edge": size[0]}, crop_size={"height": size[0], "width": size[1]},
                                     resample=3)
    return SiglipImageProcessorPil(
        size={"height": size[0], "width": size[1]}, resample=3, image_mean=[0.5] * 3, image_std=[0.5] * 3
    )


def _grow_vocab(model: Any, size: int) -> None:
    embeddings = model.get_input_embeddings()
    old = embeddings.weight.detach().clone()
    model.resize_token_embeddings(size, mean_resizing=False)
    with torch.no_grad():
        model.get_input_embeddings().weight[: old.shape[0]] = old
        model.get_input_embeddings().weight[old.shape[0] :] = old.mean(dim=0)
        head = model.get_output_embeddings()
        if head is not None and head.weight.data_ptr() != model.get_input_embeddings().weight.data_ptr():
            head.weight[old.shape[0] :] = head.weight[: old.shape[0]].mean(dim=0)


def _as_pair(size: Any) -> tuple[int, int]:
    return (int(size[0]), int(size[1])) if isinstance(size, list | tuple) else (int(size), int(size))


def count_image_tokens(model: Any) -> int:
    """Visual tokens per image, measured by running the tower + connector on one blank image."""
    from edgelmm.models.vision import image_features

    size = _as_pair(model.config.vision_config.image_size)
    with torch.no_grad():
        return int(image_features(model, torch.zeros(1, 3, *size)).shape[1])


def _llava_loaded(
    name: str, model: Any, processor: Any, chat_template: str, eos: tuple[int, ...], context: int
) -> LoadedModel:
    return image_text_loaded(
        name, "llava", model, processor, kind=ModelKind.LLAVA, chat_template=chat_template, eos_token_ids=tuple(eos),
        max_context=context, num_image_tokens=count_image_tokens(model),
        preprocess=preprocess_spec(processor.image_processor),
    )


def image_text_loaded(name: str, family: str, model: Any, processor: Any, *, kind: ModelKind = ModelKind.VLM,
                      **fields: Any) -> LoadedModel:
    """A LoadedModel of an image + text family; what ``fields`` leaves out is read off the model and processor."""
    tokenizer = processor.tokenizer
    defaults = {
        "chat_template": chat_template_of(processor),
        "eos_token_ids": eos_ids(model, tokenizer),
        "max_context": max_context(model),
        "image_token": processor.image_token,
        "image_token_id": int(model.config.image_token_id),
    }
    return LoadedModel(name=name, kind=kind, family=family, model=model, tokenizer=tokenizer, processor=processor,
                       **(defaults | fields))


def preprocess_spec(image_processor: Any, **layout: Any) -> PreprocessSpec:
    """Translate a transformers image processor's settings into the manifest's PreprocessSpec.

    ``layout`` (image_size, mode, shortest_edge, longest_edge) replaces the reading of ``size`` that fits LLaVA's
    towers (height/width: squash; shortest_edge + crop: CLIP) for families that size images their own way.
    """
    resize = _PIL_FILTERS.get(int(getattr(image_processor, "resample", 3)), "bicubic")
    rescale = float(image_processor.rescale_factor) if getattr(image_processor, "do_rescale", True) else 1.0
    if getattr(image_processor, "do_normalize", True):
        mean, std = tuple(map(float, image_processor.image_mean)), tuple(map(float, image_processor.image_std))
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    lows = [(0 - m) / s for m, s in zip(mean, std)]
    highs = [(255 * rescale - m) / s for m, s in zip(mean, std)]
    return PreprocessSpec(
        resize=resize, rescale_factor=rescale, mean=mean, std=std,
        value_range=(round(min(lows), 6), round(max(highs), 6)), **(layout or _tower_layout(image_processor)),
    )


def _tower_layout(image_processor: Any) -> dict[str, Any]:
    size = dict(image_processor.size)
    if "shortest_edge" in size:
        crop = dict(getattr(image_processor, "crop_size", None) or {})
        if not getattr(image_processor, "do_center_crop", False) or not crop:
            raise UnsupportedModelError("image processors that resize by shortest edge without a centre crop are"
                                        " not supported")
        return {"mode": "shortest-edge-crop", "shortest_edge": int(size["shortest_edge"]),
                "image_size": (int(crop["height"]), int(crop["width"]))}
    return {"image_size": (int(size["height"]), int(size["width"]))}


# ----------------------------------------------------------------------------------------------------------------
# Local Hugging Face directories


def load_local(directory: str | Path, *, image_size: tuple[int, int] | None = None) -> LoadedModel:
    """Load a saved Hugging Face model directory (float32, eval) with its family's loader (models/families.py).

    ``image_size`` (H, W) picks the one image size of a fixed-grid family's bundle (Qwen2-VL); other families take
    the size their tower was trained for.

    Raises BundleError for a directory without a readable config.json and UnsupportedModelError (one line: which
    architecture and why) for a model no family exports, or a transformers version the family was not verified with.
    """
    import transformers

    from edgelmm.models.families import check_model_types, check_transformers, family_for
    from edgelmm.models.weights import is_weights_dir, load_weights

    root = Path(directory)
    if is_weights_dir(root):
        return load_weights(root)
    try:
        config = json.loads((root / "config.json").read_text())
    except FileNotFoundError:
        raise BundleError(f"'{root}' is not a Hugging Face model directory: config.json is missing") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BundleError(f"'{root}/config.json' cannot be read: {exc}") from None
    family = family_for((config.get("architectures") or ["?"])[0], where=str(root))
    check_model_types(family, *((config.get(k) or {}).get("model_type", "") for k in ("vision_config", "text_config")))
    check_transformers(family, transformers.__version__)
    if image_size is not None and not family.fixed_grid:
        raise SpecError(f"{family.title} bundles take the image size the model was trained for; an image size"
                        " applies to fixed-grid families (Qwen2-VL, Qwen2.5-VL)")
    module, function = family.load.split(":")
    options = {"image_size": image_size} if image_size else {}
    return getattr(importlib.import_module(module), function)(root, **options)


def load_llava(root: Path) -> LoadedModel:
    """A saved LlavaForConditionalGeneration directory."""
    model = LlavaForConditionalGeneration.from_pretrained(root, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(root)
    template = chat_template_of(processor)
    return _llava_loaded(root.name, model, processor, template, eos_ids(model, processor.tokenizer), max_context(model))


def load_causal_lm(root: Path) -> LoadedModel:
    """A saved decoder-only *ForCausalLM directory (a text-only bundle)."""
    model = AutoModelForCausalLM.from_pretrained(root, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(root)
    return LoadedModel(
        name=root.name,
        kind=ModelKind.CAUSAL_LM,
        model=model,
        tokenizer=tokenizer,
        chat_template=tokenizer.chat_template or CHATML_TEMPLATE,
        eos_token_ids=eos_ids(model, tokenizer),
        max_context=max_context(model),
    )


def chat_template_of(processor: Any) -> str:
    """The processor's chat template, else its tokenizer's, else ChatML."""
    return processor.chat_template or processor.tokenizer.chat_template or CHATML_TEMPLATE


def eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    eos = getattr(model.generation_config, "eos_token_id", None)
    if eos is None:
        eos = model.config.get_text_config(decoder=True).eos_token_id or tokenizer.eos_token_id
    return tuple(int(e) for e in (eos if isinstance(eos, list | tuple) else [eos]) if e is not None)


def max_context(model: Any) -> int:
    return int(getattr(model.config.get_text_config(decoder=True), "max_position_embeddings", 2048) or 2048)
