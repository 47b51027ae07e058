import json
import sys

import pytest

from edgelmm.errors import OutputExistsError
from edgelmm.export.bundle import write_bundle
from edgelmm.export.exporter import export_model
from edgelmm.export.graphs import TRACE_BATCH, TRACE_PAST, TRACE_SEQ
from edgelmm.export.validate import DECODER_CASES
from edgelmm.runtime import Pipeline
from edgelmm.runtime.manifest import MANIFEST_NAME, load_bundle
from edgelmm.testing.kill import sigkill_when


def test_validation_shapes_differ_from_trace_shapes():
    assert all((b, s, p) != (TRACE_BATCH, TRACE_SEQ, TRACE_PAST) for b, s, p in DECODER_CASES)
    assert any(p == 0 for _, _, p in DECODER_CASES) and any(s == 1 for _, s, _ in DECODER_CASES)


def test_existing_output_is_refused_without_force(tiny_lm, tiny_lm_bundle):
    before = (tiny_lm_bundle / MANIFEST_NAME).read_bytes()
    with pytest.raises(OutputExistsError, match="exists; pass --force"):
        export_model(tiny_lm, tiny_lm_bundle)
    assert (tiny_lm_bundle / MANIFEST_NAME).read_bytes() == before


def test_failed_export_leaves_old_bundle_and_no_partial(tiny_lm_bundle, tmp_path):
    import shutil

    out = tmp_path / "b"
    shutil.copytree(tiny_lm_bundle, out)
    before = load_bundle(out)

    def populate(tmp):
        (tmp / "decoder.onnx").write_bytes(b"half")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        write_bundle(out, populate, force=True)
    assert load_bundle(out) == before
    assert [p.name for p in tmp_path.iterdir()] == ["b"]


def test_force_replaces_atomically(tiny_lm, tiny_lm_bundle, tmp_path):
    import shutil

    out = tmp_path / "b"
    shutil.copytree(tiny_lm_bundle, out)
    export_model(tiny_lm, out, force=True)
    assert Pipeline.load(out).generate("hi", max_new_tokens=2).token_ids
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_sigkill_mid_export_keeps_previous_bundle(tiny_lm, tiny_lm_bundle, tmp_path):
    import shutil

    out = tmp_path / "b"
    shutil.copytree(tiny_lm_bundle, out)
    before = json.loads((out / MANIFEST_NAME).read_text())
    sigkill_when([sys.executable, "-m", "edgelmm", "export", "--model", "tiny-random-lm", "--out", str(out), "--force"],
                 lambda: any(p.glob("*.onnx") for p in tmp_path.glob(".b.partial-*")))
    assert json.loads((out / MANIFEST_NAME).read_text()) == before
    load_bundle(out)
    partials = list(tmp_path.glob(".b.partial-*"))
    assert partials and not any((p / MANIFEST_NAME).exists() for p in partials)
    with pytest.raises(Exception, match="not a bundle"):
        load_bundle(partials[0])
    # The next export to the same place removes the dead process's leftovers.
    export_model(tiny_lm, out, force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
