"""Hostile edits of a real bundle: each refused by Pipeline.load, naming the file, before any session exists."""

import json
import re

import pytest

from edgelmm.testing.tamper import TAMPERS, main, run_tamper


@pytest.mark.parametrize("name", list(TAMPERS))
def test_tampered_bundle_is_refused_before_any_session(tiny_bundle, tmp_path, name):
    message = run_tamper(TAMPERS[name], tiny_bundle, tmp_path)  # a created session fails the test
    assert re.search(TAMPERS[name].expect, message), message
    assert len(message.splitlines()) == 1 and message.isprintable()


def test_untampered_copy_loads(tiny_bundle, tmp_path):
    from edgelmm.testing.tamper import Tamper

    with pytest.raises(AssertionError, match="passed verification"):
        run_tamper(Tamper("none", lambda bundle: None, ""), tiny_bundle, tmp_path)


def test_tamper_script_on_a_text_only_bundle_skips_the_vision_cases(tiny_lm_bundle, capsys):
    assert main(["--bundle", str(tiny_lm_bundle)]) == 0  # the vision-only edits crashed the script here
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    vision_only = sum(t.vision_only for t in TAMPERS.values())
    assert summary["tamper_cases"] == summary["refused"] == len(TAMPERS) - vision_only
