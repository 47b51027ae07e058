"""The demo's turn logic without a browser: answers equal the Pipeline's, history is fed back, errors are one line."""

import threading

import pytest

from edgelmm.demo.engine import Engine, Turn, conversation, error_message, metrics_summary, stream_generate
from edgelmm.errors import EdgelmmError, InputError
from edgelmm.runtime import Metrics, Pipeline


@pytest.fixture(scope="module")
def engine(tiny_bundle):
    return Engine(tiny_bundle)


@pytest.fixture(scope="module")
def scene(sample_images, tmp_path_factory):
    path = tmp_path_factory.mktemp("images") / "scene.png"
    sample_images[0].save(path)
    return str(path)


def run_turn(engine, turns, turn, max_new_tokens):
    """Answer ``turn``; return the texts it showed while streaming."""
    return [t.answer for t in engine.answer(turns, turn, max_new_tokens=max_new_tokens)]


def test_conversation_places_images_where_they_were_sent():
    turns = [Turn("a?", image="x.png", answer="A", metrics=Metrics(), finish_reason="eos"), Turn("b?")]
    messages, images = conversation(turns)
    assert images == ["x.png"]
    assert messages == [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "a?"}]},
        {"role": "assistant", "content": "A"},
        {"role": "user", "content": [{"type": "text", "text": "b?"}]},
    ]


def test_streamed_answers_equal_the_pipelines_and_history_is_used(engine, tiny_bundle, scene):
    pipe = Pipeline.load(tiny_bundle)
    first = engine.new_turn("  What is in the picture? ", scene)
    states = run_turn(engine, [], first, max_new_tokens=48)
    assert first.prompt == "What is in the picture?"
    assert first.answer == pipe.generate(first.prompt, images=[scene], max_new_tokens=48).text
    assert len(states) >= 2 and all(first.answer.startswith(s) for s in states), "the answer was not streamed"
    assert first.metrics.images == 1 and first.metrics.vision_ms > 0 and first.finish_reason == "length"

    second = engine.new_turn("And the colours?", None)
    run_turn(engine, [first], second, max_new_tokens=8)
    assert second.metrics is not None
    history = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": first.prompt}]},
        {"role": "assistant", "content": first.answer},
        {"role": "user", "content": [{"type": "text", "text": "And the colours?"}]},
    ]
    expected = pipe.generate(history, images=[scene], max_new_tokens=8)
    assert second.answer == expected.text and second.metrics.prompt_tokens == expected.prompt_tokens
    assert expected.prompt_tokens > first.metrics.prompt_tokens, "history was not fed back"
    assert second.metrics.images == 1  # the first turn's image is still part of the conversation


def test_unusable_input_is_refused_before_it_joins_the_conversation(engine, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20)
    with pytest.raises(InputError, match=r"^'corrupt.png' is not a readable image"):
        engine.new_turn("What is this?", str(corrupt))
    with pytest.raises(InputError, match="type a question first about the image"):
        engine.new_turn("   ", str(corrupt))


def test_oversize_prompt_is_an_error_and_the_engine_keeps_working(engine):
    with pytest.raises(InputError, match=r"prompt is \d+ tokens .*max context is 512"):
        run_turn(engine, [], engine.new_turn("y" * 700, None), max_new_tokens=4)
    turn = engine.new_turn("hi", None)
    run_turn(engine, [], turn, max_new_tokens=3)
    assert turn.metrics.generated_tokens == 3


def test_text_only_bundle_refuses_images(tiny_lm_bundle, scene):
    with pytest.raises(InputError, match="has no vision encoder"):
        Engine(tiny_lm_bundle).new_turn("What is this?", scene)


def test_failed_profile_switch_keeps_the_loaded_pipeline(engine, tmp_path):
    before = engine.pipeline
    with pytest.raises(EdgelmmError):
        engine.switch_profile(str(tmp_path / "no-such-profile.yaml"))
    assert engine.pipeline is before and engine.profile == ""


def test_closing_the_stream_stops_generation(engine):
    """Stop / a closed tab must free the pipeline at once, not after max_new_tokens more steps."""
    pipe = engine.pipeline
    prompt_tokens = len(pipe.prompts.build("hello"))
    pieces = stream_generate(pipe, "hello", [], max_new_tokens=400)
    next(pieces)
    pieces.close()
    worker = [t for t in threading.enumerate() if t.name == "edgelmm-demo-generate"]
    for t in worker:
        t.join(30)
    assert not any(t.is_alive() for t in worker)
    generated = pipe.decoder.length - prompt_tokens
    assert generated < 50, f"generation ran on for {generated} tokens after the reader left"


def test_a_stopped_answer_stays_in_the_conversation_as_shown(engine):
    turn = engine.new_turn("hello", None)
    answer = engine.answer([], turn, max_new_tokens=400)
    partial = next(answer).answer
    answer.close()  # what Gradio does to the handler when Stop is pressed
    assert turn.finish_reason == "stopped" and turn.metrics is None and turn.answer == partial != ""
    messages, _ = conversation([turn, Turn("go on")])
    assert messages[1] == {"role": "assistant", "content": partial} and messages[2]["role"] == "user"


def test_error_messages_are_one_line_without_traceback():
    assert error_message(InputError("bad image")) == "bad image"
    message = error_message(RuntimeError("boom\nTraceback (most recent call last):\n  File x"))
    assert message.startswith("unexpected RuntimeError: boom") and "\n" not in message


def test_metrics_summary_names_every_figure(engine):
    turn = engine.new_turn("hi", None)
    run_turn(engine, [], turn, max_new_tokens=4)
    line = metrics_summary(turn.metrics)
    for pattern in ("no image", "TTFT", "prefill", "decode", "tok/s", "peak RSS", "MB", "decoder CPU"):
        assert pattern in line, (pattern, line)
