"""Hostile edits of a real bundle: each refused by Pipeline.load, naming the file, before any session exists."""

import re

import pytest

from edgelmm.testing.tamper import TAMPERS, run_tamper


@pytest.mark.parametrize("name", list(TAMPERS))
def test_tampered_bundle_is_refused_before_any_session(tiny_bundle, tmp_path, name):
    message = run_tamper(TAMPERS[name], tiny_bundle, tmp_path)  # a created session fails the test
    assert re.search(TAMPERS[name].expect, message), message
    assert len(message.splitlines()) == 1 and message.isprintable()


def test_untampered_copy_loads(tiny_bundle, tmp_path):
    from edgelmm.testing.tamper import Tamper

    with pytest.raises(AssertionError, match="passed verification"):
        run_tamper(Tamper("none", lambda bundle: None, ""), tiny_bundle, tmp_path)
