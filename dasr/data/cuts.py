"""Cutting a long recording into utterances at the pauses nearest its subtitle page boundaries.

Subtitle timings are approximate (in The Ur-Quan Masters' ``.ts`` files a quarter of the page
boundaries fall inside speech, off by up to ~0.5 s), so each nominal boundary is moved to the
longest pause within ``WINDOW_S`` of it; a boundary with no pause there is not cut. Pages joined by
such boundaries form one unit; consecutive units whose text is certain are packed into utterances
of at most ``max_s`` seconds, and units with an uncertain page are dropped with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WINDOW_S = 0.8  # how far a pause may lie from the nominal page boundary
MIN_PAUSE_S = 0.1
HOP_S = 0.01
PAUSE_LEVEL = 0.2  # a frame is a pause below floor + this fraction of (peak - floor), in dB


@dataclass(frozen=True)
class Segment:
    """Pages ``first..last`` (inclusive) of a clip, from ``start`` to ``end`` seconds."""

    first: int
    last: int
    start: float
    end: float


def pauses(samples: np.ndarray, rate: int) -> list[tuple[float, float]]:
    """The (start, end) seconds of every stretch of at least MIN_PAUSE_S that is quiet for this clip."""
    hop = max(1, int(HOP_S * rate))
    frames = len(samples) // hop
    if frames < 3:
        return []
    power = np.square(samples[: frames * hop].astype(np.float64)).reshape(frames, hop).mean(axis=1)
    level = 10 * np.log10(power + 1e-12)
    floor, peak = np.percentile(level, 5), np.percentile(level, 95)
    quiet = np.concatenate([[False], level < floor + PAUSE_LEVEL * (peak - floor), [False]])
    edges = np.flatnonzero(np.diff(quiet.astype(np.int8)))
    runs = [(a * hop / rate, b * hop / rate) for a, b in zip(edges[::2], edges[1::2])]
    return [(a, b) for a, b in runs if b - a >= MIN_PAUSE_S]


def snap(nominal: float, quiet: list[tuple[float, float]]) -> float | None:
    """The middle of the longest pause within WINDOW_S of ``nominal`` (nearest on ties), or None."""
    near = [(a, b) for a, b in quiet if a - WINDOW_S <= nominal <= b + WINDOW_S]
    if not near:
        return None
    a, b = max(near, key=lambda run: (round(run[1] - run[0], 2), -abs((run[0] + run[1]) / 2 - nominal)))
    return (a + b) / 2


def plan(
    duration: float, boundaries: list[float | None], certain: list[bool], max_s: float
) -> tuple[list[Segment], list[tuple[Segment, str]]]:
    """Pack a clip's pages into segments of at most ``max_s`` seconds.

    Args:
        duration: the clip's length in seconds.
        boundaries: for each page but the first, where it starts (a snapped time), or None
            where no pause was found (the two pages then stay together).
        certain: for each page, whether its spoken text is known.
        max_s: the longest segment.

    Returns:
        The segments, and the dropped ones with the reason, ``"uncertain text"`` or ``"too long"``.
    """
    cuts = [0.0] + [b for b in boundaries if b is not None] + [duration]
    starts = [0] + [k + 1 for k, b in enumerate(boundaries) if b is not None] + [len(certain)]
    units = [(starts[i], starts[i + 1] - 1, cuts[i], cuts[i + 1]) for i in range(len(starts) - 1)]
    segments: list[Segment] = []
    dropped: list[tuple[Segment, str]] = []
    current: Segment | None = None
    for first, last, start, end in units:
        if not all(certain[first : last + 1]) or end - start > max_s:
            reason = "too long" if all(certain[first : last + 1]) else "uncertain text"
            dropped.append((Segment(first, last, start, end), reason))
            current = None
            continue
        if current is not None and end - current.start <= max_s:
            current = segments[-1] = Segment(current.first, last, current.start, end)
        else:
            current = Segment(first, last, start, end)
            segments.append(current)
    return segments, dropped
