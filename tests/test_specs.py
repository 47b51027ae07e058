import dataclasses

import pytest

from edgelmm.errors import SpecError, UnknownNameError
from edgelmm.registry import lookup
from edgelmm.runtime.manifest import KVCacheSpec, PreprocessSpec
from edgelmm.specs import GenerationSpec, Precision, from_dict, to_dict


def test_from_dict_round_trips_generation_spec():
    spec = GenerationSpec(max_new_tokens=9, temperature=0.7, top_k=5, top_p=0.9, stop=("\n\n",), seed=3)
    assert from_dict(GenerationSpec, to_dict(spec)) == spec


def test_from_dict_collects_every_problem_in_one_line():
    with pytest.raises(SpecError) as err:
        from_dict(GenerationSpec, {"max_new_tokns": 3, "temperature": "hot", "top_k": 1.5}, where="gen.yaml")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("gen.yaml: 3 problem(s)")
    assert "max_new_tokns: unknown key (did you mean 'max_new_tokens'?)" in message
    assert "temperature: expected a number" in message
    assert "top_k: expected an integer" in message


def test_from_dict_rejects_bad_enum_with_valid_values():
    with pytest.raises(SpecError, match="valid: fp32, fp16, int8, int4.*did you mean 'int4'"):
        from_dict(dict[str, Precision], {"decoder": "int44"})
    with pytest.raises(SpecError, match="layout 'x' is not supported; valid: past-present"):
        from_dict(KVCacheSpec, {"layout": "x", "num_layers": 1, "num_kv_heads": 1, "head_dim": 4})


def test_post_init_errors_are_reported_by_from_dict():
    with pytest.raises(SpecError, match="top_p must be in"):
        from_dict(GenerationSpec, {"top_p": 0})
    with pytest.raises(SpecError, match="required key is missing"):
        from_dict(PreprocessSpec, {})


@pytest.mark.parametrize("bad", [{"max_new_tokens": 0}, {"temperature": -1}, {"repetition_penalty": 0},
                                 {"stop": [""]}, {"top_k": -2}, {"temperature": float("nan")}])
def test_generation_spec_rejects_bad_values(bad):
    with pytest.raises(SpecError):
        dataclasses.replace(GenerationSpec(), **{k: tuple(v) if isinstance(v, list) else v for k, v in bad.items()})


def test_lookup_lists_valid_names_and_suggests():
    with pytest.raises(UnknownNameError) as err:
        lookup({"smol-vqa": 1, "tiny-random": 2}, "smol-vq", what="model")
    assert str(err.value) == "unknown model 'smol-vq'; valid: smol-vqa, tiny-random; did you mean 'smol-vqa'?"


def test_generation_spec_checks_types_from_python_callers_too():
    import numpy as np

    spec = GenerationSpec(max_new_tokens=np.int64(3), temperature=np.float32(0.5), stop=["a"], seed=np.int32(7))
    assert (spec.max_new_tokens, spec.temperature, spec.stop, spec.seed) == (3, 0.5, ("a",), 7)
    assert type(spec.max_new_tokens) is int and type(spec.temperature) is float
    for bad, message in ((dict(temperature="hot"), "temperature must be a number, got 'hot'"),
                         (dict(top_k=True), "top_k must be an integer, got True"),
                         (dict(seed=0.5), "seed must be an integer"), (dict(seed=-1), "seed must be >= 0"),
                         (dict(stop=[None]), "stop must be a list of strings")):
        with pytest.raises(SpecError, match=message):
            GenerationSpec(**bad)
