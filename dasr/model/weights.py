"""Reading a saved model or checkpoint file: tensors and plain containers only, with a clear message when it is torn."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from dasr.errors import DasrError


def load_file(path: str | os.PathLike) -> dict:
    """Load one checkpoint file (weights only); a clear DasrError when it is missing or corrupt."""
    path = Path(path)
    if not path.exists():
        raise DasrError(f"checkpoint {path} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:  # torch does not check the CRCs of what it reads
            bad = archive.testzip()
        if bad is None:
            return torch.load(path, map_location="cpu", weights_only=True)
        reason = f"{bad} fails its CRC check"
    except pickle.UnpicklingError as e:
        detail = next((ln.strip() for ln in str(e).splitlines() if "GLOBAL" in ln), type(e).__name__)
        raise DasrError(
            f"checkpoint {path} was refused: it holds objects other than tensors and plain "
            f"containers, which loading with weights_only=True never runs ({detail})"
        ) from None
    except Exception as e:  # zipfile and torch raise many types for torn or foreign files
        reason = type(e).__name__
    raise DasrError(f"checkpoint {path} is unreadable (truncated or corrupt): {reason}")
