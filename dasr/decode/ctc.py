"""CTC decoding: greedy best path, and lexicon-constrained beam search with a word n-gram LM.

The beam search is flashlight-text's ``LexiconDecoder`` (the wav2letter decoder, the same one
behind torchaudio's ``ctc_decoder`` and fairseq's ``W2lKenLMDecoder``). Its vocabulary is
closed: it only ever outputs words of the lexicon it was built with.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from flashlight.lib.text.decoder import (
    CriterionType,
    LexiconDecoder,
    LexiconDecoderOptions,
    SmearingMode,
    Trie,
    ZeroLM,
)
from flashlight.lib.text.decoder.kenlm import KenLM
from flashlight.lib.text.dictionary import Dictionary

from dasr.data.tokenizer import Tokenizer
from dasr.decode.score import score
from dasr.errors import DasrError

#: entry of the decoder's word dictionary that stands for out-of-lexicon words (never emitted)
UNK_WORD = "<unk>"


def greedy_decode(log_probs: torch.Tensor, lengths: torch.Tensor, tokenizer: Tokenizer) -> list[str]:
    """Best-path CTC decoding of a batch.

    Args:
        log_probs: (B, T, V) log-probabilities (any monotone scores work).
        lengths: (B,) number of valid frames of each utterance.
        tokenizer: maps unit ids to text; its ``blank`` is dropped.

    Returns:
        One text per utterance: the argmax path with repeats collapsed and blanks removed.
    """
    best = log_probs.argmax(dim=-1).cpu()
    texts = []
    for path, length in zip(best, lengths.tolist()):
        units = torch.unique_consecutive(path[: int(length)])
        texts.append(tokenizer.decode(u for u in units.tolist() if u != tokenizer.blank))
    return texts


def word_alignment(path: Sequence[int], tokenizer: Tokenizer, text: str | None = None) -> list[tuple[str, int, int]]:
    """The words of a CTC frame path with the frames they span.

    Args:
        path: the unit id of every frame (a best path: greedy, or :meth:`LexiconBeamDecoder.decode_path`).
        tokenizer: the units; a word ends at the word-boundary unit (characters) or before a unit
            starting with "▁" (BPE).
        text: keep only these words, matched in order (a beam search's path may end inside a word
            it never emitted).

    Returns:
        (word, first frame, frame after the last) per word, in order; without ``text``, the words
        joined by spaces are the text of ``tokenizer.decode`` of the collapsed path.
    """
    words: list[tuple[list[int], list[int]]] = []  # per word: its units, and [first frame, frame after the last]
    in_word = False
    previous = tokenizer.blank
    for frame, unit in enumerate(path):
        symbol = tokenizer.units[unit]
        if symbol == tokenizer.word_boundary:
            in_word = False
        elif unit != tokenizer.blank:
            if unit != previous:
                if not in_word or symbol.startswith("\u2581"):
                    words.append(([], [frame, frame]))
                    in_word = True
                words[-1][0].append(unit)
            words[-1][1][1] = frame + 1
        previous = unit
    aligned = [(tokenizer.decode(units), first, end) for units, (first, end) in words]
    if text is None:
        return aligned
    matched, remaining = [], iter(aligned)
    for word in text.split():
        found = next((candidate for candidate in remaining if candidate[0] == word), None)
        if found is not None:
            matched.append(found)
    return matched


class LexiconBeamDecoder:
    """CTC beam search restricted to a word lexicon, optionally scored with a KenLM n-gram.

    Each word is spelled with ``tokenizer.spell``; the silence unit is the tokenizer's word
    boundary ("|" for characters) or, for BPE where the "▁" prefix marks word starts, the blank.
    flashlight emits a word on entering its last unit and then sits at the trie root, where only
    the silence unit can repeat, so a repeated last BPE piece ("▁call ▁call") would have to be
    paid as a blank frame. Each BPE word is therefore also spelled with a trailing blank: the
    word may hold its last piece over several frames and end on a blank frame, while the plain
    spelling still serves a next word that follows without a blank.

    Unknown words are switched off (``unk_score = -inf``): the decoder never outputs a word
    outside ``words``, so a test word missing from the lexicon is always an error. With
    ``arpa_path=None`` no LM is used (``ZeroLM``): only the lexicon constrains the search, and
    ``lm_weight`` has no effect.

    Args:
        tokenizer: the acoustic model's units; unit 0 is the CTC blank.
        words: the lexicon's words (duplicates and empty strings are ignored).
        arpa_path: an ARPA (or KenLM binary) word LM, or None for no LM.
        lm_weight: weight of the LM log10-probability.
        word_score: score added per emitted word (positive favours more words).
        beam_size: hypotheses kept per frame.
        beam_threshold: hypotheses scoring this far below the best are pruned.

    Raises:
        DasrError: the lexicon is empty, a word spells to units the tokenizer lacks, or the LM
            file is missing.
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        words: Iterable[str],
        arpa_path: str | None,
        lm_weight: float = 0.5,
        word_score: float = 0.0,
        beam_size: int = 50,
        beam_threshold: float = 25.0,
    ) -> None:
        self.tokenizer = tokenizer
        self.lm_weight = lm_weight
        self.word_score = word_score
        self.beam_size = beam_size
        self.beam_threshold = beam_threshold
        vocab = sorted({w for w in words if w})
        if not vocab:
            raise DasrError("the decoder's lexicon is empty: no words to decode into")
        if arpa_path is not None and not os.path.isfile(arpa_path):
            raise DasrError(f"language model {arpa_path} does not exist")
        self._word_dict = Dictionary(vocab + [UNK_WORD])
        self._lm = ZeroLM() if arpa_path is None else KenLM(str(arpa_path), self._word_dict)
        self._silence = tokenizer.units.index(tokenizer.word_boundary) if tokenizer.word_boundary else tokenizer.blank
        self._trie = self._build_trie(vocab)
        self._decoder = self._build_decoder()

    def _build_trie(self, vocab: list[str]) -> Trie:
        index = {u: i for i, u in enumerate(self.tokenizer.units)}
        trie = Trie(len(index), self._silence)
        start = self._lm.start(False)
        for word in vocab:
            spelling = self.tokenizer.spell(word)
            missing = [u for u in spelling if u not in index]
            if missing:
                raise DasrError(f"lexicon word {word!r} needs units the tokenizer lacks: {missing}")
            word_idx = self._word_dict.get_index(word)
            _, unigram = self._lm.score(start, word_idx)
            ids = [index[u] for u in spelling]
            trie.insert(ids, word_idx, unigram)
            if self.tokenizer.word_boundary is None:
                trie.insert(ids + [self.tokenizer.blank], word_idx, unigram)
        trie.smear(SmearingMode.MAX)
        return trie

    def _build_decoder(self) -> LexiconDecoder:
        options = LexiconDecoderOptions(
            beam_size=self.beam_size,
            beam_size_token=self.tokenizer.vocab_size,
            beam_threshold=self.beam_threshold,
            lm_weight=self.lm_weight,
            word_score=self.word_score,
            unk_score=-math.inf,
            sil_score=0.0,
            log_add=False,
            criterion_type=CriterionType.CTC,
        )
        return LexiconDecoder(
            options,
            self._trie,
            self._lm,
            self._silence,
            self.tokenizer.blank,
            self._word_dict.get_index(UNK_WORD),
            [],
            False,
        )

    def with_weights(self, lm_weight: float, word_score: float) -> LexiconBeamDecoder:
        """A decoder with other LM weight and word score, sharing this one's lexicon and LM.

        Args:
            lm_weight: the new LM weight.
            word_score: the new per-word score.

        Returns:
            A new decoder; this one is unchanged. Use the two from one thread at a time.
        """
        other = copy.copy(self)
        other.lm_weight, other.word_score = lm_weight, word_score
        other._decoder = other._build_decoder()
        return other

    def decode(self, log_probs: torch.Tensor) -> str:
        """Decode one utterance.

        Args:
            log_probs: (T, V) log-probabilities over the tokenizer's units.

        Returns:
            The best word sequence, words joined by single spaces ("" for no words).
        """
        if log_probs.dim() != 2 or log_probs.shape[1] != self.tokenizer.vocab_size:
            raise ValueError(f"expected (T, {self.tokenizer.vocab_size}) log-probs, got {tuple(log_probs.shape)}")
        return self.decode_path(log_probs)[0]

    def decode_path(self, log_probs: torch.Tensor) -> tuple[str, list[int]]:
        """Decode one utterance, with the unit of every frame on the best path.

        Args:
            log_probs: (T, V) log-probabilities over the tokenizer's units.

        Returns:
            The text (as :meth:`decode`) and the T unit ids the path takes (for :func:`word_alignment`).
        """
        if log_probs.dim() != 2 or log_probs.shape[1] != self.tokenizer.vocab_size:
            raise ValueError(f"expected (T, {self.tokenizer.vocab_size}) log-probs, got {tuple(log_probs.shape)}")
        frames = log_probs.detach().to("cpu", torch.float32)
        length = frames.shape[0]
        if length == 0:
            return "", []
        if self.tokenizer.word_boundary is not None:
            # A character word is spelled up to its boundary unit ("c a l l |"), and flashlight ends only on
            # finished words; a model seldom emits a boundary after the last word (its targets end without
            # one), so the last word would be dropped. One more frame, certain of the boundary, finishes it.
            end = torch.full((1, frames.shape[1]), -math.inf)
            end[0, self._silence] = 0.0
            frames = torch.cat([frames, end])
        frames = frames.contiguous()
        # `frames` holds the memory flashlight reads through the raw pointer until decode returns
        best = self._decoder.decode(frames.data_ptr(), frames.shape[0], frames.shape[1])[0]
        text = " ".join(self._word_dict.get_entry(w) for w in best.words if w >= 0)
        return text, list(best.tokens)[1 : length + 1]  # flashlight adds a silence frame at each end

    def decode_batch(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Decode a padded batch.

        Args:
            log_probs: (B, T, V) log-probabilities.
            lengths: (B,) number of valid frames of each utterance.

        Returns:
            One text per utterance.
        """
        return [self.decode(lp[: int(n)]) for lp, n in zip(log_probs, lengths.tolist())]


@dataclass
class TuningResult:
    """Outcome of :func:`tune_lm_weights`."""

    lm_weight: float
    word_score: float
    wer: float
    #: every point tried, as (lm_weight, word_score, wer), in the order tried
    table: list[tuple[float, float, float]] = field(default_factory=list)


def tune_lm_weights(
    decoder: LexiconBeamDecoder,
    dev: Sequence[tuple[torch.Tensor, str]],
    lm_weights: Sequence[float] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0),
    word_scores: Sequence[float] = (-1.0, 0.0, 1.0, 2.0),
) -> TuningResult:
    """Grid search of LM weight × word score that minimises WER on a dev set.

    Args:
        decoder: supplies lexicon, LM and beam settings; it is not modified.
        dev: (log-probs (T, V), reference text) pairs.
        lm_weights: LM weights to try.
        word_scores: word scores to try.

    Returns:
        The best pair (the first tried among ties) with its WER, and the whole table.
    """
    if not dev:
        raise DasrError("cannot tune LM weights on an empty dev set")
    refs = {str(i): ref for i, (_, ref) in enumerate(dev)}
    table = []
    for lm_weight in lm_weights:
        for word_score in word_scores:
            trial = decoder.with_weights(lm_weight, word_score)
            hyps = {str(i): trial.decode(lp) for i, (lp, _) in enumerate(dev)}
            table.append((lm_weight, word_score, score(refs, hyps)["wer"]))
    best = min(table, key=lambda row: row[2])
    return TuningResult(lm_weight=best[0], word_score=best[1], wer=best[2], table=table)
