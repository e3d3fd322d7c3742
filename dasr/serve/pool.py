"""Decoding off the event loop, in a bounded pool of threads that each hold their own recognizer view."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from dasr.decode.recognizer import BaseRecognizer

T = TypeVar("T")


class Overloaded(Exception):
    """Every worker is busy and the queue is full: the caller should answer 503 with Retry-After."""


class DecodeTimeout(Exception):
    """A job did not finish within the pool's timeout."""


class DecodePool:
    """``workers`` threads decode; at most ``max_queue`` more jobs wait; any beyond are refused at once.

    A job is a function of a recognizer (each thread has its own :meth:`BaseRecognizer.for_another_thread`
    view: the beam search is stateful, the model and LM are shared). A running job keeps its place
    until it really ends, also after its caller timed out, so the bound holds for the CPU, not just
    the callers; a queued job whose caller timed out is dropped.
    The threads release the GIL inside onnxruntime and PyTorch, so the event loop keeps answering.
    """

    def __init__(self, recognizer: BaseRecognizer, workers: int = 1, max_queue: int = 8, timeout_s: float = 30.0):
        if workers < 1 or max_queue < 0 or timeout_s <= 0:
            raise ValueError("need workers >= 1, max_queue >= 0 and a positive timeout")
        self.workers, self.max_queue, self.timeout_s = workers, max_queue, timeout_s
        self._recognizer = recognizer
        self._local = threading.local()
        self._lock = threading.Lock()
        self._admitted = 0
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="dasr-decode")

    @property
    def in_flight(self) -> int:
        """Jobs running or waiting now."""
        return self._admitted

    def _admit(self, limit: int) -> bool:
        with self._lock:
            if self._admitted >= limit:
                return False
            self._admitted += 1
            return True

    def _release(self, _: Future) -> None:
        with self._lock:
            self._admitted -= 1

    def _run_job(self, job: Callable[[BaseRecognizer], T]) -> T:
        if not hasattr(self._local, "recognizer"):
            self._local.recognizer = self._recognizer.for_another_thread()
        return job(self._local.recognizer)

    async def run(self, job: Callable[[BaseRecognizer], T], *, only_if_idle: bool = False) -> T | None:
        """Run ``job(recognizer)`` on a pool thread and return its result.

        Args:
            job: the work; its exceptions are raised here.
            only_if_idle: run only if a worker is free now, else return None at once (for work that
                may be skipped, such as a partial text, and must never delay a queued request).

        Raises:
            Overloaded: all workers busy and ``max_queue`` jobs waiting (never with ``only_if_idle``).
            DecodeTimeout: the job ran past ``timeout_s`` (it is cancelled if it has not started).
        """
        if not self._admit(self.workers if only_if_idle else self.workers + self.max_queue):
            if only_if_idle:
                return None
            raise Overloaded(f"all {self.workers} decoders are busy and {self.max_queue} requests wait")
        future = self._executor.submit(self._run_job, job)
        future.add_done_callback(self._release)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), self.timeout_s)
        except TimeoutError:
            raise DecodeTimeout(f"decoding took longer than {self.timeout_s:g} s") from None

    def close(self) -> None:
        """Stop the threads after the jobs already started."""
        self._executor.shutdown(wait=True, cancel_futures=True)
