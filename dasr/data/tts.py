"""Offline speech synthesizers behind one call: espeak-ng, flite, festival and the optional natural engines.

A voice is named ``engine:name`` (``espeak:en-gb+f3``, ``flite:slt``, ``festival:kal_diphone``);
:func:`speak` returns its speech as float32 samples at 16 kHz. espeak-ng's formant voices are
far from human speech; flite's and festival's are made from recordings of people (diphones,
clustergen or HTS models), the "natural" voices of the demo corpus. The natural voices come
from five people: kal (flite kal16 and festival kal_diphone), slt (flite slt and festival
cmu_us_slt_arctic_hts), awb, rms and ked. The optional engines of :mod:`dasr.data.tts_more` add
mbrola (us1, us2, us3, en1), rhvoice (alan, bdl, clb, slt, evgeniy-eng, lyubov), pico (en-US,
en-GB), festival's rab_diphone (engine ``rab``) and piper's joe.
"""

from __future__ import annotations

import atexit
import io
import select
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from dasr.data import audio, tts_more
from dasr.errors import DasrError

_DONE = "@@dasr-done"

#: engine -> (program it runs, Debian packages that provide it and its voices)
ENGINES = {
    "espeak": ("espeak-ng", "espeak-ng"),
    "flite": ("flite", "flite"),
    "festival": ("festival", "festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts"),
    **{engine: ("", packages) for engine, packages in tts_more.PACKAGES.items()},
    "piper": ("", "pip install 'dasr[voices]'"),
}
#: the natural voices of each engine (flite's awb_time speaks only clock times, so it is left out)
NATURAL_VOICES = {
    "flite": ("kal16", "awb", "rms", "slt"),
    "festival": ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts"),
    **tts_more.VOICES,  # after the first ones: the voice grid of existing corpora stays as it was
}
TIMEOUT_S = 120


def check_engines(engines: tuple[str, ...]) -> None:
    """Raise a DasrError naming the package to install when an engine is unknown or not installed."""
    for engine in engines:
        if engine not in ENGINES:
            raise DasrError(f"unknown speech engine {engine!r}: choose from {', '.join(ENGINES)}")
        program, packages = ENGINES[engine]
        if not program:
            reason = tts_more.missing(engine)
            if reason:
                raise DasrError(reason)
        elif shutil.which(program) is None:
            raise DasrError(
                f"{program} ({engine}) is not installed: run `make demo` (or `apt-get install {packages}`) first."
            )


def _run(command: list[str], voice: str, stdin: bytes | None = None) -> bytes:
    """Run a synthesizer; return its stdout or raise a DasrError naming the voice."""
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DasrError(f"{command[0]} took over {TIMEOUT_S} s for voice {voice}") from None
    if done.returncode != 0:
        raise DasrError(f"{command[0]} failed for voice {voice}: {done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def _read_wav(data: bytes, voice: str) -> np.ndarray:
    """A synthesizer's WAV bytes as float32 mono at 16 kHz."""
    if not data:
        raise DasrError(f"voice {voice} produced no audio")
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    return audio.resample(samples, rate, audio.TARGET_RATE)


def espeak(text: str, voice: str, rate_wpm: int, pitch: int) -> tuple[np.ndarray, int]:
    """espeak-ng's speech of ``text`` at its own rate (22,050 Hz) and that rate, for speed changes."""
    data = _run(["espeak-ng", "-v", voice, "-s", str(rate_wpm), "-p", str(pitch), "--stdout", text], voice)
    if not data:
        raise DasrError(f"voice {voice} produced no audio")
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    return samples, rate


class _Festival:
    """One festival process per voice, kept running: loading festival and a voice takes 0.3-2 s, longer
    than speaking a sentence. It reads Scheme on stdin (``festival --pipe``, as text2wave does)
    and writes 16 kHz WAV files; a marker line on stdout says each one is complete."""

    running: dict[str, _Festival] = {}

    def __init__(self, name: str, setup: str = "") -> None:
        self.name = name
        self.dir = tempfile.TemporaryDirectory(prefix="dasr-festival-")
        self.process = subprocess.Popen(
            ["festival", "--pipe"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._send(f"{setup}(voice_{name})")

    def _send(self, scheme: str) -> None:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f'{scheme}\n(format t "{_DONE}\\n")\n(fflush nil)\n')
        self.process.stdin.flush()
        while True:
            ready, _, _ = select.select([self.process.stdout], [], [], TIMEOUT_S)
            line = self.process.stdout.readline() if ready else ""
            if not line:
                self.close()
                raise DasrError(f"festival voice {self.name} stopped answering (is festvox for it installed?)")
            if line.strip() == _DONE:
                return

    def speak(self, text: str) -> np.ndarray:
        out = Path(self.dir.name) / "out.wav"
        out.unlink(missing_ok=True)
        quoted = text.replace("\\", " ").replace('"', " ")
        self._send(f'(utt.save.wave (utt.wave.resample (SynthText "{quoted}") 16000) "{out}" \'riff)')
        return _read_wav(out.read_bytes() if out.exists() else b"", f"festival:{self.name}")

    def close(self) -> None:
        self.running.pop(self.name, None)
        if self.process.stdin:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.dir.cleanup()

    @classmethod
    def voice(cls, name: str, setup: str = "") -> _Festival:
        if name not in cls.running:
            cls.running[name] = cls(name, setup)
        return cls.running[name]

    @classmethod
    def close_all(cls) -> None:
        for festival in list(cls.running.values()):
            festival.close()


atexit.register(_Festival.close_all)


def speak(voice: str, text: str) -> np.ndarray:
    """Speak ``text`` with a voice ``engine:name`` of any engine in ENGINES; 16 kHz float32."""
    engine, _, name = voice.partition(":")
    if engine == "espeak":
        samples, rate = espeak(text, name, 160, 50)
        return audio.resample(samples, rate, audio.TARGET_RATE)
    if engine == "flite":
        with tempfile.TemporaryDirectory(prefix="dasr-flite-") as tmp:
            out = Path(tmp) / "out.wav"
            _run(["flite", "-voice", name, "-f", "/dev/stdin", "-o", str(out)], voice, text.encode())
            return _read_wav(out.read_bytes() if out.exists() else b"", voice)
    if engine == "festival":
        return _Festival.voice(name).speak(text)
    if engine == "rab":
        return _Festival.voice(name, tts_more.rab_setup()).speak(text)
    if engine in tts_more.VOICES:
        samples, rate = tts_more.speak(engine, name, text)
        return audio.resample(samples, rate, audio.TARGET_RATE)
    raise DasrError(f"unknown speech engine in voice {voice!r}: choose from {', '.join(ENGINES)}")
