"""The package's shape: one registry per kind, options anywhere, optional extras, and a core that installs alone."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from dasr.cli import COMMANDS, build_parser, main
from dasr.config import TrainConfig
from dasr.errors import DasrError
from dasr.extras import require
from dasr.parallel import STRATEGIES, STRATEGY_CLASSES, make_strategy, strategy_class

ROOT = Path(__file__).resolve().parent.parent


def test_every_registered_strategy_is_its_class_and_takes_only_real_train_options():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert STRATEGIES == tuple(STRATEGY_CLASSES)
    for name in STRATEGIES:
        cls = strategy_class(name)
        assert cls.name == name
        assert set(cls.CONFIG_OPTIONS.values()) <= fields, (name, cls.CONFIG_OPTIONS)
    assert strategy_class("hybrid").CONFIG_OPTIONS["group_size"] == "group_size"
    assert strategy_class("adpsgd").CONFIG_OPTIONS["period_s"] == "gossip_period_s"
    with pytest.raises(ValueError, match="unknown strategy 'nope'; choose one of single, sync"):
        make_strategy("nope")
    # the `dasr train --strategy` choices are the registry's
    strategy = next(f for f in dataclasses.fields(TrainConfig) if f.name == "strategy")
    assert tuple(strategy.metadata["choices"]) == STRATEGIES


def test_options_go_anywhere_among_the_positionals():
    parser = build_parser()
    for argv in (
        ["transcribe", "EXP", "--lm", "DATA", "a.wav", "b.wav"],
        ["transcribe", "EXP", "a.wav", "--lm", "DATA", "b.wav"],
        ["transcribe", "--lm", "DATA", "EXP", "a.wav", "b.wav"],
    ):
        args = parser.parse_args(argv)
        assert (args.paths, args.lm) == (["EXP", "a.wav", "b.wav"], "DATA"), argv
    args = parser.parse_args(["corpus", "import-kaldi", "--out", "m.jsonl", "kaldi/", "--strict"])
    assert (args.kaldi_dir, args.out, args.strict) == ("kaldi/", "m.jsonl", True)


def test_each_command_is_declared_once_and_its_help_is_its_own(capsys):
    assert {"train", "transcribe", "corpus synth", "bench", "simulate"} <= set(COMMANDS)
    for name, command in COMMANDS.items():
        with pytest.raises(SystemExit) as e:
            main([*name.split(), "--help"])
        assert e.value.code == 0
        out = capsys.readouterr().out
        assert " ".join(command.help.split())[:40] in " ".join(out.split()), name


def test_a_missing_extra_is_one_sentence_naming_its_install():
    with pytest.raises(DasrError, match=r"^the ONNX export needs no_such_pkg, which is not installed: "):
        require("no_such_pkg.sub", "export", "the ONNX export")
    with pytest.raises(DasrError, match=re.escape("pip install 'dasr[export]'")):
        require("no_such_pkg", "export", "the ONNX export")


def test_a_real_missing_extra_stops_the_cli_with_that_sentence(tmp_path):
    """onnxruntime made unimportable in a child process: `dasr transcribe --onnx` says which install adds it."""
    code = (
        "import sys; sys.modules['onnxruntime'] = None\n"
        "from dasr.cli import main\n"
        f"sys.exit(main(['transcribe', '--onnx', {str(tmp_path)!r}, 'a.wav']))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [
        "dasr: error: running an ONNX export needs onnxruntime, which is not installed: pip install 'dasr[export]'"
    ]


def _venv_python(root: Path) -> Path:
    venv.EnvBuilder(with_pip=True).create(root)
    return root / "bin" / "python"


@pytest.mark.slow
def test_the_core_installs_alone_and_trains_the_example(tmp_path):
    """A fresh venv gets the package without extras (exact versions from constraints.txt), then a PyTorch
    user's import and the example model; the lab and the extras are not there."""
    python = _venv_python(tmp_path / "venv")
    install = [str(python), "-m", "pip", "install", "--quiet", "-c", str(ROOT / "constraints.txt"), str(ROOT)]
    done = subprocess.run(install, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    listed = subprocess.run([str(python), "-m", "pip", "list", "--format", "json"], capture_output=True, text=True)
    names = {p["name"].lower() for p in json.loads(listed.stdout)}
    assert {"torch", "numpy", "dasr"} <= names
    assert not names & {"matplotlib", "onnx", "onnxruntime", "sherpa-onnx", "lhotse", "scipy", "hypothesis"}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    work = tmp_path / "elsewhere"  # not the checkout: the lab must not be found
    work.mkdir()
    check = "import dasr, dasr.parallel; from dasr.parallel import ADPSGD; import importlib.util as u; "
    check += "print(dasr.__file__, u.find_spec('lab'))"
    done = subprocess.run([str(python), "-c", check], capture_output=True, text=True, timeout=120, cwd=work, env=env)
    assert done.returncode == 0 and "site-packages" in done.stdout and done.stdout.rstrip().endswith("None"), done
    example = [str(python), str(ROOT / "examples" / "adpsgd_classifier.py"), "--nproc", "2", "--steps", "200"]
    done = subprocess.run(example, capture_output=True, text=True, timeout=300, cwd=work, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(re.findall(r"rank \d: test accuracy ([0-9.]+) after 200 steps", done.stdout)) == 2, done.stdout
    bench = subprocess.run(
        [str(python), "-m", "dasr", "bench", "data"], capture_output=True, text=True, timeout=120, cwd=work, env=env
    )
    assert bench.returncode == 1 and "not installed with the package" in bench.stderr, bench.stderr
