"""Atomic directory writes (edgelmm.atomic): SIGKILL at every stage leaves the previous version, never a half one.

Bundles use this through export/bundle.py (tests/export/test_bundle_writer.py kills a real export); checkpoints
(issue 9) must use staged_dir with meta.json written last and add the same kill test for a real save.
"""

import json
import subprocess
import sys

import pytest

from edgelmm.atomic import staged_dir, write_durably, write_file
from edgelmm.errors import OutputExistsError
from edgelmm.testing.kill import sigkill_when

WRITER = """
import sys, time
from pathlib import Path
from edgelmm.atomic import staged_dir, write_durably
out, kill_at = Path(sys.argv[1]), sys.argv[2]
with staged_dir(out, force=True) as stage:
    with open(stage / "weights.bin", "wb") as f:
        f.write(b"new" * 100_000)
        f.flush()
        if kill_at == "mid-file":
            (stage / "READY").touch(); time.sleep(120)
        f.write(b"new" * 100_000)
    if kill_at == "before-marker":
        (stage / "READY").touch(); time.sleep(120)
    write_durably(stage / "meta.json", b'{"version": 2}')
    if kill_at == "before-publish":
        (stage / "READY").touch(); time.sleep(120)
"""


def load(directory):
    """A toy loader with the rule every real one follows: the marker file, written last, must be there."""
    meta = json.loads((directory / "meta.json").read_text())
    weights = (directory / "weights.bin").read_bytes()
    assert len(weights) == (300_000 if meta["version"] == 1 else 600_000)
    return meta["version"]


@pytest.fixture
def previous(tmp_path):
    out = tmp_path / "ckpt"
    with staged_dir(out, force=False) as stage:
        (stage / "weights.bin").write_bytes(b"old" * 100_000)
        write_durably(stage / "meta.json", b'{"version": 1}')
    return out


@pytest.mark.parametrize("kill_at", ["mid-file", "before-marker", "before-publish"])
def test_sigkill_at_every_stage_keeps_the_previous_version(previous, kill_at):
    parent = previous.parent
    sigkill_when(
        [sys.executable, "-c", WRITER, str(previous), kill_at], lambda: any(parent.glob(".ckpt.partial-*/READY"))
    )
    assert load(previous) == 1
    visible = [p.name for p in parent.iterdir() if not p.name.startswith(".")]
    assert visible == ["ckpt"]  # the stage is hidden: nothing half-written under a loadable name
    stages = list(parent.glob(".ckpt.partial-*"))
    assert len(stages) == 1
    if kill_at != "before-publish":
        assert not (stages[0] / "meta.json").exists()  # no completion marker before everything else is written
    # The next writer removes the dead process's stage and publishes normally.
    subprocess.run([sys.executable, "-c", WRITER, str(previous), "never"], check=True, timeout=120)
    assert load(previous) == 2
    assert [p.name for p in parent.iterdir()] == ["ckpt"]


def test_exception_in_block_deletes_stage_and_keeps_target(previous):
    with pytest.raises(RuntimeError, match="boom"):
        with staged_dir(previous, force=True) as stage:
            (stage / "weights.bin").write_bytes(b"half")
            raise RuntimeError("boom")
    assert load(previous) == 1
    assert [p.name for p in previous.parent.iterdir()] == ["ckpt"]


def test_existing_target_needs_force(previous):
    with pytest.raises(OutputExistsError, match="exists; pass --force"):
        with staged_dir(previous, force=False):
            pass
    assert load(previous) == 1


def test_write_file_replaces_whole_file(tmp_path):
    path = tmp_path / "state.json"
    write_file(path, b'{"step": 1}')
    write_file(path, b'{"step": 2}')
    assert json.loads(path.read_text()) == {"step": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
