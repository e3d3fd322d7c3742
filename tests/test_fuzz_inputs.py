"""Property-based fuzzing of the input paths: only results, rejection records or DataError, never a
traceback; no wav.scp pipe runs without allow_pipes. (`dasr bench reliability` runs 10,000 cases.)"""

import numpy as np
import pytest
import soundfile

from dasr.data import audio
from lab.bench import fuzz


@pytest.mark.parametrize("target", fuzz.TARGETS)
def test_hostile_inputs_give_only_documented_errors(target, tmp_path):
    tally = fuzz.fuzz(target, 75, tmp_path, seed=0, raise_errors=True)
    assert tally.cases >= 75 and tally.tracebacks == 0


def test_fuzzer_counts_an_unexpected_exception_as_a_traceback(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise KeyError("deep inside")

    monkeypatch.setattr(fuzz, "read_manifest", broken)
    tally = fuzz.fuzz("manifest", 5, tmp_path)
    assert tally.cases == tally.tracebacks >= 5 and "KeyError" in tally.examples[0]


def test_a_header_claiming_billions_of_frames_costs_only_the_real_ones(tmp_path):
    """Found by fuzzing: a mutated ogg claimed 9.5e9 frames and load() tried to allocate 35 GiB."""
    path = tmp_path / "a.wav"
    audio.write(path, np.zeros(16000, dtype=np.float32))
    with soundfile.SoundFile(path) as f:
        assert audio._read_frames(f, 10**12).shape == (16000, 1)
