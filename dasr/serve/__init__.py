"""`dasr serve`: a trained recognizer as an HTTP service.

- ``POST /v1/audio/transcriptions``: OpenAI's audio transcription API (multipart ``file``), so the
  ``openai`` client and any other client of that API work with ``base_url`` pointed here;
- ``/v1/audio/stream`` (WebSocket): 16-bit PCM from a live microphone in, growing partial texts and
  a final text out;
- ``GET /``: a page with a microphone button and a file upload; ``/healthz``; ``/metrics`` (Prometheus).

Its dependencies are the optional extra ``dasr[serve]`` (:func:`require_dependencies`).
"""

from __future__ import annotations

from dasr.extras import require_installed

#: the modules of the ``serve`` extra (python-multipart is imported as ``multipart``)
EXTRA_MODULES = ("starlette", "uvicorn", "multipart", "prometheus_client", "websockets")


def require_dependencies() -> None:
    """Raise a one-sentence :class:`DasrError` naming the install command when the ``serve`` extra is missing."""
    require_installed(EXTRA_MODULES, "serve", "dasr serve")
