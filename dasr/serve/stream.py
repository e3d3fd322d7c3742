"""``/v1/audio/stream``: live transcription over a WebSocket.

The client sends binary messages of 16-bit little-endian mono PCM (16 kHz unless the URL says
``?sample_rate=N``) and then the text message ``{"type": "end"}``. The service answers
``{"type": "partial", "text": ...}`` as the audio grows and ``{"type": "final", "text": ...,
"duration": ..., "words": [...]}`` at the end, then closes (1000). A bad stream gets
``{"type": "error", "message": ...}`` and a close code: 1003 (not PCM, not the end message,
too short), 1009 (over the length limit), 1013 (the decoders are busy: try again later).

The BLSTM reads each utterance in both directions, so a partial text cannot be extended frame by
frame: each partial re-decodes all the audio so far, on a decoder that is idle at that moment
(partials are skipped, never queued, when the pool is busy). A partial therefore lags the
microphone by up to ``partial_every_s`` of audio plus the decode time of the whole utterance so far
(the real-time factor times its length), and the final text comes that decode time after the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from dasr.data import audio
from dasr.errors import DataError
from dasr.serve.pool import DecodeTimeout, Overloaded
from dasr.serve.service import Service

ENDPOINT = "/v1/audio/stream"
#: close codes (RFC 6455) -> the HTTP status the metrics count the stream under
CLOSE_STATUS = {1000: 200, 1003: 400, 1009: 413, 1013: 503}
#: the metrics' status of a stream the client dropped before the end (nginx's "client closed request")
CLIENT_CLOSED = 499


class StreamError(Exception):
    """The stream is refused: the client gets the message, then the close code."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def _sample_rate(websocket: WebSocket) -> int:
    value = websocket.query_params.get("sample_rate", str(audio.TARGET_RATE))
    if not value.isdigit() or not audio.MIN_RATE <= int(value) <= audio.MAX_RATE:
        raise StreamError(1003, f"sample_rate must be {audio.MIN_RATE}-{audio.MAX_RATE} Hz, got {value!r}")
    return int(value)


class StreamSession:
    """One microphone stream: its PCM so far, and the partial decode in flight (at most one)."""

    def __init__(self, websocket: WebSocket, service: Service) -> None:
        self.websocket, self.service = websocket, service
        self.rate = _sample_rate(websocket)
        self.pcm = bytearray()
        self.max_bytes = 2 * int(service.settings.max_stream_s * self.rate)
        self.partial_bytes = 2 * int(service.settings.partial_every_s * self.rate)
        self.decoded_bytes = 0
        self.partial: asyncio.Task | None = None

    def samples(self, pcm: bytes) -> np.ndarray:
        """16 kHz float samples of ``pcm``."""
        return audio.resample(np.frombuffer(pcm, "<i2").astype(np.float32) / 32768.0, self.rate)

    def add(self, chunk: bytes) -> None:
        """Append a chunk; start a partial decode when enough new audio came and no partial runs."""
        if len(chunk) % 2:
            raise StreamError(1003, "binary messages must be 16-bit PCM: an even number of bytes")
        self.pcm += chunk
        if len(self.pcm) > self.max_bytes:
            raise StreamError(1009, f"the stream is longer than the limit of {self.service.settings.max_stream_s:g} s")
        if len(self.pcm) - self.decoded_bytes >= self.partial_bytes and (self.partial is None or self.partial.done()):
            self.decoded_bytes = len(self.pcm)
            self.partial = asyncio.create_task(self._send_partial(bytes(self.pcm)))

    async def _send_partial(self, pcm: bytes) -> None:
        try:
            result = await self.service.recognize(lambda: self.samples(pcm), "the stream", only_if_idle=True)
        except (DataError, DecodeTimeout):
            return  # a partial is a courtesy: too little audio yet, or too slow; the final decides
        if result is None:
            self.decoded_bytes = 0  # no decoder was free: try again with the next chunk
            return
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await self.websocket.send_json({"type": "partial", "text": result.text})

    async def receive_until_end(self) -> bool:
        """Take audio until the end message (True) or a disconnect (False)."""
        while True:
            message = await self.websocket.receive()
            if message["type"] == "websocket.disconnect":
                return False
            if message.get("bytes") is not None:
                self.add(message["bytes"])
                continue
            try:
                event = json.loads(message.get("text") or "")
            except ValueError:
                event = None
            if not isinstance(event, dict) or event.get("type") != "end":
                raise StreamError(1003, 'text messages must be the JSON {"type": "end"}; send audio as binary PCM')
            return True

    async def finish(self) -> None:
        """Stop the partial, decode all the audio, send the final text and close."""
        await self.stop_partial()
        try:
            result = await self.service.recognize(lambda: self.samples(bytes(self.pcm)), "the stream")
        except DataError as e:
            raise StreamError(1003, str(e)) from None
        except (Overloaded, DecodeTimeout) as e:
            raise StreamError(1013, f"{e}: try again later") from None
        assert result is not None
        words = [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in result.words]
        await self.websocket.send_json(
            {"type": "final", "text": result.text, "duration": round(result.duration, 3), "words": words}
        )
        await self.websocket.close(1000)

    async def stop_partial(self) -> None:
        """Cancel the partial decode's wait (its thread finishes alone) so nothing is sent after the final."""
        if self.partial is not None:
            self.partial.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.partial


async def _session(websocket: WebSocket, service: Service) -> int:
    await websocket.accept()
    session = None
    try:
        session = StreamSession(websocket, service)
        if not await session.receive_until_end():
            return CLIENT_CLOSED
        await session.finish()
        return 200
    except StreamError as e:
        with contextlib.suppress(RuntimeError, WebSocketDisconnect):
            await websocket.send_json({"type": "error", "message": e.message})
            await websocket.close(e.code)
        return CLOSE_STATUS[e.code]
    except WebSocketDisconnect:
        return CLIENT_CLOSED
    finally:
        if session is not None:
            await session.stop_partial()


async def stream(websocket: WebSocket) -> None:
    """``/v1/audio/stream``: one live transcription, counted in the metrics when it ends."""
    service: Service = websocket.app.state.service
    started = time.perf_counter()
    status = await _session(websocket, service)
    service.metrics.observe_request(ENDPOINT, status, time.perf_counter() - started)
