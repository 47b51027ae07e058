import dataclasses
import threading

import numpy as np
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


def test_score_ranks_answers_after_an_image_prompt(pipe, sample_images):
    image = [sample_images[0]]
    scores = pipe.score("What is this?", ["a red circle", "two", "a blue square"], images=image)
    assert scores.shape == (3,) and np.all(np.isfinite(scores)) and np.all(scores < 0)
    np.testing.assert_allclose(pipe.score("What is this?", ["two"], images=image), scores[1:2], rtol=1e-5)
    assert scores[0] != scores[2]  # the answers, not just their lengths, are scored


@pytest.mark.parametrize("answers, message", [
    ([], "non-empty list"), ("two", "non-empty list"), (["ok", ""], "non-empty strings"), ([3], "non-empty strings"),
    (["word " * 400], "exceed the context"),
])
def test_score_refuses_bad_answers(pipe, answers, message):
    with pytest.raises(InputError, match=message):
        pipe.score("What is this?", answers)


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


def test_concurrent_mixed_calls_each_get_their_serial_result(pipe, sample_images):
    """Different prompts, images, sampling and streams from 6 threads: each result equals the same call made alone,
    so no call ever saw another's KV cache."""
    calls = [
        dict(prompt="abc", images=[], max_new_tokens=7),
        dict(prompt="Describe.", images=[sample_images[0]], max_new_tokens=5),
        dict(prompt="x" * 300, images=[sample_images[1]], max_new_tokens=9),
        dict(prompt="two", images=[sample_images[2], sample_images[0]], max_new_tokens=4),
        dict(prompt="sampled", images=[], max_new_tokens=8, temperature=1.0, top_k=20, seed=5),
        dict(prompt="streamed", images=[sample_images[1]], max_new_tokens=6, stream=lambda _: None),
    ]

    def run(call):
        call = dict(call)
        prompt, images = call.pop("prompt"), call.pop("images")
        if len(images) == 2:
            parts = [{"type": "image"}, {"type": "image"}, {"type": "text", "text": prompt}]
            prompt = [{"role": "user", "content": parts}]
        return pipe.generate(prompt, images=images, **call).token_ids

    expected = [run(c) for c in calls]
    results, errors = {}, []

    def worker(i):
        try:
            for _ in range(2):
                results.setdefault(i, []).append(run(calls[i]))
        except Exception as exc:  # noqa: BLE001 - collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(results[i] == [expected[i]] * 2 for i in range(len(calls)))


def test_generate_from_its_own_stream_callback_is_refused_not_deadlocked(pipe):
    inner = []

    def stream(piece):
        try:
            pipe.generate("again", max_new_tokens=1)
        except InputError as exc:
            inner.append(str(exc))

    res = pipe.generate("outer", max_new_tokens=3, stream=stream)
    assert inner and all("called from its own stream callback" in m for m in inner)
    assert pipe.generate("outer", max_new_tokens=3).token_ids == res.token_ids  # the KV cache was not disturbed


def test_api_misuse_gets_one_line_errors(pipe):
    with pytest.raises(InputError, match="images must be a list, got str"):
        pipe.generate("hi", images="photo.png")
    with pytest.raises(InputError, match="stream must be a callable"):
        pipe.generate("hi", stream=True)
    with pytest.raises(SpecError, match="config must be a GenerationSpec, got dict"):
        pipe.generate("hi", config={"temperature": 1})
    with pytest.raises(SpecError, match="seed must be >= 0, got -1"):
        pipe.generate("hi", seed=-1)  # numpy's default_rng raised a bare ValueError here
    with pytest.raises(SpecError, match="threads must be an integer in \\[0, 256\\]"):
        Pipeline.load(pipe.root, threads=-2)


def test_onnxruntime_failures_at_run_time_name_the_graph(pipe):
    from edgelmm.errors import GraphRunError

    with pytest.raises(GraphRunError, match="graph 'token_embedding' failed while running: .*") as err:
        pipe.embed(np.asarray([10**6]))  # an id outside the embedding table
    assert len(str(err.value).splitlines()) == 1
    assert pipe.generate("abc", max_new_tokens=2).token_ids  # the pipeline still works
