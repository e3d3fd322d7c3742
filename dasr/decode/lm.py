"""Word n-gram language models: interpolated modified Kneser-Ney estimation and ARPA files.

We estimate the model ourselves, on purpose, instead of calling KenLM's ``lmplz``: the
project then needs no external binary, and the model is small and simple enough to test
number by number. The recipe is lmplz's (Chen & Goodman 1998, Heafield et al. 2013):

* Every sentence becomes ``<s> w1 ... wk </s>``; ``</s>`` is an ordinary token.
* Counts: the highest order uses raw counts; every lower order uses *continuation* counts
  (the number of distinct words seen to the left of the n-gram), except n-grams that begin
  with ``<s>``, which cannot be extended to the left and keep their raw counts.
* Discounts: three per order, from the counts-of-counts n1..n4 of that order's counts:
  ``Y = n1 / (n1 + 2 n2)``, ``D1 = 1 - 2 Y n2/n1``, ``D2 = 2 - 3 Y n3/n2``,
  ``D3+ = 3 - 4 Y n4/n3``. On tiny or artificial corpora n1, n2 or n3 can be zero (division by
  zero) or a discount can fall outside ``(0, j]``; that order then uses the fixed discounts
  ``FALLBACK_DISCOUNTS`` = (0.5, 1.0, 1.5), the defaults of lmplz's ``--discount_fallback``.
* Interpolation: ``p(w|c) = (a(cw) - D(a(cw))) / sum_x a(cx) + gamma(c) p(w|c')`` with
  ``gamma(c) = (D1 N1(c) + D2 N2(c) + D3+ N3+(c)) / sum_x a(cx)``, where ``c'`` drops the first
  word of ``c`` and ``N_j(c)`` counts the words following ``c`` with count j (3+ for D3+).
  The unigram level interpolates with the uniform distribution over the vocabulary (the
  corpus words, ``</s>`` and ``<unk>``; not ``<s>``), so ``<unk>`` gets only interpolated mass.
  The ARPA backoff weight of a context is its ``gamma``.
* ``<s>`` is never predicted: its log10 probability is -99, as in the ARPA convention.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable
from pathlib import Path

from dasr.errors import DasrError

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
MAX_ORDER = 5
#: log10 probability of ``<s>``, which is only ever a context
BOS_LOG10_PROB = -99.0
#: log10 probability KenLM gives ``<unk>`` when an ARPA file lacks it
MISSING_UNK_LOG10_PROB = -100.0
#: D1, D2, D3+ used for an order whose counts-of-counts cannot give closed-form discounts
FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)

Ngram = tuple[str, ...]


class NgramLM:
    """A backoff n-gram model: per order, ``{ngram: (log10_prob, log10_backoff)}``.

    A backoff of 0.0 means "no backoff weight" (as a missing ARPA backoff column does).

    Attributes:
        ngrams: ``ngrams[k - 1]`` maps each k-gram (a tuple of words) to its
            ``(log10_prob, log10_backoff)``.
    """

    def __init__(self, ngrams: list[dict[Ngram, tuple[float, float]]]) -> None:
        """Wraps the n-gram tables.

        Args:
            ngrams: ``ngrams[k - 1]`` maps each k-gram to ``(log10_prob, log10_backoff)``;
                the unigram table must contain ``<unk>``.

        Raises:
            ValueError: the order is not 1..5 or ``<unk>`` is missing.
        """
        if not 1 <= len(ngrams) <= MAX_ORDER:
            raise ValueError(f"n-gram order must be 1..{MAX_ORDER}, got {len(ngrams)}")
        if (UNK,) not in ngrams[0]:
            raise ValueError(f"the unigram table has no {UNK}")
        self.ngrams = ngrams

    @property
    def order(self) -> int:
        """The longest n-gram length."""
        return len(self.ngrams)

    @property
    def vocab(self) -> frozenset[str]:
        """All unigram words, including ``<s>``, ``</s>`` and ``<unk>``."""
        return frozenset(gram[0] for gram in self.ngrams[0])

    def logprob(self, word: str, context: tuple[str, ...] = ()) -> float:
        """log10 P(word | context) with ARPA backoff semantics.

        Args:
            word: the predicted word; one outside the vocabulary is scored as ``<unk>``.
            context: the preceding words, oldest first (e.g. ``("<s>", "the")``); only the
                last ``order - 1`` are used, and unknown ones become ``<unk>``.

        Returns:
            The log10 probability.
        """
        unigrams = self.ngrams[0]
        word = word if (word,) in unigrams else UNK
        context = tuple(w if (w,) in unigrams else UNK for w in context)
        context = context[-(self.order - 1) :] if self.order > 1 else ()
        backoff = 0.0
        for start in range(len(context)):
            ctx = context[start:]
            entry = self.ngrams[len(ctx)].get(ctx + (word,))
            if entry is not None:
                return backoff + entry[0]
            ctx_entry = self.ngrams[len(ctx) - 1].get(ctx)
            if ctx_entry is not None:
                backoff += ctx_entry[1]
        return backoff + unigrams[(word,)][0]

    def write_arpa(self, path: str | os.PathLike) -> None:
        """Writes the model as an ARPA file, atomically (temporary file, then rename).

        Probabilities and backoffs are log10, written with full precision; the backoff column
        appears only below the highest order and only where the backoff is not 0.

        Args:
            path: the ARPA file to write.
        """
        path = Path(path)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write("\\data\\\n")
                for k, table in enumerate(self.ngrams, 1):
                    out.write(f"ngram {k}={len(table)}\n")
                for k, table in enumerate(self.ngrams, 1):
                    out.write(f"\n\\{k}-grams:\n")
                    for gram in sorted(table):
                        prob, backoff = table[gram]
                        line = f"{prob!r}\t{' '.join(gram)}"
                        if k < self.order and backoff != 0.0:
                            line += f"\t{backoff!r}"
                        out.write(line + "\n")
                out.write("\n\\end\\\n")
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise


def estimate(sentences: Iterable[str], order: int = 3) -> NgramLM:
    """Estimates an interpolated modified Kneser-Ney model (see the module docstring).

    Args:
        sentences: normalised sentences, words separated by spaces; empty ones are ignored.
        order: the n-gram order, 1..5.

    Returns:
        The model.

    Raises:
        ValueError: the order is outside 1..5, no words remain, or a sentence contains
            ``<s>`` or ``</s>``.
    """
    if not 1 <= order <= MAX_ORDER:
        raise ValueError(f"n-gram order must be between 1 and {MAX_ORDER}, got {order}")
    counts = _adjusted_counts(sentences, order)
    if not counts[0]:
        raise ValueError("cannot estimate a language model: the corpus has no words")
    uniform = 1.0 / len({gram[0] for gram in counts[0]} | {EOS, UNK})
    probs: list[dict[Ngram, float]] = []
    gammas: list[dict[Ngram, float]] = []
    for k, level in enumerate(counts, 1):
        prob, gamma = _interpolate(level, probs[-1] if probs else None, uniform)
        if k == 1:
            prob.setdefault((UNK,), gamma[()] * uniform)
        probs.append(prob)
        gammas.append(gamma)
    tables = []
    for k, prob in enumerate(probs, 1):
        following = gammas[k] if k < order else {}
        tables.append(
            {
                gram: (math.log10(p), math.log10(following[gram]) if gram in following else 0.0)
                for gram, p in prob.items()
            }
        )
    bos_backoff = math.log10(gammas[1][(BOS,)]) if order > 1 else 0.0
    tables[0][(BOS,)] = (BOS_LOG10_PROB, bos_backoff)
    return NgramLM(tables)


def _adjusted_counts(sentences: Iterable[str], order: int) -> list[Counter[Ngram]]:
    """Kneser-Ney counts: ``counts[k - 1]`` maps each k-gram to its (adjusted) count."""
    raw: list[Counter[Ngram]] = [Counter() for _ in range(order)]
    for sentence in sentences:
        words = sentence.split()
        if not words:
            continue
        if BOS in words or EOS in words:
            raise ValueError(f"sentence contains {BOS} or {EOS}: {sentence!r}")
        tokens = [BOS, *words, EOS]
        if order == 1:
            raw[0].update(zip(tokens[1:]))
            continue
        raw[order - 1].update(zip(*(tokens[j:] for j in range(order))))
        # n-grams that start with <s> and are shorter than the order keep raw counts
        for k in range(2, min(order, len(tokens) + 1)):
            raw[k - 1][tuple(tokens[:k])] += 1
    counts = raw[:]
    for k in range(order - 1, 0, -1):
        counts[k - 1] = Counter(gram[1:] for gram in counts[k])
        counts[k - 1].update(raw[k - 1])
    return counts


def _discounts(counts: Iterable[int]) -> tuple[float, float, float]:
    """D1, D2, D3+ from the counts of one order (Chen & Goodman eq. 26), or the fallback."""
    n = Counter(c for c in counts if c <= 4)
    if n[1] and n[2] and n[3]:
        y = n[1] / (n[1] + 2 * n[2])
        d = (1 - 2 * y * n[2] / n[1], 2 - 3 * y * n[3] / n[2], 3 - 4 * y * n[4] / n[3])
        if all(0 < dj <= j for j, dj in enumerate(d, 1)):
            return d
    return FALLBACK_DISCOUNTS


def _interpolate(
    level: Counter[Ngram], lower: dict[Ngram, float] | None, uniform: float
) -> tuple[dict[Ngram, float], dict[Ngram, float]]:
    """Interpolated probabilities of one order's n-grams and the gamma of each context.

    Args:
        level: the order's n-grams and their counts.
        lower: the interpolated probabilities of the order below; None for unigrams.
        uniform: the uniform probability the unigrams interpolate with.
    """
    discount = (0.0, *_discounts(level.values()))
    total: defaultdict[Ngram, int] = defaultdict(int)
    mass: defaultdict[Ngram, float] = defaultdict(float)
    for gram, c in level.items():
        total[gram[:-1]] += c
        mass[gram[:-1]] += discount[min(c, 3)]
    gamma = {ctx: mass[ctx] / total[ctx] for ctx in total}
    prob = {}
    for gram, c in level.items():
        ctx = gram[:-1]
        below = uniform if lower is None else lower[gram[1:]]
        prob[gram] = (c - discount[min(c, 3)]) / total[ctx] + gamma[ctx] * below
    return prob, gamma


def read_arpa(path: str | os.PathLike) -> NgramLM:
    """Reads an ARPA file.

    A file without ``<unk>`` gets it with log10 probability -100, as KenLM does.

    Args:
        path: the ARPA file.

    Returns:
        The model.

    Raises:
        DasrError: the file cannot be read or is malformed (the message names file and line).
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DasrError(f"{path}: cannot read ARPA file: {err}") from err
    return _ArpaReader(path, lines).read()


class _ArpaReader:
    """One pass over an ARPA file's lines: the header's counts, then one section per order, then ``\\end\\``."""

    def __init__(self, path: Path, lines: list[str]):
        self.path, self.lines, self.pos = path, lines, 0

    def fail(self, message: str, line: int | None = None) -> DasrError:
        line = self.pos + 1 if line is None else line
        where = f"line {line}" if line <= len(self.lines) else "end of file"
        return DasrError(f"{self.path}: {where}: malformed ARPA file: {message}")

    def next_nonblank(self, what: str) -> str:
        while self.pos < len(self.lines) and not self.lines[self.pos].strip():
            self.pos += 1
        if self.pos == len(self.lines):
            raise self.fail(f"file ends where {what} was expected")
        self.pos += 1
        return self.lines[self.pos - 1].strip()

    def read(self) -> NgramLM:
        sizes, line = self.header()
        tables = []
        for k, size in enumerate(sizes, 1):
            if line != f"\\{k}-grams:":
                raise self.fail(f"expected '\\{k}-grams:', got {line!r}", self.pos)
            tables.append(self.section(k, size, last=k == len(sizes)))
            line = self.next_nonblank("\\end\\" if k == len(sizes) else f"\\{k + 1}-grams:")
        if line != "\\end\\":
            raise self.fail(f"expected \\end\\, got {line!r}", self.pos)
        tables[0].setdefault((UNK,), (MISSING_UNK_LOG10_PROB, 0.0))
        return NgramLM(tables)

    def header(self) -> tuple[list[int], str]:
        """The n-gram counts of ``\\data\\``, and the first line after them."""
        while self.pos < len(self.lines) and self.lines[self.pos].strip() != "\\data\\":
            self.pos += 1
        if self.pos == len(self.lines):
            raise self.fail("no \\data\\ header", 1)
        self.pos += 1
        sizes: list[int] = []
        line = self.next_nonblank("'ngram k=count'")
        while line.startswith("ngram "):
            key, _, value = line[6:].partition("=")
            if key.strip() != str(len(sizes) + 1) or not value.strip().isdigit():
                raise self.fail(f"expected 'ngram {len(sizes) + 1}=count', got {line!r}", self.pos)
            sizes.append(int(value))
            line = self.next_nonblank("an n-gram section")
        if not 1 <= len(sizes) <= MAX_ORDER:
            raise self.fail(f"order must be 1..{MAX_ORDER}, the header gives {len(sizes)}", self.pos)
        return sizes, line

    def section(self, k: int, size: int, last: bool) -> dict[Ngram, tuple[float, float]]:
        """The ``size`` k-grams after ``\\k-grams:``: (log10 prob, backoff); the highest order has no backoff."""
        table: dict[Ngram, tuple[float, float]] = {}
        for _ in range(size):
            if self.pos == len(self.lines) or not self.lines[self.pos].strip():
                raise self.fail(f"the header announces {size} {k}-grams, found {len(table)}")
            text = self.lines[self.pos]
            fields = text.split()
            self.pos += 1
            if len(fields) not in ((k + 1,) if last else (k + 1, k + 2)):
                raise self.fail(f"expected a {k}-gram line, got {text!r}", self.pos)
            try:
                prob = float(fields[0])
                backoff = float(fields[k + 1]) if len(fields) == k + 2 else 0.0
            except ValueError:
                raise self.fail(f"bad number in {text!r}", self.pos) from None
            gram = tuple(fields[1 : k + 1])
            if gram in table:
                raise self.fail(f"duplicate {k}-gram {' '.join(gram)!r}", self.pos)
            table[gram] = (prob, backoff)
        return table
