"""The Gradio UI over :class:`edgelmm.demo.engine.Engine`: layout, wiring and error display. Gradio + runtime only.

Every event handler catches every exception and shows its one-line message in the ``#error`` box: the browser
never sees a stack trace (unexpected ones go to the console log) and the app keeps serving. Components carry
``elem_id``s so the browser test (tests/demo) has stable selectors.
"""

from __future__ import annotations

import dataclasses
import html
import logging
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import gradio as gr
import yaml

from edgelmm.demo.engine import (
    NO_PROFILE,
    Engine,
    Turn,
    error_message,
    metrics_summary,
    providers_summary,
)
from edgelmm.errors import EdgelmmError, SpecError
from edgelmm.runtime import Manifest

log = logging.getLogger("edgelmm.demo")

REPO = Path(__file__).resolve().parents[3]
EXAMPLES_DIR = REPO / "demos" / "examples"
"""Example images and their prompts (examples.yaml); present in a source checkout, absent from a wheel."""
PROFILES_DIR = REPO / "device_profiles"
"""The shipped device profiles, offered by the picker by name."""

CSS = """
#error .edgelmm-error { border: 1px solid #d33; background: #fee; color: #900; padding: 6px 10px; border-radius: 6px; }
"""


# -- examples and profiles -------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, slots=True)
class Example:
    image: Path
    prompt: str


def load_examples(directory: Path = EXAMPLES_DIR) -> list[Example]:
    """Entries of ``directory/examples.yaml`` (image file, prompt); none when the directory is absent."""
    index = directory / "examples.yaml"
    if not index.is_file():
        return []
    entries = yaml.safe_load(index.read_text())
    if not isinstance(entries, list) or not all(isinstance(e, dict) and {"image", "prompt"} <= set(e) for e in entries):
        raise SpecError(f"{index}: expected a list of mappings with keys image and prompt")
    return [Example(directory / e["image"], str(e["prompt"])) for e in entries]


def profile_choices(directory: Path = PROFILES_DIR, current: str = NO_PROFILE) -> list[tuple[str, str]]:
    """(label, value) pairs for the picker: no profile, then every ``*.yaml`` in ``directory``, then ``current``.

    Shipped profiles are passed to ``Pipeline.load`` by name, those from another directory by path.
    """
    choices = [("none (CPU defaults)", NO_PROFILE)]
    shipped = directory.resolve() == PROFILES_DIR.resolve()
    for path in sorted(directory.glob("*.yaml")):
        choices.append((path.stem, path.stem if shipped else str(path)))
    if current and current not in (value for _, value in choices):
        choices.append((Path(current).stem, current))
    return choices


# -- rendering -------------------------------------------------------------------------------------------------


def chat_view(turns: Sequence[Turn]) -> list[dict[str, Any]]:
    """Turns -> Chatbot messages: the user's image and question, the answer, and its metrics beside it."""
    out: list[dict[str, Any]] = []
    for turn in turns:
        out.append({"role": "user", "content": [*([{"path": turn.image}] if turn.image else []), turn.prompt]})
        if turn.answer or turn.finish_reason:
            out.append({"role": "assistant", "content": turn.answer})
        if turn.finish_reason == "stopped":
            out.append({"role": "assistant", "content": "", "metadata": {"title": "stopped: no metrics"}})
        if turn.metrics is not None:
            m = turn.metrics
            detail = (f"finished by {turn.finish_reason} · preprocess {m.preprocess_ms:.0f} ms · prefill"
                      f" {m.prefill_ms:.0f} ms · decode {m.decode_ms:.0f} ms · pipeline loaded in {m.load_ms:.0f} ms")
            out.append({"role": "assistant", "content": detail, "metadata": {"title": metrics_summary(m)}})
    return out


def error_html(message: str) -> str:
    return f'<div class="edgelmm-error" role="alert">{html.escape(message)}</div>' if message else ""


def bundle_info(engine: Engine) -> str:
    m = engine.manifest
    graphs = ", ".join(f"{role} {g.precision}" for role, g in m.graphs.items())
    vision = f" · {m.text.num_image_tokens} visual tokens per image" if m.has_vision else " · text only"
    providers = providers_summary(engine.pipeline.providers)
    return (
        f"**{m.model.name}** ({m.model.kind}) · bundle `{engine.bundle}` · {graphs}{vision} ·"
        f" max context {m.text.max_context} · profile **{engine.profile or 'none'}** · providers: {providers} ·"
        f" loaded in {engine.pipeline.load_ms:.0f} ms"
    )


# -- modes -----------------------------------------------------------------------------------------------------


def upload_path(payload: dict[str, Any] | None) -> str | None:
    """The uploaded file's path from the image component's raw payload (events that take it skip preprocessing).

    Gradio's image preprocessing opens uploads with Pillow and answers a corrupt file with its generic error toast
    before any handler runs. Our handlers take the raw payload instead (Gradio has still moved the file into its
    upload cache and checked it is there), so the runtime's guarded decoder (size and decompression-bomb checks,
    one-line errors) decides, and the model sees exactly the uploaded bytes.
    """
    return payload.get("path") if payload else None


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    """What a mode's tab is built from."""

    engine: Engine
    examples: list[Example]
    error: gr.HTML
    """The app-wide error box; handlers return ``error_html(message)`` to it ("" clears it)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Mode:
    """A tab of the demo, shown when ``supported(manifest)`` says the bundle can do it."""

    name: str
    label: str
    supported: Callable[[Manifest], bool]
    build: Callable[[Context], None]


def build_chat(ctx: Context) -> None:
    """Image (upload, webcam, clipboard) + question -> streamed answer, with history and metrics per answer."""
    engine, manifest = ctx.engine, ctx.engine.manifest
    turns = gr.State([])
    prompt = gr.Textbox(
        placeholder="Ask about the image (Enter to send)", show_label=False, elem_id="prompt", scale=6, max_lines=4,
        render=False,
    )
    with gr.Row():
        with gr.Column(scale=2):
            image = gr.Image(
                label="Image", type="filepath", sources=["upload", "webcam", "clipboard"], height=260,
                elem_id="image", visible=manifest.has_vision,
            )
            if ctx.examples and manifest.has_vision:
                gr.Examples(
                    [[str(e.image), e.prompt] for e in ctx.examples], inputs=[image, prompt],
                    label="Examples: one click fills the image and the question", elem_id="examples",
                    examples_per_page=12, visible_columns=[0],
                )
            max_new = gr.Slider(  # capped: a chat answer longer than 1024 tokens is not what this slider is for
                1, min(manifest.text.max_context, 1024), value=manifest.generation.max_new_tokens, step=1,
                label="max new tokens", elem_id="max-new-tokens",
            )
        with gr.Column(scale=3):
            chat = gr.Chatbot(
                label="Chat", elem_id="chat", height=480, render_markdown=False, feedback_options=None,
                buttons=["copy"], placeholder="Upload an image or pick an example, then ask a question.",
            )
            with gr.Row():
                prompt.render()
                send = gr.Button("Send", variant="primary", elem_id="send", scale=1, min_width=80)
                stop = gr.Button("Stop", elem_id="stop", scale=1, min_width=80)
                clear = gr.Button("Clear", elem_id="clear", scale=1, min_width=80)

    def respond(text: str, image: dict | None, max_new_tokens: float, history: list[Turn]) -> Generator:
        image_path = upload_path(image)
        try:
            turn = engine.new_turn(text, image_path)
        except Exception as exc:  # noqa: BLE001 - shown in the UI; the conversation is unchanged
            yield gr.skip(), gr.skip(), gr.skip(), gr.skip(), error_html(_report(exc))
            return
        # In place: if Stop cancels this handler mid-answer, the session's history keeps the partial reply it shows.
        history.append(turn)
        yield chat_view(history), history, "", None, ""
        try:
            for _ in engine.answer(history[:-1], turn, max_new_tokens=int(max_new_tokens)):
                yield chat_view(history), gr.skip(), gr.skip(), gr.skip(), gr.skip()
        except Exception as exc:  # noqa: BLE001 - the turn is dropped, its question and image handed back
            history.remove(turn)
            yield chat_view(history), history, text, image_path, error_html(_report(exc))
            return
        yield chat_view(history), history, gr.skip(), gr.skip(), ""

    def check_upload(image: dict | None) -> tuple[Any, str]:
        try:
            if upload_path(image):
                engine.new_turn("check", upload_path(image))
        except Exception as exc:  # noqa: BLE001 - an unreadable upload is removed, with the reason shown
            return None, error_html(_report(exc))
        return gr.skip(), ""

    sent = gr.on(
        [send.click, prompt.submit], respond, inputs=[prompt, image, max_new, turns],
        outputs=[chat, turns, prompt, image, ctx.error], concurrency_limit=1, preprocess=False,
    )
    stop.click(None, cancels=[sent])
    clear.click(lambda: ([], [], ""), outputs=[chat, turns, ctx.error], cancels=[sent])
    image.upload(check_upload, inputs=image, outputs=[image, ctx.error], preprocess=False)


def build_tools(ctx: Context) -> None:
    """Image + instruction -> the tool the model picks from the bundle's ``tools``, constrained or free decoding."""
    engine = ctx.engine
    with gr.Row():
        with gr.Column(scale=2):
            image = gr.Image(label="Image", type="filepath", sources=["upload", "webcam", "clipboard"], height=260,
                             elem_id="tool-image")
            instruction = gr.Textbox(label="Instruction", placeholder="What does this say?", elem_id="tool-prompt")
            constrained = gr.Checkbox(value=True, label="Constrained decoding (always a listed tool)",
                                      elem_id="tool-constrained")
            pick = gr.Button("Pick a tool", variant="primary", elem_id="tool-pick")
        with gr.Column(scale=3):
            picked = gr.Textbox(label="Tool", interactive=False, elem_id="tool-picked")
            raw = gr.Textbox(label="Model output", interactive=False, elem_id="tool-output")
            stats = gr.Markdown("", elem_id="tool-metrics")

    def choose(text: str, payload: dict | None, constrained_: bool) -> tuple[Any, Any, Any, str]:
        try:
            tool, result = engine.pick_tool(text, upload_path(payload), constrained=constrained_)
        except Exception as exc:  # noqa: BLE001 - shown in the UI
            return gr.skip(), gr.skip(), gr.skip(), error_html(_report(exc))
        m = result.metrics
        line = (f"{m.decode_steps} decoder steps after the prefill · {m.generated_tokens} tokens · "
                f"TTFT {m.ttft_ms:.0f} ms · finish: {result.finish_reason}")
        return tool or "(not a listed tool)", result.text, line, ""

    gr.on([pick.click, instruction.submit], choose, inputs=[instruction, image, constrained],
          outputs=[picked, raw, stats, ctx.error], concurrency_limit=1, preprocess=False)


MODES: dict[str, Mode] = {
    "chat": Mode("chat", "Chat", lambda manifest: True, build_chat),
    "tools": Mode("tools", "Tool selection", lambda manifest: bool(manifest.tools), build_tools),
}
"""One tab per mode the loaded bundle supports. Tool selection shows when the manifest lists ``tools``;
item recommendation (issue 12: pick items from the catalog) add entries here whose ``supported`` reads what their
export writes into the manifest, and whose ``build`` lays out their tab from the same Context."""


def _report(exc: BaseException) -> str:
    if not isinstance(exc, EdgelmmError):
        log.error("unexpected error in the demo", exc_info=exc)
    return error_message(exc)


# -- the app ---------------------------------------------------------------------------------------------------


def build_app(engine: Engine, *, examples: list[Example], profiles: list[tuple[str, str]]) -> gr.Blocks:
    """The whole UI: bundle info, device-profile picker, error box, one tab per supported mode."""
    with gr.Blocks(title=f"edgelmm demo: {engine.manifest.model.name}", analytics_enabled=False) as app:
        gr.Markdown("## edgelmm demo: answers computed on this machine by the torch-free runtime", elem_id="title")
        with gr.Row():
            info = gr.Markdown(bundle_info(engine), elem_id="bundle-info")
            picker = gr.Dropdown(
                profiles, value=engine.profile, label="Device profile", elem_id="profile", scale=0, min_width=260
            )
        error = gr.HTML("", elem_id="error")
        ctx = Context(engine=engine, examples=examples, error=error)
        with gr.Tabs(elem_id="modes"):
            for mode in MODES.values():
                if mode.supported(engine.manifest):
                    with gr.Tab(mode.label, id=mode.name, elem_id=f"mode-{mode.name}"):
                        mode.build(ctx)

        def pick_profile(choice: str | None) -> tuple[Any, Any, str]:
            try:
                engine.switch_profile(choice)
            except Exception as exc:  # noqa: BLE001 - the previous profile stays loaded; the picker shows it again
                return gr.update(value=engine.profile), gr.skip(), error_html(_report(exc))
            return gr.skip(), bundle_info(engine), ""

        # .input, not .change: resetting the picker after a failed load must not fire another load.
        picker.input(pick_profile, inputs=picker, outputs=[picker, info, error], concurrency_limit=1)
    return app


def serve(app: gr.Blocks, *, host: str, port: int, allowed_paths: Sequence[Path] = ()) -> str:
    """Start serving in a background thread; return the URL. Offline: no analytics, no share link."""
    app.queue(default_concurrency_limit=1)
    app.launch(
        server_name=host, server_port=port, share=False, inbrowser=False, quiet=True, prevent_thread_lock=True,
        ssr_mode=False, show_error=False, theme=gr.themes.Default(), css=CSS, footer_links=["api", "settings"],
        allowed_paths=[str(p) for p in allowed_paths], max_file_size="64mb",
    )
    return f"http://{host}:{port}"
