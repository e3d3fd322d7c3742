"""The optional natural engines: one sentence from each engine available here, and the message of a missing one.

Debian's engines count as available when installed or unpacked in the private cache named by
``$DASR_DEB_CACHE`` (`dasr corpus synth --fetch` makes one); piper when its PyPI packages are installed.
"""

from __future__ import annotations

import numpy as np
import pytest

from dasr.data import synth, tts, tts_more
from dasr.errors import DasrError

# piper loads a 60 MB network (about 10 s here): slow
VOICES = [
    pytest.param(engine, name, marks=[pytest.mark.slow] if engine == "piper" else [])
    for engine, names in tts_more.VOICES.items()
    for name in names
]


@pytest.mark.parametrize(("engine", "name"), VOICES)
def test_each_available_voice_speaks_a_sentence(engine, name):
    if tts_more.missing(engine):
        pytest.skip(tts_more.missing(engine))
    samples = tts.speak(f"{engine}:{name}", "Open the garage door.")
    seconds = len(samples) / 16000
    assert samples.dtype == np.float32 and 0.7 < seconds < 4.0, seconds
    loud = np.abs(samples) > 0.05 * np.abs(samples).max()
    assert loud.mean() > 0.2  # speech, not a click or silence


def test_a_missing_engine_is_one_sentence_naming_its_packages(tmp_path, monkeypatch):
    monkeypatch.setenv(tts_more.CACHE_ENV, str(tmp_path))
    tts_more._locate.cache_clear()
    try:
        missing = [e for e in tts_more.PACKAGES if tts_more.missing(e)]
        if not missing:
            pytest.skip("every Debian engine is installed on this machine")
        engine = missing[0]
        with pytest.raises(DasrError) as error:
            tts.check_engines((engine,))
        message = str(error.value)
        assert message.count(". ") == 0 and message.endswith(".")
        assert tts_more.PACKAGES[engine] in message and "--fetch" in message
    finally:
        tts_more._locate.cache_clear()


def test_natural_voice_names_with_hyphens_round_trip():
    for split in ("train", "dev", "test"):
        for voice in synth.voices(split, seed=0, engines=("mbrola", "rhvoice", "pico", "rab", "piper")):
            base, shift = synth._parse_voice(voice)
            assert base in synth.NATURAL and synth._natural_name(base, shift) == voice
    train = synth.voices("train", seed=0, engines=("rhvoice",))
    assert any(v.startswith("rhvoice:evgeniy-eng") for v in train)
