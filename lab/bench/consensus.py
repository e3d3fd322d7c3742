"""`dasr bench consensus`: how fast each gossip graph averages, computed exactly from its schedule.

Gossip without training is linear: round ``k`` replaces the replicas ``x`` (one row per rank)
by ``W_k x``, where ``W_k`` averages each matched pair (:func:`round_matrix`). After ``R``
rounds the deviation from the mean is ``(Phi_R - J) x`` with ``Phi_R = W_{R-1} ... W_0`` and
``J`` the all-``1/N`` matrix. The *spread* shrinks 10x once the worst case over all starting
points, the spectral norm ``||Phi_R - J||_2``, is at most 0.1: that round count is a property
of the schedule alone, so it is computed here in numpy, not timed (a real-process test checks
one point of it, tests/test_parallel_exact.py). Seeded schedules report the mean over seeds.

Beside it, the spectral gap ``1 - |lambda_2|`` of the expected averaging matrix ``E[W]`` (the
mean of ``W_k`` over the rounds of many seeds), the usual predictor of consensus speed.
"""

from __future__ import annotations

import os
import statistics

import numpy as np

from dasr.parallel import topology
from lab.report import Report, new_figure, publish
from lab.summary import update_summary

TITLE = "Consensus speed of the gossip graphs"
SIZES = (4, 8, 16)
SHRINK = 10.0
#: seeds of the seeded schedules, and rounds of one seed whose mean matrix gives the spectral gap
SEEDS, GAP_ROUNDS = 20, 64


def round_matrix(graph: str, n: int, seed: int, round_k: int) -> np.ndarray:
    """``W_k``: the averaging matrix of gossip round ``round_k`` (``x <- W x``; idle ranks keep their row)."""
    p = topology.matching(graph, n, seed, round_k)
    w = np.zeros((n, n))
    for i, j in enumerate(p):
        w[i, i] += 0.5
        w[i, j] += 0.5
    return w


def rounds_to_shrink(graph: str, n: int, seed: int, shrink: float = SHRINK, limit: int = 10_000) -> int:
    """Fewest rounds ``R`` with ``||W_{R-1}...W_0 - J||_2 <= 1/shrink`` (every start's spread shrinks ``shrink``x)."""
    j = np.full((n, n), 1.0 / n)
    phi = np.eye(n)
    for r in range(1, limit + 1):
        phi = round_matrix(graph, n, seed, r - 1) @ phi
        if np.linalg.norm(phi - j, 2) <= 1.0 / shrink:
            return r
    raise RuntimeError(f"{graph} at N = {n} did not shrink the spread {shrink}x in {limit} rounds")


def spectral_gap(graph: str, n: int, seed: int, rounds: int) -> float:
    """``1 - |lambda_2|`` of ``E[W]``, the mean of ``W_k`` over the first ``rounds`` rounds of seed ``seed``.

    Per seed, because a seed fixes a random ring once; mixing seeds would average different rings.
    """
    mean = sum(round_matrix(graph, n, seed, k) for k in range(rounds)) / rounds
    eig = sorted(np.abs(np.linalg.eigvalsh(mean)), reverse=True)
    return float(1.0 - eig[1])


def measure(seeds: int = SEEDS, gap_rounds: int = GAP_ROUNDS) -> dict:
    """Rounds to shrink the spread 10x (mean, min, max over seeds) and the spectral gap, per graph and N."""
    out: dict[str, dict[str, dict]] = {}
    for graph in topology.GRAPHS:
        out[graph] = {}
        for n in SIZES:
            rounds = [rounds_to_shrink(graph, n, seed) for seed in range(seeds)]
            out[graph][str(n)] = {
                "rounds_mean": statistics.fmean(rounds),
                "rounds_min": min(rounds),
                "rounds_max": max(rounds),
                "spectral_gap": statistics.fmean(spectral_gap(graph, n, seed, gap_rounds) for seed in range(seeds)),
                "pair_groups": len(topology.pairs(graph, n, 0)),
            }
    return out


def run(out_dir: str | os.PathLike, command: str) -> dict:
    """Compute the table; write ``consensus.md/.json/.png`` and the summary's two headline figures."""
    results = measure(SEEDS, GAP_ROUNDS)
    report = publish("consensus", TITLE, command, results, render, out_dir)
    best = _rounds_at_16(results)
    update_summary(
        out_dir,
        {
            "gossip_rounds_to_10x_n16_exponential": best["exponential"],
            "gossip_rounds_to_10x_n16_random_matching": best["random-matching"],
        },
        report,
    )
    return results


def _rounds_at_16(results: dict) -> dict[str, float]:
    return {g: results[g]["16"]["rounds_mean"] for g in results}


def render(results: dict, report: Report):
    """consensus.md's sections and figure, from the ``results`` alone."""
    report.add(
        "What is measured",
        (
            "Rounds of gossip (no training) until the replicas' spread around their mean is at most 1/10 of "
            "where it started, for every starting point (spectral norm of the product of the rounds' averaging "
            "matrices minus the averaging projector). Exact linear algebra on the schedule "
            f"(`dasr.parallel.topology.matching`), mean [min, max] over seeds 0..{SEEDS - 1}; no timing, so "
            "the machine does not matter (no worker processes run). Spectral gap: 1 - |second eigenvalue| of the "
            f"expected averaging matrix (mean of the rounds' matrices over {GAP_ROUNDS} rounds of one seed, averaged "
            "over seeds); larger is faster. Pair groups: the gloo groups each "
            "run creates (all N(N-1)/2 for random-matching)."
        ),
    )
    report.add("Results", _results_table(results))
    best = _rounds_at_16(results)
    report.add(
        "Reading it",
        (
            f"At N = 16 exponential needs {best['exponential']:.1f} rounds and random-matching "
            f"{best['random-matching']:.1f}, against {best['ring']:.1f} for the ring: rings mix in O(N^2) "
            "rounds, hypercube and random matchings in O(log N); for N a power of two one exponential cycle "
            "(log2 N rounds) averages exactly. random-ring needs about twice the ring's rounds with the same gap: "
            "each round it draws one of its ring's two matchings at random, so half the rounds repeat the last "
            "matching and average nothing new (the gap of the expected matrix does not see the order). "
            "exponential is the default graph. A round "
            "costs every rank one pair exchange of the model in all graphs, so fewer rounds is less time and "
            "traffic for the same agreement; random-matching pays with N(N-1)/2 process groups at start-up "
            "(fine up to N = 16 or so)."
        ),
    )
    return _figure(results)


def _results_table(results: dict) -> str:
    """Per graph and N: rounds to 10x (mean [min, max]) and the gap; numbers right-aligned."""
    rows = ["| graph | " + " | ".join(f"N = {n}: rounds to 10x | gap" for n in SIZES) + " | pair groups at N = 16 |"]
    rows.append("|---|" + "---:|---:|" * len(SIZES) + "---:|")
    for graph, by_n in results.items():
        cells = []
        for n in SIZES:
            r = by_n[str(n)]
            spanned = f" [{r['rounds_min']}, {r['rounds_max']}]" if r["rounds_min"] != r["rounds_max"] else ""
            cells.append(f"{r['rounds_mean']:.1f}{spanned} | {r['spectral_gap']:.3f}")
        rows.append(f"| {graph} | " + " | ".join(cells) + f" | {by_n['16']['pair_groups']} |")
    return "\n".join(rows)


def _figure(results: dict):
    fig, (ax,) = new_figure(1, 6.0, 4.0)
    for graph in results:
        ax.plot(SIZES, [results[graph][str(n)]["rounds_mean"] for n in SIZES], marker="o", label=graph)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(SIZES, [str(n) for n in SIZES])
    ax.set_xlabel("workers N")
    ax.set_ylabel("gossip rounds to shrink the spread 10x")
    ax.set_title("Consensus speed per gossip graph (exact, mean over seeds)", fontsize=10)
    ax.legend(fontsize=8)
    return fig


def run_cli(args, command: str) -> dict:
    """`dasr bench consensus`: :func:`run` into ``--out``."""
    return run(args.out, command)
