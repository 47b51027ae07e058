"""The family registry: its README table cannot drift, its claims point at real tests, refusals are one line."""

import json
import subprocess
import sys

import pytest

from edgelmm.errors import ExportError, UnsupportedModelError
from edgelmm.models import families
from edgelmm.models.families import FAMILIES, README_BEGIN, README_END, support_table, version_in
from edgelmm.models.lmm import load_local

from ..conftest import REPO


def test_entry_names_equal_keys_and_loaders_resolve():
    import importlib

    for key, family in FAMILIES.items():
        assert family.name == key
        for target in filter(None, (family.load, family.vision)):
            module, name = target.split(":")
            assert callable(getattr(importlib.import_module(module), name)), target


def test_every_verified_case_is_a_parity_test():
    from ..export.test_families import CASES, TEXT_CASES

    claimed = [case for family in FAMILIES.values() for case in family.verified_by]
    assert sorted(claimed) == sorted([*CASES, *TEXT_CASES])  # each case verifies one family, none is unclaimed


def test_readme_support_table_is_the_generated_one():
    readme = (REPO / "README.md").read_text()
    assert README_BEGIN in readme and README_END in readme
    section = readme.split(README_BEGIN, 1)[1].split(README_END, 1)[0].strip()
    assert section == support_table(), "README is stale: paste `edgelmm export --families` between the markers"


def test_families_flag_prints_the_table_without_torch():
    code = ("import sys; from edgelmm.cli import main; main(['export', '--families']);"
            " assert 'torch' not in sys.modules and 'transformers' not in sys.modules, 'heavy import'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == support_table()


def _config_dir(tmp_path, config):
    (tmp_path / "config.json").write_text(json.dumps(config))
    return tmp_path


@pytest.mark.parametrize(("config", "message"), [
    ({"architectures": ["LlavaNextForConditionalGeneration"]},
     r"^architecture 'LlavaNextForConditionalGeneration' in '.*' cannot be exported: anyres tiling"),
    ({"architectures": ["WhisperForConditionalGeneration"]},
     r"^architecture 'WhisperForConditionalGeneration' .* in no edgelmm family; supported are"
     r" LlavaForConditionalGeneration, Idefics3ForConditionalGeneration"),
    ({"architectures": ["LlavaForConditionalGeneration"], "vision_config": {"model_type": "siglip_vision_model"},
      "text_config": {"model_type": "mamba"}},
     r"^LLaVA .* with a 'mamba' language model is not supported: verified language models are llama, qwen2, phi"),
    ({"architectures": ["LlavaForConditionalGeneration"], "vision_config": {"model_type": "pixtral"},
      "text_config": {"model_type": "llama"}},
     r"^LLaVA .* with a 'pixtral' vision tower cannot be exported: supported towers are clip_vision_model"),
])
def test_unsupported_models_fail_in_one_line_saying_which_and_why(tmp_path, config, message):
    with pytest.raises(UnsupportedModelError, match=message) as info:
        load_local(_config_dir(tmp_path, config))
    assert "\n" not in str(info.value)


def test_unsupported_model_exits_2_through_the_cli(tmp_path, capsys):
    from edgelmm.cli import main

    model = tmp_path / "model"
    model.mkdir()
    _config_dir(model, {"architectures": ["MllamaForConditionalGeneration"]})
    assert main(["export", "--model", str(model), "--out", str(tmp_path / "out")]) == 2
    assert "cross-attention image layers" in capsys.readouterr().err


def test_image_size_option_is_only_for_local_directories(tmp_path, capsys):
    from edgelmm.cli import main

    assert main(["export", "--model", "smol-vqa", "--out", str(tmp_path / "b"), "--image-size", "64"]) == 2
    assert "--image-size applies to a local model directory" in capsys.readouterr().err
    assert main(["export", "--model", str(tmp_path), "--out", str(tmp_path / "b"), "--image-size", "64x"]) == 2
    assert "must be N or HxW" in capsys.readouterr().err


def test_transformers_outside_the_verified_range_names_the_supported_versions(tmp_path, monkeypatch):
    import transformers

    monkeypatch.setattr(transformers, "__version__", "4.57.1")
    config = {"architectures": ["Qwen2VLForConditionalGeneration"]}
    with pytest.raises(UnsupportedModelError, match=r"transformers 4\.57\.1 is installed, but edgelmm exports Qwen2-VL"
                                                    r" .* only with transformers >=5\.24,<5\.40"):
        load_local(_config_dir(tmp_path, config))


def test_export_with_an_unverified_transformers_is_refused_before_any_work(tiny_llava, tmp_path, monkeypatch):
    from edgelmm.export import exporter

    monkeypatch.setattr(exporter, "_version", lambda package: "5.40.0" if package == "transformers" else "0")
    with pytest.raises(UnsupportedModelError, match=r"transformers 5\.40\.0 is installed, .* >=5\.24,<5\.40"):
        exporter.export_model(tiny_llava, tmp_path / "bundle")
    assert not (tmp_path / "bundle").exists()


def test_an_exporter_failure_says_which_transformers_versions_were_verified(tiny_lm, tmp_path, monkeypatch):
    from edgelmm.export import exporter

    def broken(*_args, **_kwargs):
        raise ExportError("torch.onnx export of decoder failed: TypeError: forward() got an unexpected keyword")

    monkeypatch.setattr(exporter, "export_role", broken)
    with pytest.raises(ExportError, match=r"decoder failed: .* \(edgelmm verified decoder-only LM .* with transformers"
                                          r" >=5\.24,<5\.40; installed: 5\.\d+"):
        exporter.export_model(tiny_lm, tmp_path / "bundle")


@pytest.mark.parametrize(("version", "ok"), [("5.24.0", True), ("5.39.9.dev0", True), ("5.24", True),
                                              ("5.23.1", False), ("5.40.0", False), ("4.57.1", False)])
def test_version_ranges(version, ok):
    assert version_in(version, families.TRANSFORMERS_VERIFIED) is ok
