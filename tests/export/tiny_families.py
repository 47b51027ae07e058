"""Tiny random models of every exported family (hidden 32, 2 layers), with processors built locally (no hub).

Each builder returns a LoadedModel through the family's own loader code (the path `load_local` takes after
`from_pretrained`), so the parity tests check what users run. Tokenizers are the byte-level tokenizer of
models/tiny.py plus the family's special tokens; image processors are transformers' PIL classes (no torchvision).
"""

from __future__ import annotations

import torch
from transformers import (
    AutoModelForCausalLM,
    CLIPVisionConfig,
    GemmaConfig,
    Idefics3Config,
    Idefics3ForConditionalGeneration,
    Idefics3Processor,
    LlamaConfig,
    Phi3Config,
    PhiConfig,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2Config,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
)
from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil
from transformers.models.smolvlm.processing_smolvlm import DEFAULT_CHAT_TEMPLATE as SMOLVLM_TEMPLATE

from edgelmm.models.idefics3 import SmolVLMProcessor, idefics3_loaded
from edgelmm.models.lmm import assemble_llava
from edgelmm.models.loaded import CHATML_TEMPLATE, LoadedModel
from edgelmm.models.qwen2_vl import Qwen2_5_VLProcessor, Qwen2VLProcessor, qwen2_vl_loaded
from edgelmm.models.tiny import TINY_SEED, byte_tokenizer, tiny_siglip_config
from edgelmm.specs import ModelKind

# Qwen2-VL-Instruct's chat template (images only): a default system turn, images as vision_start/pad/end.
QWEN2_VL_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
    "{% endif %}<|im_start|>{{ message['role'] }}\n{% if message['content'] is string %}{{ message['content'] }}"
    "<|im_end|>\n{% else %}{% for content in message['content'] %}{% if content['type'] == 'image' %}"
    "{% set image_count.value = image_count.value + 1 %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
IDEFICS3_TOKENS = ["<fake_token_around_image>", "<global-img>", "<end_of_utterance>",
                   *(f"<row_{r}_col_{c}>" for r in range(1, 7) for c in range(1, 7))]
QWEN2_VL_TOKENS = ["<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]


def tokenizer_with(specials: list[str], template: str):  # noqa: ANN201 - a PreTrainedTokenizerFast
    tokenizer = byte_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": specials})
    tokenizer.chat_template = template
    return tokenizer


def text_config(model_type: str, tokenizer, eos: str = "<|im_end|>"):  # noqa: ANN001, ANN201
    """A 2-layer, hidden-32 config of a decoder family, vocabulary = the tokenizer's."""
    common = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=512, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.convert_tokens_to_ids(eos), pad_token_id=tokenizer.pad_token_id,
                  tie_word_embeddings=False)
    if model_type == "llama":
        return LlamaConfig(num_key_value_heads=2, **common)
    if model_type == "qwen2":
        return Qwen2Config(num_key_value_heads=2, **common)
    if model_type == "phi":  # Phi-2: parallel attention + MLP, LayerNorm, partial rotary
        return PhiConfig(partial_rotary_factor=0.5, **common)
    if model_type == "phi3":  # fused qkv / gate_up projections
        return Phi3Config(num_key_value_heads=2, **common)
    if model_type == "gemma":  # embeddings scaled by sqrt(hidden), GeGLU, (1 + w) RMSNorm
        return GemmaConfig(num_key_value_heads=1, head_dim=8, **common)
    raise ValueError(model_type)


def _finish(model, tokenizer, eos: str):  # noqa: ANN001, ANN202
    model.eval()
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(eos)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return model


def tiny_llava(lm_type: str, tower: str, strategy: str) -> LoadedModel:
    """LLaVA with a CLIP or SigLIP tower (32 px, patch 8), select layer -2, mlp2x_gelu, an LM of ``lm_type``."""
    tokenizer = tokenizer_with([], CHATML_TEMPLATE)
    torch.manual_seed(TINY_SEED)
    lm_model = _finish(AutoModelForCausalLM.from_config(text_config(lm_type, tokenizer)), tokenizer, "<|im_end|>")
    lm = LoadedModel(name=lm_type, kind=ModelKind.CAUSAL_LM, model=lm_model, tokenizer=tokenizer,
                     chat_template=CHATML_TEMPLATE, eos_token_ids=(tokenizer.eos_token_id,), max_context=512)
    vision = tiny_siglip_config() if tower == "siglip" else CLIPVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8,
        projection_dim=32)
    return assemble_llava(name=f"llava-{tower}-{lm_type}", vision_config=vision, lm=lm, seed=TINY_SEED,
                          vision_feature_layer=-2, vision_feature_select_strategy=strategy)


def tiny_idefics3(smolvlm: bool, split: bool) -> LoadedModel:
    """Idefics3 / SmolVLM: 32 px tiles in 8 px patches, pixel shuffle 2 -> 4 tokens per tile; images up to 64 px
    (2 x 2 tiles + overview) when splitting."""
    tokenizer = tokenizer_with(IDEFICS3_TOKENS, SMOLVLM_TEMPLATE)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32,
                  patch_size=8)
    config_cls, model_cls = (SmolVLMConfig, SmolVLMForConditionalGeneration) if smolvlm else (
        Idefics3Config, Idefics3ForConditionalGeneration)
    config = config_cls(vision_config=vision, text_config=text_config("llama", tokenizer, "<end_of_utterance>"),
                        scale_factor=2, image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    torch.manual_seed(TINY_SEED)
    model = _finish(model_cls(config), tokenizer, "<end_of_utterance>")
    image_processor_cls = SmolVLMImageProcessorPil if smolvlm else Idefics3ImageProcessorPil
    image_processor = image_processor_cls(size={"longest_edge": 64}, max_image_size={"longest_edge": 32},
                                          do_image_splitting=split)
    processor_cls = SmolVLMProcessor if smolvlm else Idefics3Processor
    processor = processor_cls(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=4,
                              chat_template=SMOLVLM_TEMPLATE)
    return idefics3_loaded("smolvlm" if smolvlm else "idefics3", model, processor)


def tiny_qwen2_vl(v2_5: bool, image_size: tuple[int, int] = (32, 32)) -> LoadedModel:
    """Qwen2-VL / Qwen2.5-VL: 4 px patches, merge 2 (32 x 32 px -> a 4 x 4 grid of 16 tokens), M-RoPE sections
    (2, 1, 1) of head_dim 8; the processor's pixel limits pin transformers' grid to ``image_size`` for images of that
    aspect ratio. Qwen2.5-VL: 16 px attention windows, the second block full attention."""
    tokenizer = tokenizer_with(QWEN2_VL_TOKENS, QWEN2_VL_TEMPLATE)
    pixels = image_size[0] * image_size[1]
    image_processor = Qwen2VLImageProcessorPil(patch_size=4, merge_size=2, temporal_patch_size=2,
                                               min_pixels=pixels, max_pixels=pixels)
    processor = (Qwen2_5_VLProcessor if v2_5 else Qwen2VLProcessor)(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=QWEN2_VL_TEMPLATE)
    text = text_config("qwen2", tokenizer).to_dict()
    text["rope_parameters"] = {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 1, 1]}
    vision = dict(depth=2, num_heads=4, patch_size=4, spatial_merge_size=2, temporal_patch_size=2)
    ids = dict(image_token_id=processor.image_token_id, video_token_id=processor.video_token_id,
               vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"))
    if v2_5:
        vision |= dict(hidden_size=32, intermediate_size=64, out_hidden_size=32, window_size=16,
                       fullatt_block_indexes=[1])
        config_cls, model_cls = Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
    else:
        vision |= dict(embed_dim=32, hidden_size=32)
        config_cls, model_cls = Qwen2VLConfig, Qwen2VLForConditionalGeneration
    torch.manual_seed(TINY_SEED)
    model = _finish(model_cls(config_cls(text_config=text, vision_config=vision, **ids)), tokenizer, "<|im_end|>")
    return qwen2_vl_loaded("qwen2.5-vl" if v2_5 else "qwen2-vl", model, processor, image_size)
