"""CLI contract: verbs, help, one-line errors with exit code 2 for bad input, nothing written or lost."""

import json
import re
import shutil
import subprocess
import sys

import pytest
from PIL import Image

from edgelmm.cli import VERBS, main
from edgelmm.runtime.manifest import MANIFEST_NAME

from .conftest import REPO


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_bad_input(code, err, pattern):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgelmm: error: "), err
    assert re.search(pattern, lines[0]), lines[0]


def test_help_lists_every_verb_and_readme_documents_them(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    readme = (REPO / "README.md").read_text()
    for verb in VERBS:
        assert re.search(rf"^\s+{verb}\s", out, re.M), verb
        assert f"edgelmm {verb}" in readme, f"README does not show `edgelmm {verb}`"


def test_unknown_verb(capsys):
    code, _, err = run_cli(capsys, "frobnicate")
    assert_bad_input(code, err, "unknown verb 'frobnicate'; valid: ")


def test_export_list_covers_the_registry(capsys):
    from edgelmm.models.registry import MODELS

    code, out, _ = run_cli(capsys, "export", "--list")
    assert code == 0
    assert [line.split()[0] for line in out.strip().splitlines()] == list(MODELS)
    assert all(entry.name == key for key, entry in MODELS.items())


def test_unknown_model_lists_valid_names(capsys, tmp_path):
    code, _, err = run_cli(capsys, "export", "--model", "smol-vq", "--out", str(tmp_path / "x"))
    assert_bad_input(code, err, "unknown model 'smol-vq' .* valid: .*smol-vqa, smol-vqa-init, smol-vqa-s, smollm2-135m, tiny-random")
    assert not (tmp_path / "x").exists()


def test_unknown_precision_lists_valid(capsys, tmp_path):
    code, _, err = run_cli(capsys, "export", "--model", "tiny-random", "--out", str(tmp_path / "x"), "--precision", "fp33")
    assert_bad_input(code, err, "unknown precision 'fp33'; valid: .*fp32")


def test_existing_output_needs_force(capsys, tiny_lm_bundle):
    before = (tiny_lm_bundle / MANIFEST_NAME).read_bytes()
    code, _, err = run_cli(capsys, "export", "--model", "tiny-random-lm", "--out", str(tiny_lm_bundle))
    assert_bad_input(code, err, "exists; pass --force")
    assert (tiny_lm_bundle / MANIFEST_NAME).read_bytes() == before


def test_run_json_prints_one_object(capsys, tiny_bundle, sample_images, tmp_path):
    image = tmp_path / "scene.png"
    sample_images[0].save(image)
    code, out, _ = run_cli(capsys, "run", "--bundle", str(tiny_bundle), "--image", str(image), "--prompt", "What?",
                           "--max-new-tokens", "4", "--json")
    assert code == 0
    record = json.loads(out)
    assert len(record["token_ids"]) == 4 and isinstance(record["text"], str)
    for key in ("load_ms", "vision_ms", "ttft_ms", "prefill_tok_s", "decode_tok_s", "peak_rss_mb"):
        assert record["metrics"][key] >= 0


@pytest.fixture
def broken(tiny_bundle, tmp_path):
    def make(kind):
        dst = tmp_path / kind
        shutil.copytree(tiny_bundle, dst)
        if kind == "missing":
            (dst / "decoder.onnx").unlink()
        elif kind == "truncated":
            (dst / "vision_encoder.onnx").write_bytes((dst / "vision_encoder.onnx").read_bytes()[:100])
        elif kind == "tampered":
            data = bytearray((dst / "decoder.onnx.data").read_bytes())
            data[0] ^= 1
            (dst / "decoder.onnx.data").write_bytes(bytes(data))
        elif kind == "schema":
            manifest = json.loads((dst / MANIFEST_NAME).read_text())
            manifest["schema_version"] = 2
            (dst / MANIFEST_NAME).write_text(json.dumps(manifest))
        return dst

    return make


@pytest.mark.parametrize(
    ("kind", "pattern"),
    [
        ("missing", "'decoder.onnx' is missing"),
        ("truncated", "'vision_encoder.onnx' is 100 bytes, manifest says"),
        ("tampered", "'decoder.onnx.data' sha256 .*tampered"),
        ("schema", "unknown schema_version 2"),
    ],
)
def test_run_refuses_broken_bundles(capsys, broken, kind, pattern):
    code, out, err = run_cli(capsys, "run", "--bundle", str(broken(kind)), "--prompt", "hi")
    assert_bad_input(code, err, pattern)
    assert out == ""


def test_run_bad_images_and_prompts(capsys, tiny_bundle, tmp_path):
    not_image = tmp_path / "photo.jpg"
    not_image.write_text("definitely not a jpeg")
    code, _, err = run_cli(capsys, "run", "--bundle", str(tiny_bundle), "--image", str(tmp_path / "nope.png"),
                           "--prompt", "hi")
    assert_bad_input(code, err, "image .*nope.png' does not exist")
    code, _, err = run_cli(capsys, "run", "--bundle", str(tiny_bundle), "--image", str(not_image), "--prompt", "hi")
    assert_bad_input(code, err, "photo.jpg' is not a readable image")
    code, _, err = run_cli(capsys, "run", "--bundle", str(tiny_bundle), "--prompt", "y" * 700)
    assert_bad_input(code, err, r"prompt is \d+ tokens .*max context is 512")


def test_real_exit_codes_in_a_subprocess(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    proc = subprocess.run([sys.executable, "-m", "edgelmm", "run", "--bundle", str(tmp_path / "none"), "--prompt", "x"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("edgelmm: error: bundle directory")
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize(
    ("argv", "pattern"),
    [
        (["run", "--prompt"], r"edgelmm run: argument --prompt: expected one argument \(see `edgelmm run --help`\)"),
        (["run", "--bundle", "b"], "--prompt is required"),
        (["run", "--bundle", "b", "--prompt", "p", "--max-new-tokens", "nan"], "invalid int value: 'nan'"),
        (["run", "--bundle", "b", "--prompt", "p", "--frobnicate"], "unrecognized arguments: --frobnicate"),
    ],
)
def test_run_usage_errors_are_one_line(capsys, argv, pattern):
    code, out, err = run_cli(capsys, *argv)
    assert_bad_input(code, err, pattern)  # argparse alone prints the usage block and calls sys.exit itself


def test_run_refuses_undecodable_prompt_bytes_and_empty_raw_prompts(capsys, tiny_lm_bundle):
    code, _, err = run_cli(capsys, "run", "--bundle", str(tiny_lm_bundle), "--prompt", "caf\udce9")  # latin-1 é
    assert_bad_input(code, err, r"prompt text is not valid UTF-8 \(byte 0xe9 at character 3\)")
    code, _, err = run_cli(capsys, "run", "--bundle", str(tiny_lm_bundle), "--prompt", "", "--raw")
    assert_bad_input(code, err, "prompt is empty")  # reached onnxruntime as a 0-token prefill before
    code, _, err = run_cli(capsys, "run", "--bundle", str(tiny_lm_bundle), "--prompt", "x", "--seed", "-1")
    assert_bad_input(code, err, "seed must be >= 0")


def test_error_messages_never_carry_control_characters(capsys, tmp_path):
    evil = tmp_path / "a\x1b[2Jb\nc.png"  # a file name that would clear the terminal and forge a second line
    code, _, err = run_cli(capsys, "run", "--bundle", str(evil), "--prompt", "x")
    assert_bad_input(code, err, r"a\\x1b\[2Jb c\.png")
