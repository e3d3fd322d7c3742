"""Errors as the OpenAI API shapes them: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from collections.abc import Mapping

from starlette.responses import JSONResponse

#: seconds a refused client is told to wait (Retry-After)
RETRY_AFTER_S = 1


class ApiError(Exception):
    """A request the service refuses, with its HTTP status and a message naming what is wrong."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


def error_response(status: int, message: str, param: str | None = None, headers: Mapping[str, str] | None = None):
    """The JSON error body OpenAI's clients parse (they raise e.g. ``openai.BadRequestError`` with the message)."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    body = {"error": {"message": message, "type": kind, "param": param, "code": None}}
    return JSONResponse(body, status_code=status, headers=headers)


def busy_response(message: str):
    """503 with Retry-After: the decoders are busy (queue full) or a decode ran past its timeout."""
    return error_response(503, message, headers={"Retry-After": str(RETRY_AFTER_S)})
