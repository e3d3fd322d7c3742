"""CTC forced alignment and cutting at words (dasr.data.ctc_align), on log-probabilities built so that
the right answer is known frame by frame."""

from __future__ import annotations

import numpy as np
import pytest

from dasr.data.ctc_align import AlignedWord, align_words, cut_at_words, forced_align
from dasr.data.tokenizer import CharTokenizer

TOKENIZER = CharTokenizer()


def _spikes(frames: int, spikes: dict[int, int], peak: float = 0.9) -> np.ndarray:
    """(frames, V) log-probs: blank at ``peak`` everywhere but at ``spikes`` (frame -> unit), where that unit is."""
    probs = np.full((frames, TOKENIZER.vocab_size), (1 - peak) / (TOKENIZER.vocab_size - 1))
    probs[:, TOKENIZER.blank] = peak
    for frame, unit in spikes.items():
        probs[frame] = (1 - peak) / (TOKENIZER.vocab_size - 1)
        probs[frame, unit] = peak
    return np.log(probs)


def test_the_path_emits_each_unit_where_its_spike_is():
    targets = TOKENIZER.encode("all")
    path = forced_align(_spikes(12, {2: targets[0], 5: targets[1], 8: targets[2]}), targets, TOKENIZER.blank)
    assert path.tolist() == [-1, -1, 0, -1, -1, 1, -1, -1, 2, -1, -1, -1]


def test_a_repeated_unit_gets_a_blank_between_its_two_emissions():
    targets = TOKENIZER.encode("all")  # the spikes of the two l touch: CTC would read them as one l
    path = forced_align(_spikes(12, {2: targets[0], 5: targets[1], 6: targets[2]}), targets, TOKENIZER.blank)
    first_l, second_l = np.flatnonzero(path == 1), np.flatnonzero(path == 2)
    assert len(first_l) and len(second_l) and -1 in path[first_l[-1] : second_l[0]].tolist()


def test_words_get_the_frames_of_their_units():
    text = "ab ba cab"
    targets = TOKENIZER.encode(text)  # a b | b a | c a b
    spikes = dict(zip([2, 3, 5, 12, 13, 15, 30, 31, 33], targets))
    words = align_words(_spikes(40, spikes), text, TOKENIZER)
    assert [(w.word, w.start, w.end) for w in words] == [("ab", 2, 4), ("ba", 12, 14), ("cab", 30, 34)]
    assert all(p == pytest.approx(np.log(0.9)) for w in words for p in w.unit_log_probs)


def test_too_few_frames_for_the_text_is_an_error():
    with pytest.raises(ValueError, match="3 frames cannot spell 4 units"):
        forced_align(np.zeros((3, TOKENIZER.vocab_size)), TOKENIZER.encode("ab c"), TOKENIZER.blank)


def _word(name: str, start: int, end: int, log_prob: float = -0.1) -> AlignedWord:
    return AlignedWord(name, start, end, (log_prob,) * len(name))


def test_cuts_fall_in_the_longest_pause_between_words_of_each_pieces_second_half():
    # at 0.1 s per frame: gaps between words at 1.0-1.2, 2.0-2.8, 3.4-3.6 and 5.0-5.6 s
    words = [_word("a", 0, 10), _word("b", 12, 20), _word("c", 28, 34), _word("d", 36, 50), _word("e", 56, 60)]
    pauses = [(1.05, 1.15), (2.1, 2.5), (3.45, 3.55), (4.0, 4.6), (5.1, 5.5)]  # (4.0, 4.6) is inside word d
    pieces = cut_at_words(words, 0.1, 6.0, 4.0, pauses)
    assert [(p.first, p.last, p.start, p.end) for p in pieces] == [(0, 2, 0.0, 2.3), (2, 5, 2.3, 6.0)]
    pieces = cut_at_words(words, 0.1, 6.0, 2.0, pauses)
    assert [(p.first, p.last, p.start, p.end) for p in pieces] == [
        (0, 1, 0.0, 1.1),
        (1, 2, 1.1, 2.3),
        (2, 3, 2.3, 3.5),
        (3, 4, 3.5, 5.3),
        (4, 5, 5.3, 6.0),
    ]


def test_a_piece_scores_the_mean_of_its_units():
    words = [_word("ab", 0, 10, -0.5), _word("c", 20, 30, -2.0)]
    first, second = cut_at_words(words, 0.1, 3.0, 2.0, [(1.2, 1.8)])
    assert (first.end, first.score, second.score) == (1.5, pytest.approx(-0.5), pytest.approx(-2.0))


def test_no_cut_without_a_pause_between_the_words_or_within_max_s():
    words = [_word("a", 0, 10), _word("b", 20, 30)]
    assert cut_at_words(words, 0.1, 3.0, 2.0, []) is None  # a gap between the spikes, but no pause
    assert cut_at_words(words, 0.1, 3.0, 2.0, [(0.2, 0.8)]) is None  # a pause inside a word
    assert cut_at_words([_word("a", 0, 30), _word("b", 31, 35)], 0.1, 3.5, 2.0, [(3.0, 3.1)]) is None
