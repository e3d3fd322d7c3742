"""The optional parts of dasr, each installed by one extra: a missing one is one sentence naming its install."""

from __future__ import annotations

import importlib
from types import ModuleType

from dasr.errors import DasrError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise a DasrError that names the ``pip install`` adding it.

    ``purpose`` says what needs it, e.g. "the ONNX export".
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.partition(".")[0]
        raise DasrError(f"{purpose} needs {package}, which is not installed: pip install 'dasr[{extra}]'") from None
