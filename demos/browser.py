"""Drive ``edgelmm demo`` in Debian's Chromium, headless, with Playwright (no ``playwright install``).

Shared by the browser test (tests/demo), the launch-to-first-answer benchmark (demos/bench_first_answer.py) and the
README screenshot. Needs ``apt-get install chromium`` and ``pip install playwright`` (the [test] extra).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

CHROMIUM = os.environ.get("EDGELMM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
)
FAKE_CAMERA_FLAGS = ("--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream")
"""Chromium's built-in test camera (an animated test pattern), with the permission prompt accepted."""
READY = "Ctrl+C stops it."
"""The end of what ``edgelmm demo`` prints once it serves."""


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _default_sigint() -> None:
    # A shell starts background jobs with SIGINT ignored, and children inherit that: restore it, so stop() can
    # press Ctrl+C the way a user does.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class DemoServer:
    """``python -m edgelmm demo --bundle B --port P ...`` in a subprocess, with its console captured."""

    def __init__(self, bundle: str | os.PathLike[str], *args: str, port: int | None = None, env: dict | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, "-m", "edgelmm", "demo", "--bundle", str(bundle), "--port", str(self.port), *args]
        self.env = {**os.environ, **(env or {})}
        self.lines: list[str] = []
        self.proc: subprocess.Popen[str] | None = None
        self.started_at = 0.0
        self.ready_at = 0.0

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def start(self, timeout: float = 120.0) -> DemoServer:
        """Launch and wait for the "serving" message; raise with the console output if it never comes."""
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(
            self.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env, bufsize=1,
            preexec_fn=_default_sigint,
        )
        ready = threading.Event()

        def read() -> None:
            for line in self.proc.stdout:
                self.lines.append(line)
                if READY in line:
                    self.ready_at = time.perf_counter()
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        deadline = time.monotonic() + timeout
        while not ready.wait(0.1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"edgelmm demo did not start (exit code {self.proc.returncode}):\n{self.output}")
        return self

    def stop(self) -> int | None:
        """Ctrl+C, as a user would; kill only if it does not stop within 15 s."""
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def __enter__(self) -> DemoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def chromium(executable: str = CHROMIUM) -> Iterator[object]:
    """A headless system Chromium driven by Playwright, with a fake camera; yields the Browser."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        flags = [*CHROMIUM_FLAGS, *FAKE_CAMERA_FLAGS]
        browser = pw.chromium.launch(executable_path=executable, headless=True, args=flags)
        try:
            yield browser
        finally:
            browser.close()


# Chat messages as the user sees them: answers are bot messages without a thought box; metrics are the thought box
# that follows each answer (its title holds the numbers, its body the providers).
_READ_CHAT = """() => Array.from(document.querySelectorAll('#chat [data-testid="bot"]')).map(el => {
    const thought = el.querySelector('.thought-group');
    if (!thought) return {kind: 'answer', text: el.innerText};
    return {kind: 'metrics', text: thought.innerText};
})"""

# Records every distinct text the newest answer shows, as the DOM changes: proof that it was streamed.
_WATCH_STREAM = """() => {
    window.__edgelmmStates = [];
    const record = () => {
        const bots = Array.from(document.querySelectorAll('#chat [data-testid="bot"]'))
            .filter(el => !el.querySelector('.thought-group'));
        const text = bots.length ? bots[bots.length - 1].innerText : '';
        const states = window.__edgelmmStates;
        if (text && states[states.length - 1] !== text) states.push(text);
    };
    new MutationObserver(record).observe(document.querySelector('#chat'),
                                         {subtree: true, childList: true, characterData: true});
}"""


class DemoPage:
    """The demo in one browser tab, through the elem_ids the app gives its components."""

    def __init__(self, page: object, url: str, *, timeout_s: float = 120.0) -> None:
        self.page = page
        page.set_default_timeout(timeout_s * 1e3)  # every click and wait: a busy 2-core CI machine is slow
        self.requests: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.goto(url)
        page.wait_for_selector("#prompt textarea")
        page.evaluate(_WATCH_STREAM)

    def upload(self, path: str | os.PathLike[str]) -> None:
        self.page.set_input_files("#image input[type=file]", str(path))
        self.page.wait_for_selector("#image img")

    def capture_webcam(self) -> None:
        """Switch the image to the webcam source, open the camera, take a photo."""
        self.page.click("#image button[aria-label='Capture from camera']")
        self.page.get_by_text("Click to Access Webcam").click()
        # a capture before the stream has a frame yields no photo: wait for one (HAVE_CURRENT_DATA)
        self.page.wait_for_function("document.querySelector('#image video')?.readyState >= 2")
        self.page.click("#image button[aria-label='capture photo']")
        self.page.wait_for_selector("#image img")

    def chat_image(self, index: int = -1) -> bytes:
        """The bytes of an image shown in the chat, fetched from the demo's server as the page does."""
        src = self.page.eval_on_selector_all("#chat img", "els => els.map(e => e.src)")[index]
        return self.page.request.get(src).body()

    def ask(self, question: str) -> None:
        self.page.fill("#prompt textarea", question)
        self.page.click("#send")

    def messages(self) -> list[dict[str, str]]:
        return self.page.evaluate(_READ_CHAT)

    def answers(self) -> list[str]:
        return [m["text"] for m in self.messages() if m["kind"] == "answer"]

    def metrics(self) -> list[str]:
        return [m["text"] for m in self.messages() if m["kind"] == "metrics"]

    def wait_answers(self, count: int) -> list[str]:
        """Wait until ``count`` answers are complete (each complete answer gets its metrics box); return them."""
        self.page.wait_for_function(
            f"document.querySelectorAll('#chat .thought-group').length >= {count}"
        )
        return self.answers()

    def streamed_states(self) -> list[str]:
        """Every distinct text the newest answer showed while it grew."""
        return self.page.evaluate("() => window.__edgelmmStates")

    def error(self, *, wait: bool = True) -> str:
        """The error box's text ("" when none); waits for one to appear unless ``wait`` is False."""
        if wait:
            self.page.wait_for_selector("#error .edgelmm-error")
        box = self.page.query_selector("#error .edgelmm-error")
        return box.inner_text() if box else ""

    def pick_profile(self, label: str) -> None:
        self.page.click("#profile input")
        self.page.get_by_role("option", name=label).click()

    def profile(self) -> str:
        return self.page.input_value("#profile input")

    def example(self, index: int) -> None:
        """Click the ``index``-th example (fills the image and the prompt)."""
        self.page.locator("#examples button.gallery-item").nth(index).click()
        self.page.wait_for_selector("#image img")

    def screenshot(self, path: str | os.PathLike[str], *, full_page: bool = True, palette: bool = False) -> Path:
        """Save the page as PNG; ``palette`` quantizes to 256 colours (~3x smaller, for committed images)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(path), full_page=full_page)
        if palette:
            from PIL import Image

            with Image.open(path) as shot:
                image = shot.convert("RGB").quantize(256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
            image.save(path, optimize=True)
        return path

    def off_machine_requests(self) -> Sequence[str]:
        """Requests the page made to anything but this demo's loopback server (the demo must work offline)."""
        origin = self.page.url.split("/", 3)[:3]
        return [u for u in self.requests if u.split("/", 3)[:3] != origin and not u.startswith(("data:", "blob:"))]
