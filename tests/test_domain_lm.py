"""`dasr lm --text FILE`: the LM and the decoder's lexicon from a domain's text (issue 17, 3)."""

import pytest

from dasr.cli import main
from dasr.decode.lm import read_arpa
from dasr.decode.lm_build import arpa_words, build_lm, lexicon_words
from dasr.errors import DasrError

TRAIN_WORDS = {"call", "mom", "set", "an", "alarm", "play", "some", "music", "turn", "on", "the", "light"}
TRAIN_WORDS |= {"what", "time", "is", "it"}


def test_domain_text_reaches_lm_and_lexicon(tiny_data_dir, tmp_path, capsys):
    assert lexicon_words(tiny_data_dir) == sorted(TRAIN_WORDS)  # no LM yet: the train transcripts' words
    assert main(["lm", "--data", str(tiny_data_dir), "--order", "2"]) == 0
    assert lexicon_words(tiny_data_dir) == sorted(TRAIN_WORDS)  # the LM's vocabulary: the same words

    domain = tmp_path / "domain.txt"
    domain.write_text("Dim the lights in the kitchen\n\nset the thermostat to twenty\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["lm", "--data", str(tiny_data_dir), "--order", "3", "--text", str(domain)]) == 0
    assert "3-gram LM" in capsys.readouterr().out
    new = {"dim", "lights", "in", "kitchen", "thermostat", "to", "twenty"}
    assert lexicon_words(tiny_data_dir) == sorted(TRAIN_WORDS | new)
    lm = read_arpa(tiny_data_dir / "lm.arpa")
    assert lm.vocab == frozenset(TRAIN_WORDS | new | {"<s>", "</s>", "<unk>"})
    # the domain's word sequence is an observed trigram now, far likelier than an unseen one
    seen = lm.logprob("thermostat", ("set", "the"))
    assert seen > lm.logprob("thermostat", ("call", "the")) + 0.5


def test_text_alone_without_train_transcripts(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    with pytest.raises(DasrError, match="no train.jsonl"):
        build_lm(data)
    domain = tmp_path / "domain.txt"
    domain.write_text("open the door\nclose the door\n", encoding="utf-8")
    path, lm = build_lm(data, order=2, text_file=domain)
    assert arpa_words(path) == ["close", "door", "open", "the"] == lexicon_words(data)


def test_bad_text_files_are_one_sentence_errors(tiny_data_dir, tmp_path, capsys):
    missing = tmp_path / "nothing.txt"
    assert main(["lm", "--data", str(tiny_data_dir), "--text", str(missing)]) == 1
    assert f"text file {missing} does not exist" in capsys.readouterr().err
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("caf\xe9 au lait\n".encode("latin-1"))
    assert main(["lm", "--data", str(tiny_data_dir), "--text", str(latin1)]) == 1
    assert "is not UTF-8 text" in capsys.readouterr().err
    not_arpa = tmp_path / "lm.arpa"
    not_arpa.write_text("hello\n")
    with pytest.raises(DasrError, match="no \\\\1-grams: section"):
        arpa_words(not_arpa)
