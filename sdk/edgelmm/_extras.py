"""Optional dependencies: one function that imports a module or names the extra that provides it."""

from __future__ import annotations

import importlib
from types import ModuleType

from edgelmm.errors import MissingExtraError


def require(module: str, extra: str) -> ModuleType:
    """Import ``module`` or raise MissingExtraError: "install with pip install 'edgelmm[extra]'"."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"'{module}' is not installed ({exc.msg}); install with: pip install 'edgelmm[{extra}]'"
        ) from None
