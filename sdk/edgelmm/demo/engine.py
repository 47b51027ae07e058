"""The demo's engine: one loaded Pipeline, the conversation as data, streamed answers. Runtime only, no gradio.

The UI (``edgelmm.demo.app``) renders what this module returns; keeping the turn logic here lets tests drive it
without a browser and keeps the Gradio layer to layout and wiring.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

from edgelmm.errors import EdgelmmError, InputError
from edgelmm.runtime import Manifest, Metrics, Pipeline, Result
from edgelmm.runtime.constraint import Choice
from edgelmm.runtime.preprocess import load_image
from edgelmm.runtime.prompt import Message

log = logging.getLogger("edgelmm.demo")

NO_PROFILE = ""
"""The profile picker's value for "no device profile" (onnxruntime's CPU defaults)."""


@dataclasses.dataclass(slots=True)
class Turn:
    """One exchange: what the user sent and what the model answered (``metrics`` is set once it is complete)."""

    prompt: str
    image: str | None = None
    """Path of the image sent with this turn; it stays part of the conversation for later turns."""
    answer: str = ""
    metrics: Metrics | None = None
    finish_reason: str = ""
    """"" while unanswered; then the Result's ("eos", "stop", "length"), or "stopped" if the user stopped it."""


def conversation(turns: Sequence[Turn]) -> tuple[list[Message], list[str]]:
    """Turns -> (chat messages with an image part where each image was sent, the image paths in that order).

    The last turn may still be unanswered: it becomes the final user message, as ``generate`` expects.
    """
    messages: list[Message] = []
    images: list[str] = []
    for turn in turns:
        content: list[dict[str, str]] = []
        if turn.image:
            content.append({"type": "image"})
            images.append(turn.image)
        content.append({"type": "text", "text": turn.prompt})
        messages.append({"role": "user", "content": content})
        if turn.finish_reason:
            messages.append({"role": "assistant", "content": turn.answer})
    return messages, images


def error_message(exc: BaseException) -> str:
    """What the UI shows for a failure: the one-line message of our errors, never a traceback."""
    if isinstance(exc, EdgelmmError):
        return str(exc)
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"unexpected {type(exc).__name__}: {first} (the console has the traceback)"


def metrics_summary(m: Metrics) -> str:
    """The line shown beside an answer: the numbers users compare across devices and bundles."""
    vision = f"vision {m.vision_ms:.0f} ms ({m.images} image{'s' * (m.images != 1)})" if m.images else "no image"
    return (
        f"{vision} · TTFT {m.ttft_ms:.0f} ms · prefill {m.prefill_tok_s:.0f} tok/s ({m.prompt_tokens} tokens) ·"
        f" decode {m.decode_tok_s:.1f} tok/s ({m.generated_tokens} tokens) · peak RSS {m.peak_rss_mb:.0f} MB ·"
        f" {providers_summary(m.providers)}"
    )


def providers_summary(providers: dict[str, str]) -> str:
    """The execution provider that actually ran each graph: ``vision_encoder CPU, token_embedding CPU, ...``."""
    return ", ".join(f"{role} {p.removesuffix('ExecutionProvider') or p}" for role, p in providers.items())


@dataclasses.dataclass(slots=True)
class _Done:
    result: Result | None = None
    error: BaseException | None = None


class _Cancelled(Exception):
    """Raised inside the stream callback to stop a generation nobody is reading any more."""


STREAM_AHEAD = 16
"""Text pieces the generating thread may queue before it waits for the page to take them."""


def stream_generate(pipe: Pipeline, prompt: Any, images: Sequence[Any], **options: Any) -> Generator[str, None, Result]:
    """Run ``pipe.generate`` in a worker thread; yield text pieces as they are decoded; return the Result.

    Closing the generator early (Stop pressed, browser tab closed) stops the generation at its next text piece,
    which releases the pipeline for the next request. Errors raised by ``generate`` are re-raised here.
    """
    # Bounded: the worker may run at most STREAM_AHEAD pieces ahead of the reader, so a reader that leaves stops the
    # generation within that many tokens however fast the decoder is (an unbounded queue let a fast bundle run on).
    pieces: queue.Queue[str | _Done] = queue.Queue(maxsize=STREAM_AHEAD)
    cancel = threading.Event()

    def hand_over(item: str | _Done) -> None:
        while not cancel.is_set():
            try:
                pieces.put(item, timeout=0.05)
                return
            except queue.Full:
                continue
        if not isinstance(item, _Done):
            raise _Cancelled

    def on_piece(piece: str) -> None:
        if cancel.is_set():
            raise _Cancelled
        hand_over(piece)

    def work() -> None:
        try:
            hand_over(_Done(result=pipe.generate(prompt, images, stream=on_piece, **options)))
        except BaseException as exc:  # noqa: BLE001 - handed to the reading thread, which re-raises it
            hand_over(_Done(error=exc))

    threading.Thread(target=work, name="edgelmm-demo-generate", daemon=True).start()
    try:
        while not isinstance(item := pieces.get(), _Done):
            yield item
    finally:
        cancel.set()
    if item.error is not None:
        raise item.error
    return item.result


class Engine:
    """The bundle loaded for the demo, with the device profile it was loaded under.

    One pipeline serves every browser tab (a laptop demo: one user); switching the profile reloads it for all.
    """

    def __init__(self, bundle: str | os.PathLike[str], *, profile: str | None = None, threads: int | None = None):
        self.bundle = Path(bundle)
        self.threads = threads
        self.profile = profile or NO_PROFILE
        self.pipeline = self._load(self.profile)
        self._switch = threading.Lock()

    def _load(self, profile: str) -> Pipeline:
        return Pipeline.load(self.bundle, profile=profile or None, threads=self.threads)

    @property
    def manifest(self) -> Manifest:
        return self.pipeline.manifest

    def switch_profile(self, profile: str | None) -> None:
        """Reload the bundle under ``profile`` (name or path; empty: none). On failure the old pipeline stays."""
        profile = profile or NO_PROFILE
        with self._switch:
            if profile != self.profile:
                self.pipeline = self._load(profile)  # raises before anything changes
                self.profile = profile
                log.info("loaded %s with profile %s", self.bundle, profile or "(none)")

    def new_turn(self, prompt: str | None, image: str | None) -> Turn:
        """Check what the user sent before it joins the conversation; raise InputError with a one-line reason."""
        prompt = (prompt or "").strip()
        if not prompt:
            raise InputError("type a question first" + (" about the image" if image else ""))
        if image:
            if not self.manifest.has_vision:
                raise InputError(f"bundle '{self.manifest.model.name}' has no vision encoder; it takes text only")
            try:
                load_image(image)  # decode now, so an unreadable upload never enters the conversation
            except InputError as exc:  # name the file as the user knows it, not by its upload cache path
                raise InputError(str(exc).replace(str(image), Path(image).name)) from None
        return Turn(prompt=prompt, image=image or None)

    def answer(self, turns: Sequence[Turn], turn: Turn, *, max_new_tokens: int) -> Generator[Turn, None, Turn]:
        """Stream the answer to ``turn`` given the earlier ``turns``: yields ``turn`` as its text grows.

        Decoding uses the bundle's generation settings (greedy unless the bundle says otherwise), so an answer can be
        reproduced with ``Pipeline.generate(messages, images, max_new_tokens=...)`` on the same conversation.
        """
        messages, images = conversation([*turns, turn])
        pieces = stream_generate(self.pipeline, messages, images, max_new_tokens=max_new_tokens)
        try:
            while True:
                try:
                    turn.answer += next(pieces)
                except StopIteration as done:
                    result: Result = done.value
                    break
                yield turn
        except GeneratorExit:  # our reader went away (Stop, tab closed): keep the partial answer as the reply
            turn.finish_reason = "stopped"
            raise
        finally:
            pieces.close()  # stops the worker
        turn.answer = result.text
        turn.metrics = result.metrics
        turn.finish_reason = result.finish_reason
        return turn

    def pick_tool(self, prompt: str | None, image: str | None, *, constrained: bool = True) -> tuple[str, Result]:
        """Tool selection (bundles whose manifest lists ``tools``): the picked tool id ("" if the answer does not
        name one of them) and the Result. ``constrained``: decode under Choice(tools), so the answer is always one
        of them, in the JSON frame, with fewer decoder steps; unconstrained shows what the model says on its own."""
        turn = self.new_turn(prompt, image)
        tools = self.manifest.tools
        if not tools:
            raise InputError(f"bundle '{self.manifest.model.name}' lists no tools (export a model trained with the "
                             "mllm-tool recipe)")
        choice = Choice(tools)
        result = self.pipeline.generate(turn.prompt, images=[turn.image] if turn.image else [],
                                        constraint=choice if constrained else None,
                                        max_new_tokens=self.pipeline.compile(choice).max_tokens + 1)
        return choice.parse(result.text.strip()) or "", result
