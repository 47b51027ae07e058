"""Specs: stdlib-only frozen dataclasses and StrEnums shared by runtime, export and train.

Every spec is built from untrusted dicts (YAML, JSON, CLI) through :func:`from_dict`, which is strict: unknown keys,
wrong types and bad values are all collected and raised together as one ``SpecError`` line.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import math
import numbers
import reprlib
import types
import typing
from collections.abc import Mapping
from typing import Any, TypeVar

from edgelmm.errors import SpecError

T = TypeVar("T")
MAX_PROBLEMS = 12
"""A message lists this many problems and counts the rest (a list of a million wrong items makes one line)."""

SPEC = dict(frozen=True, slots=True, kw_only=True)


class Precision(enum.StrEnum):
    """Numeric format of one graph's weights (and activations, for QDQ)."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"  # dynamic int8 (QOperator), activations quantized at run time
    INT4 = "int4"  # weight-only 4-bit MatMulNBits, fp32 activations
    W8 = "w8"  # weight-only 8-bit MatMulNBits
    A8W8 = "a8w8"  # static QDQ, 8-bit activations and weights (NPU)
    A16W8 = "a16w8"  # static QDQ, 16-bit activations, 8-bit weights (NPU)


class GraphRole(enum.StrEnum):
    """The graphs of a bundle. The connector is folded into the vision encoder (llama.cpp's mmproj idea)."""

    VISION_ENCODER = "vision_encoder"
    TOKEN_EMBEDDING = "token_embedding"
    DECODER = "decoder"
    ITEM_ENCODER = "item_encoder"


class ModelKind(enum.StrEnum):
    """What a registry model or local directory holds."""

    LLAVA = "llava"  # LlavaForConditionalGeneration: image + text -> text
    CAUSAL_LM = "causal-lm"  # a plain decoder-only LM: text -> text
    VLM = "vlm"  # another image + text -> text family (Idefics3 / SmolVLM, Qwen2-VL): models/families.py says which


class Trainability(enum.StrEnum):
    """How one component is trained in one stage (torchtune's TrainableParams, as an enum)."""

    FULL = "full"
    LORA = "lora"
    FROZEN = "frozen"


@dataclasses.dataclass(**SPEC)
class GenerationSpec:
    """Decoding options. Greedy unless ``temperature > 0``."""

    max_new_tokens: int = 64
    """Upper bound on generated tokens; clamped so prompt + output fit the bundle's max context."""
    temperature: float = 0.0
    """0 means greedy (argmax); > 0 samples from softmax(logits / temperature)."""
    top_k: int = 0
    """Keep only the k most likely tokens before sampling; 0 disables."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set whose probability mass reaches top_p; 1.0 disables."""
    repetition_penalty: float = 1.0
    """CTRL-style penalty (> 1 discourages tokens already in prompt or output); 1.0 disables."""
    stop: tuple[str, ...] = ()
    """Stop strings: generation ends when the text contains one; the text is cut before it."""
    seed: int | None = None
    """Seed for sampling; None draws one from the OS."""
    ignore_eos: bool = False
    """Never choose an eos id (their logits are masked), so exactly max_new_tokens come out unless a stop string
    or the context ends it. For benchmarks (llama.cpp's ``--ignore-eos``), not for answers."""

    def __post_init__(self) -> None:
        # Options also arrive as Python keyword arguments (dataclasses.replace skips from_dict): check types first.
        problems = _coerce(self, int, ("max_new_tokens", "top_k")) + _coerce(
            self, float, ("temperature", "top_p", "repetition_penalty"))
        if self.seed is not None:
            problems += _coerce(self, int, ("seed",))
        if isinstance(self.stop, list):
            object.__setattr__(self, "stop", tuple(self.stop))
        if not isinstance(self.stop, tuple) or not all(isinstance(s, str) for s in self.stop):
            problems.append(f"stop must be a list of strings, got {_short(self.stop)}")
        if problems:
            raise SpecError("invalid generation options: " + "; ".join(problems))
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            problems.append(f"temperature must be a finite number >= 0, got {self.temperature}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0, got {self.top_k}")
        if not (0 < self.top_p <= 1):
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if not (self.repetition_penalty > 0 and math.isfinite(self.repetition_penalty)):
            problems.append(f"repetition_penalty must be a finite number > 0, got {self.repetition_penalty}")
        if any(not s for s in self.stop):
            problems.append("stop strings must not be empty")
        if self.seed is not None and self.seed < 0:
            problems.append(f"seed must be >= 0, got {self.seed}")
        if problems:
            raise SpecError("invalid generation options: " + "; ".join(problems))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother = 2, 60, 60
_REPR.maxlist = _REPR.maxdict = _REPR.maxtuple = _REPR.maxset = 4


def _short(value: Any) -> str:
    """A bounded repr for messages: a hostile value (a YAML alias bomb, a 10 MB string) must not be rendered whole."""
    return _REPR.repr(value)[:80]


def _coerce(spec: Any, kind: type, names: tuple[str, ...]) -> list[str]:
    """Normalise numeric fields of a frozen spec to plain int/float (numpy scalars included); report wrong types."""
    problems = []
    for name in names:
        value = getattr(spec, name)
        wanted = numbers.Integral if kind is int else numbers.Real
        if isinstance(value, bool) or not isinstance(value, wanted):
            problems.append(f"{name} must be {'an integer' if kind is int else 'a number'}, got {value!r:.40}")
        else:
            object.__setattr__(spec, name, kind(value))
    return problems


# ----------------------------------------------------------------------------------------------------------------
# Strict conversion from untrusted dicts


def from_dict(cls: type[T], data: Any, *, where: str = "") -> T:
    """Build dataclass ``cls`` from a mapping, strictly.

    Unknown keys (with a close-match hint), missing required fields, wrong types, bad enum values and errors from
    nested specs are all collected and raised together as one ``SpecError``. ``where`` prefixes the message (a
    file name, say).
    """
    problems: list[str] = []
    value = _convert(cls, data, "", problems)
    if problems:
        prefix = f"{where}: " if where else ""
        more = len(problems) - MAX_PROBLEMS
        shown = problems[:MAX_PROBLEMS] + ([f"... and {more} more"] if more > 0 else [])
        raise SpecError(f"{prefix}{len(problems)} problem(s): " + "; ".join(shown))
    return value


def to_dict(spec: Any) -> Any:
    """Inverse of :func:`from_dict`: dataclasses to dicts, enums to strings, tuples to lists."""
    if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
        return {f.name: to_dict(getattr(spec, f.name)) for f in dataclasses.fields(spec)}
    if isinstance(spec, enum.Enum):
        return spec.value
    if isinstance(spec, tuple | list):
        return [to_dict(v) for v in spec]
    if isinstance(spec, Mapping):
        return {str(k): to_dict(v) for k, v in spec.items()}
    return spec


def _path(parent: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{parent}[{key}]"
    key = str(key)[:40]
    return f"{parent}.{key}" if parent else key


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        if issubclass(tp, enum.Enum):
            return "one of " + ", ".join(str(m.value) for m in tp)
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, path: str, problems: list[str]) -> Any:  # noqa: C901 - one dispatch table
    origin = typing.get_origin(tp)
    label = path or "value"
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        non_none = [a for a in args if a is not type(None)]
        if len(non_none) == 1:
            return _convert(non_none[0], value, path, problems)
        for arg in non_none:
            trial: list[str] = []
            out = _convert(arg, value, path, trial)
            if not trial:
                return out
        problems.append(f"{label}: expected {' or '.join(_type_name(a) for a in args)}, got {_short(value)}")
        return None
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            problems.append(f"{label}: {_short(value)} is not allowed; valid: {', '.join(map(repr, allowed))}")
        return value
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if not isinstance(value, list | tuple):
            problems.append(f"{label}: expected a list, got {type(value).__name__}")
            return ()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                problems.append(f"{label}: expected {len(args)} items, got {len(value)}")
                return ()
            return tuple(_convert(a, v, _path(path, i), problems) for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        return tuple(_convert(item, v, _path(path, i), problems) for i, v in enumerate(value))
    if origin in (dict, Mapping) or tp is dict:
        args = typing.get_args(tp) or (str, Any)
        if not isinstance(value, Mapping):
            problems.append(f"{label}: expected a mapping, got {type(value).__name__}")
            return {}
        return {
            _convert(args[0], k, _path(path, str(k)), problems): _convert(args[1], v, _path(path, str(k)), problems)
            for k, v in value.items()
        }
    if dataclasses.is_dataclass(tp):
        return _convert_dataclass(tp, value, path, problems)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except (ValueError, TypeError):
            valid = ", ".join(str(m.value) for m in tp)
            close = difflib.get_close_matches(_short(value).strip("'"), [str(m.value) for m in tp], n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            problems.append(f"{label}: {_short(value)} is not valid; valid: {valid}{hint}")
            return None
    if tp is bool:
        if not isinstance(value, bool):
            problems.append(f"{label}: expected true/false, got {_short(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            problems.append(f"{label}: expected an integer, got {_short(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            problems.append(f"{label}: expected a number, got {_short(value)}")
            return value
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            problems.append(f"{label}: expected a string, got {_short(value)}")
        return value
    if isinstance(tp, type) and not isinstance(value, tp):
        problems.append(f"{label}: expected {_type_name(tp)}, got {type(value).__name__}")
    return value


def _convert_dataclass(cls: Any, value: Any, path: str, problems: list[str]) -> Any:
    label = path or cls.__name__
    if not isinstance(value, Mapping):
        problems.append(f"{label}: expected a mapping of {cls.__name__} fields, got {type(value).__name__}")
        return None
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    before = len(problems)
    for key in value:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            problems.append(f"{_path(path, str(key))}: unknown key{hint}; valid: {', '.join(fields)}")
    for name, field in fields.items():
        if name in value:
            kwargs[name] = _convert(hints[name], value[name], _path(path, name), problems)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            problems.append(f"{_path(path, name)}: required key is missing")
    if len(problems) > before:
        return None
    try:
        return cls(**kwargs)
    except SpecError as exc:
        problems.append(f"{label}: {exc}")
    except (TypeError, ValueError) as exc:
        problems.append(f"{label}: {exc}")
    return None
