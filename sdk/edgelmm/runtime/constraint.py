"""Constrained decoding: the output is one of a fixed set of strings (numpy only, no torch).

    from edgelmm.runtime.constraint import Choice
    res = pipe.generate("Which tool reads this page?", images=["page.png"], constraint=Choice(["ocr", "captioning"]))
    res.text          # '{"api_name": "ocr"}' — always one of the choices, inside the frame

A ``Choice`` is compiled once per tokenizer into a token trie over the canonical tokenization of every framed option
(``prefix + option + suffix``; by default the JSON frame ``{"api_name": "<option>"}`` of MLLM-Tool). Decoding walks
the trie: logits are masked to the children of the current node, and wherever there is nothing to decide no decoder
step is spent:

- the frame's shared opening (one path from the root) is appended to the prompt and prefilled with it;
- a run of single-child nodes is fed to the decoder as one multi-token call, not one call per token;
- as soon as the subtree holds one option, its remaining tokens (the rest of the id and the frame close) are
  emitted without any decoder call, and generation ends (``finish_reason == "choice"``).

The trie uses the tokenizer's canonical tokenization of each whole framed string, which is what a model fine-tuned
on those strings produces; other spellings of the same text are not reachable (they are not what it learnt).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from edgelmm.errors import InputError
from edgelmm.runtime.generate import LoopResult, StreamCallback
from edgelmm.runtime.sampling import choose_token
from edgelmm.specs import GenerationSpec

API_PREFIX = '{"api_name": "'
API_SUFFIX = '"}'
MAX_OPTIONS = 100_000
MAX_OPTION_CHARS = 512


@dataclasses.dataclass(frozen=True, slots=True)
class Choice:
    """The output must be ``prefix + o + suffix`` for one ``o`` in ``options`` (default frame: MLLM-Tool's JSON)."""

    options: tuple[str, ...]
    prefix: str = API_PREFIX
    suffix: str = API_SUFFIX

    def __init__(self, options: Iterable[str], *, prefix: str = API_PREFIX, suffix: str = API_SUFFIX) -> None:
        if isinstance(options, str) or not isinstance(options, Iterable):
            raise InputError(f"Choice takes a list of strings, got {type(options).__name__}")
        options = tuple(options)
        problems = []
        if not 1 <= len(options) <= MAX_OPTIONS:
            problems.append(f"needs 1..{MAX_OPTIONS} options, got {len(options)}")
        bad = [o for o in options if not isinstance(o, str) or not 1 <= len(o) <= MAX_OPTION_CHARS]
        if bad:
            problems.append(f"options must be strings of 1..{MAX_OPTION_CHARS} characters, got {bad[0]!r:.40}")
        elif len(set(options)) != len(options):
            problems.append(f"options repeat: {sorted(o for o in set(options) if options.count(o) > 1)[:3]}")
        elif prefix == API_PREFIX and any(json.dumps(o)[1:-1] != o for o in options):
            # inside the JSON frame an option must not need escaping, or the framed text would not parse back to it
            problems.append("options inside the JSON frame must need no JSON escaping (no quotes, backslashes or "
                            f"control characters): {next(o for o in options if json.dumps(o)[1:-1] != o)!r:.40}")
        if not isinstance(prefix, str) or not isinstance(suffix, str):
            problems.append("prefix and suffix must be strings")
        if problems:
            raise InputError("invalid Choice: " + "; ".join(problems))
        object.__setattr__(self, "options", options)
        object.__setattr__(self, "prefix", prefix)
        object.__setattr__(self, "suffix", suffix)

    @classmethod
    def plain(cls, options: Iterable[str]) -> Choice:
        """No frame: the output is exactly one of ``options`` (a label, a word)."""
        return cls(options, prefix="", suffix="")

    def framed(self, option: str) -> str:
        return f"{self.prefix}{option}{self.suffix}"

    def parse(self, text: str) -> str | None:
        """The option ``text`` spells with this frame, or None."""
        if text.startswith(self.prefix) and text.endswith(self.suffix):
            inner = text[len(self.prefix) : len(text) - len(self.suffix)]
            return inner if inner in self.options else None
        return None

    def compile(self, encode: Callable[[str], Sequence[int]], eos_ids: Iterable[int]) -> ChoiceTrie:
        """The token trie of this choice under ``encode`` (text -> ids, no special tokens added)."""
        return ChoiceTrie(self, encode, frozenset(int(i) for i in eos_ids))


class _Node:
    __slots__ = ("children", "option", "options_below", "tail")

    def __init__(self) -> None:
        self.children: dict[int, _Node] = {}
        self.option: str | None = None
        """The option that ends here (then ``eos`` is also allowed when the node has children)."""
        self.options_below = 0
        self.tail: tuple[int, ...] = ()
        """When ``options_below == 1``: the tokens from here to the end of that option."""


class ChoiceTrie:
    """A Choice compiled against one tokenizer: the trie, the forced opening, the longest option in tokens."""

    def __init__(self, choice: Choice, encode: Callable[[str], Sequence[int]], eos_ids: frozenset[int]) -> None:
        self.choice = choice
        self.eos_ids = eos_ids
        self.root = _Node()
        self.max_tokens = 0
        for option in choice.options:
            ids = [int(i) for i in encode(choice.framed(option))]
            if not ids:
                raise InputError(f"option {option!r:.40} tokenizes to nothing")
            self.max_tokens = max(self.max_tokens, len(ids))
            node = self.root
            node.options_below += 1
            if node.options_below == 1:
                node.tail = tuple(ids)
            for i, token in enumerate(ids):
                node = node.children.setdefault(token, _Node())
                node.options_below += 1
                if node.options_below == 1:
                    node.tail = tuple(ids[i + 1 :])
            if node.option is not None:  # two options with the same tokens (cannot happen for distinct strings)
                raise InputError(f"options {node.option!r:.40} and {option!r:.40} tokenize the same")
            node.option = option

    def allowed(self, tokens: Sequence[int]) -> list[int]:
        """The ids allowed after ``tokens`` (the answer so far), for step-by-step decoders such as transformers'
        ``prefix_allowed_tokens_fn``: the children of its node, plus eos once an option is complete (only eos after
        a sequence that left the trie, so such a decoder ends instead of wandering)."""
        node = self.root
        for token in tokens:
            node = node.children.get(int(token))
            if node is None:
                return sorted(self.eos_ids)
        return list(node.children) + (sorted(self.eos_ids) if node.option is not None else [])

    def opening(self) -> tuple[list[int], _Node]:
        """The tokens every option starts with (nothing to decide there) and the node after them.

        Stops one short of a unique option, so a one-option Choice still yields its tokens from ``decode``."""
        tokens, node = [], self.root
        while len(node.children) == 1 and node.option is None and node.options_below > 1:
            token, child = next(iter(node.children.items()))
            if child.options_below == 1:
                break
            tokens.append(token)
            node = child
        return tokens, node


@dataclasses.dataclass(slots=True)
class ChoiceResult(LoopResult):
    option: str = ""
    decode_steps: int = 0
    """Decoder calls after the prefill (a run of forced tokens is one call)."""


def choice_loop(
    trie: ChoiceTrie,
    start: _Node,
    first_logits: np.ndarray,
    feed: Callable[[list[int]], np.ndarray],
    *,
    spec: GenerationSpec,
    prompt_ids: np.ndarray,
    opening: Sequence[int],
    decode: Callable[[list[int]], str],
    stream: StreamCallback | None,
) -> ChoiceResult:
    """Walk ``trie`` from ``start`` (reached by ``opening``, already prefilled): choose among the allowed tokens of
    each branching node from ``first_logits`` and then ``feed(tokens) -> logits`` float32 [vocab] of the last one.

    The sampling options of ``spec`` apply to the allowed tokens (greedy by default); stop strings, max_new_tokens
    and ignore_eos do not: the output is always a whole option.
    """
    rng = np.random.default_rng(spec.seed)
    tokens = list(opening)
    pending: list[int] = []
    node, logits, steps = start, first_logits, 0
    first_at = decode_start = 0.0
    while True:
        if node.options_below == 1 and node.option is None:  # unique: the rest needs no decoding
            tokens += node.tail
            node = _leaf(node)
            break
        allowed = list(node.children)
        if node.option is not None:
            if not allowed:
                break
            allowed += sorted(trie.eos_ids)  # this option is a prefix of others: ending here is a choice
        if len(allowed) == 1:
            token = allowed[0]
        else:
            if pending:
                logits, steps, pending = feed(pending), steps + 1, []
            masked = np.full(logits.shape[-1], -np.inf, np.float32)
            ids = np.asarray([a for a in allowed if a < logits.shape[-1]], dtype=np.int64)
            masked[ids] = logits[ids]
            seen = np.concatenate([prompt_ids, np.asarray(tokens, np.int64)]) if spec.repetition_penalty != 1 else \
                np.zeros(0, np.int64)
            token = choose_token(masked, spec, seen, rng)
            if not first_at:
                first_at = decode_start = time.perf_counter()
        if token in trie.eos_ids and node.option is not None and token not in node.children:
            break
        tokens.append(token)
        pending.append(token)
        node = node.children[token]
    first_at = first_at or time.perf_counter()
    text = decode(tokens)
    if stream is not None and text:
        stream(text)
    return ChoiceResult(tokens, text, "choice", first_at, time.perf_counter() - (decode_start or first_at),
                        option=node.option or "", decode_steps=steps)


def _leaf(node: _Node) -> _Node:
    while node.option is None:
        node = next(iter(node.children.values()))
    return node
