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


def use_bf16(precision: str, device: torch.device) -> bool:
    """Whether ``--precision`` asks for bfloat16 autocast on ``device``: auto means on CUDA only.

    Not on the CPU by default, even one with native bf16: on the real recipe's long utterances
    (AMD EPYC with avx512_bf16, 1 thread) a bf16 step took 1.11x a float32 one
    (docs/results/speedups.md).
    """
    if precision == "auto":
        return device.type == "cuda"
    return precision == "bf16"
