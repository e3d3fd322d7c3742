"""Options derived from TrainConfig, packaged recipes, --config FILE, and a plain torchrun launch."""

import argparse
import dataclasses
import json
import os
import subprocess
import sys

import pytest
import yaml

from dasr.cli import build_parser
from dasr.config import TrainConfig, add_options, load_recipe, recipe_names, resolve, save_config
from dasr.errors import DasrError
from dasr.parallel import STRATEGIES


def _train(*argv):
    args = build_parser().parse_args(["train", "--data", "d", "--exp", "e", *map(str, argv)])
    return resolve(args.config, vars(args))


def test_every_field_is_one_flag_with_its_help_and_no_flag_is_extra():
    parser = argparse.ArgumentParser()
    add_options(parser)
    dests = {a.dest: a for a in parser._actions if a.dest != "help"}
    assert set(dests) == {f.name for f in dataclasses.fields(TrainConfig)} | {"config"}
    for f in dataclasses.fields(TrainConfig):
        assert dests[f.name].default is None  # "not given", so that a recipe's value stays
        assert dests[f.name].help.startswith(f.metadata["help"])
    assert tuple(dests["strategy"].choices) == STRATEGIES


def test_flags_beat_the_recipe_and_a_recipe_sets_only_what_it_says():
    demo = load_recipe("demo")
    config = _train("--config", "demo", "--model", "paper", "--no-spec-augment", "--lr", "1e-3", "--straggler", "1:2")
    assert (config.model, config.spec_augment, config.lr, config.straggler) == ("paper", False, 0.001, ["1:2"])
    assert (config.strategy, config.nproc, config.epochs) == (demo["strategy"], demo["nproc"], demo["epochs"])
    defaults = TrainConfig(data="d", exp="e")
    tiny = _train("--config", "tiny")
    for f in dataclasses.fields(TrainConfig):
        expected = load_recipe("tiny").get(f.name, getattr(defaults, f.name))
        assert getattr(tiny, f.name) == expected, f.name
    # --model names a model shape and nothing else
    assert dataclasses.replace(_train("--model", "tiny"), model="demo") == defaults


def test_packaged_recipes_are_valid_and_name_their_model():
    assert set(recipe_names()) >= {"tiny", "demo", "demo-quick", "paper"}
    for name in recipe_names():
        config = resolve(name, {"data": "d", "exp": "e"})
        assert config.model == load_recipe(name)["model"]
    assert resolve("paper", {"data": "d", "exp": "e"}).model == "paper"


def test_user_recipe_files_are_checked_and_old_configs_still_load(tmp_path):
    old = tmp_path / "old.yaml"
    old.write_text("preset: tiny\nlr: 3e-3\nepochs: 2\nspec_augment: true\n")  # YAML reads 3e-3 as a string
    config = _train("--config", old)
    assert (config.model, config.lr, config.epochs, config.spec_augment) == ("tiny", 0.003, 2, True)
    for text, message in [
        ("lr: fast\n", "lr must be a number"),
        ("epochs: 2.5\n", "epochs must be an integer"),
        ("spec_augment: 1\n", "spec_augment must be true or false"),
        ("presets: tiny\n", "unknown settings ['presets']"),
        ("- a list\n", "expected a mapping"),
        ("strategy: gossip\n", "--strategy must be one of"),
    ]:
        bad = tmp_path / "bad.yaml"
        bad.write_text(text)
        with pytest.raises(DasrError, match=message.replace("[", r"\[").replace("]", r"\]")):
            _train("--config", bad)
    with pytest.raises(DasrError, match="neither a YAML file nor a packaged recipe"):
        _train("--config", "nosuch")
    with pytest.raises(DasrError, match="no such file"):
        _train("--config", tmp_path / "missing.yaml")
    saved = tmp_path / "config.yaml"
    save_config(config, saved)
    assert resolve(str(saved), {}) == config


def test_plain_torchrun_trains_from_a_saved_config(speech_data_dir, tmp_path):
    """`torchrun -m dasr.train --config EXP/config.yaml` as trainer.py's docstring promises, flags overriding it."""
    exp = tmp_path / "exp"
    recipe = tmp_path / "run.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {"data": str(speech_data_dir), "exp": str(exp), "model": "tiny", "max_steps": 2, "batch_frames": 1200}
        )
    )
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1"]
        + ["-m", "dasr.train", "--config", str(recipe), "--strategy", "sync", "--max-steps", "3", "--log-every", "1"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert run.returncode == 0, run.stderr[-3000:]
    saved = yaml.safe_load((exp / "config.yaml").read_text())
    assert (saved["strategy"], saved["max_steps"], saved["batch_frames"]) == ("sync", 3, 1200)
    steps = [
        r["step"] for r in map(json.loads, (exp / "metrics.jsonl").read_text().splitlines()) if r["kind"] == "train"
    ]
    assert steps == [1, 2, 3]
    assert (exp / "final.pt").exists() and (exp / "best.pt").exists()
