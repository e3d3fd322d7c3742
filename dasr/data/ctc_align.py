"""Cutting a long recording with its transcript at word boundaries, by CTC forced alignment.

A first model's CTC log-probabilities over the whole recording are aligned to the units of its
transcript (Viterbi over the blank-interleaved states of CTC), which gives each word the frames it
is spoken in. The recording is then cut in pauses that lie between two aligned words, so that
every piece lasts at most ``max_s`` and its text is exactly its words. Each piece carries the
mean log-probability the model gave its units where the alignment put them: a low one says the
text and the audio may not match there, and the caller drops such pieces.

Written here, not taken from the field: ``ctc-segmentation`` (what ESPnet uses) ships only as an
sdist that needs Cython and a C compiler, which a fresh Debian lacks; torchaudio's
``forced_align`` needs torchaudio, which has no wheel in this project's CPU set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dasr.data.tokenizer import Tokenizer


@dataclass(frozen=True)
class AlignedWord:
    """A word of the transcript and where the alignment put it, in model output frames."""

    word: str
    start: int  # first frame of its first unit
    end: int  # the frame after its last unit's last frame
    unit_log_probs: tuple[float, ...]  # each unit's best log-probability within its own frames


@dataclass(frozen=True)
class Piece:
    """Words ``first`` to ``last - 1`` of the transcript, from ``start`` to ``end`` seconds."""

    first: int
    last: int
    start: float
    end: float
    #: the mean of the piece's unit log-probabilities (0 is certain)
    score: float


def forced_align(log_probs: np.ndarray, targets: Sequence[int], blank: int) -> np.ndarray:
    """The most likely CTC path that spells ``targets``.

    Args:
        log_probs: (T, V) log-probabilities of one utterance.
        targets: the unit ids to spell, in order (no blanks).
        blank: the blank's unit id.

    Returns:
        (T,) for each frame, the index into ``targets`` of the unit it emits, or -1 for a blank.

    Raises:
        ValueError: the frames are too few to spell the targets (CTC needs one per unit, and one
            more between two equal units).
    """
    frames = log_probs.shape[0]
    states = np.full(2 * len(targets) + 1, blank, dtype=np.int64)
    states[1::2] = targets
    repeats = sum(1 for a, b in zip(targets, targets[1:]) if a == b)
    if frames < len(targets) + repeats:
        raise ValueError(f"{frames} frames cannot spell {len(targets)} units ({repeats} repeated)")
    # a unit state may skip the blank before it unless it repeats the unit before that blank
    can_skip = np.zeros(len(states), dtype=bool)
    can_skip[3::2] = np.asarray(targets[1:]) != np.asarray(targets[:-1])
    score = np.full(len(states), -np.inf)
    score[:2] = log_probs[0, states[:2]]
    back = np.zeros((frames, len(states)), dtype=np.int8)  # how many states each step moved: 0, 1 or 2
    for t in range(1, frames):
        stay = score
        step = np.concatenate([[-np.inf], score[:-1]])
        skip = np.where(can_skip, np.concatenate([[-np.inf, -np.inf], score[:-2]]), -np.inf)
        moves = np.stack([stay, step, skip])
        back[t] = moves.argmax(axis=0)
        score = moves.max(axis=0) + log_probs[t, states]
    state = len(states) - 1 if len(states) == 1 or score[-1] >= score[-2] else len(states) - 2
    path = np.empty(frames, dtype=np.int64)
    for t in range(frames - 1, -1, -1):
        path[t] = state
        state -= int(back[t, state])
    return np.where(path % 2 == 1, path // 2, -1)


def align_words(log_probs: np.ndarray, text: str, tokenizer: Tokenizer) -> list[AlignedWord]:
    """The words of ``text`` with their frames in (T, V) ``log_probs`` (see :func:`forced_align`).

    Raises:
        ValueError: the frames are too few for the text.
    """
    words = text.split()
    spelled = [tokenizer.encode(word) for word in words]
    boundary = [tokenizer.units.index(tokenizer.word_boundary)] if tokenizer.word_boundary else []
    targets: list[int] = []
    owner: list[int] = []  # per target: its word's index, or -1 for a boundary unit
    for k, units in enumerate(spelled):
        if k and boundary:
            targets += boundary
            owner += [-1] * len(boundary)
        targets += units
        owner += [k] * len(units)
    path = forced_align(log_probs, targets, tokenizer.blank)
    frames_of: list[list[int]] = [[] for _ in targets]
    for frame, target in enumerate(path):
        if target >= 0:
            frames_of[target].append(frame)
    aligned = []
    for k, word in enumerate(words):
        mine = [j for j, o in enumerate(owner) if o == k]
        best = tuple(float(log_probs[frames_of[j], targets[j]].max()) for j in mine)
        aligned.append(AlignedWord(word, frames_of[mine[0]][0], frames_of[mine[-1]][-1] + 1, best))
    return aligned


def cut_at_words(
    words: list[AlignedWord], frame_s: float, duration: float, max_s: float, pauses: list[tuple[float, float]]
) -> list[Piece] | None:
    """Pieces of at most ``max_s`` seconds, cut in pauses that lie between aligned words.

    A cut may only go where a pause (``pauses``: quiet (start, end) seconds, e.g. from
    :func:`dasr.data.cuts.pauses`) overlaps the gap between two words' frames, in the middle of
    that overlap: in running speech the gap between two words' CTC spikes is no evidence of a
    boundary, and a cut there can move a word to the wrong piece. Each cut takes the longest such
    overlap among those that end a piece in its second half (at least ``max_s / 2`` long), or
    the longest that keeps the piece within ``max_s`` when there is none such. Returns None when
    no cut can keep a piece within ``max_s``.
    """
    cuts = []
    for k in range(len(words) - 1):
        low, high = words[k].end * frame_s, words[k + 1].start * frame_s
        overlaps = [(max(a, low), min(b, high)) for a, b in pauses if min(b, high) > max(a, low)]
        if overlaps:
            a, b = max(overlaps, key=lambda o: o[1] - o[0])
            cuts.append(((a + b) / 2, b - a, k + 1))
    pieces: list[Piece] = []
    first, start = 0, 0.0
    while duration - start > max_s:
        fits = [c for c in cuts if start < c[0] <= start + max_s and c[2] > first]
        if not fits:
            return None
        later = [c for c in fits if c[0] >= start + max_s / 2] or fits
        at, _, last = max(later, key=lambda c: (c[1], c[0]))
        pieces.append(_piece(words, first, last, start, at))
        first, start = last, at
    pieces.append(_piece(words, first, len(words), start, duration))
    return pieces


def _piece(words: list[AlignedWord], first: int, last: int, start: float, end: float) -> Piece:
    unit_log_probs = [p for word in words[first:last] for p in word.unit_log_probs]
    return Piece(first, last, round(start, 3), round(end, 3), float(np.mean(unit_log_probs)))
