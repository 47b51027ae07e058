"""The Gradio layer without a browser: examples, the profile picker's choices, what the chat shows, CLI errors."""

import re
import socket

from PIL import Image

from edgelmm.cli import main
from edgelmm.demo import app as ui
from edgelmm.demo.engine import Turn
from edgelmm.runtime import Metrics
from edgelmm.runtime.preprocess import load_image


def test_every_example_is_listed_readable_and_small():
    examples = ui.load_examples()
    assert len(examples) >= 8
    listed = {e.image.name for e in examples}
    on_disk = {p.name for p in ui.EXAMPLES_DIR.iterdir() if p.suffix in (".png", ".jpg")}
    assert listed == on_disk, listed ^ on_disk
    for e in examples:
        assert e.prompt.strip() and e.image.stat().st_size < 40_000, e
        assert min(load_image(e.image).size) >= 32


def test_profile_choices(tmp_path):
    for name in ("b-phone", "a-laptop"):
        (tmp_path / f"{name}.yaml").write_text("name: x\n")
    choices = ui.profile_choices(tmp_path, current="custom/my-board.yaml")
    assert choices[0] == ("none (CPU defaults)", "")
    # outside the shipped directory, profiles are passed by path (names resolve only among the shipped ones)
    assert choices[1:3] == [("a-laptop", str(tmp_path / "a-laptop.yaml")), ("b-phone", str(tmp_path / "b-phone.yaml"))]
    assert choices[3] == ("my-board", "custom/my-board.yaml")
    assert ui.profile_choices(tmp_path, current=str(tmp_path / "a-laptop.yaml")) == choices[:3]


def test_chat_view_shows_image_question_answer_and_metrics():
    metrics = Metrics(vision_ms=12.3, ttft_ms=45.6, prompt_tokens=80, generated_tokens=5, decode_ms=100.0,
                      prefill_ms=40.0, images=1, peak_rss_mb=321.0,
                      providers={"vision_encoder": "CPUExecutionProvider", "decoder": "QNNExecutionProvider"})
    done = Turn("What?", image="/tmp/x.png", answer="A cat.", metrics=metrics, finish_reason="eos")
    pending = Turn("And?", answer="It")
    view = ui.chat_view([done, pending])
    assert view[0] == {"role": "user", "content": [{"path": "/tmp/x.png"}, "What?"]}
    assert view[1] == {"role": "assistant", "content": "A cat."}
    title = view[2]["metadata"]["title"]
    assert re.search(r"vision 12 ms \(1 image\) · TTFT 46 ms · prefill 2000 tok/s \(80 tokens\) · decode 40\.0 tok/s"
                     r" \(5 tokens\) · peak RSS 321 MB · vision_encoder CPU, decoder QNN", title), title
    assert "finished by eos" in view[2]["content"]
    assert view[3:] == [{"role": "user", "content": ["And?"]}, {"role": "assistant", "content": "It"}]


def assert_one_line_error(code, err, pattern):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("edgelmm: error: "), err
    assert re.search(pattern, lines[0]), lines[0]


def test_demo_cli_refuses_a_missing_bundle_and_a_bad_profile(capsys, tmp_path, tiny_bundle):
    assert_one_line_error(main(["demo", "--bundle", str(tmp_path / "nope")]), capsys.readouterr().err,
                          "bundle directory .*nope' does not exist")
    code = main(["demo", "--bundle", str(tiny_bundle), "--profile", str(tmp_path / "missing.yaml")])
    assert_one_line_error(code, capsys.readouterr().err, "profile")


def test_demo_cli_refuses_a_port_in_use(capsys, tiny_bundle):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code = main(["demo", "--bundle", str(tiny_bundle), "--port", str(port)])
    assert_one_line_error(code, capsys.readouterr().err, f"cannot serve on 127.0.0.1:{port}: the port is in use")
