"""Chat templates are bundle content, i.e. untrusted jinja: compiled and rendered in a sandbox with resource limits.

jinja2's ImmutableSandboxedEnvironment already blocks attribute escapes (``''.__class__``), unsafe calls and
mutation of the messages. What it does not bound is cost: ``lipsum(10**6)``, ``'a' * 10**10``, ``10 ** 10 ** 10``,
``'x' | center(10**9)`` or three nested loops over ``range(100000)`` hang or exhaust memory. So here: no ``lipsum``,
integer arguments of calls and filters are capped, ``*`` and ``**`` are checked before they run, the output is capped,
and a render that still runs longer than :data:`RENDER_TIMEOUT_S` is interrupted (an asynchronous exception raised in
the rendering thread: jinja renders in Python bytecode, so it stops within milliseconds).
"""

from __future__ import annotations

import ctypes
import datetime
import functools
import itertools
import json
import threading
from collections.abc import Callable
from typing import Any

from jinja2 import Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from edgelmm.errors import BundleError, InputError

MAX_TEMPLATE_CHARS = 1_000_000
MAX_RENDER_CHARS = 4_000_000
"""The template sees sentinels, not user text: its output is the template's own text plus ~30 chars per message."""
MAX_INT_ARGUMENT = 100_000
"""Largest integer a template may pass to a call or filter (real templates pass indents and small counts)."""
MAX_REPEAT = 1_000_000
RENDER_TIMEOUT_S = 5.0
"""Real chat templates render in about a millisecond; this only stops hostile ones."""
_WHAT = "the bundle's chat template (manifest text.chat_template)"


class TemplateRefusal(TemplateError):
    """``raise_exception(...)`` in a template: the template refuses these messages (the user's input is wrong)."""


class _Timeout(BaseException):  # BaseException: a template cannot swallow it
    pass


def _raise(message: str) -> None:
    raise TemplateRefusal(message)


def _tojson(value: Any, indent: int | None = None, **_: Any) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _check_ints(values: Any) -> None:
    for value in values:
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > MAX_INT_ARGUMENT:
            raise SecurityError(f"integer argument {value} exceeds the chat-template limit {MAX_INT_ARGUMENT}")


def _capped(func: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(func)  # keeps jinja's pass_context/pass_environment markers
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        _check_ints(itertools.chain(args, kwargs.values()))
        return func(*args, **kwargs)

    return wrapper


class ChatTemplateEnvironment(ImmutableSandboxedEnvironment):
    """The settings of transformers' apply_chat_template (so HF templates render identically), plus cost limits."""

    intercepted_binops = frozenset({"*", "**"})

    def __init__(self) -> None:
        super().__init__(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        self.filters = {name: _capped(f) for name, f in self.filters.items()}
        self.filters["tojson"] = _tojson
        del self.globals["lipsum"]
        self.globals["raise_exception"] = _raise
        self.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(str(fmt)[:100])

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805 - jinja's signature
        _check_ints(itertools.chain(args, kwargs.values()))
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**" and isinstance(right, int | float) and abs(right) > 64:
            raise SecurityError(f"exponent {right} exceeds the chat-template limit 64")
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int) and len(seq) * times > MAX_REPEAT:
                    raise SecurityError(f"repetition of {len(seq)} x {times} exceeds the chat-template limit")
        return super().call_binop(context, operator, left, right)


def compile_template(source: str) -> Template:
    """Compile a bundle's chat template, refusing oversized or malformed ones with a BundleError."""
    if not isinstance(source, str) or len(source) > MAX_TEMPLATE_CHARS:
        raise BundleError(f"{_WHAT} is not a string of at most {MAX_TEMPLATE_CHARS} characters")
    try:
        return ChatTemplateEnvironment().from_string(source)
    except Exception as exc:  # noqa: BLE001 - jinja's parser raises TemplateSyntaxError, and RecursionError/
        # MemoryError on pathological nesting: every one means "this bundle's template is unusable"
        raise BundleError(f"{_WHAT} does not compile: {type(exc).__name__}: {str(exc)[:200]}") from None


def render(template: Template, *, timeout_s: float = RENDER_TIMEOUT_S, **variables: Any) -> str:
    """Render in a worker thread under the limits above. TemplateRefusal -> InputError; anything else -> BundleError."""
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            chunks, size = [], 0
            for chunk in template.generate(**variables):
                size += len(chunk)
                if size > MAX_RENDER_CHARS:
                    raise SecurityError(f"output exceeds {MAX_RENDER_CHARS} characters")
                chunks.append(chunk)
            outcome["text"] = "".join(chunks)
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="edgelmm-chat-template", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(worker.ident), ctypes.py_object(_Timeout))
        worker.join(1.0)
        raise BundleError(f"{_WHAT} did not finish rendering within {timeout_s:g} s (stopped)")
    error = outcome.get("error")
    if isinstance(error, TemplateRefusal):
        raise InputError(f"the chat template refused the messages: {str(error)[:200]}")
    if error is not None:
        raise BundleError(f"{_WHAT} failed: {type(error).__name__}: {str(error)[:200]}")
    text = outcome["text"]
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise BundleError(f"{_WHAT} produced text with lone surrogates (invalid Unicode)") from None
    return text
