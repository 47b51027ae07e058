"""`edgelmm demo` in a real browser: Debian's Chromium, headless, driven by Playwright (demos/browser.py).

One scenario, as a user would go: upload, ask, read the streamed answer and its metrics, ask a follow-up, then every
error path (corrupt upload, failing device profile, oversize prompt), a working answer after them from an example,
and one from the webcam (Chromium's fake camera). Answers are
checked against ``Pipeline.generate`` on the same inputs, so the test holds for any bundle. Screenshots go to
screenshots/ (git-ignored). CI (.ci/run) installs chromium and sets EDGELMM_REQUIRE_BROWSER=1, so there a missing
browser fails the test instead of skipping it.
"""

import os
import re
import shutil
import unicodedata

import pytest

from demos import browser  # the repository root is on sys.path (rootdir of the tests package)
from edgelmm.demo.app import load_examples
from edgelmm.runtime import Pipeline

from ..conftest import REPO

SHOTS = REPO / "screenshots"


def _browser_missing() -> str:
    if not shutil.which(browser.CHROMIUM):
        return f"{browser.CHROMIUM} not found (apt-get install chromium)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install 'edgelmm[test]')"
    return ""


@pytest.fixture(scope="module")
def chromium():
    missing = _browser_missing()
    if missing:
        if os.environ.get("EDGELMM_REQUIRE_BROWSER"):
            pytest.fail(missing)
        pytest.skip(missing)
    with browser.chromium() as b:
        yield b


def shown(text: str) -> str:
    """Text as a browser shows it: control characters dropped, whitespace runs collapsed (applied to both sides)."""
    return " ".join("".join(c for c in text if not unicodedata.category(c).startswith("C")).split())


def user(text, image=False):
    return {"role": "user", "content": [*([{"type": "image"}] if image else []), {"type": "text", "text": text}]}


METRICS = re.compile(r"vision \d+ ms \(1 image\) · TTFT \d+ ms · prefill \d+ tok/s \(\d+ tokens\) · decode [\d.]+ tok/s"
                     r" \(\d+ tokens\) · peak RSS \d+ MB · vision_encoder CPU, token_embedding CPU, decoder CPU")


def test_demo_in_chromium(chromium, tiny_bundle, sample_images, tmp_path):
    scene, corrupt, profiles = tmp_path / "scene.png", tmp_path / "corrupt.png", tmp_path / "profiles"
    sample_images[0].save(scene)
    corrupt.write_bytes(scene.read_bytes()[:120])  # an upload cut short
    profiles.mkdir()
    (profiles / "broken-phone.yaml").write_text("name: broken-phone\nnot_a_field: 1\n")
    pipe = Pipeline.load(tiny_bundle)
    max_new = pipe.manifest.generation.max_new_tokens  # the slider's default
    q1, q2 = "What is in the picture?", "And what colours do you see?"

    with browser.DemoServer(tiny_bundle, "--profiles-dir", str(profiles)) as server:
        assert re.search(rf"tiny-random from .* is running on http://127\.0\.0\.1:{server.port}\n", server.output)
        assert "offline: listening on 127.0.0.1 only, analytics off, no share link" in server.output
        page = chromium.new_page(viewport={"width": 1280, "height": 900})
        demo = browser.DemoPage(page, server.url)
        assert "tiny-random" in page.inner_text("#bundle-info")

        # 1. upload an image, ask, wait for the streamed answer: it is the runtime's greedy answer, with metrics
        demo.upload(scene)
        demo.ask(q1)
        [a1] = demo.wait_answers(1)
        r1 = pipe.generate(q1, images=[scene], max_new_tokens=max_new)
        assert shown(a1) == shown(r1.text) != ""
        states = demo.streamed_states()
        assert len(states) >= 2 and all(shown(a1).startswith(shown(s)) for s in states), "answer was not streamed"
        [m1] = demo.metrics()
        assert METRICS.search(m1), m1
        demo.screenshot(SHOTS / "demo-answer.png")

        # 2. a follow-up without an image: the conversation so far (image included) is the prompt
        demo.ask(q2)
        a2 = demo.wait_answers(2)[1]
        r2 = pipe.generate([user(q1, image=True), {"role": "assistant", "content": r1.text}, user(q2)],
                           images=[scene], max_new_tokens=max_new)
        assert shown(a2) == shown(r2.text)
        assert METRICS.search(demo.metrics()[1])
        assert demo.error(wait=False) == ""

        # 3. a corrupt upload: a one-line message, the upload removed, the conversation untouched
        page.set_input_files("#image input[type=file]", str(corrupt))
        assert re.fullmatch(r"'corrupt\.png' is not a readable image \(.+\)", demo.error()), demo.error()
        page.wait_for_selector("#image img", state="detached")
        demo.screenshot(SHOTS / "demo-corrupt-upload.png")

        # 4. a device profile that cannot be loaded: its error shown, the picker back on the loaded profile
        demo.pick_profile("broken-phone")
        page.wait_for_function("document.querySelector('#error').innerText.includes('profile')")
        assert "Traceback" not in demo.error() and demo.profile() == "none (CPU defaults)"

        # 5. a prompt too long for the context: refused, the question handed back for editing
        long = "y" * 700
        demo.ask(long)
        page.wait_for_function("document.querySelector('#error').innerText.includes('max context')")
        assert re.fullmatch(r"prompt is \d+ tokens \(1 image\(s\) x \d+ visual tokens included\); the bundle's max"
                            r" context is 512, leaving no room to generate", demo.error())
        assert page.input_value("#prompt textarea") == long and len(demo.answers()) == 2
        demo.screenshot(SHOTS / "demo-errors.png")

        # 6. still working: clear, one click on an example, ask
        page.click("#clear")
        page.wait_for_function("document.querySelectorAll('#chat [data-testid=\"bot\"]').length == 0")
        demo.example(0)
        example = load_examples()[0]
        assert page.input_value("#prompt textarea") == example.prompt
        page.click("#send")
        [a3] = demo.wait_answers(1)
        assert shown(a3) == shown(pipe.generate(example.prompt, images=[example.image], max_new_tokens=max_new).text)
        assert demo.error(wait=False) == ""
        demo.screenshot(SHOTS / "demo-after-errors.png")

        # 7. the webcam (Chromium's fake camera): the photo it took is what the model was asked about
        page.click("#clear")
        page.wait_for_function("document.querySelectorAll('#chat [data-testid=\"bot\"]').length == 0")
        demo.capture_webcam()
        demo.ask(q1)
        [a4] = demo.wait_answers(1)
        photo = demo.chat_image()
        assert shown(a4) == shown(pipe.generate(q1, images=[photo], max_new_tokens=max_new).text)
        demo.screenshot(SHOTS / "demo-webcam.png")

        assert demo.off_machine_requests() == [], "the page reached beyond the demo's loopback server"
        page.close()
        assert server.stop() == 0, server.output
    assert "Traceback" not in server.output, server.output

