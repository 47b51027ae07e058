"""Chat template rendering, image-placeholder expansion and token-count checks.

The template is rendered with every message's text replaced by a random sentinel, then the output is split: template
text is tokenized with special tokens parsed, user text (the sentinels) with special tokens escaped, and each image
placeholder the *template* emitted is expanded by the manifest's ``text.image_prompt`` recipe into runs of
``num_image_tokens`` slots (one run per tile; Idefics3 adds tile tags around them). So text that contains ``<image>``
or ``<|im_end|>`` literally can neither create image slots nor shift them (prompt injection of special tokens).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from edgelmm.errors import InputError
from edgelmm.runtime.manifest import ImagePromptSpec, TextSpec
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
    """(start, length) of each run of visual tokens in ``ids``: one per tile, tiles of each image in order (one
    run per image unless the bundle splits images into tiles)."""

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

    def build(self, prompt: str | Sequence[Message], n_images: int = 0, *, chat: bool = True,
              grids: Sequence[tuple[int, int]] | None = None) -> PromptIds:
        """Tokenize ``prompt`` with ``n_images`` images.

        A string prompt becomes one user message with the images first (LLaVA's ``<image>\\n{prompt}``). A message
        list places images where its ``{"type": "image"}`` parts are. ``chat=False`` skips the template: image
        slots, then the raw text. ``grids`` gives each image's (rows, cols) of tiles (see preprocess.ImageTiles;
        default (0, 0): one tile). Raises InputError on bad messages, placeholder/image count mismatch or a prompt
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
        placeholders = sum(kind == "image" for kind, _ in pieces)
        if placeholders != n_images:
            raise InputError(f"prompt has {placeholders} image placeholder(s) but {n_images} image(s) were given")
        grids = list(grids) if grids is not None else [(0, 0)] * n_images
        if len(grids) != n_images:
            raise InputError(f"{len(grids)} tile grid(s) given for {n_images} image(s)")
        ids, slots = self._tokenize(pieces, iter(grids))
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

    def _tokenize(self, pieces: list[tuple[str, Any]], grids: Iterator[tuple[int, int]]
                  ) -> tuple[list[int], list[tuple[int, int]]]:
        ids: list[int] = []
        slots: list[tuple[int, int]] = []
        n = self.text.num_image_tokens
        for kind, value in pieces:
            if kind == "template":
                ids += self.tokenizer.encode_trusted(value)
            elif kind == "user":
                ids += self.tokenizer.encode_untrusted(value)
            else:
                for text in expand_image(self.text.image_prompt, next(grids)):
                    if text is None:
                        slots.append((len(ids), n))
                        ids += [int(self.text.image_token_id)] * n
                    elif text:
                        ids += self.tokenizer.encode_trusted(text)
        return ids, slots


def expand_image(recipe: ImagePromptSpec, grid: tuple[int, int]) -> list[str | None]:
    """The text one image placeholder becomes: template-text pieces, with None for each tile's run of image slots.

    ``grid`` is (rows, cols) of a split image, (0, 0) for a single tile. Pieces are joined before they are split at
    the slots, so text between tiles (Idefics3's row ends + overview, ``"\\n\\n"``) tokenizes as transformers does.
    """
    rows, cols = grid
    if rows == cols == 0:
        text = recipe.single
    elif not recipe.tile:
        raise InputError(f"this bundle encodes an image as one tile; got a {rows}x{cols} grid")
    else:
        parts = []
        for r in range(1, rows + 1):
            parts += [recipe.tile.replace("{row}", str(r)).replace("{col}", str(c)) for c in range(1, cols + 1)]
            parts.append(recipe.row_end)
        text = "".join(parts) + recipe.overview
    out: list[str | None] = []
    for i, piece in enumerate(text.split("{image}")):
        if i:
            out.append(None)
        out.append(piece)
    return out


def _check_size(text: str) -> None:
    if not isinstance(text, str):
        raise InputError(f"prompt text must be a string, got {type(text).__name__}")
    if len(text) > MAX_PROMPT_CHARS:
        raise InputError(f"prompt is {len(text)} characters; the limit is {MAX_PROMPT_CHARS}")
