"""Chat template rendering, image-placeholder expansion and token-count checks.

The template is rendered with every message's text replaced by a random sentinel, then the output is split: template
text is tokenized with special tokens parsed, user text (the sentinels) with special tokens escaped, and each image
placeholder the *template* emitted becomes ``num_image_tokens`` slots. So text that contains ``<image>`` or
``<|im_end|>`` literally can neither create image slots nor shift them (prompt injection of special tokens).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edgelmm.errors import InputError
from edgelmm.runtime.manifest import TextSpec
from edgelmm.runtime.tokenizer import Tokenizer

MAX_PROMPT_CHARS = 1_000_000  # refuse before tokenizing: megabytes of text cannot fit any context we export
ROLES = ("system", "user", "assistant")

Message = Mapping[str, Any]
"""{"role": "user", "content": "text" | [{"type": "image"}, {"type": "text", "text": "..."}]}."""


@dataclasses.dataclass(frozen=True, slots=True)
class PromptIds:
    """A tokenized prompt: ``ids`` int64 [S] with image_token_id at every image slot."""

    ids: np.ndarray
    image_slots: tuple[tuple[int, int], ...]
    """(start, length) of each image's visual tokens in ``ids``, in image order."""

    def __len__(self) -> int:
        return int(self.ids.shape[0])


def _raise(message: str) -> None:
    raise TemplateError(message)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _environment() -> ImmutableSandboxedEnvironment:
    # The same settings as transformers' apply_chat_template, so HF templates render identically.
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    return env


class PromptBuilder:
    """Builds :class:`PromptIds` for one bundle (its template, tokenizer and image token)."""

    def __init__(self, text: TextSpec, tokenizer: Tokenizer, *, has_vision: bool) -> None:
        self.text = text
        self.tokenizer = tokenizer
        self.has_vision = has_vision
        self._template = _environment().from_string(text.chat_template) if text.chat_template else None

    def build(self, prompt: str | Sequence[Message], n_images: int = 0, *, chat: bool = True) -> PromptIds:
        """Tokenize ``prompt`` with ``n_images`` images.

        A string prompt becomes one user message with the images first (LLaVA's ``<image>\\n{prompt}``). A message
        list places images where its ``{"type": "image"}`` parts are. ``chat=False`` skips the template: image
        slots, then the raw text. Raises InputError on bad messages, placeholder/image count mismatch or a prompt
        that does not fit ``max_context``.
        """
        if n_images and not self.has_vision:
            raise InputError(f"this bundle has no vision encoder; got {n_images} image(s)")
        if not chat or self._template is None:
            if not isinstance(prompt, str):
                raise InputError("a message list needs chat mode and a bundle with a chat template")
            _check_size(prompt)
            pieces: list[tuple[str, Any]] = [("image", None)] * n_images + [("user", prompt)]
        else:
            messages = self._normalise(prompt, n_images)
            pieces = self._render(messages)
        ids, slots = self._tokenize(pieces)
        if len(slots) != n_images:
            raise InputError(f"prompt has {len(slots)} image placeholder(s) but {n_images} image(s) were given")
        if len(ids) >= self.text.max_context:
            raise InputError(
                f"prompt is {len(ids)} tokens ({len(slots)} image(s) x {self.text.num_image_tokens} visual tokens"
                f" included); the bundle's max context is {self.text.max_context}, leaving no room to generate"
            )
        return PromptIds(np.asarray(ids, dtype=np.int64), tuple(slots))

    def _normalise(self, prompt: str | Sequence[Message], n_images: int) -> list[dict[str, Any]]:
        if isinstance(prompt, str):
            _check_size(prompt)
            if not self.has_vision:
                return [{"role": "user", "content": prompt}]
            parts: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
            return [{"role": "user", "content": [*parts, {"type": "text", "text": prompt}]}]
        if not isinstance(prompt, Sequence) or not prompt:
            raise InputError("prompt must be a string or a non-empty list of messages")
        out = []
        for i, message in enumerate(prompt):
            if not isinstance(message, Mapping) or set(message) - {"role", "content"}:
                raise InputError(f"message {i} must be a mapping with keys role and content")
            role, content = message.get("role"), message.get("content")
            if role not in ROLES:
                raise InputError(f"message {i} role {role!r:.30} is not valid; valid: {', '.join(ROLES)}")
            out.append({"role": role, "content": self._content(content, i)})
        return out

    def _content(self, content: Any, index: int) -> Any:
        if isinstance(content, str):
            _check_size(content)
            return [{"type": "text", "text": content}] if self.has_vision else content
        if not isinstance(content, Sequence):
            raise InputError(f"message {index} content must be a string or a list of parts")
        parts = []
        for part in content:
            kind = part.get("type") if isinstance(part, Mapping) else None
            if kind == "image":
                parts.append({"type": "image"})
            elif kind == "text" and isinstance(part.get("text"), str):
                _check_size(part["text"])
                parts.append({"type": "text", "text": part["text"]})
            else:
                raise InputError(f"message {index} has a part that is neither {{type: image}} nor {{type: text, text}}")
        if not self.has_vision:
            if any(p["type"] == "image" for p in parts):
                raise InputError("this bundle has no vision encoder; image parts are not accepted")
            return "".join(p["text"] for p in parts)
        return parts

    def _render(self, messages: list[dict[str, Any]]) -> list[tuple[str, Any]]:
        """Render with sentinels; return pieces ("template", text) | ("user", text) | ("image", None)."""
        nonce = secrets.token_hex(8)
        texts: list[str] = []

        def sentinel(text: str) -> str:
            texts.append(text)
            return f"EDGELMMSLOT{nonce}N{len(texts) - 1}X"

        masked = []
        for m in messages:
            content = m["content"]
            if isinstance(content, str):
                content = sentinel(content)
            else:
                content = [p if p["type"] == "image" else {"type": "text", "text": sentinel(p["text"])} for p in content]
            masked.append({"role": m["role"], "content": content})
        try:
            rendered = self._template.render(
                messages=masked,
                add_generation_prompt=True,
                bos_token=self.text.bos_token or "",
                eos_token=self.text.eos_token or "",
                image_token=self.text.image_token or "",
            )
        except TemplateError as exc:
            raise InputError(f"the chat template refused the messages: {exc}") from None
        alternatives = [f"EDGELMMSLOT{nonce}N(\\d+)X"]
        if self.has_vision and self.text.image_token:
            alternatives.append(re.escape(self.text.image_token))
        pieces: list[tuple[str, Any]] = []
        pos = 0
        for match in re.finditer("|".join(alternatives), rendered):
            if match.start() > pos:
                pieces.append(("template", rendered[pos : match.start()]))
            if match.group(1) is not None:
                pieces.append(("user", texts[int(match.group(1))]))
            else:
                pieces.append(("image", None))
            pos = match.end()
        if pos < len(rendered):
            pieces.append(("template", rendered[pos:]))
        return pieces

    def _tokenize(self, pieces: list[tuple[str, Any]]) -> tuple[list[int], list[tuple[int, int]]]:
        ids: list[int] = []
        slots: list[tuple[int, int]] = []
        n = self.text.num_image_tokens
        for kind, value in pieces:
            if kind == "template":
                ids += self.tokenizer.encode_trusted(value)
            elif kind == "user":
                ids += self.tokenizer.encode_untrusted(value)
            else:
                slots.append((len(ids), n))
                ids += [int(self.text.image_token_id)] * n
        return ids, slots


def _check_size(text: str) -> None:
    if not isinstance(text, str):
        raise InputError(f"prompt text must be a string, got {type(text).__name__}")
    if len(text) > MAX_PROMPT_CHARS:
        raise InputError(f"prompt is {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
