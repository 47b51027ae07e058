"""Answer with a torch model (imports torch): a registry name, a trained weights directory or a Hugging Face dir.

Prompts are built by the same ChatCollator the training uses (the chat template rendered as the runtime renders
it), left-padded into batches, and decoded greedily with transformers' generate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from edgelmm.models.loaded import LoadedModel
from edgelmm.runtime.constraint import Choice
from edgelmm.specs import ModelKind
from edgelmm.train.data.base import Example
from edgelmm.train.data.collate import ChatCollator


def load_model(spec: str) -> LoadedModel:
    """A registry name, a weights directory (``edgelmm train`` output or its ``model/``), or a HF directory."""
    from edgelmm.models.lmm import load_local
    from edgelmm.models.weights import is_weights_dir

    path = Path(spec)
    if path.is_dir():
        return load_local(path / "model" if is_weights_dir(path / "model") else path)
    from edgelmm.models.registry import build_model

    return build_model(spec)


def base_lm_of(spec: str) -> str | None:
    """The registry LM a model is built on: from a weights directory's meta.json, or the registry entry."""
    from edgelmm.models.registry import MODELS
    from edgelmm.models.weights import is_weights_dir, read_meta

    path = Path(spec)
    for directory in (path / "model", path):
        if is_weights_dir(directory):
            return read_meta(directory)["base_lm"]
    entry = MODELS.get(spec)
    return entry.base_lm if entry else None


class TorchAnswerer:
    """Greedy answers from a LoadedModel; a causal LM (no vision) answers the question alone (image-blind)."""

    def __init__(self, loaded: LoadedModel, *, name: str | None = None, device: str | None = None) -> None:
        self.loaded = loaded
        self.name = name or loaded.name
        self.vision = loaded.kind == ModelKind.LLAVA
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = loaded.model.to(self.device).eval()
        self.collator = ChatCollator(
            tokenizer=loaded.tokenizer, chat_template=loaded.chat_template, image_token=loaded.image_token,
            num_image_tokens=loaded.num_image_tokens, preprocess_spec=loaded.preprocess,
        ) if self.vision else None
        self.pad_id = int(loaded.tokenizer.pad_token_id if loaded.tokenizer.pad_token_id is not None
                          else loaded.eos_token_ids[0])

    def _prompt(self, question: str) -> list[int]:
        if self.collator is not None:
            return list(self.collator.prompt_ids(question))
        rendered = self.loaded.tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], chat_template=self.loaded.chat_template,
            add_generation_prompt=True, tokenize=False)
        return self.loaded.tokenizer(rendered, add_special_tokens=False)["input_ids"]

    @torch.no_grad()
    def answer(self, examples: Sequence[Example], max_new_tokens: int, constraint: Choice | None = None
               ) -> list[str]:
        prompts = [self._prompt(ex.question) for ex in examples]
        width = max(map(len, prompts))
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):  # left padding: every row's last token is its generation prompt
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        inputs = {"input_ids": ids.to(self.device), "attention_mask": mask.to(self.device)}
        if self.vision:
            from edgelmm.runtime.preprocess import preprocess

            pixels = preprocess([ex.image for ex in examples], self.loaded.preprocess)
            inputs["pixel_values"] = torch.from_numpy(pixels).to(self.device)
        if constraint is not None:  # the runtime's trie, one token at a time: same answers, without its shortcuts
            trie = constraint.compile(lambda text: self.loaded.tokenizer(text, add_special_tokens=False)["input_ids"],
                                      self.loaded.eos_token_ids)
            inputs["prefix_allowed_tokens_fn"] = lambda _, row: trie.allowed(row[width:].tolist())
            max_new_tokens = trie.max_tokens + 1
        out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                  eos_token_id=list(self.loaded.eos_token_ids), pad_token_id=self.pad_id)
        # The runtime's streaming decoder holds back an incomplete UTF-8 sequence at the end; transformers renders
        # it as U+FFFD. Strip it so both paths return the same text for the same tokens.
        return [self.loaded.tokenizer.decode(row[width:], skip_special_tokens=True).rstrip("\ufffd") for row in out]
