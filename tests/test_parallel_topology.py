"""Gossip schedules: perfect matchings all ranks agree on, drawn from a small pair set."""

import pytest

from dasr.parallel import topology
from dasr.parallel.straggler import Straggler


@pytest.mark.parametrize("graph", topology.GRAPHS)
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 7, 8, 12, 16, 32])
def test_matchings_are_involutions_within_pairs(graph, n):
    allowed = set(topology.pairs(graph, n, seed=3))
    used = set()
    for k in range(600 if graph == "random-matching" else 200):
        p = topology.matching(graph, n, 3, k)
        assert sorted(p) == list(range(n))
        assert all(p[p[i]] == i for i in range(n))
        idle = [i for i in range(n) if p[i] == i]
        if graph != "exponential":
            assert len(idle) == n % 2  # a ring idles one rank only when N is odd
        for i in range(n):
            if p[i] != i:
                used.add((min(i, p[i]), max(i, p[i])))
        assert p == topology.matching(graph, n, 3, k)  # deterministic
    assert used <= allowed
    assert used == allowed  # every pair is eventually used
    assert topology.pairs(graph, n, 3) == sorted(allowed)
    if n > 1 and graph != "random-matching":
        assert len(allowed) <= n * max(1, (n - 1).bit_length())
    if graph == "random-matching":
        assert len(allowed) == n * (n - 1) // 2  # any pair can meet


STARTS = (0, 1, 5, 17)


def _reachability_rounds(graph, n, seed, start):
    """Reference: rounds until the boolean product of the rounds' (I + P_k) matrices is all ones (numpy).

    ``reach[i, j]``: rank i has heard from rank j; a round gives i what its partner had heard.
    """
    import numpy as np

    reach = np.eye(n, dtype=int)
    d = 0
    while not reach.all():
        p = topology.matching(graph, n, seed, start + d)
        step = np.eye(n, dtype=int)
        step[np.arange(n), p] = 1
        reach = (step @ reach > 0).astype(int)
        d += 1
    return d


@pytest.mark.parametrize("n", [2, 4, 6, 8, 16])
def test_spread_rounds_of_an_even_ring_is_half_of_it(n):
    """Rounds alternate the ring's two matchings: news moves one position per round each way."""
    assert [topology.spread_rounds("ring", n, 0, s) for s in STARTS] == [n // 2] * len(STARTS)


def test_spread_rounds_of_a_ring_of_three_by_hand():
    # rounds 0, 1, 2 pair (1, 2), (2, 0), (0, 1): rank 0 hears 1 in round 1, rank 1 hears 0 in round 2
    assert topology.matching("ring", 3, 0, 0) == [0, 2, 1]
    assert topology.spread_rounds("ring", 3, 0, 0) == 3


@pytest.mark.parametrize("k", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", [0, 3])
def test_spread_rounds_of_a_hypercube_is_when_the_rounds_have_used_every_dimension(k, seed):
    """N = 2**k: rank i has heard exactly i XOR (the span of the bits used), so all once every bit was used."""
    n = 1 << k
    for start in STARTS:
        used, d = set(), 0
        while len(used) < k:
            used.add(topology.matching("exponential", n, seed, start + d)[0])  # rank 0's partner: the round's bit
            d += 1
        assert topology.spread_rounds("exponential", n, seed, start) == d, (n, start, used)


@pytest.mark.parametrize("graph", topology.GRAPHS)
@pytest.mark.parametrize("n", [3, 5, 6, 9, 12])
def test_spread_rounds_equals_the_reachability_reference(graph, n):
    assert [topology.spread_rounds(graph, n, 2, s) for s in STARTS] == [
        _reachability_rounds(graph, n, 2, s) for s in STARTS
    ]


def test_exponential_cycle_averages_exactly():
    import numpy as np

    x = np.random.default_rng(0).normal(size=8)
    mean = x.mean()
    for k in range(3):
        p = topology.matching("exponential", 8, 1, k)
        x = (x + x[p]) / 2
    assert np.allclose(x, mean)


def test_random_matching_draws_fresh_matchings():
    seen = {tuple(topology.matching("random-matching", 8, 0, k)) for k in range(50)}
    assert len(seen) > 30  # uniform over 105 perfect matchings: ~40 distinct in 50 draws; a ring has 2
    assert topology.matching("random-matching", 8, 0, 3) != topology.matching("random-matching", 8, 1, 3)


def test_bad_arguments():
    with pytest.raises(ValueError, match="unknown gossip graph"):
        topology.matching("star", 4, 0, 0)
    with pytest.raises(ValueError):
        topology.pairs("ring", 0)


def test_straggler_parse_and_delay():
    assert Straggler.parse("1:3,2:1.5", 1).factor == 3.0
    assert Straggler.parse("1:3,2:1.5", 2).factor == 1.5
    assert Straggler.parse("1:3", 0).factor == 1.0
    assert Straggler.parse(None, 0).factor == 1.0
    with pytest.raises(ValueError, match="RANK:FACTOR"):
        Straggler.parse("fast", 0)
    s = Straggler(3.0)
    with s.step():
        sum(range(20000))
    assert s.slept_s > 0
