"""strict_json / strict_yaml: the readers of untrusted spec files refuse what other parsers read differently."""

import time

import pytest

from edgelmm import strict_json, strict_yaml
from edgelmm.errors import SpecError
from edgelmm.specs import GenerationSpec, from_dict


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a: 1\na: 2\n", "duplicate key 'a' at line 2 column 1"),
        ("a: &x [1]\nb: *x\n", r"alias \*x is not allowed at line 2 column 4"),  # the billion-laughs vehicle
        ("a: .nan\n", "nan is not a finite number"),
        ("", "is empty"),
        ("[" * 5000, "nested too deeply"),
        ("a: !!python/object/apply:os.system [ls]\n", "could not determine a constructor for the tag"),
        ('a: "\\ud800"\n', "lone surrogate"),
        ("a: " + "9" * 5000 + "\n", "value that cannot be read: Exceeds the limit"),
        ("? [a, b]\n: 1\n", "found unhashable key at line 1"),
    ],
)
def test_strict_yaml_refuses(text, message):
    with pytest.raises(SpecError, match=message) as err:
        strict_yaml.load(text, where="p.yaml", error=SpecError)
    assert "p.yaml" in str(err.value) and len(str(err.value).splitlines()) == 1


def test_strict_yaml_reads_specs():
    data = strict_yaml.load(b'max_new_tokens: 8\nstop: ["\\n\\n"]\nseed: 3\n', where="g.yaml", error=SpecError)
    assert from_dict(GenerationSpec, data) == GenerationSpec(max_new_tokens=8, stop=("\n\n",), seed=3)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
        (b'{"a": NaN}', "NaN is not a JSON number"),
        (b"[" * 100_000, "nested too deeply"),
        (b'{"a": "\\ud800"}', "lone surrogate"),
        (b"\xff", r"not UTF-8 \(invalid start byte at byte 0\)"),
        (b'{"a": ' + b"9" * 5000 + b"}", "Exceeds the limit"),
    ],
)
def test_strict_json_refuses(data, message):
    with pytest.raises(SpecError, match=message):
        strict_json.loads(data, where="m.json", error=SpecError)


def test_from_dict_messages_stay_short_for_huge_or_shared_values():
    """A value shared 9^8 times (what a YAML alias bomb builds) or a million wrong items: milliseconds, one line."""
    bomb = ["x"] * 9
    for _ in range(8):
        bomb = [bomb] * 9
    start = time.perf_counter()
    with pytest.raises(SpecError) as err:
        from_dict(GenerationSpec, {"stop": bomb, "temperature": "z" * 10**6})
    with pytest.raises(SpecError, match=r"1000000 problem\(s\).*\.\.\. and 999988 more$"):
        from_dict(GenerationSpec, {"stop": [1] * 10**6})
    assert time.perf_counter() - start < 20 and len(str(err.value)) < 2000
