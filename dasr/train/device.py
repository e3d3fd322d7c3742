"""Which device a worker trains on."""

from __future__ import annotations

import torch

from dasr.errors import DasrError


def select_device(name: str) -> torch.device:
    """The device ``--device`` names; 'auto' means CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DasrError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


#: the smallest model that ``--precision auto`` trains with bf16 autocast on CUDA
BF16_MIN_PARAMETERS = 10_000_000


def use_bf16(precision: str, device: torch.device, parameters: int) -> bool:
    """Whether ``--precision`` asks for bfloat16 autocast for a model of ``parameters`` on ``device``.

    auto means on CUDA, for models of at least :data:`BF16_MIN_PARAMETERS`. Measured on one H200
    (docs/results/gpu.md): a bf16 step of the paper model (34 M) took 0.80-0.88x a float32 one at
    the same dev loss, but one of the demo model (2.5 M) 1.13x, its small LSTM kernels gaining
    less than autocast's casts cost. Not on the CPU by default, even one with native bf16: on the
    real recipe's long utterances (AMD EPYC with avx512_bf16, 1 thread) a bf16 step took 1.11x a
    float32 one (docs/results/speedups.md).
    """
    if precision == "auto":
        return device.type == "cuda" and parameters >= BF16_MIN_PARAMETERS
    return precision == "bf16"
