"""What the routes share: the settings, the decode pool and the metrics of one running service."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dasr.decode.recognizer import BaseRecognizer, Recognition
from dasr.serve.metrics import ServiceMetrics
from dasr.serve.pool import DecodePool


@dataclass
class ServeSettings:
    """`dasr serve`'s options (the defaults are the CLI's)."""

    host: str = "127.0.0.1"
    port: int = 8000
    #: decoding threads (each uses one core)
    workers: int = 1
    #: requests that may wait for a decoder before the service answers 503
    max_queue: int = 8
    #: seconds a decode may take before the request gets 503
    timeout_s: float = 30.0
    #: largest upload (OpenAI's limit: 25 MB)
    max_bytes: int = 25 * 1024 * 1024
    #: longest microphone stream
    max_stream_s: float = 300.0
    #: a partial text is decoded each time this much new audio has arrived
    partial_every_s: float = 0.5
    #: origins allowed to call the service from a browser (CORS); none: same origin only
    cors: list[str] = field(default_factory=list)


class Service:
    """One recognizer behind a bounded :class:`DecodePool`, with its :class:`ServiceMetrics`."""

    def __init__(self, recognizer: BaseRecognizer, settings: ServeSettings) -> None:
        self.settings = settings
        self.pool = DecodePool(recognizer, settings.workers, settings.max_queue, settings.timeout_s)
        self.metrics = ServiceMetrics(lambda: self.pool.in_flight)

    async def recognize(
        self, load_samples: Callable[[], np.ndarray], name: str, only_if_idle: bool = False
    ) -> Recognition | None:
        """Recognise the audio ``load_samples()`` gives (called on a pool thread: decoding audio is CPU
        work too); None only when ``only_if_idle`` and no decoder is free (see :meth:`DecodePool.run`)."""

        def job(recognizer: BaseRecognizer) -> Recognition:
            started = time.perf_counter()
            result = recognizer.recognize(load_samples(), name)
            self.metrics.observe_decode(result.duration, time.perf_counter() - started)
            return result

        return await self.pool.run(job, only_if_idle=only_if_idle)
