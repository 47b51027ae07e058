"""Every shipped export recipe loads through the real loader, names real datasets/tasks, and matches its preset."""

import pytest

from edgelmm.evals.export_checks import check_names
from edgelmm.export.quantize import GRAPH_PRESETS, GraphPrecisions
from edgelmm.export.recipe import RECIPES_DIR, list_recipes, load_recipe
from edgelmm.models.lmm import smol_vqa_vision_config
from edgelmm.models.registry import MODELS

from ..conftest import REPO

REQUIRED = {"smol-vqa/cpu-fp32", "smol-vqa/arm64-int8", "smol-vqa/arm64-int4", "smol-vqa/qnn-a16w8",
            "smol-vqa/arm64-int4-16tok"}


def test_the_required_recipes_ship():
    assert RECIPES_DIR == REPO / "export"
    assert set(list_recipes()) >= REQUIRED


@pytest.mark.parametrize("name", list_recipes())
def test_shipped_recipe_loads_and_names_exist(name):
    recipe = load_recipe(name)
    assert recipe.name == name and recipe.model in MODELS and recipe.description
    check_names(recipe)
    assert recipe.validation.task is not None, "a shipped recipe re-checks task accuracy"
    if recipe.graphs.static:
        assert recipe.calibration is not None and recipe.calibration.samples >= 16


def test_spelled_out_arm64_int4_is_the_preset():
    assert load_recipe("smol-vqa/arm64-int4").graphs == GraphPrecisions.arm64_int4() == GRAPH_PRESETS["arm64-int4"]()


def test_budgets_are_reachable_on_smol_vqa_and_say_what_recovers_them():
    vision = smol_vqa_vision_config()
    grid = vision.image_size // vision.patch_size
    for name in list_recipes():
        budget = load_recipe(name).budget
        if budget.active:
            size = budget.image_size or vision.image_size
            assert size % vision.patch_size == 0 and (size // vision.patch_size) % budget.pool == 0, name
            assert budget.retraining, f"{name} cuts visual tokens without saying what recovers the accuracy"
            assert (size // vision.patch_size) ** 2 // budget.pool**2 < grid**2, f"{name} does not cut tokens"


def test_qnn_recipe_is_static():
    recipe = load_recipe("smol-vqa/qnn-a16w8")
    assert recipe.static_shapes and recipe.max_context and recipe.graphs.decoder.precision == "a16w8"
