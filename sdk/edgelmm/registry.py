"""One place for registry lookups, so every "unknown X" error reads the same (stdlib only)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import TypeVar

from edgelmm.errors import UnknownNameError

T = TypeVar("T")


def lookup(registry: Mapping[str, T], key: str, *, what: str) -> T:
    """Return ``registry[key]`` or raise UnknownNameError listing the valid keys and a close match."""
    try:
        return registry[key]
    except (KeyError, TypeError):
        pass
    valid = ", ".join(sorted(registry))
    close = difflib.get_close_matches(str(key), list(registry), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    raise UnknownNameError(f"unknown {what} '{key}'; valid: {valid}{hint}")
