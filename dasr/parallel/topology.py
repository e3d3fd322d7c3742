"""Who averages with whom: the gossip schedule of ADPSGD.

Every rank computes the schedule on its own, from ``(graph, world_size, seed, round)``
only, so all ranks agree on round ``k``'s pairs without talking::

    p = matching("ring", 4, seed=0, round_k=7)   # e.g. [1, 0, 3, 2]
    assert all(p[p[i]] == i for i in range(4))   # a perfect matching (an involution)

A rank with ``p[i] == i`` idles that round (one rank per round when a ring has an odd
number of ranks). :func:`pairs` lists every pair the schedule can ever produce, so that
all ranks can create one process group per pair, in one order, before training.

Graphs:
    ``ring``         ranks 0..N-1 in a ring; rounds alternate between its two matchings
                     (odd N: the idle rank moves round by round).
    ``random-ring``  a ring over a seeded permutation of the ranks; each round picks one of
                     its matchings (and, for odd N, the idle rank) at random from (seed, k).
    ``random-matching``  a fresh uniformly random perfect matching every round, drawn
                     from (seed, k) (odd N: one random rank idles). Any pair can meet, so it
                     needs a process group per pair: N(N-1)/2 groups, fine up to N = 16 or so.
    ``exponential``  partners ``i XOR 2**j`` (a hypercube); every ``ceil(log2 N)`` rounds
                     run through all dimensions in a seeded random order. Without updates,
                     one such cycle averages all replicas exactly when N is a power of two.
                     The default: the fastest consensus per round (docs/results/consensus.md).
"""

from __future__ import annotations

import math
import random

GRAPHS = ("ring", "random-ring", "random-matching", "exponential")


def _check(graph: str, world_size: int) -> None:
    if graph not in GRAPHS:
        raise ValueError(f"unknown gossip graph {graph!r}; choose one of {', '.join(GRAPHS)}")
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")


def _ring_order(graph: str, world_size: int, seed: int) -> list[int]:
    order = list(range(world_size))
    if graph == "random-ring":
        random.Random(f"dasr-ring-{seed}").shuffle(order)
    return order


def _ring_matching(order: list[int], start: int) -> list[int]:
    """Pair ring positions (start, start+1), (start+2, start+3), ...; for odd N, position
    ``start - 1`` (mod N) is left over and idles."""
    n = len(order)
    p = list(range(n))
    for j in range(n // 2):
        a = order[(start + 2 * j) % n]
        b = order[(start + 2 * j + 1) % n]
        p[a], p[b] = b, a
    return p


def _dims(world_size: int) -> int:
    return max(1, math.ceil(math.log2(world_size))) if world_size > 1 else 0


def matching(graph: str, world_size: int, seed: int, round_k: int) -> list[int]:
    """Round ``round_k``'s partner of every rank (``p[i] == i``: rank i idles).

    Args:
        graph: one of :data:`GRAPHS`.
        world_size: number of ranks taking part.
        seed: the run's gossip seed (all ranks must pass the same one).
        round_k: the round index, >= 0.

    Returns:
        ``p`` with ``p[p[i]] == i`` for every rank ``i``.
    """
    _check(graph, world_size)
    if round_k < 0:
        raise ValueError(f"round_k must be >= 0, got {round_k}")
    n = world_size
    if n == 1:
        return [0]
    if graph in ("ring", "random-ring"):
        order = _ring_order(graph, n, seed)
        if n == 2:
            return [1, 0]
        if graph == "ring":
            start = round_k % 2 if n % 2 == 0 else (round_k + 1) % n
        else:
            rng = random.Random(f"dasr-rr-{seed}-{round_k}")
            start = rng.randrange(2) if n % 2 == 0 else rng.randrange(n)
        return _ring_matching(order, start)
    if graph == "random-matching":
        order = list(range(n))
        random.Random(f"dasr-rm-{seed}-{round_k}").shuffle(order)
        return _ring_matching(order, 0)
    # exponential: one hypercube dimension per round
    d = _dims(n)
    cycle, pos = divmod(round_k, d)
    perm = list(range(d))
    random.Random(f"dasr-exp-{seed}-{cycle}").shuffle(perm)
    bit = 1 << perm[pos]
    return [i ^ bit if (i ^ bit) < n else i for i in range(n)]


def pairs(graph: str, world_size: int, seed: int = 0) -> list[tuple[int, int]]:
    """Every pair ``(a, b)``, ``a < b``, that :func:`matching` can produce, sorted.

    Ring graphs give N pairs, ``exponential`` at most ``N * ceil(log2 N) / 2``,
    ``random-matching`` all ``N(N-1)/2``.
    """
    _check(graph, world_size)
    n = world_size
    out: set[tuple[int, int]] = set()
    if n == 1:
        return []
    if graph in ("ring", "random-ring"):
        order = _ring_order(graph, n, seed)
        for j in range(n):
            a, b = order[j], order[(j + 1) % n]
            if a != b:
                out.add((min(a, b), max(a, b)))
    elif graph == "random-matching":
        out = {(a, b) for a in range(n) for b in range(a + 1, n)}
    else:
        for i in range(n):
            for j in range(_dims(n)):
                k = i ^ (1 << j)
                if k < n:
                    out.add((min(i, k), max(i, k)))
    return sorted(out)


def spread_rounds(graph: str, world_size: int, seed: int, start: int, limit: int | None = None) -> int:
    """Fewest rounds ``d`` such that what every rank knows at the start of round ``start``
    has reached every other rank after rounds ``start .. start + d - 1`` (flooding along
    the matchings). Used to agree on a common stop/pause round."""
    _check(graph, world_size)
    n = world_size
    full = (1 << n) - 1
    know = [1 << i for i in range(n)]
    limit = limit if limit is not None else 64 * n + 64
    d = 0
    while any(k != full for k in know):
        if d >= limit:
            raise RuntimeError(f"gossip graph {graph!r} with {n} ranks does not connect all ranks")
        p = matching(graph, n, seed, start + d)
        know = [know[i] | know[p[i]] for i in range(n)]
        d += 1
    return d
