"""Recipe specs: strict validation, round trips, --dry-run / --list without torch, one-line errors."""

import dataclasses
import json
import subprocess
import sys

import pytest

from edgelmm.cli import main
from edgelmm.errors import SpecError
from edgelmm.specs import Trainability, from_dict, to_dict
from edgelmm.train.recipes import RECIPES, presets
from edgelmm.train.specs import ComponentTraining, DataSource, LoraSpec, LossTerm, RecipeSpec, StageSpec


def stage(**overrides):
    base = dict(name="s", trainability=ComponentTraining(connector=Trainability.FULL), losses=(LossTerm(name="ce"),),
                data=(DataSource(dataset="shapes"),), format="qa", steps=10, lr=1e-3, batch_size=4)
    return StageSpec(**{**base, **overrides})


def test_every_preset_round_trips_and_names_match_keys():
    for name, entry in RECIPES.items():
        assert entry.name == name
        for preset in presets(name).values():
            spec = preset()
            assert from_dict(RecipeSpec, json.loads(json.dumps(to_dict(spec)))) == spec


def test_imp_stages_are_imps():
    spec = presets("imp")["full"]()
    tower, ground, align, instruct = spec.stages
    assert tower.format == "contrastive" and tower.trainability.vision_tower == Trainability.FULL
    assert ground.format == "ground" and ground.trainability == ComponentTraining(connector=Trainability.FULL)
    assert [t.name for t in tower.losses][0] == "siglip"
    assert align.trainability == ComponentTraining(connector=Trainability.FULL)  # tower and LM frozen
    assert instruct.trainability == ComponentTraining(connector=Trainability.FULL, llm=Trainability.LORA)
    assert instruct.lora is not None and instruct.format == "qa" and align.format == "caption"
    assert instruct.connector_lr > instruct.lr


@pytest.mark.parametrize("overrides, message", [
    (dict(trainability=ComponentTraining(llm=Trainability.LORA)), "no lora spec"),
    (dict(trainability=ComponentTraining()), "every component is frozen"),
    (dict(format="chat"), "format 'chat' is not valid"),
    (dict(lr=0.0), "lr > 0"),
    (dict(turns=2, format="caption"), "only for format qa"),
    (dict(connector_lr=0.0), "connector_lr must be > 0"),
    (dict(losses=()), "at least one loss"),
])
def test_stage_validation(overrides, message):
    with pytest.raises(SpecError, match=message):
        stage(**overrides)


def test_connector_lora_and_bad_lora_are_refused():
    with pytest.raises(SpecError, match="connector: lora is not supported"):
        ComponentTraining(connector=Trainability.LORA)
    with pytest.raises(SpecError, match="r >= 1"):
        LoraSpec(r=0)


def test_recipe_needs_unique_stage_names():
    with pytest.raises(SpecError, match="unique names"):
        RecipeSpec(name="imp", base_model="tiny-random", stages=(stage(), stage()))


def test_dry_run_prints_stages_without_importing_torch():
    code = ("import sys, contextlib, io\nfrom edgelmm.cli import main\nbuf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf):\n    rc = main(['train', '--recipe', 'imp', '--dry-run'])\n"
            "print(rc, [m for m in ('torch', 'transformers', 'peft') if m in sys.modules])\nprint(buf.getvalue())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    first, rest = out.split("\n", 1)
    assert first == "0 []"
    for name in ("vision-pretrain", "align", "instruct", "vision_tower=full", "llm=lora", "lora r=16"):
        assert name in rest


def test_list_and_bad_names(capsys):
    assert main(["train", "--list"]) == 0
    assert capsys.readouterr().out.startswith("imp ")
    assert main(["train", "--recipe", "ipm", "--dry-run"]) == 2
    assert "unknown recipe 'ipm'" in capsys.readouterr().err
    assert main(["train", "--recipe", "imp", "--preset", "fast", "--dry-run"]) == 2
    assert "valid: full, quick" in capsys.readouterr().err


def test_config_file_is_strict(tmp_path, capsys):
    spec = to_dict(presets("imp")["quick"]())
    spec["stages"][0]["stpes"] = 3
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(spec))
    assert main(["train", "--config", str(path), "--dry-run"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "stages[0].stpes: unknown key (did you mean 'steps'?)" in err


def test_existing_run_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "log.jsonl").write_text("{}\n")
    assert main(["train", "--recipe", "imp", "--quick", "--out", str(tmp_path)]) == 2
    assert "already holds a run; pass --resume" in capsys.readouterr().err
    assert (tmp_path / "log.jsonl").read_text() == "{}\n"


def test_quick_is_the_full_recipe_made_small():
    full, quick = presets("imp")["full"](), presets("imp")["quick"]()
    assert [s.name for s in quick.stages] == [s.name for s in full.stages]
    for f, q in zip(full.stages, quick.stages):
        assert dataclasses.replace(q, steps=f.steps, batch_size=f.batch_size) == f
        assert q.steps < f.steps
