"""How a GPU's compute per sample depends on the batch: a public cuDNN LSTM measurement, interpolated.

A GPU runs an LSTM step as small matrix products whose size is the batch, so a small batch
leaves most of the GPU idle and costs more per sample. The curve comes from a published
cuDNN LSTM training benchmark (forward + backward), not from the runs :mod:`lab.sim.paper`
predicts. Between table points the time per sample is interpolated linearly in log-log
space; beyond the table the nearest segment's slope is extended (the single-V100 anchor
batch of 256 lies beyond it)::

    per_sample_factor(80, 256)     # time per sample at batch 80 / time per sample at batch 256
"""

from __future__ import annotations

import math

#: cuDNN LSTM, 1 layer, 512 hidden (the paper's cells per direction), 30 steps: train (forward + backward)
#: microseconds per sample at each batch size
LSTM512_US_PER_SAMPLE = {32: 243.4, 128: 110.9}
SOURCE = (
    "github.com/MaximumEntropy/cudnn_rnn_theano_benchmarks README.md (cuDNN Theano LSTM, depth 1, "
    "seq len 30, hidden 512; GeForce GTX TITAN X, CUDA 7.5, cuDNN 5005)"
)


def us_per_sample(batch: float, table: dict[int, float] = LSTM512_US_PER_SAMPLE) -> float:
    """Time per sample at ``batch``: log-log interpolation in ``table``, the end segment's slope beyond it."""
    points = sorted(table.items())
    if len(points) < 2:
        raise ValueError("the table needs at least two batch sizes")
    i = next((k for k in range(1, len(points) - 1) if batch <= points[k][0]), len(points) - 1)
    (b0, t0), (b1, t1) = points[i - 1], points[i]
    slope = math.log(t1 / t0) / math.log(b1 / b0)
    return t0 * math.exp(slope * math.log(batch / b0))


def per_sample_factor(batch: float, reference_batch: float, table: dict[int, float] = LSTM512_US_PER_SAMPLE) -> float:
    """Compute per sample at ``batch`` relative to ``reference_batch`` (> 1: less efficient)."""
    return us_per_sample(batch, table) / us_per_sample(reference_batch, table)


def describe(table: dict[int, float] = LSTM512_US_PER_SAMPLE) -> str:
    """One line: the table's points."""
    return ", ".join(f"batch {b}: {t:g} us/sample" for b, t in sorted(table.items()))
