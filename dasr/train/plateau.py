"""When a dev curve has flattened: the last few evaluations lie within a small relative range.

`dasr train --stop-at-plateau` stops there (as ESPnet's ``patience`` does), judged on the dev WER
and the dev loss; the lab's benchmarks judge their runs by the same rule on the dev WER.
"""

from __future__ import annotations

#: a run has plateaued when its last this many evaluations ...
PLATEAU_EVALS = 3
#: ... lie within this relative range (largest / smallest - 1)
PLATEAU_REL = 0.02


def plateau_epochs(
    wers: list[float], evals: int = PLATEAU_EVALS, rel: float = PLATEAU_REL, losses: list[float] | None = None
) -> int | None:
    """How many evaluations it took until the last ``evals`` of them first lay within ``rel``; None if never.

    CTC's blank-only start (dev WER 100 %, or above with stray insertions) is no plateau: every
    evaluation of the window must be below 100 %. With ``losses`` (the dev losses, aligned with
    ``wers`` at their ends), they must lie within ``rel`` too: on a hard corpus the greedy WER
    hovers just below 100 % for epochs while the loss still falls, and that is no plateau either.
    """
    offset = len(wers) - len(losses) if losses is not None else 0
    for end in range(evals, len(wers) + 1):
        window = wers[end - evals : end]
        if max(window) >= 1.0 or not _within(window, rel):
            continue
        if losses is not None and (
            end - evals < offset or not _within(losses[end - evals - offset : end - offset], rel)
        ):
            continue
        return end
    return None


def _within(values: list[float], rel: float) -> bool:
    """Whether the largest of ``values`` exceeds the smallest by at most ``rel`` of its size (a dev loss
    may be a hair below 0 once a model fits its dev set: CTC in float rounding)."""
    return max(values) - min(values) <= rel * abs(min(values))
