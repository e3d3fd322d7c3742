"""CTC output units: characters, or sentencepiece BPE trained on the training text.

Unit 0 is always the CTC blank. ``spell(word)`` gives the units a word is written with in
the decoder's lexicon.
"""

from __future__ import annotations

import json
import os
import string
from abc import ABC, abstractmethod
from collections.abc import Iterable
from pathlib import Path

from dasr.data.text import normalize
from dasr.errors import DasrError

BLANK = "<blank>"
WORD_BOUNDARY = "|"


class Tokenizer(ABC):
    """Maps normalised text to unit ids and back."""

    kind: str
    units: list[str]
    #: the unit that separates words ("|" for characters), None when units carry it (BPE "▁")
    word_boundary: str | None
    blank: int = 0

    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Unit ids of ``text`` (normalised first)."""

    @abstractmethod
    def decode(self, ids: Iterable[int]) -> str:
        """Text of unit ids (blanks dropped)."""

    @abstractmethod
    def spell(self, word: str) -> list[str]:
        """The units ``word`` is written with in the decoder's lexicon."""

    @abstractmethod
    def save(self, directory: str | os.PathLike) -> None:
        """Write what :func:`load_tokenizer` needs into ``directory``."""

    @property
    def vocab_size(self) -> int:
        return len(self.units)


class CharTokenizer(Tokenizer):
    """Letters, apostrophe and '|' between words."""

    kind = "char"
    word_boundary = WORD_BOUNDARY

    def __init__(self) -> None:
        self.units = [BLANK, WORD_BOUNDARY, "'"] + list(string.ascii_lowercase)
        self._index = {u: i for i, u in enumerate(self.units)}

    def encode(self, text: str) -> list[int]:
        return [self._index[c] for c in normalize(text).replace(" ", WORD_BOUNDARY)]

    def decode(self, ids: Iterable[int]) -> str:
        chars = "".join(self.units[i] for i in ids if i != self.blank)
        return " ".join(chars.replace(WORD_BOUNDARY, " ").split())

    def spell(self, word: str) -> list[str]:
        return list(word) + [WORD_BOUNDARY]

    def save(self, directory: str | os.PathLike) -> None:
        Path(directory, "tokenizer.json").write_text(json.dumps({"kind": self.kind}))


class BpeTokenizer(Tokenizer):
    """sentencepiece BPE; unit i+1 is sentencepiece piece i."""

    kind = "bpe"
    word_boundary = None

    def __init__(self, model_path: str | os.PathLike) -> None:
        import sentencepiece

        self.model_path = Path(model_path)
        self.sp = sentencepiece.SentencePieceProcessor(model_file=str(model_path))
        self.units = [BLANK] + [self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())]

    @classmethod
    def train(cls, texts: Iterable[str], directory: str | os.PathLike, vocab_size: int = 256) -> BpeTokenizer:
        """Train a BPE model on normalised ``texts``; writes ``bpe.model`` into ``directory``."""
        import sentencepiece

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        lines = [normalize(t) for t in texts]
        sentencepiece.SentencePieceTrainer.train(
            sentence_iterator=iter(lines),
            model_prefix=str(directory / "bpe"),
            vocab_size=vocab_size,
            model_type="bpe",
            character_coverage=1.0,
            bos_id=-1,
            eos_id=-1,
            unk_id=0,
            hard_vocab_limit=False,
            minloglevel=2,
        )
        return cls(directory / "bpe.model")

    def encode(self, text: str) -> list[int]:
        return [i + 1 for i in self.sp.encode(normalize(text))]

    def decode(self, ids: Iterable[int]) -> str:
        return self.sp.decode([i - 1 for i in ids if i != self.blank])

    def spell(self, word: str) -> list[str]:
        return self.sp.encode(word, out_type=str)

    def save(self, directory: str | os.PathLike) -> None:
        directory = Path(directory)
        target = directory / "bpe.model"
        if target.resolve() != self.model_path.resolve():
            target.write_bytes(self.model_path.read_bytes())
        (directory / "tokenizer.json").write_text(json.dumps({"kind": self.kind, "model": "bpe.model"}))


def load_tokenizer(directory: str | os.PathLike) -> Tokenizer:
    """Load the tokenizer saved in an experiment directory."""
    path = Path(directory, "tokenizer.json")
    if not path.exists():
        raise DasrError(f"no tokenizer in {directory}: tokenizer.json is missing")
    spec = json.loads(path.read_text())
    if spec["kind"] == "char":
        return CharTokenizer()
    if spec["kind"] == "bpe":
        return BpeTokenizer(Path(directory, spec["model"]))
    raise DasrError(f"{path}: unknown tokenizer kind {spec['kind']!r}")


def build_tokenizer(kind: str, texts: Iterable[str], directory: str | os.PathLike, vocab_size: int = 256) -> Tokenizer:
    """Make a tokenizer of ``kind`` ('char' or 'bpe'), training BPE on ``texts``; saves it in ``directory``."""
    if kind == "char":
        tok: Tokenizer = CharTokenizer()
    elif kind == "bpe":
        tok = BpeTokenizer.train(texts, directory, vocab_size)
    else:
        raise ValueError(f"unknown unit kind {kind!r}: expected 'char' or 'bpe'")
    tok.save(directory)
    return tok
