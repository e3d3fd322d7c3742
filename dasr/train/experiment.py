"""The experiment dir a run writes into, prepared once before its workers start."""

from __future__ import annotations

import shutil
from pathlib import Path

from dasr.config import TrainConfig, save_config
from dasr.data.manifest import read_manifest
from dasr.data.tokenizer import Tokenizer, build_tokenizer, load_tokenizer
from dasr.errors import DasrError


def prepare_experiment(config: TrainConfig) -> Tokenizer:
    """Create the exp dir, its tokenizer, CMVN copy and resolved config.yaml."""
    exp = Path(config.exp)
    exp.mkdir(parents=True, exist_ok=True)
    train_manifest = Path(config.data) / "train.jsonl"
    if not train_manifest.exists():
        raise DasrError(
            f"{config.data} has no train.jsonl: make one with `dasr corpus synth` or `dasr corpus import-*`"
        )
    if config.resume and (exp / "tokenizer.json").exists():
        tokenizer = load_tokenizer(exp)
    else:
        texts = [u.text for u in read_manifest(train_manifest)]
        tokenizer = build_tokenizer(config.units, texts, exp, config.bpe_vocab)
    cmvn = Path(config.data) / "cmvn.npz"
    if not cmvn.exists():
        raise DasrError(f"{config.data} has no features: run `dasr features {config.data}` first")
    shutil.copyfile(cmvn, exp / "cmvn.npz")  # transcribe needs it without the data dir
    save_config(config, exp / "config.yaml")
    return tokenizer
