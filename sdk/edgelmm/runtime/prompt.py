"""Chat template rendering, image-placeholder expansion and token-count checks.

The template is rendered with every message's text replaced by a random sentinel, then the output is split: template
text is tokenized with special tokens parsed, user text (the sentinels) with special tokens escaped, and each image
placeholder the *template* emitted is expanded by the manifest's ``text.image_prompt`` recipe into runs of
``num_image_tokens`` slots (one run per tile; Idefics3 adds tile tags around them). So text that contains ``<image>``
or ``<|im_end|>`` literally can neither create image slots nor shift them (prompt injection of special tokens).
"""

from __future__ import annotations

import dataclasses
import re
import secrets
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from edgelmm.errors import InputError
from edgelmm.runtime.items import ITEM_TOKEN, split_on_items
from edgelmm.runtime.manifest import ImagePromptSpec, TextSpec
from edgelmm.runtime.template import compile_template, render
from edgelmm.runtime.tokenizer import Tokenizer

MAX_PROMPT_CHARS = 1_000_000  # refuse before tokenizing: megabytes of text cannot fit any context we export
MAX_IMAGES_PER_PROMPT = 16
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
    item_slots: tuple[tuple[int, int], ...] = ()
    """(start, length) of each item's run of item tokens, in prompt order (Item-Language Model bundles)."""

    def __len__(self) -> int:
        return int(self.ids.shape[0])


class PromptBuilder:
    """Builds :class:`PromptIds` for one bundle (its template, tokenizer and image token)."""

    def __init__(self, text: TextSpec, tokenizer: Tokenizer, *, has_vision: bool) -> None:
        self.text = text
        self.tokenizer = tokenizer
        self.has_vision = has_vision
        self._template = compile_template(text.chat_template) if text.chat_template else None

    def build(self, prompt: str | Sequence[Message], n_images: int = 0, *, chat: bool = True,
              grids: Sequence[tuple[int, int]] | None = None, n_items: int = 0, item_tokens: int = 0) -> PromptIds:
        """Tokenize ``prompt`` with ``n_images`` images.

        A string prompt becomes one user message with the images first (LLaVA's ``<image>\\n{prompt}``). A message
        list places images where its ``{"type": "image"}`` parts are. ``chat=False`` skips the template: image
        slots, then the raw text. ``grids`` gives each image's (rows, cols) of tiles (see preprocess.ImageTiles;
        default (0, 0): one tile). ``n_items`` > 0: the caller's text names that many items with ``<item>``
        placeholders (runtime/items.py), each expanded to ``item_tokens`` slots (item bundles only; with
        ``n_items`` = 0 the text is taken literally). Raises InputError on bad messages, placeholder/image or
        placeholder/item count mismatch or a prompt that does not fit ``max_context``.
        """
        if isinstance(n_images, bool) or not isinstance(n_images, int) or not 0 <= n_images <= MAX_IMAGES_PER_PROMPT:
            raise InputError(f"the number of images must be in [0, {MAX_IMAGES_PER_PROMPT}], got {n_images!r:.20}")
        if n_images and not self.has_vision:
            raise InputError(f"this bundle has no vision encoder; got {n_images} image(s)")
        if isinstance(prompt, bytes | bytearray):
            raise InputError("prompt must be text (str), got bytes: decode it as UTF-8 first")
        if not chat or self._template is None:
            if not isinstance(prompt, str):
                raise InputError("a message list needs chat mode and a bundle with a chat template")
            _check_size(prompt)
            pieces: list[tuple[str, Any]] = [("image", None)] * n_images + [("user", prompt)]
        else:
            messages = self._normalise(prompt, n_images)
            pieces = self._render(messages)
        if n_items:
            pieces = _split_items(pieces, n_items)
        segments = self._tokenize(pieces)
        images = segments.count(None)
        if images != n_images:
            raise InputError(f"prompt has {images} image placeholder(s) but {n_images} image(s) were given")
        grids = list(grids) if grids is not None else [(0, 0)] * n_images
        if len(grids) != n_images:
            raise InputError(f"{len(grids)} tile grid(s) given for {n_images} image(s)")
        segments = self._expand_images(segments, iter(grids))
        n, tiles = self.text.num_image_tokens, segments.count(None)
        total = sum(n if seg is None else item_tokens if seg is ITEM_SLOT else len(seg) for seg in segments)
        if total == 0:
            raise InputError("prompt is empty (0 tokens): give some text or an image")
        if total >= self.text.max_context:
            per_image = f"{images} image(s)" if tiles == images else f"{images} image(s) in {tiles} tiles"
            raise InputError(
                f"prompt is {total} tokens ({per_image} x {n} visual tokens included); the bundle's max"
                f" context is {self.text.max_context}, leaving no room to generate"
            )
        ids: list[int] = []
        slots, item_slots = [], []
        filler = self.text.pad_token_id if self.text.pad_token_id is not None else self.text.eos_token_ids[0]
        for seg in segments:
            if seg is None:
                slots.append((len(ids), n))
                ids += [int(self.text.image_token_id)] * n
            elif seg is ITEM_SLOT:  # the token id is a placeholder: its embedding is overwritten by the item's tokens
                item_slots.append((len(ids), item_tokens))
                ids += [int(filler)] * item_tokens
            else:
                ids += seg
        return PromptIds(np.asarray(ids, dtype=np.int64), tuple(slots), tuple(item_slots))

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
        total = sum(len(p) for p in _texts(out))
        if total > MAX_PROMPT_CHARS:
            raise InputError(f"prompt is {total} characters over {len(out)} messages; the limit is {MAX_PROMPT_CHARS}")
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
        rendered = render(
            self._template,
            messages=masked,
            add_generation_prompt=True,
            bos_token=self.text.bos_token or "",
            eos_token=self.text.eos_token or "",
            image_token=self.text.image_token or "",
        )
        alternatives = [f"EDGELMMSLOT{nonce}N(\\d+)X"]
        if self.has_vision and self.text.image_token:
            alternatives.append(re.escape(self.text.image_token))
        pieces: list[tuple[str, Any]] = []
        pos = expanded = 0
        for match in re.finditer("|".join(alternatives), rendered):
            if match.start() > pos:
                pieces.append(("template", rendered[pos : match.start()]))
            if match.group(1) is not None:
                text = texts[int(match.group(1))]
                expanded += len(text)
                if expanded > 2 * MAX_PROMPT_CHARS:  # a template that repeats the user's text thousands of times
                    raise InputError(f"the chat template expands the prompt beyond {2 * MAX_PROMPT_CHARS} characters")
                pieces.append(("user", text))
            else:
                pieces.append(("image", None))
            pos = match.end()
        if pos < len(rendered):
            pieces.append(("template", rendered[pos:]))
        return pieces

    def _tokenize(self, pieces: list[tuple[str, Any]]) -> list[list[int] | None]:
        """Template text with special tokens parsed, user text with them escaped; None where an image goes,
        ITEM_SLOT where an item goes."""
        return [
            self.tokenizer.encode_trusted(value) if kind == "template"
            else self.tokenizer.encode_untrusted(value) if kind == "user"
            else ITEM_SLOT if kind == "item"
            else None
            for kind, value in pieces
        ]

    def _expand_images(self, segments: list[list[int] | None], grids: Iterator[tuple[int, int]]
                       ) -> list[list[int] | None]:
        """Each image placeholder (None) -> its template text and one None per tile's run of image slots."""
        out: list[list[int] | None] = []
        for seg in segments:
            if seg is not None:
                out.append(seg)
                continue
            for text in expand_image(self.text.image_prompt, next(grids)):
                if text is None or text:
                    out.append(None if text is None else self.tokenizer.encode_trusted(text))
        return out


ITEM_SLOT: list[int] = []
"""Marks an item's place among tokenized segments (compared by identity: it is never a real segment)."""


def _split_items(pieces: list[tuple[str, Any]], n_items: int) -> list[tuple[str, Any]]:
    """Split the user's text (never template text) on ``<item>``; refuse a count other than ``n_items``."""
    out: list[tuple[str, Any]] = []
    found = 0
    for kind, value in pieces:
        if kind != "user":
            out.append((kind, value))
            continue
        for i, text in enumerate(split_on_items(value)):
            if i:
                out.append(("item", None))
                found += 1
            out.append(("user", text))
    if found != n_items:
        raise InputError(f"the prompt has {found} {ITEM_TOKEN} placeholder(s) but {n_items} item(s) were given")
    return out


def _texts(messages: list[dict[str, Any]]) -> Iterator[str]:
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            yield content
        else:
            yield from (part["text"] for part in content if part["type"] == "text")


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
