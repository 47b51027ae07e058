"""edgelmm bench's runner: test names, exact token counts, warmup excluded, statistics, provenance."""

import statistics

import pytest

from edgelmm.bench.provenance import cpu_info
from edgelmm.bench.runner import bench, default_tests, parse_tests, run_tests, synthetic_ids
from edgelmm.errors import InputError, SpecError, UnknownNameError
from edgelmm.runtime import Pipeline


@pytest.fixture(scope="module")
def pipe(tiny_bundle):
    return Pipeline.load(tiny_bundle, threads=1)


@pytest.fixture(scope="module")
def lm_pipe(tiny_lm_bundle):
    return Pipeline.load(tiny_lm_bundle, threads=1)


@pytest.fixture(scope="module")
def record(tiny_bundle):
    calls = []
    rec = bench(tiny_bundle, "img,pp16,tg4,e2e6", reps=3, warmup=1, threads=1, label="tiny",
                progress=lambda test, done, total: calls.append((test, done, total)))
    return rec, calls


def test_default_tests_follow_the_bundle(pipe, lm_pipe):
    assert default_tests(pipe) == "img,pp128,tg64,e2e"
    assert default_tests(lm_pipe) == "pp128,tg64,e2e"
    tests = parse_tests("img,pp128,tg64,e2e,e2e8,img32", pipe)
    assert [(t.name, t.kind, t.n) for t in tests] == [
        ("img", "img", 32), ("pp128", "pp", 128), ("tg64", "tg", 64), ("e2e", "e2e", 64), ("e2e8", "e2e", 8),
        ("img32", "img", 32),
    ]


@pytest.mark.parametrize(
    ("tests", "error", "pattern"),
    [
        ("xx12", UnknownNameError, "unknown bench test kind 'xx'; valid: e2e, img, pp, tg"),
        ("pp", SpecError, "'pp' needs a token count, e.g. pp128"),
        ("pp8,pp8", SpecError, "repeats a test"),
        ("tg-3", SpecError, "is not <kind><number>"),
        ("img224", InputError, "takes 32x32 images .*use img or img32"),
        ("pp512", InputError, "512 tokens do not fit the bundle's max context 512"),
        ("", SpecError, "--tests is empty"),
    ],
)
def test_bad_test_names(pipe, tests, error, pattern):
    with pytest.raises(error, match=pattern):
        parse_tests(tests, pipe)


def test_img_needs_a_vision_bundle(lm_pipe):
    with pytest.raises(InputError, match="needs a vision encoder; bundle 'tiny-random-lm' is text-only"):
        parse_tests("img", lm_pipe)


def test_pp_prefills_exactly_n_tokens_and_tg_decodes_n_steps(pipe, monkeypatch):
    """The decoder sees one call of N tokens per pp run, and 1 + N single-token calls per tg run (eos ignored)."""
    seen = []
    forward = pipe.decoder.forward
    monkeypatch.setattr(pipe.decoder, "forward",
                        lambda embeds, positions=None: seen.append(embeds.shape[1]) or forward(embeds, positions))
    rows = run_tests(pipe, parse_tests("pp16,tg5", pipe), reps=2, warmup=1)
    assert seen == [16] * 3 + [1] * (6 * 3)
    assert [row.tokens for row in rows] == [16, 5]


def test_synthetic_ids_are_deterministic_and_ordinary(pipe):
    ids = synthetic_ids(pipe, 300)
    text = pipe.manifest.text
    assert ids == synthetic_ids(pipe, 300) and len(set(ids)) > 30
    assert not set(ids) & {*text.eos_token_ids, text.image_token_id, text.bos_token_id}
    assert max(ids) < pipe.manifest.model.vocab_size


def test_record_statistics_exclude_warmup(record, tiny_bundle):
    rec, calls = record
    assert [row.test for row in rec.rows] == ["img", "pp16", "tg4", "e2e6"]
    assert len(calls) == 4 * (1 + 3) and calls[-1] == ("e2e6", 16, 16)
    for row in rec.rows:
        assert len(row.samples_ms) == 3
        assert row.median_ms == pytest.approx(statistics.median(row.samples_ms), abs=1e-3)
        assert row.mean_ms == pytest.approx(statistics.fmean(row.samples_ms), abs=1e-3)
        assert row.std_ms == pytest.approx(statistics.stdev(row.samples_ms), abs=1e-3)
        assert row.peak_rss_mb > 0
    pp = rec.rows[1]
    assert pp.tokens == 16
    assert pp.tok_s_median == pytest.approx(statistics.median(16e3 / ms for ms in pp.samples_ms), rel=1e-3)
    e2e = rec.rows[3]
    assert e2e.tokens == 0 and e2e.stages["vision_ms"] > 0 and e2e.stages["ttft_ms"] > 0
    assert e2e.stages["decode_tok_s"] > 0 and e2e.stages["prompt_tokens"] > 16


def test_record_meta_describes_bundle_machine_and_code(record, tiny_bundle):
    meta = record[0].meta
    graphs = ("vision_encoder.onnx", "token_embedding.onnx", "decoder.onnx", "decoder.onnx.data")
    assert meta.model_bytes == sum((tiny_bundle / f).stat().st_size for f in graphs)
    assert meta.model == "tiny-random" and meta.precision == "fp32" and meta.threads == 1
    assert meta.providers == dict.fromkeys(("vision_encoder", "token_embedding", "decoder"), "CPUExecutionProvider")
    assert meta.reps == 3 and meta.warmup == 1 and meta.label == "tiny" and meta.device_profile is None
    assert meta.onnxruntime_version and meta.cpu_count >= 1 and meta.arch and meta.load_ms > 0
    assert len(meta.git_commit) >= 7 and meta.bundle_git_commit


def test_profile_passes_through_to_pipeline_load(tiny_bundle, monkeypatch):
    seen = {}
    load = Pipeline.load.__func__

    def spy(cls, bundle, profile=None, **kwargs):
        seen["profile"] = profile
        return load(cls, bundle, None, **kwargs)

    monkeypatch.setattr(Pipeline, "load", classmethod(spy))
    rec = bench(tiny_bundle, "pp4", reps=1, warmup=0, threads=1, profile="device_profiles/pi5-8gb.yaml")
    assert seen["profile"] == "device_profiles/pi5-8gb.yaml" and rec.meta.device_profile == "pi5-8gb"


def test_bad_reps_are_refused_before_loading(tmp_path):
    with pytest.raises(SpecError, match="--reps and --threads must be >= 1"):
        bench(tmp_path / "no-bundle", reps=0, threads=1)


PI5_CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 108.00\nCPU implementer\t: 0x41\nCPU architecture: 8\nCPU part\t: 0xd0b\n\n"
    for i in range(4)
)


def test_cpu_info_names_x86_and_arm_cores():
    x86 = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n"
    assert cpu_info(x86, "x86_64") == "AMD EPYC 9R14"
    assert cpu_info(x86, "aarch64") == "AMD EPYC 9R14 (x86 host seen from emulated aarch64)"
    assert cpu_info(PI5_CPUINFO) == "4x Cortex-A76"
    big_little = PI5_CPUINFO.replace("0xd0b", "0xd05", 2)
    assert cpu_info(big_little) == "2x Cortex-A55 + 2x Cortex-A76"
    assert cpu_info("CPU implementer\t: 0x99\nCPU part\t: 0x123\n") == "1x ARM 0x99/0x123"
