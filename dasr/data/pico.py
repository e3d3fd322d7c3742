"""SVOX Pico (Debian ``libttspico0`` + ``libttspico-data``, non-free) driven through its C API.

``pico2wave`` reads its language files from a path compiled into it (``/usr/share/pico/lang``),
so it cannot run from a private unpacked tree; the library itself takes the files' paths, so we
call it with ctypes (no Python binding of Pico is packaged on PyPI). Output: 16 kHz 16-bit mono.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from dasr.errors import DasrError

#: language -> (text analysis file, signal generation file) under the lang dir
VOICES = {"en-US": ("en-US_ta.bin", "en-US_lh0_sg.bin"), "en-GB": ("en-GB_ta.bin", "en-GB_kh0_sg.bin")}
MEMORY_BYTES = 2_500_000
STEP_BUSY, STEP_IDLE = 201, 200
CHUNK = 128  # bytes of text put at a time (pico_putTextUtf8 takes an int16 size)


def _check(status: int, what: str) -> None:
    if status != 0:
        raise DasrError(f"pico: {what} failed with status {status}")


def synthesize(library: Path, lang_dir: Path, language: str, text: str) -> np.ndarray:
    """Speak ``text`` with the Pico voice of ``language``; float32 samples at 16 kHz."""
    if language not in VOICES:
        raise DasrError(f"unknown pico voice {language!r}: choose from {', '.join(VOICES)}")
    pico = ctypes.CDLL(str(library))
    memory = ctypes.create_string_buffer(MEMORY_BYTES)
    system = ctypes.c_void_p()
    _check(pico.pico_initialize(memory, MEMORY_BYTES, ctypes.byref(system)), "initialize")
    resources, engine = [], ctypes.c_void_p()
    try:
        voice = b"dasr"
        _check(pico.pico_createVoiceDefinition(system, voice), "createVoiceDefinition")
        for file in VOICES[language]:
            resource, name = ctypes.c_void_p(), ctypes.create_string_buffer(200)
            _check(pico.pico_loadResource(system, str(lang_dir / file).encode(), ctypes.byref(resource)), file)
            resources.append(resource)
            _check(pico.pico_getResourceName(system, resource, name), "getResourceName")
            _check(pico.pico_addResourceToVoiceDefinition(system, voice, name.value), "addResource")
        _check(pico.pico_newEngine(system, voice, ctypes.byref(engine)), "newEngine")
        return _speak(pico, engine, text.encode() + b"\0")
    finally:
        if engine.value:
            pico.pico_disposeEngine(system, ctypes.byref(engine))
        for resource in reversed(resources):
            pico.pico_unloadResource(system, ctypes.byref(resource))
        pico.pico_terminate(ctypes.byref(system))


def _speak(pico: ctypes.CDLL, engine: ctypes.c_void_p, data: bytes) -> np.ndarray:
    """Feed the zero-terminated text and collect the samples until the engine is idle."""
    out = bytearray()
    buffer, received, kind, put = (
        ctypes.create_string_buffer(4096),
        ctypes.c_int16(),
        ctypes.c_int16(),
        ctypes.c_int16(),
    )
    offset = 0
    while offset < len(data):
        chunk = data[offset : offset + CHUNK]
        _check(pico.pico_putTextUtf8(engine, chunk, len(chunk), ctypes.byref(put)), "putTextUtf8")
        offset += put.value
        while True:
            status = pico.pico_getData(engine, buffer, len(buffer), ctypes.byref(received), ctypes.byref(kind))
            out += buffer.raw[: received.value]
            if status != STEP_BUSY:
                break
        if status != STEP_IDLE:
            raise DasrError(f"pico: getData failed with status {status}")
    return np.frombuffer(bytes(out), dtype="<i2").astype(np.float32) / 32768.0
