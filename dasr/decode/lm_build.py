"""`dasr lm`: the word n-gram of a data dir's training transcripts, as DATA/lm.arpa."""
from __future__ import annotations

from pathlib import Path

from dasr.data.manifest import read_manifest
from dasr.data.text import normalize
from dasr.decode.lm import NgramLM, estimate
from dasr.errors import DasrError

LM_FILE = "lm.arpa"


def build_lm(data_dir: str, order: int = 3) -> tuple[Path, NgramLM]:
    """Estimate an interpolated modified Kneser-Ney LM on train.jsonl's texts; write DATA/lm.arpa."""
    if not 2 <= order <= 5:  # KenLM in the decoder needs at least a bigram
        raise DasrError(f"--order must be between 2 and 5, not {order}")
    train = Path(data_dir) / "train.jsonl"
    if not train.exists():
        raise DasrError(f"{data_dir} has no train.jsonl to estimate the LM on")
    sentences = [normalize(u.text) for u in read_manifest(train)]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise DasrError(f"{train} has no words to estimate an LM on")
    lm = estimate(sentences, order)
    path = Path(data_dir) / LM_FILE
    lm.write_arpa(path)
    return path, lm
