"""Transcript normalisation shared by tokenizers, the LM and scoring."""

from __future__ import annotations

import re

_KEEP = re.compile(r"[^a-z' ]+")
_SPACES = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lower-case, keep letters, apostrophes and single spaces: 'Set an ALARM, 7am!' -> 'set an alarm am'."""
    text = _KEEP.sub(" ", text.lower().replace("-", " "))
    return _SPACES.sub(" ", text).strip()
