"""The EdgelmmError tree (stdlib only).

Every message is one line: what is wrong, the offending value or path, then what is allowed or how to fix it.
Only ``edgelmm.cli`` turns these into exit codes: 2 for bad input (``InputLikeError``), 1 for runtime failure.
"""

from __future__ import annotations

_BLANKS = str.maketrans({c: " " for c in "\t\n\v\f\r"})


def one_line(text: str) -> str:
    """``text`` as one printable line: whitespace controls become spaces; other unprintable characters (NUL,
    escape sequences, lone surrogates from undecodable file names, U+2028...) are shown escaped, never emitted."""
    text = text.translate(_BLANKS)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class EdgelmmError(Exception):
    """Base of every error edgelmm raises on purpose."""

    exit_code: int = 1

    def __str__(self) -> str:  # KeyError subclasses would otherwise quote the message
        return one_line(" ".join(str(a) for a in self.args))


class BadInputError(EdgelmmError):
    """The user gave something unusable: exit code 2."""

    exit_code = 2


class SpecError(BadInputError, ValueError):
    """A spec, YAML file or option has a wrong field, type or value."""


class UnknownNameError(BadInputError, KeyError):
    """A registry lookup failed; the message lists the valid names."""


class InputError(BadInputError, ValueError):
    """A runtime input (image, prompt, item) cannot be used."""


class BundleError(BadInputError):
    """A bundle directory is missing, malformed or of an unknown schema."""


class BundleIntegrityError(BundleError):
    """A bundle file is missing, truncated, tampered with, or points outside the bundle."""


class OutputExistsError(BadInputError):
    """An output directory exists and --force was not given."""


class ProfileError(BadInputError):
    """A device profile YAML is invalid."""


class BudgetError(BadInputError):
    """A bundle does not fit the device profile's memory budget."""


class ProviderError(EdgelmmError):
    """No execution provider in the fallback list could run a graph."""


class GraphRunError(EdgelmmError):
    """onnxruntime failed while running a verified graph (a bundle whose graph breaks on valid inputs): exit 1."""


class ExportError(EdgelmmError):
    """Export of a model to ONNX failed."""


class UnsupportedModelError(ExportError, BadInputError):
    """The architecture cannot be exported; the message says which and why."""

    exit_code = 2


class ExportShapeError(ExportError):
    """An exported graph produced an output of the wrong shape during validation."""


class ExportToleranceError(ExportError):
    """An exported graph differs from torch beyond the tolerance table."""


class MissingExtraError(EdgelmmError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    exit_code = 2


class TrainingError(EdgelmmError):
    """A training recipe failed."""
