"""The pocketsphinx 5.1.1 baseline of `dasr bench real-speech`: its default en-us model on the cards clips."""

from __future__ import annotations

from pathlib import Path

import pytest

from dasr.data.manifest import import_kaldi
from dasr.data.text import normalize
from dasr.decode import real_speech
from dasr.decode.score import score

pytest.importorskip("pocketsphinx")
if not (real_speech.TESTDATA / "cards").is_dir():
    pytest.skip("pocketsphinx-testdata is not installed", allow_module_level=True)


def test_pocketsphinx_reads_the_cards_clips_as_the_row_a_user_tries_first(tmp_path):
    from lab.bench import pocketsphinx_row

    cards = [c for c in real_speech.clips() if c[0] == "cards"]
    utts, rejected = import_kaldi(real_speech.write_kaldi_dir(cards, Path(tmp_path)))
    assert len(utts) == 5 and not len(rejected)
    hyps = pocketsphinx_row.transcribe(utts)
    refs = {u.id: normalize(u.text) for u in utts}
    assert score(refs, hyps)["wer"] < 0.5  # garbage audio (wrong sample format or rate) scores near 100 %
    assert any(hyps[i] == refs[i] for i in refs)
    assert pocketsphinx_row.version().startswith("5.")
