"""``POST /v1/audio/transcriptions``: OpenAI's audio transcription API over a dasr recognizer.

The body is read as it streams in and refused (413) once it passes the size limit, before it
fills memory; the upload is decoded from memory (never from a path the client names).
Accepted form fields: ``file`` (required), ``model`` (any name: one model per service),
``response_format`` (json, text, verbose_json), ``timestamp_granularities[]`` (segment, word);
``language``, ``prompt`` and ``temperature`` are accepted and ignored.
"""

from __future__ import annotations

import math
from collections.abc import AsyncGenerator, AsyncIterator

from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from dasr.data import audio
from dasr.decode.recognizer import Recognition, Word
from dasr.serve.errors import ApiError

RESPONSE_FORMATS = ("json", "text", "verbose_json")
#: a pause this long between two words starts a new segment of verbose_json
SEGMENT_PAUSE_S = 1.0
#: our language, as Whisper names it in verbose_json
LANGUAGE = "english"


class BodyTooLarge(MultiPartException):
    """The request body passed the size limit while it streamed in."""


async def _limited(stream: AsyncIterator[bytes], max_bytes: int) -> AsyncGenerator[bytes, None]:
    received = 0
    async for chunk in stream:
        received += len(chunk)
        if received > max_bytes:
            raise BodyTooLarge(f"the upload is larger than the service's limit of {max_bytes} bytes")
        yield chunk


async def read_form(request: Request, max_bytes: int) -> FormData:
    """The multipart form of ``request``, refused with 413 as soon as it passes ``max_bytes``."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(415, "send the audio as multipart/form-data with the file in the `file` field", "file")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"the upload is {declared} bytes, over the service's limit of {max_bytes} bytes", "file")
    parser = MultiPartParser(request.headers, _limited(request.stream(), max_bytes), max_files=1, max_fields=16)
    try:
        return await parser.parse()
    except BodyTooLarge as e:
        raise ApiError(413, e.message, "file") from None
    except MultiPartException as e:
        raise ApiError(400, f"malformed multipart/form-data body: {e.message}") from None
    except ClientDisconnect:
        raise ApiError(400, "the client disconnected during the upload") from None


def _form_choices(form: FormData) -> tuple[str, bool]:
    response_format = str(form.get("response_format") or "json")
    if response_format not in RESPONSE_FORMATS:
        raise ApiError(
            400,
            f"response_format {response_format!r} is not supported: use one of {', '.join(RESPONSE_FORMATS)}",
            "response_format",
        )
    granularities = {str(g) for g in form.getlist("timestamp_granularities[]")}
    if granularities - {"segment", "word"}:
        raise ApiError(400, "timestamp_granularities[] takes segment and/or word", "timestamp_granularities[]")
    return response_format, "word" in granularities


def _segments(words: list[Word], duration: float) -> list[dict]:
    """Runs of words without a pause of SEGMENT_PAUSE_S, as Whisper's verbose_json segments (the fields
    dasr can fill: no avg_logprob, compression_ratio or no_speech_prob)."""
    runs: list[list[Word]] = []
    for word in words:
        if not runs or word.start - runs[-1][-1].end >= SEGMENT_PAUSE_S:
            runs.append([])
        runs[-1].append(word)
    segments = [(run[0].start, run[-1].end, " ".join(w.word for w in run)) for run in runs] or [(0.0, duration, "")]
    return [
        {
            "id": i,
            "seek": 0,
            "start": round(start, 3),
            "end": round(end, 3),
            "text": text,
            "tokens": [],
            "temperature": 0.0,
        }
        for i, (start, end, text) in enumerate(segments)
    ]


def render(result: Recognition, response_format: str, with_words: bool) -> Response:
    """The response body of one transcription in OpenAI's ``response_format``."""
    if response_format == "text":
        return PlainTextResponse(result.text)
    usage = {"type": "duration", "seconds": math.ceil(result.duration)}
    if response_format == "json":
        return JSONResponse({"text": result.text, "usage": usage})
    body = {
        "task": "transcribe",
        "language": LANGUAGE,
        "duration": round(result.duration, 3),
        "text": result.text,
        "segments": _segments(result.words, result.duration),
        "usage": usage,
    }
    if with_words:
        body["words"] = [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3)} for w in result.words]
    return JSONResponse(body)


async def transcriptions(request: Request) -> Response:
    """``POST /v1/audio/transcriptions``."""
    service = request.app.state.service
    form = await read_form(request, service.settings.max_bytes)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "the form has no audio file: send it in the `file` field", "file")
        response_format, with_words = _form_choices(form)
        data = await upload.read()
    finally:
        await form.close()
    name = f"the uploaded file {upload.filename!r}" if upload.filename else "the uploaded file"
    result = await service.recognize(lambda: audio.load_bytes(data, name), name)
    return render(result, response_format, with_words)
