"""`dasr lm`: the word n-gram of a data dir's training transcripts, as DATA/lm.arpa."""

from __future__ import annotations

from pathlib import Path

from dasr.data.manifest import read_manifest
from dasr.data.synth import LM_TEXT_FILE
from dasr.data.text import normalize
from dasr.decode.lm import NgramLM, estimate
from dasr.errors import DasrError

LM_FILE = "lm.arpa"


def lm_corpus(data_dir: str) -> list[str]:
    """The LM's training text: train.jsonl's transcripts plus DATA/lm_text.txt when present."""
    train = Path(data_dir) / "train.jsonl"
    if not train.exists():
        raise DasrError(f"{data_dir} has no train.jsonl to estimate the LM on")
    sentences = [normalize(u.text) for u in read_manifest(train)]
    extra = Path(data_dir) / LM_TEXT_FILE
    if extra.exists():
        try:
            sentences += [normalize(line) for line in extra.read_text(encoding="utf-8").splitlines()]
        except UnicodeDecodeError:
            raise DasrError(f"{extra} is not UTF-8 text") from None
    sentences = [s for s in sentences if s]
    if not sentences:
        raise DasrError(f"{train} has no words to estimate an LM on")
    return sentences


def lexicon_words(data_dir: str) -> list[str]:
    """The decoder's closed vocabulary: every word of the LM's training text."""
    return sorted({w for s in lm_corpus(data_dir) for w in s.split()})


def build_lm(data_dir: str, order: int = 3) -> tuple[Path, NgramLM]:
    """Estimate an interpolated modified Kneser-Ney LM on :func:`lm_corpus`; write DATA/lm.arpa."""
    if not 2 <= order <= 5:  # KenLM in the decoder needs at least a bigram
        raise DasrError(f"--order must be between 2 and 5, not {order}")
    lm = estimate(lm_corpus(data_dir), order)
    path = Path(data_dir) / LM_FILE
    lm.write_arpa(path)
    return path, lm
