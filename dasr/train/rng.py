"""The global random number generators (torch, NumPy, Python): seeding, and their state for checkpoints."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_all(seed: int) -> None:
    """Seed torch, NumPy and Python alike (identical initial replicas on every rank)."""
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed)


def rng_state() -> dict:
    """Global RNG states as plain lists and tensors (loadable with weights_only=True)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [keys.tolist(), pos, has_gauss, gauss],  # type: ignore[attr-defined]  # numpy's stub: get_state() may be a dict
        "python": list(random.getstate()[1]),
    }


def set_rng_state(state: dict) -> None:
    """Restore the states :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate((3, tuple(state["python"]), None))
