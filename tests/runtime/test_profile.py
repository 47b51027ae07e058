"""The strict device-profile loader: every problem in one line, names and paths, round trips."""

from pathlib import Path

import pytest
import yaml

from edgelmm.errors import ProfileError, UnknownNameError
from edgelmm.runtime.profile import (
    DeviceProfile,
    Provider,
    list_profiles,
    load_profile,
    parse_profile,
    read_profile,
)

MINIMAL = {
    "name": "test-board",
    "chipset": "test",
    "form_factor": "single-board-computer",
    "os": "linux",
    "source": "made up for a test",
    "cores": [{"count": 4, "kind": "performance", "core": "Cortex-A76"}],
    "memory_mb": 4096,
    "memory_budget_mb": 1024,
    "threads": {"intra_op": 4},
    "providers": [{"cpu": {}}],
}


def write(tmp_path: Path, data, name: str = "test-board") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_minimal_profile_has_defaults(tmp_path):
    profile = read_profile(write(tmp_path, MINIMAL))
    assert profile.providers_for("decoder")[0].provider is Provider.CPU
    assert profile.max_context == 2048 and profile.prefill_chunk == 512 and profile.core_count == 4


def test_every_problem_is_reported_in_one_error(tmp_path):
    bad = {**MINIMAL, "memroy_budget_mb": 1, "threads": {"intra_op": "four"}, "form_factor": "fone",
           "providers": [{"qnn": {"soc_model": "57x"}, "cpu": {}}, {"coreml": {"compute_units": "NPU"}}]}
    with pytest.raises(ProfileError) as err:
        read_profile(write(tmp_path, bad))
    message = str(err.value)
    assert "\n" not in message
    for expected in ("memroy_budget_mb: unknown key (did you mean 'memory_budget_mb'?)",
                     "threads.intra_op: expected an integer", "form_factor: 'fone' is not valid",
                     "providers[0].qnn.soc_model", "providers[1].coreml.compute_units"):
        assert expected in message, message


def test_empty_file_non_mapping_and_bad_yaml(tmp_path):
    with pytest.raises(ProfileError, match="is empty"):
        read_profile(write(tmp_path, ""))
    with pytest.raises(ProfileError, match="expected a mapping"):
        read_profile(write(tmp_path, "- just\n- a list\n"))
    with pytest.raises(ProfileError, match="not valid YAML"):
        read_profile(write(tmp_path, "name: [unclosed\n"))
    with pytest.raises(ProfileError, match="cannot be read"):
        read_profile(tmp_path / "missing.yaml")
    with pytest.raises(ProfileError, match="duplicate key 'name'"):  # yaml.safe_load would keep the last one
        read_profile(write(tmp_path, "name: a\nname: b\n"))
    with pytest.raises(ProfileError, match="alias"):  # no billion-laughs expansion
        read_profile(write(tmp_path, "a: &x [1, 2]\nb: *x\n"))


def test_semantic_rules(tmp_path):
    cases = {
        "exactly one of": {**MINIMAL, "providers": [{"cpu": {}, "xnnpack": {}}]},
        "listed twice": {**MINIMAL, "providers": [{"cpu": {}}, {"cpu": {"arena": False}}]},
        "strict has no meaning for cpu": {**MINIMAL, "providers": [{"cpu": {}, "strict": True}]},
        "memory_budget_mb must be in": {**MINIMAL, "memory_budget_mb": 5000},
        "fallback list is empty": {**MINIMAL, "graph_providers": {"decoder": []}},
        "differs from the file name": {**MINIMAL, "name": "other-board"},
        "kebab-case": {**MINIMAL, "name": "Test_Board"},
        "graph_providers.decodr": {**MINIMAL, "graph_providers": {"decodr": [{"cpu": {}}]}},
    }
    for expected, data in cases.items():
        name = "Test_Board" if expected == "kebab-case" else "test-board"
        with pytest.raises(ProfileError, match=expected):
            read_profile(write(tmp_path, data, name))


def test_round_trip_through_yaml(tmp_path):
    data = {**MINIMAL, "providers": [{"qnn": {"soc_model": 60, "context_cache": True}, "strict": True},
                                     {"cpu": {"arena": False}}],
            "graph_providers": {"vision_encoder": [{"coreml": {"compute_units": "CPUAndNeuralEngine"}}, {"cpu": {}}]},
            "precision": ["a16w8", "int4"]}
    profile = read_profile(write(tmp_path, data))
    again = parse_profile(yaml.safe_load(yaml.safe_dump(profile.to_dict())))
    assert again == profile
    assert profile.providers[0].qnn.ort_options()["soc_model"] == "60"
    assert "xnnpack" not in profile.to_dict()["providers"][0]  # unset options are pruned


def test_names_paths_and_extra_directories(tmp_path, monkeypatch):
    assert {"laptop-x86", "snapdragon-8-gen3"} <= set(list_profiles())
    assert load_profile("laptop-x86").name == "laptop-x86"
    path = write(tmp_path, MINIMAL)
    assert load_profile(str(path)).name == "test-board"
    profile = load_profile(path)
    assert load_profile(profile) is profile
    with pytest.raises(UnknownNameError, match="unknown device profile 'laptop-x68'.*did you mean 'laptop-x86'"):
        load_profile("laptop-x68")
    monkeypatch.setenv("EDGELMM_PROFILES", str(tmp_path))
    assert "test-board" in list_profiles() and isinstance(load_profile("test-board"), DeviceProfile)
