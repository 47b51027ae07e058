"""LoadedModel: a torch model plus everything the bundle needs to use it (tokenizer, template, preprocessing)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from edgelmm.runtime.manifest import ImagePromptSpec, PositionSpec, PreprocessSpec
from edgelmm.specs import ModelKind

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}{{ '<image>\n' }}{% else %}{{ part['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""ChatML (SmolLM2's format, without its default system prompt); an image part renders as ``<image>`` + newline
(literally: transformers' apply_chat_template passes no image-token variable)."""


@dataclasses.dataclass(frozen=True, slots=True, kw_only=True)
class LoraAdapters:
    """The LM's LoRA, kept beside the merged model: an int4 / w8 export quantizes the ``base`` weights (the registry
    LM's, bit for bit, so min-max int4 reproduces SmolLM2's Q4_1 grid) and runs ``scale * (x·Aᵀ)·Bᵀ`` as a float
    side path (export/lora_graph.py). Keys are Linear paths of the merged model (``model.language_model.layers.0
    .self_attn.q_proj``). Torch tensors, float32."""

    scale: float
    """alpha / r: the side path computes ``x·Wᵀ + scale · (x·Aᵀ)·Bᵀ``."""
    a: dict[str, Any]
    """lora_A [r, in] per Linear path."""
    b: dict[str, Any]
    """lora_B [out, r] per Linear path."""
    base: dict[str, Any]
    """The Linear's weight [out, in] before the merge (costs one copy of the adapted weights: ~425 MB for SmolLM2)."""

    @property
    def rank(self) -> int:
        return max((int(t.shape[0]) for t in self.a.values()), default=0)


@dataclasses.dataclass(slots=True, kw_only=True)
class LoadedModel:
    """A model ready to export or train. ``model`` is in eval mode, float32, on CPU."""

    name: str
    kind: ModelKind
    model: Any
    """LlavaForConditionalGeneration or a *ForCausalLM."""
    tokenizer: Any
    """A transformers fast tokenizer (its backend is the tokenizers.Tokenizer the runtime loads)."""
    chat_template: str
    eos_token_ids: tuple[int, ...]
    max_context: int
    image_token: str | None = None
    image_token_id: int | None = None
    num_image_tokens: int = 0
    preprocess: PreprocessSpec | None = None
    processor: Any = None
    """The transformers processor (LlavaProcessor...) when the model takes images."""
    family: str = ""
    """Key in models/families.py FAMILIES ("" means the one its kind implies: llava or causal-lm)."""
    image_prompt: ImagePromptSpec = ImagePromptSpec()
    """How the chat template's image placeholder expands (manifest text.image_prompt)."""
    positions: PositionSpec = PositionSpec()
    """Decoder position-id scheme (manifest positions)."""
    tools: tuple[str, ...] = ()
    """Tool ids a tool-selection model (recipe mllm-tool) picks from; exported as manifest ``tools``."""
    lm_trained: bool = False
    """True when the LM's weights differ from its registry base (merged LoRA, a trained student). Without ``lora``
    int4 export then defaults to rtn, since the min-max grid matched to SmolLM2's Q4_1 weights rounds small merged
    deltas away; with it, min-max on the base weights + the LoRA side path."""
    weights_dir: Path | None = None
    """The trained weights directory (models/weights.py) this model was loaded from; None for a registry build.
    Recipes that start from such a model keep its tower and connector and carry its LoRA into what they save."""
    lora: LoraAdapters | None = None
    """The LM's LoRA unmerged (``model`` holds it merged): set for weights directories whose LM is the registry LM
    plus LoRA; None for fully trained LMs (students) and models without LoRA. Quantized exports use it."""

    @property
    def has_vision(self) -> bool:
        return self.kind in (ModelKind.LLAVA, ModelKind.VLM)

    @property
    def family_name(self) -> str:
        return self.family or ("causal-lm" if self.kind is ModelKind.CAUSAL_LM else "llava")

    @property
    def config(self) -> Any:
        return self.model.config

    @property
    def text_config(self) -> Any:
        return self.model.config.get_text_config(decoder=True)

    def save_pretrained(self, directory: str | Path) -> None:
        """Save with transformers' own format, so transformers and LLaVA readers load it back."""
        self.model.save_pretrained(directory)
        (self.processor or self.tokenizer).save_pretrained(directory)
