"""Every shipped device profile loads through the real loader, round-trips, and says where its numbers come from."""

import re

import pytest
import yaml

from edgelmm.runtime.profile import SHIPPED_DIR, list_profiles, load_profile, parse_profile, read_profile

from ..conftest import REPO

SHIPPED = sorted((REPO / "device_profiles").rglob("*.yaml"))
REQUIRED = {"snapdragon-8-gen3", "snapdragon-8-elite", "snapdragon-8-gen2", "dimensity-9300", "pixel-8",
            "raspberry-pi-5", "generic-arm64-linux", "apple-m2", "laptop-x86"}


def test_the_glob_finds_every_required_profile():
    assert SHIPPED_DIR == REPO / "device_profiles"
    assert len(SHIPPED) == 9, [p.name for p in SHIPPED]
    assert {p.stem for p in SHIPPED} == REQUIRED
    assert set(list_profiles()) >= REQUIRED


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_shipped_profile_loads_and_round_trips(path):
    profile = read_profile(path)
    assert profile.name == path.stem and load_profile(path.stem) == profile
    assert parse_profile(yaml.safe_load(yaml.safe_dump(profile.to_dict()))) == profile
    assert len(profile.source) > 40  # a vendor spec or a measurement, named
    assert profile.threads.intra_op <= profile.core_count
    assert profile.memory_budget_mb <= profile.memory_mb
    for role in ("vision_encoder", "token_embedding", "decoder"):
        assert profile.providers_for(role)[-1].provider == "cpu", f"{role} has no CPU fallback"


def test_qualcomm_profiles_put_qnn_first_and_prove_placement():
    for name in ("snapdragon-8-gen3", "snapdragon-8-elite", "snapdragon-8-gen2"):
        first = load_profile(name).providers[0]
        assert first.provider == "qnn" and first.strict and first.qnn.soc_model in (43, 57, 69)


def test_readme_starts_with_a_runnable_command():
    text = (REPO / "device_profiles" / "README.md").read_text()
    first_block = re.search(r"```\n(.*?)```", text, re.S).group(1)
    assert first_block.lstrip().startswith("edgelmm run") and "--profile" in first_block
    for name in REQUIRED:
        assert f"`{name}`" in text, f"README does not describe {name}"
