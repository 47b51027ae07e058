"""Session fixtures, built once: tiny random models and their bundles, real-weight bundles, sample images."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub, ever: a test that reaches for it must fail loudly
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _export(loaded, out: Path) -> Path:
    from edgelmm.export.exporter import export_model

    export_model(loaded, out)
    return out


@pytest.fixture(scope="session")
def tiny_llava():
    from edgelmm.models.registry import build_model

    return build_model("tiny-random")


@pytest.fixture(scope="session")
def tiny_lm():
    from edgelmm.models.registry import build_model

    return build_model("tiny-random-lm")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_llava, tmp_path_factory) -> Path:
    return _export(tiny_llava, tmp_path_factory.mktemp("bundles") / "tiny-random")


@pytest.fixture(scope="session")
def tiny_lm_bundle(tiny_lm, tmp_path_factory) -> Path:
    return _export(tiny_lm, tmp_path_factory.mktemp("bundles") / "tiny-random-lm")


@pytest.fixture(scope="session")
def smollm2():
    from edgelmm.models.registry import build_model

    return build_model("smollm2-135m")


@pytest.fixture(scope="session")
def smollm2_bundle(smollm2, tmp_path_factory) -> Path:
    return _export(smollm2, tmp_path_factory.mktemp("bundles") / "smollm2-135m")


@pytest.fixture(scope="session")
def smol_vqa(tmp_path_factory):
    """(LoadedModel, fp32 bundle) of the registry's smol-vqa: the shipped trained weights on the real SmolLM2."""
    from edgelmm.models.registry import build_model

    loaded = build_model("smol-vqa")
    return loaded, _export(loaded, tmp_path_factory.mktemp("bundles") / "smol-vqa")


@pytest.fixture(scope="session")
def smollm2_int4_bundle(smollm2, tmp_path_factory) -> Path:
    """SmolLM2 with int4 weights (decoder MatMulNBits, embedding GatherBlockQuantized), default block/accuracy."""
    from edgelmm.export.exporter import ExportOptions, export_model
    from edgelmm.specs import Precision

    out = tmp_path_factory.mktemp("bundles") / "smollm2-135m-int4"
    export_model(smollm2, out, ExportOptions(precision=Precision.INT4))
    return out


def draw_scene(seed: int, size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A procedurally drawn scene: coloured shapes on a plain background."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, tuple(int(v) for v in rng.integers(0, 255, 3)))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = (int(v) for v in rng.integers(0, min(size) // 2, 2))
        box = (x, y, x + int(rng.integers(10, 30)), y + int(rng.integers(10, 30)))
        colour = tuple(int(v) for v in rng.integers(0, 255, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=colour)
    return image


@pytest.fixture(scope="session")
def sample_images() -> list[Image.Image]:
    """Three images of different sizes and content: a drawn scene, a real photo, an upscaled digit."""
    from skimage import data as skdata
    from sklearn.datasets import load_digits

    digit = load_digits().images[0]
    digit = Image.fromarray((digit / 16 * 255).astype(np.uint8)).resize((40, 40), Image.Resampling.NEAREST)
    photo = Image.fromarray(skdata.astronaut()).resize((200, 160))
    return [draw_scene(0), photo, digit]


def tiny_recipe(steps=(3, 2, 2, 3)) -> dict:
    """The imp recipe on tiny-random (hidden 32): every stage and format, a few steps each, as a config dict."""
    from edgelmm.specs import to_dict
    from edgelmm.train.imp_presets import full

    spec = to_dict(full())
    spec["base_model"] = "tiny-random"
    assert len(spec["stages"]) == len(steps), "one step count per stage of the imp recipe"
    for stage, n, batch in zip(spec["stages"], steps, (8, 8, 4, 4)):
        stage["steps"], stage["batch_size"] = n, batch
    spec["evals"] = [{"task": "digits", "split": "val", "n": 6}]
    return spec


@pytest.fixture(scope="session")
def tiny_recipe_config(tmp_path_factory) -> Path:
    import json

    path = tmp_path_factory.mktemp("recipes") / "tiny-imp.json"
    path.write_text(json.dumps(tiny_recipe()))
    return path


TRAIN_ENV = {**os.environ, "PYTHONPATH": str(REPO / "sdk"), "OMP_NUM_THREADS": "1"}
"""Training subprocesses run single-threaded: runs with equal thread counts are bitwise reproducible."""


@pytest.fixture(scope="session")
def tiny_run(tiny_recipe_config, tmp_path_factory) -> Path:
    """`edgelmm train` of the tiny recipe, run once: log.jsonl, loss.png, checkpoint/, model/."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("runs") / "tiny"
    subprocess.run([sys.executable, "-m", "edgelmm", "train", "--config", str(tiny_recipe_config), "--out", str(out),
                    "--no-progress"], env=TRAIN_ENV, capture_output=True, text=True, timeout=600, check=True)
    return out


@pytest.fixture(scope="session")
def tiny_ilm_run(tmp_path_factory) -> Path:
    """`edgelmm train --recipe ilm --preset tiny`: both phases for 3 steps on the tiny LM (~10 s)."""
    from edgelmm.cli import main

    out = tmp_path_factory.mktemp("ilm") / "run"
    assert main(["train", "--recipe", "ilm", "--preset", "tiny", "--out", str(out), "--no-progress"]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_ilm_bundle(tiny_ilm_run, tmp_path_factory) -> Path:
    from edgelmm.export.item_lm import export_item_lm

    out = tmp_path_factory.mktemp("bundles") / "tiny-ilm"
    export_item_lm(tiny_ilm_run / "model", out)
    return out
