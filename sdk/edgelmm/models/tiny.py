"""Tiny random models for tests and docs: hidden 32, 2 layers, byte-level tokenizer (256 bytes + 4 specials).

Shaped after transformers' LlavaVisionText2TextModelTester. Deterministic: the same seed gives the same weights.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, SiglipVisionConfig

from edgelmm.models.loaded import CHATML_TEMPLATE, LoadedModel
from edgelmm.specs import ModelKind

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>")
TINY_SEED = 1234


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE with no merges: every byte is a token (ids 0-255), then the special tokens (256-259)."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        unk_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    fast.chat_template = CHATML_TEMPLATE
    return fast


def tiny_llama_config(vocab_size: int) -> LlamaConfig:
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,  # grouped KV heads, as SmolLM2: the export must handle GQA
        head_dim=16,  # onnxruntime's GroupQueryAttention needs head_dim % 16 == 0 (the fast decoder graph)
        max_position_embeddings=512,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
        bos_token_id=257,
        eos_token_id=258,
        pad_token_id=256,
    )


def tiny_siglip_config() -> SiglipVisionConfig:
    return SiglipVisionConfig(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        image_size=32,
        patch_size=8,
        vision_use_head=False,
    )


def build_tiny_lm(seed: int = TINY_SEED) -> LoadedModel:
    tokenizer = byte_tokenizer()
    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(len(tokenizer))).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    return LoadedModel(
        name="tiny-random-lm",
        kind=ModelKind.CAUSAL_LM,
        model=model,
        tokenizer=tokenizer,
        chat_template=CHATML_TEMPLATE,
        eos_token_ids=(tokenizer.eos_token_id,),
        max_context=model.config.max_position_embeddings,
    )


def build_tiny_llava(seed: int = TINY_SEED) -> LoadedModel:
    from edgelmm.models.lmm import assemble_llava

    lm = build_tiny_lm(seed)
    return assemble_llava(
        name="tiny-random",
        vision_config=tiny_siglip_config(),
        lm=lm,
        seed=seed,
    )
