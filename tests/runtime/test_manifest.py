import json
import shutil

import pytest

from edgelmm.errors import BundleError, BundleIntegrityError
from edgelmm.runtime import Pipeline
from edgelmm.runtime.manifest import MANIFEST_NAME, SCHEMA_VERSION, load_bundle, parse_manifest, read_manifest
from edgelmm.specs import GraphRole, to_dict


@pytest.fixture
def bundle_copy(tiny_bundle, tmp_path):
    dst = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, dst)
    return dst


def _edit_manifest(bundle, edit):
    path = bundle / MANIFEST_NAME
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def test_manifest_round_trips_and_carries_the_contract(tiny_bundle):
    manifest = load_bundle(tiny_bundle)
    assert parse_manifest(to_dict(manifest)) == manifest
    assert manifest.schema_version == SCHEMA_VERSION
    assert set(manifest.graphs) == {GraphRole.VISION_ENCODER, GraphRole.TOKEN_EMBEDDING, GraphRole.DECODER}
    text = manifest.text
    assert text.image_token == "<image>" and text.num_image_tokens == 16 and text.chat_template
    assert manifest.preprocess.image_size == (32, 32) and manifest.preprocess.value_range == (-1.0, 1.0)
    assert manifest.validation["passed"] and len(manifest.validation["cases"]) >= 6
    versions = manifest.provenance["versions"]
    assert versions["torch"] and versions["onnx"] and versions["onnxruntime"]
    decoder = manifest.graphs[GraphRole.DECODER]
    assert decoder.external_data == ("decoder.onnx.data",)
    assert decoder.input("past_key_values.1.value").shape[2] == "past_sequence_length"
    for entry in manifest.files.values():
        assert len(entry.sha256) == 64 and entry.bytes > 0


def test_unknown_schema_version_is_refused(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d.update(schema_version=99))
    with pytest.raises(BundleError, match="unknown schema_version 99; this edgelmm reads schema_version 1"):
        Pipeline.load(bundle_copy)


def test_missing_graph_is_refused_naming_the_file(bundle_copy):
    (bundle_copy / "vision_encoder.onnx").unlink()
    with pytest.raises(BundleIntegrityError, match="'vision_encoder.onnx' is missing"):
        Pipeline.load(bundle_copy)


def test_truncated_graph_is_refused_by_size(bundle_copy):
    path = bundle_copy / "decoder.onnx.data"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(BundleIntegrityError, match="'decoder.onnx.data' is 1000 bytes, manifest says"):
        Pipeline.load(bundle_copy)


def test_tampered_graph_is_refused_by_sha256(bundle_copy):
    path = bundle_copy / "token_embedding.onnx"
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match="'token_embedding.onnx' sha256 .*tampered"):
        Pipeline.load(bundle_copy)


def test_missing_manifest_means_not_a_bundle(bundle_copy):
    (bundle_copy / MANIFEST_NAME).unlink()
    with pytest.raises(BundleError, match="is not a bundle: manifest.json is missing"):
        read_manifest(bundle_copy)


@pytest.mark.parametrize("name", ["../outside.onnx", "/etc/passwd", "a/../../b"])
def test_paths_outside_the_bundle_are_refused(bundle_copy, name):
    def edit(d):
        d["files"][name] = {"sha256": "0" * 64, "bytes": 1}

    _edit_manifest(bundle_copy, edit)
    with pytest.raises(BundleIntegrityError, match="not a plain relative path|points outside the bundle"):
        load_bundle(bundle_copy)


def test_symlinked_file_is_refused(bundle_copy, tmp_path):
    target = bundle_copy / "tokenizer.json"
    outside = tmp_path / "outside.json"
    shutil.move(target, outside)
    target.symlink_to(outside)
    with pytest.raises(BundleIntegrityError, match="symbolic link"):
        load_bundle(bundle_copy)


def test_invariant_vision_width_must_match_decoder(bundle_copy):
    def edit(d):
        out = d["graphs"]["vision_encoder"]["outputs"][0]
        out["shape"] = [out["shape"][0], 16, 999]

    _edit_manifest(bundle_copy, edit)
    with pytest.raises(BundleError, match="vision_encoder output width 999 != decoder hidden size 32"):
        read_manifest(bundle_copy)


def test_manifest_with_unknown_key_and_bad_json(bundle_copy):
    _edit_manifest(bundle_copy, lambda d: d.update(surprise=1))
    with pytest.raises(BundleError, match="surprise: unknown key"):
        read_manifest(bundle_copy)
    (bundle_copy / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(bundle_copy)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("validation", {"cases": ["\udb66\udeda"]}, "lone surrogate"),  # JSON would rejoin the halves into one char
        ("validation", {"max_abs_diff": float("nan")}, "nan is not a finite number"),  # NaN != NaN after a reload
        ("provenance", {"\ud800": 1}, "lone surrogate"),
    ],
)
def test_free_form_fields_from_python_dicts_are_json_clean(tiny_bundle, field, value, message):
    """The fuzzer found main accepting these through parse_manifest (the dict path, not strict_json's bytes path):
    the accepted manifest then changed on to_dict -> JSON -> parse."""
    data = to_dict(read_manifest(tiny_bundle))
    data[field] = value
    with pytest.raises(BundleError, match=message):
        parse_manifest(data)
