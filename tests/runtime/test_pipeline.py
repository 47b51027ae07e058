import dataclasses
import threading

import pytest

from edgelmm.errors import InputError, SpecError
from edgelmm.runtime import Pipeline


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return Pipeline.load(tiny_bundle)


def test_generate_returns_text_ids_and_metrics(pipe, sample_images):
    res = pipe.generate("What is this?", images=[sample_images[0]], max_new_tokens=5)
    assert len(res.token_ids) == 5 and res.finish_reason == "length"
    m = res.metrics
    assert m.images == 1 and m.prompt_tokens == res.prompt_tokens > 16
    assert m.vision_ms > 0 and m.ttft_ms >= m.prefill_ms > 0 and m.peak_rss_mb > 0
    assert m.providers == {"vision_encoder": "CPUExecutionProvider", "token_embedding": "CPUExecutionProvider",
                           "decoder": "CPUExecutionProvider"}
    assert set(res.to_dict()["metrics"]) >= {"load_ms", "vision_ms", "ttft_ms", "prefill_tok_s", "decode_tok_s",
                                            "peak_rss_mb"}


def test_stream_pieces_concatenate_to_the_text(pipe, sample_images):
    pieces = []
    res = pipe.generate("Describe.", images=[sample_images[1]], max_new_tokens=12, stream=pieces.append)
    assert "".join(pieces) == res.text


def test_stop_string_cuts_the_text(pipe):
    full = pipe.generate("hi", max_new_tokens=10)
    assert len(full.text) >= 3
    stop = full.text[2:4]
    pieces = []
    res = pipe.generate("hi", max_new_tokens=10, stop=stop, stream=pieces.append)
    assert res.finish_reason == "stop" and stop not in res.text and full.text.startswith(res.text)
    assert "".join(pieces) == res.text


def test_greedy_is_deterministic_and_sampling_is_seeded(pipe):
    a = pipe.generate("hello", max_new_tokens=8).token_ids
    assert a == pipe.generate("hello", max_new_tokens=8).token_ids
    s1 = pipe.generate("hello", max_new_tokens=8, temperature=1.5, top_k=50, top_p=0.9, seed=3).token_ids
    s2 = pipe.generate("hello", max_new_tokens=8, temperature=1.5, top_k=50, top_p=0.9, seed=3).token_ids
    assert s1 == s2


def test_max_new_tokens_is_clamped_to_context(pipe):
    res = pipe.generate("x" * 400, max_new_tokens=1000)
    assert res.prompt_tokens + len(res.token_ids) == pipe.manifest.text.max_context


def test_bad_options_and_inputs(pipe):
    with pytest.raises(SpecError, match="unknown generation option"):
        pipe.generate("hi", tempreature=1.0)
    with pytest.raises(SpecError, match="top_p"):
        pipe.generate("hi", top_p=2.0)
    with pytest.raises(InputError, match="does not exist"):
        pipe.generate("hi", images=["/nonexistent.png"])


def test_concurrent_generate_calls_are_serialised(pipe):
    expected = pipe.generate("abc", max_new_tokens=6).token_ids
    results, errors = [], []

    def worker():
        try:
            results.append(pipe.generate("abc", max_new_tokens=6).token_ids)
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and results == [expected] * 4


def test_ignore_eos_generates_exactly_max_new_tokens(tiny_bundle):
    pipe = Pipeline.load(tiny_bundle)  # its own pipeline: the manifest is edited below
    first = pipe.generate("hello", max_new_tokens=6).token_ids[0]
    pipe.manifest = dataclasses.replace(pipe.manifest,
                                        text=dataclasses.replace(pipe.manifest.text, eos_token_ids=(first,)))
    stopped = pipe.generate("hello", max_new_tokens=6)
    assert stopped.finish_reason == "eos" and stopped.token_ids == [first]
    forced = pipe.generate("hello", max_new_tokens=6, ignore_eos=True)
    assert forced.finish_reason == "length" and len(forced.token_ids) == 6 and first not in forced.token_ids


def test_generate_ids_matches_generate(pipe):
    ids = pipe.prompts.build("What is this?")
    a = pipe.generate("What is this?", max_new_tokens=6)
    b = pipe.generate_ids(ids.ids.tolist(), max_new_tokens=6)
    assert a.token_ids == b.token_ids and a.prompt_tokens == b.prompt_tokens == len(ids)


@pytest.mark.parametrize(
    ("ids", "pattern"),
    [([], "1 <= length < 512"), ([[1, 2]], "1-D ints"), ([0.5], "1-D ints"), ([1, 10**6], "must lie in \\[0, ")],
)
def test_generate_ids_refuses_bad_ids(pipe, ids, pattern):
    with pytest.raises(InputError, match=pattern):
        pipe.generate_ids(ids, max_new_tokens=2)
