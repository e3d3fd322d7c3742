"""Speaker and channel variety for synthesized speech, drawn per utterance from a seed.

:func:`draw` picks one utterance's :class:`Augmentation` from a :class:`random.Random`;
:func:`apply` makes it, in the order sound takes: the speaker (pitch and formants, tempo), the
room (reverberation), the background (noise), the line (telephone band and codec).

- Pitch and formants move together by ``semitones`` with sox's ``pitch`` effect (WSOLA time
  stretch + resampling), as between a smaller and a larger vocal tract; the duration is kept.
- ``tempo`` speeds speech up or slows it down with sox's ``tempo`` (WSOLA), keeping the pitch.
- Reverberation convolves with the impulse response of a simulated shoebox room
  (pyroomacoustics' image-source model), its walls' absorption set by Sabine's formula for its
  RT60; the output is aligned on the direct path and keeps the input's length. The rooms form a
  fixed bank of ``ROOMS`` (sizes, RT60 0.15-0.6 s, talker and microphone places) from which each
  utterance draws one: simulating a room takes up to a second, and a bank computes each once.
- Noise is white or pink (1/f power) here, or babble that the caller makes from other voices,
  mixed at a drawn SNR.
- The telephone channel resamples to 8 kHz (nothing above 4 kHz survives), keeps the 300-3400 Hz
  band, codes every sample with G.711 mu-law at 8 bits and returns to 16 kHz.

Everything random comes from the ``random.Random`` given to :func:`draw` and from the noise
seed drawn there, so the same seed gives the same audio bytes. The drawn values go into the
manifest's ``extra`` (:meth:`Augmentation.extra`).
"""

from __future__ import annotations

import functools
import math
import random
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from dasr.data import audio
from dasr.errors import DasrError
from dasr.extras import require

SEMITONES = (-3.0, 3.0)  # per-utterance pitch and formant jitter around the voice's own shift
TEMPO = (0.85, 1.15)
ROOM_FRACTION = 0.3
ROOMS = 48  # a bank of simulated rooms, drawn per utterance: each impulse response is computed once per process
ROOM_BANK_SEED = 17
RT60_S = (0.15, 0.6)
ROOM_M = ((4.0, 9.0), (3.0, 7.0), (2.5, 3.5))  # length, width, height ranges
WALL_MARGIN_M = 0.5
NOISE_FRACTION = 0.5
NOISE_KINDS = ("white", "pink", "babble")
SNR_DB = (10.0, 30.0)
TELEPHONE_FRACTION = 0.2
TELEPHONE_RATE = 8000
TELEPHONE_BAND_HZ = (300.0, 3400.0)
MU = 255
SOX_TIMEOUT_S = 120


@dataclass(frozen=True)
class Room:
    """A shoebox room: its size, reverberation time, and where the talker and the microphone stand (metres)."""

    size: tuple[float, float, float]
    rt60_s: float
    source: tuple[float, float, float]
    mic: tuple[float, float, float]


@dataclass(frozen=True)
class Augmentation:
    """One utterance's speaker and channel changes (see the module docstring)."""

    semitones: float = 0.0
    tempo: float = 1.0
    room: Room | None = None
    noise: str | None = None
    snr_db: float | None = None
    telephone: bool = False
    noise_seed: int = 0

    def extra(self) -> dict:
        """The manifest's ``extra`` fields that record this augmentation."""
        return {
            "semitones": self.semitones,
            "tempo": self.tempo,
            "room": asdict(self.room) if self.room else None,
            "noise": self.noise,
            "snr_db": self.snr_db,
            "channel": "telephone-mulaw" if self.telephone else None,
        }


def _point(rng: random.Random, size: tuple[float, float, float]) -> tuple[float, float, float]:
    """A point inside the room, at least WALL_MARGIN_M from every wall."""
    x, y, z = (round(rng.uniform(WALL_MARGIN_M, side - WALL_MARGIN_M), 2) for side in size)
    return x, y, z


@functools.cache
def room_bank() -> tuple[Room, ...]:
    """The ROOMS rooms utterances are drawn from (sizes, RT60s, talker and microphone places), fixed."""
    rng = random.Random(ROOM_BANK_SEED)
    rooms = []
    for _ in range(ROOMS):
        width, depth, height = (round(rng.uniform(*r), 2) for r in ROOM_M)
        size = (width, depth, height)
        rooms.append(Room(size, round(rng.uniform(*RT60_S), 3), _point(rng, size), _point(rng, size)))
    return tuple(rooms)


def draw(rng: random.Random, semitones: float = 0.0, noise_kinds: tuple[str, ...] = NOISE_KINDS) -> Augmentation:
    """Draw one utterance's augmentation: pitch jitter on top of ``semitones``, tempo, room, noise, telephone."""
    shift = round(semitones + rng.uniform(*SEMITONES), 2)
    tempo = round(rng.uniform(*TEMPO), 3)
    room = rng.choice(room_bank()) if rng.random() < ROOM_FRACTION else None
    noise = rng.choice(noise_kinds) if rng.random() < NOISE_FRACTION else None
    snr_db = round(rng.uniform(*SNR_DB), 1) if noise else None
    telephone = rng.random() < TELEPHONE_FRACTION
    return Augmentation(shift, tempo, room, noise, snr_db, telephone, rng.getrandbits(63))


def sox(samples: np.ndarray, effects: list[str]) -> np.ndarray:
    """Run 16 kHz float32 mono samples through sox ``effects`` (no dither, so the output is deterministic)."""
    if shutil.which("sox") is None:
        raise DasrError("sox is not installed: run `make demo` (or `apt-get install sox`) first.")
    raw = ["-t", "f32", "-r", str(audio.TARGET_RATE), "-c", "1"]
    done = subprocess.run(
        ["sox", "-D", *raw, "-", *raw, "-", *effects],
        input=np.ascontiguousarray(samples, dtype=np.float32).tobytes(),
        capture_output=True,
        timeout=SOX_TIMEOUT_S,
    )
    if done.returncode != 0:
        raise DasrError(f"sox {' '.join(effects)} failed: {done.stderr.decode(errors='replace').strip()}")
    return np.frombuffer(done.stdout, dtype=np.float32).copy()


def speaker(samples: np.ndarray, semitones: float, tempo: float) -> np.ndarray:
    """Shift pitch and formants by ``semitones`` and change the tempo by ``tempo`` (sox pitch, tempo)."""
    effects = []
    if semitones:
        effects += ["pitch", str(round(100 * semitones))]
    if tempo != 1.0:
        effects += ["tempo", "-s", str(tempo)]
    return sox(samples, effects) if effects else samples


@functools.lru_cache(maxsize=ROOMS)
def room_impulse_response(room: Room) -> np.ndarray:
    """The impulse response from ``room.source`` to ``room.mic`` at 16 kHz (pyroomacoustics image sources)."""
    pra = require("pyroomacoustics", "augment", "reverberation (--augment)")

    absorption, max_order = pra.inverse_sabine(room.rt60_s, list(room.size))
    shoebox = pra.ShoeBox(
        list(room.size), fs=audio.TARGET_RATE, materials=pra.Material(absorption), max_order=max_order
    )
    shoebox.add_source(list(room.source))
    shoebox.add_microphone(list(room.mic))
    shoebox.compute_rir()
    return np.asarray(shoebox.rir[0][0], dtype=np.float64)


def reverberate(samples: np.ndarray, room: Room) -> np.ndarray:
    """Convolve with the room's impulse response, aligned on the direct path, keeping the length."""
    rir = room_impulse_response(room)
    delay = int(np.argmax(np.abs(rir)))
    signal = require("scipy.signal", "augment", "reverberation (--augment)")
    wet = signal.fftconvolve(samples.astype(np.float64), rir)
    return wet[delay : delay + len(samples)]


def colored_noise(kind: str, length: int, rng: np.random.Generator) -> np.ndarray:
    """White or pink (1/f power) Gaussian noise of ``length`` samples, not yet scaled."""
    white = rng.standard_normal(length)
    if kind == "white":
        return white
    if kind == "pink":
        spectrum = np.fft.rfft(white)
        spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum)), 1))
        return np.fft.irfft(spectrum, length)
    raise ValueError(f"unknown noise kind {kind!r}: white or pink (babble comes from the caller)")


def add_noise(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech`` plus ``noise`` scaled to ``snr_db`` dB below the speech's power."""
    gain = math.sqrt(np.mean(speech**2) / (max(np.mean(noise**2), 1e-20) * 10 ** (snr_db / 10)))
    return speech + gain * noise


def telephone(samples: np.ndarray) -> np.ndarray:
    """A telephone line: 8 kHz, 300-3400 Hz, G.711 mu-law at 8 bits, back at 16 kHz (level kept)."""
    narrow = audio.resample(samples.astype(np.float32), audio.TARGET_RATE, TELEPHONE_RATE).astype(np.float64)
    signal = require("scipy.signal", "augment", "the telephone channel (--augment)")
    band = signal.butter(4, TELEPHONE_BAND_HZ, btype="bandpass", fs=TELEPHONE_RATE, output="sos")
    narrow = signal.sosfilt(band, narrow)
    peak = max(float(np.max(np.abs(narrow))), 1e-9)
    x = narrow / peak
    coded = np.round((np.sign(x) * np.log1p(MU * np.abs(x)) / math.log1p(MU) + 1) / 2 * MU)  # 8-bit codes 0..255
    y = coded / MU * 2 - 1
    decoded = np.sign(y) * ((1 + MU) ** np.abs(y) - 1) / MU * peak
    wide = audio.resample(decoded.astype(np.float32), TELEPHONE_RATE, audio.TARGET_RATE).astype(np.float64)
    return np.pad(wide[: len(samples)], (0, max(0, len(samples) - len(wide))))


def apply(
    samples: np.ndarray,
    aug: Augmentation,
    babble: Callable[[int, np.random.Generator], np.ndarray] | None = None,
) -> np.ndarray:
    """Make ``aug`` on 16 kHz samples; ``babble(length, rng)`` supplies babble noise. Returns float64 samples."""
    out = speaker(samples, aug.semitones, aug.tempo).astype(np.float64)
    if aug.room is not None:
        out = reverberate(out, aug.room)
    if aug.noise is not None:
        rng = np.random.default_rng(aug.noise_seed)
        if aug.noise == "babble":
            if babble is None:
                raise ValueError("babble noise needs a babble(length, rng) source")
            noise = babble(len(out), rng)
        else:
            noise = colored_noise(aug.noise, len(out), rng)
        assert aug.snr_db is not None, "a noisy augmentation draws its SNR with its noise"
        out = add_noise(out, noise, aug.snr_db)
    if aug.telephone:
        out = telephone(out)
    return out
