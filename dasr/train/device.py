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
