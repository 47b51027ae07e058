"""Reading the small versioned JSON files beside saved tensors (checkpoint and trained-weights ``meta.json``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgelmm import strict_json
from edgelmm.errors import BundleError


def read_versioned(path: Path, *, fmt: str | None, version: int | None, missing: str, what: str) -> dict[str, Any]:
    """The JSON object in ``path``; BundleError (one line) when it is missing (``missing`` is the message), unreadable,
    or not ``fmt`` v``version`` (``what`` names the expected kind; ``fmt=None`` skips the check)."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise BundleError(missing) from None
    except OSError as exc:
        raise BundleError(f"'{path}' cannot be read: {exc.strerror}") from None
    meta = strict_json.loads(data, where=str(path), error=BundleError)  # duplicate keys, NaN, lone surrogates: refused
    if not isinstance(meta, dict):
        raise BundleError(f"'{path}' is not {what}: not a JSON object")
    if fmt is not None and (meta.get("format") != fmt or meta.get("schema_version") != version):
        raise BundleError(f"'{path}' is not {what} this edgelmm reads ({fmt} v{version}); got format "
                          f"{meta.get('format')!r} v{meta.get('schema_version')!r}")
    return meta
