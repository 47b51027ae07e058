"""Text perplexity of a model's language side, to check that multimodal training kept the LM's text ability.

The fixed text set is English technical prose that ships with every CPython: five sections of the Python language
reference (``pydoc_data.topics``), the first TEXT_CHARS characters of each. No download; the same text for the
trained model and its base LM, so their ratio is what matters (the issue's bound: the merged model's perplexity
rises by at most 5% over SmolLM2's).
"""

from __future__ import annotations

import dataclasses
import math

import torch

from edgelmm.models.loaded import LoadedModel

TOPICS = ("assignment", "function", "class", "import", "try")
TEXT_CHARS = 2000


def text_set() -> tuple[str, ...]:
    from pydoc_data.topics import topics

    return tuple(topics[name][:TEXT_CHARS] for name in TOPICS)


@dataclasses.dataclass(frozen=True, slots=True)
class Perplexity:
    model: str
    tokens: int
    """Predicted tokens (every token of each text after its first)."""
    nll: float
    """Mean negative log-likelihood per predicted token (nats)."""

    @property
    def value(self) -> float:
        return math.exp(self.nll)


@torch.no_grad()
def perplexity(loaded: LoadedModel, texts: tuple[str, ...] | None = None, *, max_tokens: int = 1024) -> Perplexity:
    """exp(mean next-token NLL) of ``loaded``'s language model over ``texts`` (default: text_set()).

    Each text is tokenized alone (no chat template: plain text ability), truncated to ``max_tokens``, and scored
    text-only; an image+text model is scored through its language model and LM head, images play no part.
    """
    model = loaded.model.eval()
    total, count = 0.0, 0
    for text in texts or text_set():
        ids = loaded.tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][:, :max_tokens]
        ids = ids.to(next(model.parameters()).device)
        logits = model(input_ids=ids).logits[0, :-1].float()
        total += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
        count += ids.shape[1] - 1
    return Perplexity(model=loaded.name, tokens=count, nll=total / max(count, 1))
