"""Closed-form communication costs (the alpha-beta model): what one exchange of ``nbytes`` costs on a link.

A link has a per-message latency ``alpha`` (seconds) and a bandwidth ``beta`` (bytes/second)
per direction, full duplex. Every formula is the textbook one, so the tests can check the
simulator against it::

    link = Link(latency_s=5e-6, bandwidth_Bps=12.5e9)
    ring_allreduce_s(170e6, 32, link)    # 2(N-1)/N * bytes/beta + 2(N-1) * alpha
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Link:
    """A point-to-point link: latency per message and bandwidth per direction."""

    latency_s: float
    bandwidth_Bps: float

    def describe(self) -> str:
        """``"5.0 us, 12.5 GB/s"``."""
        return f"{self.latency_s * 1e6:.1f} us, {self.bandwidth_Bps / 1e9:.3g} GB/s"


def send_s(nbytes: float, link: Link) -> float:
    """One message of ``nbytes`` from one end of ``link`` to the other: alpha + bytes/beta."""
    return link.latency_s + nbytes / link.bandwidth_Bps


def ring_allreduce_s(nbytes: float, n: int, link: Link) -> float:
    """Ring all-reduce of ``nbytes`` over ``n`` ranks: reduce-scatter + all-gather, each n-1 steps of nbytes/n.

    ``2(n-1)/n * nbytes/beta + 2(n-1) * alpha``; 0 for one rank.
    """
    if n <= 1:
        return 0.0
    return 2 * (n - 1) / n * nbytes / link.bandwidth_Bps + 2 * (n - 1) * link.latency_s


def allgather_s(nbytes: float, n: int, link: Link) -> float:
    """Ring all-gather of a vector of ``nbytes`` in total (each rank holds ``nbytes/n``): half a ring all-reduce."""
    if n <= 1:
        return 0.0
    return (n - 1) / n * nbytes / link.bandwidth_Bps + (n - 1) * link.latency_s


def pair_average_s(nbytes: float, link: Link) -> float:
    """Two ranks averaging ``nbytes`` (ADPSGD's exchange): a 2-rank all-reduce, i.e. one full-duplex swap.

    ``nbytes/beta + 2 alpha`` (the ring formula at n = 2).
    """
    return ring_allreduce_s(nbytes, 2, link)


def ps_exchange_s(nbytes: float, link: Link) -> float:
    """One parameter-server round trip of a worker: push the gradient, pull the parameters (2 messages)."""
    return 2 * send_s(nbytes, link)


def fit_link(sizes: list[float], seconds: list[float], ranks: int = 2) -> Link:
    """The link whose ring all-reduce over ``ranks`` best fits measured (size, seconds) pairs (least squares).

    Fits ``t = a + b * size`` and reads ``alpha = a / (2(n-1))``, ``beta = 2(n-1)/n / b``; a
    negative intercept (noise at small sizes) is clamped to zero latency.
    """
    import numpy as np

    if len(sizes) < 2:
        raise ValueError("need at least two message sizes to fit a link")
    b, a = np.polyfit(np.asarray(sizes, float), np.asarray(seconds, float), 1)
    if b <= 0:
        raise ValueError(f"all-reduce time does not grow with size ({list(zip(sizes, seconds))})")
    return Link(latency_s=float(max(a, 0.0)) / (2 * (ranks - 1)), bandwidth_Bps=float(2 * (ranks - 1) / ranks / b))
