"""HF ``tokenizers`` (Rust, no torch) behind a small interface: trusted vs untrusted text, streaming decode.

Trusted text (what the chat template emits) is tokenized with special tokens parsed: ``<|im_start|>`` becomes its
id. Untrusted text (whatever a user typed) is tokenized with special tokens escaped, so a prompt that contains
``<|im_end|>`` or ``<image>`` literally gets the plain-text tokens for those characters, never the control ids.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.decoders import DecodeStream

from edgelmm.errors import BundleError, InputError


class Tokenizer:
    """Wraps one tokenizer.json. Thread-safe (the escape flag is toggled under a lock)."""

    def __init__(self, path: str | Path) -> None:
        try:
            self._tok = HFTokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on malformed JSON
            raise BundleError(f"tokenizer file '{path}' cannot be loaded: {str(exc)[:120]}") from None
        self._lock = threading.Lock()

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    def token_to_id(self, token: str) -> int | None:
        return self._tok.token_to_id(token)

    def encode_trusted(self, text: str) -> list[int]:
        """Template text: special tokens are parsed; no post-processor (BOS) is added, as apply_chat_template."""
        with self._lock:
            self._tok.encode_special_tokens = False
            return self._tok.encode(text, add_special_tokens=False).ids

    def encode_untrusted(self, text: str) -> list[int]:
        """User text: special-token strings are encoded as ordinary text."""
        _check_text(text)
        with self._lock:
            self._tok.encode_special_tokens = True
            try:
                return self._tok.encode(text, add_special_tokens=False).ids
            finally:
                self._tok.encode_special_tokens = False

    def decode(self, ids: list[int] | np.ndarray, *, skip_special_tokens: bool = True) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def stream(self) -> TextStream:
        return TextStream(self._tok)


class TextStream:
    """Incremental detokenizer: feed ids one at a time, get the new text (multi-byte characters held back)."""

    def __init__(self, tok: HFTokenizer) -> None:
        self._tok = tok
        self._stream = DecodeStream(skip_special_tokens=True)

    def step(self, token_id: int) -> str:
        try:
            return self._stream.step(self._tok, int(token_id)) or ""
        except Exception:  # an id outside the vocabulary: emit nothing rather than crash mid-stream
            return ""


def _check_text(text: str) -> None:
    if not isinstance(text, str):
        raise InputError(f"prompt text must be a string, got {type(text).__name__}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        # U+DC80..U+DCFF is how Python smuggles an undecodable byte from argv or a file (surrogateescape)
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"lone surrogate U+{code:04X}"
        raise InputError(f"prompt text is not valid UTF-8 ({what} at character {exc.start})") from None
