"""The row a user would try first: pocketsphinx 5.1.1 (PyPI), whose wheel bundles an en-us acoustic
model, dictionary and LM trained on real speech. One decoder, one thread, its defaults.

Used by `dasr bench real-speech --recipes` beside dasr's models; the hypotheses are normalised as
dasr's references are (:func:`dasr.data.text.normalize`).
"""

from __future__ import annotations

from importlib import metadata

import numpy as np

from dasr.data import audio
from dasr.data.manifest import Utterance
from dasr.data.text import normalize
from dasr.extras import require

RATE = 16000


def version() -> str:
    """The installed pocketsphinx's version."""
    return metadata.version("pocketsphinx")


def transcribe(utterances: list[Utterance]) -> dict[str, str]:
    """Each utterance's normalised hypothesis by pocketsphinx's default en-us model and LM."""
    decoder = require("pocketsphinx", "lab", "the pocketsphinx baseline").Decoder(loglevel="FATAL")
    out = {}
    for utt in utterances:
        samples = audio.load(utt.audio, utt.start, utt.end, target_rate=RATE)
        pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        out[utt.id] = normalize(hyp.hypstr if hyp is not None else "")
    return out
