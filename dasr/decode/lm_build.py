"""`dasr lm`: the word n-gram of a data dir's training transcripts (and domain text), as DATA/lm.arpa.

The decoder's lexicon is the LM's vocabulary, so text given to `dasr lm --text` reaches both.
"""

from __future__ import annotations

import os
from pathlib import Path

from dasr.data.manifest import read_manifest
from dasr.data.synth import LM_TEXT_FILE
from dasr.data.text import normalize
from dasr.decode.lm import NgramLM, estimate
from dasr.errors import DasrError

LM_FILE = "lm.arpa"
#: ARPA unigrams that are not words of the lexicon
SENTENCE_MARKS = frozenset({"<s>", "</s>", "<unk>"})


def _text_lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise DasrError(f"text file {path} does not exist") from None
    except UnicodeDecodeError:
        raise DasrError(f"{path} is not UTF-8 text") from None


def lm_corpus(data_dir: str | os.PathLike, text_file: str | os.PathLike | None = None) -> list[str]:
    """The LM's training text, normalised: train.jsonl's transcripts, DATA/lm_text.txt and ``text_file``.

    train.jsonl may be missing when ``text_file`` is given; the others are used when present.
    """
    train = Path(data_dir) / "train.jsonl"
    if not train.exists() and text_file is None:
        raise DasrError(f"{data_dir} has no train.jsonl to estimate the LM on (or give --text FILE)")
    sentences = [normalize(u.text) for u in read_manifest(train)] if train.exists() else []
    texts = [path for path in [Path(data_dir) / LM_TEXT_FILE] if path.exists()]
    if text_file is not None:
        texts.append(Path(text_file))
    for path in texts:
        sentences += [normalize(line) for line in _text_lines(path)]
    sentences = [s for s in sentences if s]
    if not sentences:
        raise DasrError(f"no words to estimate an LM on in {train}" + (f" or {text_file}" if text_file else ""))
    return sentences


def arpa_words(path: str | os.PathLike) -> list[str]:
    """The words of an ARPA file's unigram section, sorted, without ``<s>``, ``</s>`` and ``<unk>``."""
    words: list[str] = []
    section = False
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                line = line.strip()
                if line == "\\1-grams:":
                    section = True
                elif section and (not line or line.startswith("\\")):
                    break
                elif section:
                    fields = line.split()
                    if len(fields) < 2:
                        raise DasrError(f"{path}: malformed ARPA unigram line {line!r}")
                    words.append(fields[1])
    except (OSError, UnicodeDecodeError) as err:
        raise DasrError(f"{path}: cannot read ARPA file: {err}") from err
    if not section:
        raise DasrError(f"{path} is not an ARPA file: it has no \\1-grams: section")
    return sorted(set(words) - SENTENCE_MARKS)


def lexicon_words(data_dir: str | os.PathLike) -> list[str]:
    """The decoder's closed vocabulary: the words of DATA/lm.arpa, or of :func:`lm_corpus` before there is one."""
    arpa = Path(data_dir) / LM_FILE
    if arpa.exists():
        return arpa_words(arpa)
    return sorted({w for s in lm_corpus(data_dir) for w in s.split()})


def build_lm(
    data_dir: str | os.PathLike, order: int = 3, text_file: str | os.PathLike | None = None
) -> tuple[Path, NgramLM]:
    """Estimate an interpolated modified Kneser-Ney LM on :func:`lm_corpus`; write DATA/lm.arpa."""
    if not 2 <= order <= 5:  # KenLM in the decoder needs at least a bigram
        raise DasrError(f"--order must be between 2 and 5, not {order}")
    lm = estimate(lm_corpus(data_dir, text_file), order)
    path = Path(data_dir) / LM_FILE
    lm.write_arpa(path)
    return path, lm
