"""The optional parts of dasr, each installed by one extra: a missing one is one sentence naming its install."""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from dasr.errors import DasrError


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module``, or raise a DasrError that names the ``pip install`` adding it.

    ``purpose`` says what needs it, e.g. "the ONNX export".
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DasrError(_not_installed([module.partition(".")[0]], extra, purpose)) from None


def require_installed(modules: tuple[str, ...], extra: str, purpose: str) -> None:
    """Raise the same one sentence as :func:`require` when any of ``modules`` is missing (none is imported)."""
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise DasrError(_not_installed(missing, extra, purpose))


def _not_installed(packages: list[str], extra: str, purpose: str) -> str:
    verb = "is" if len(packages) == 1 else "are"
    return f"{purpose} needs {', '.join(packages)}, which {verb} not installed: pip install 'dasr[{extra}]'"
