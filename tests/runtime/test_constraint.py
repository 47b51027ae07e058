import numpy as np
import pytest

from edgelmm.errors import InputError
from edgelmm.runtime import Pipeline
from edgelmm.runtime.constraint import Choice, choice_loop
from edgelmm.runtime.prompt import PromptIds
from edgelmm.specs import GenerationSpec

TOOLS = ("ocr", "ocr-v2", "image-captioning", "image-classification", "depth-estimation", "unknown")
EOS = 999


def chars(text: str) -> list[int]:
    return [ord(c) for c in text]


def run(choice: Choice, scores: dict[int, float], spec: GenerationSpec = GenerationSpec()):
    """Drive choice_loop with logits that prefer the characters in ``scores`` (vocab 1000, eos 999)."""
    trie = choice.compile(chars, [EOS])
    opening, start = trie.opening()
    fed: list[list[int]] = []

    def logits() -> np.ndarray:
        out = np.zeros(1000, np.float32)
        for token, score in scores.items():
            out[token] = score
        return out

    def feed(tokens: list[int]) -> np.ndarray:
        fed.append(tokens)
        return logits()

    res = choice_loop(trie, start, logits(), feed, spec=spec, prompt_ids=np.zeros(0, np.int64), opening=opening,
                      decode=lambda ids: "".join(chr(i) for i in ids), stream=None)
    return res, opening, fed


def test_trie_stops_as_soon_as_the_choice_is_unique():
    res, opening, fed = run(Choice(TOOLS), {ord("d"): 5.0})
    assert "".join(map(chr, opening)) == '{"api_name": "'  # shared by all: prefilled, no decision
    assert res.text == '{"api_name": "depth-estimation"}' and res.option == "depth-estimation"
    assert res.finish_reason == "choice" and res.decode_steps == 0 and fed == []  # decided by the prefill logits


def test_forced_runs_are_one_decoder_call_and_prefix_options_can_end():
    # "i" -> "image-c" is forced (one call with 7 tokens), then "a"/"l" decides; "ocr" vs "ocr-v2" needs an eos
    res, _, fed = run(Choice(TOOLS), {ord("i"): 5.0, ord("l"): 3.0})
    assert res.option == "image-classification" and res.decode_steps == 1 and fed == [chars("image-c")]
    plain = Choice.plain(["ocr", "ocr-v2"])
    assert run(plain, {EOS: 1.0})[0].text == "ocr"
    assert run(plain, {ord("-"): 1.0})[0].text == "ocr-v2"


def test_sampling_respects_the_choice_and_the_seed():
    spec = GenerationSpec(temperature=5.0, seed=1)
    texts = {run(Choice(TOOLS), {}, GenerationSpec(temperature=5.0, seed=s))[0].option for s in range(30)}
    assert texts <= set(TOOLS) and len(texts) > 2
    assert run(Choice(TOOLS), {}, spec)[0].text == run(Choice(TOOLS), {}, spec)[0].text


def test_bad_choices_are_one_line_errors():
    for bad, match in [("ocr", "list of strings"), ([], "1.."), (["a", "a"], "repeat"), (['say "hi"'], "escaping"),
                       ([""], "1..")]:
        with pytest.raises(InputError, match=match):
            Choice(bad)
    assert Choice(TOOLS).parse('{"api_name": "ocr"}') == "ocr" and Choice(TOOLS).parse('{"api_name": "x"}') is None


@pytest.fixture(scope="module", params=["tiny_bundle", "tiny_lm_bundle"])
def pipe(request):
    return Pipeline.load(request.getfixturevalue(request.param))


def reference_greedy(pipe: Pipeline, prompt: str, images: list, choice: Choice) -> str:
    """Masked greedy decoding one token at a time, re-prefilling every step: the slow, obviously right way."""
    tiles = pipe.prepare_images(images) if images else []
    ids = pipe.prompts.build(prompt, len(images), grids=[t.grid for t in tiles])
    features = pipe.encode_images(tiles) if tiles else None
    framed = {o: pipe.tokenizer.encode_untrusted(choice.framed(o)) for o in choice.options}
    out: list[int] = []
    while not any(out == t for t in framed.values()):
        allowed = {t[len(out)] for t in framed.values() if t[: len(out)] == out}
        full = PromptIds(np.concatenate([ids.ids, np.asarray(out, np.int64)]), ids.image_slots)
        from edgelmm.runtime.positions import prompt_positions

        logits = pipe._prefill(pipe.prompt_embeds(full, features),
                               prompt_positions(pipe.manifest.positions, len(full), full.image_slots))
        out.append(max(allowed, key=lambda a: logits[a]))
    return pipe.tokenizer.decode(out)


def test_bundle_output_is_always_a_choice_and_matches_masked_greedy(pipe, sample_images):
    choice = Choice(TOOLS)
    vision = pipe.manifest.has_vision
    for i, prompt in enumerate(["Which tool reads this?", "What is in the picture?", "Depth?"]):
        images = [sample_images[i]] if vision else []
        res = pipe.generate(prompt, images=images, constraint=choice, max_new_tokens=1)
        assert choice.parse(res.text) in TOOLS and res.finish_reason == "choice"
        assert res.text == reference_greedy(pipe, prompt, images, choice)
        assert res.metrics.decode_steps < len(res.token_ids) - 1
        assert res.prompt_tokens == pipe.generate(prompt, images=images, max_new_tokens=1).prompt_tokens
    sampled = {pipe.generate("Which tool?", images=images, constraint=choice, temperature=3.0, seed=s).text
               for s in range(8)}
    assert {choice.parse(t) for t in sampled} <= set(TOOLS)


def test_unconstrained_generation_is_unchanged_by_a_constrained_call(pipe):
    before = pipe.generate("hello there", max_new_tokens=8)
    pipe.generate("hello there", constraint=Choice(TOOLS))
    after = pipe.generate("hello there", max_new_tokens=8)
    assert after.token_ids == before.token_ids and after.finish_reason == before.finish_reason
    assert after.metrics.decode_steps == len(after.token_ids) - 1
    with pytest.raises(InputError, match="must be a Choice"):
        pipe.generate("hi", constraint=["ocr"])
