"""Imp's real sizes (MILVLG/imp, arXiv 2405.12107), as architectures on the meta device: no weights exist offline.

They give exact parameter counts and let the same specs and recipe code describe a GPU run. Sources (see also
shared/docs/methods.md): google/siglip-so400m-patch14-384 config (hidden 1152, ffn 4304, 27 layers, 16 heads,
patch 14), truncated by Imp to 26 layers (mm_vision_select_layer -2; head and last layer deleted); microsoft/phi-2
config.json; the mlp2x_gelu projector; Imp-v1.5-3B-196 runs the tower at 196 px for its phone build (mlc-imp).
"""

from __future__ import annotations

import torch
from transformers import LlavaConfig, LlavaForConditionalGeneration, PhiConfig, SiglipVisionConfig

from edgelmm.models.loaded import LoadedModel
from edgelmm.runtime.manifest import PreprocessSpec
from edgelmm.specs import ModelKind

PHI2_IMAGE_TOKEN_ID = 50295
"""First id after Phi-2's 50295 tokenizer entries (its embedding is padded to 51200 rows); Imp's own code uses the
placeholder -200 instead, which a plain LlavaForConditionalGeneration cannot."""


def siglip_so400m_truncated(image_size: int) -> SiglipVisionConfig:
    return SiglipVisionConfig(
        hidden_size=1152,
        intermediate_size=4304,
        num_hidden_layers=26,  # 27 in the checkpoint; Imp drops the last (select layer -2)
        num_attention_heads=16,
        image_size=image_size,
        patch_size=14,
        hidden_act="gelu_pytorch_tanh",
        layer_norm_eps=1e-6,
        vision_use_head=False,
    )


def phi2_config() -> PhiConfig:
    return PhiConfig(
        vocab_size=51200,
        hidden_size=2560,
        intermediate_size=10240,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        partial_rotary_factor=0.4,
        max_position_embeddings=2048,
        layer_norm_eps=1e-5,
        tie_word_embeddings=False,
    )


def build_imp(name: str, image_size: int) -> LoadedModel:
    """An Imp-3B LlavaForConditionalGeneration on the meta device (no memory, no weights)."""
    vision = siglip_so400m_truncated(image_size)
    config = LlavaConfig(
        vision_config=vision,
        text_config=phi2_config(),
        image_token_id=PHI2_IMAGE_TOKEN_ID,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,  # the last of the 26 kept layers = layer -2 of the original tower
        vision_feature_select_strategy="full",  # SigLIP has no CLS token: all 729 (or 196) patches
        multimodal_projector_bias=True,
        tie_word_embeddings=False,
    )
    with torch.device("meta"):
        model = LlavaForConditionalGeneration(config)
        # Phi-2's LM head has a bias (51,200 parameters); LLaVA builds a bias-free head, so put Phi-2's back.
        model.lm_head = torch.nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=True)
    side = image_size // vision.patch_size
    return LoadedModel(
        name=name,
        kind=ModelKind.LLAVA,
        model=model,
        tokenizer=None,  # Phi-2's tokenizer is not available offline
        chat_template="",
        eos_token_ids=(50256,),  # Phi-2's <|endoftext|>
        max_context=2048,
        image_token="<image>",
        image_token_id=PHI2_IMAGE_TOKEN_ID,
        num_image_tokens=side * side,
        preprocess=PreprocessSpec(image_size=(image_size, image_size)),  # Imp: bicubic squash, mean = std = 0.5
    )


def build_imp_3b() -> LoadedModel:
    return build_imp("imp-3b", 384)


def build_imp_3b_196() -> LoadedModel:
    return build_imp("imp-3b-196", 196)
