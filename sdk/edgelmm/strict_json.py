"""JSON for untrusted files (manifests, checkpoint metadata): one reading, whoever reads it (stdlib only).

``json.loads`` alone accepts what other parsers read differently, which lets one file mean two things: duplicate
keys (Python keeps the last, others the first), ``NaN``/``Infinity`` (not JSON), ``\\ud800`` escapes that decode to
lone surrogates (not Unicode), and nesting deep enough to exhaust the stack. These are all refused here.
"""

from __future__ import annotations

import json
import math
from typing import Any

from edgelmm.errors import EdgelmmError


def loads(data: bytes, *, where: str, error: type[EdgelmmError], max_depth: int = 64) -> Any:
    """Decode ``data`` strictly; every problem raises ``error`` with one line naming ``where``."""
    try:
        value = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_keys, parse_constant=_no_constants)
    except UnicodeDecodeError as exc:
        raise error(f"'{where}' is not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise error(f"'{where}' is not valid JSON: {exc}") from None
    except RecursionError:
        raise error(f"'{where}' is nested too deeply") from None
    except ValueError as exc:  # from the hooks
        raise error(f"'{where}' is not strict JSON: {exc}") from None
    check_values(value, where=where, error=error, max_depth=max_depth)
    return value


def check_values(data: Any, *, where: str, error: type[EdgelmmError], max_depth: int = 64) -> None:
    """Every string valid Unicode (no lone surrogates), every float finite, nesting at most ``max_depth``."""
    stack = [(data, 0)]
    while stack:
        value, depth = stack.pop()
        if depth > max_depth:
            raise error(f"{where}: nested deeper than {max_depth} levels")
        if isinstance(value, dict):
            stack += [(k, depth + 1) for k in value] + [(v, depth + 1) for v in value.values()]
        elif isinstance(value, list | tuple):
            stack += [(v, depth + 1) for v in value]
        elif isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise error(f"{where}: a string contains a lone surrogate {value!r:.40} (invalid Unicode)") from None
        elif isinstance(value, float) and not math.isfinite(value):
            raise error(f"{where}: {value} is not a finite number")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise ValueError(f"duplicate key {key!r:.60}")
        seen.add(key)
    return dict(pairs)


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")
