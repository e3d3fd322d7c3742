"""CTC greedy and lexicon beam decoding (flashlight-text + KenLM), and WER/CER scoring."""

import json

import pytest
import torch

from dasr.data.tokenizer import BpeTokenizer, CharTokenizer
from dasr.decode.ctc import LexiconBeamDecoder, greedy_decode, tune_lm_weights, word_alignment
from dasr.decode.score import score, write_report
from dasr.errors import DasrError

# "call" is far likelier before "mom" than before "mum" (log10 probabilities)
BIGRAM_ARPA = "\n".join(
    [
        "\\data\\",
        "ngram 1=6",
        "ngram 2=5",
        "",
        "\\1-grams:",
        "-1.0\t<unk>\t0",
        "-99\t<s>\t-0.3",
        "-1.0\t</s>\t0",
        "-0.6\tcall\t-0.3",
        "-0.8\tmom\t-0.3",
        "-0.8\tmum\t-0.3",
        "",
        "\\2-grams:",
        "-0.05\t<s> call",
        "-0.05\tcall mom",
        "-2.0\tcall mum",
        "-0.1\tmom </s>",
        "-0.1\tmum </s>",
        "",
        "\\end\\",
        "",
    ]
)


def emissions(vocab_size: int, frames: list[dict[int, float]], floor: float = 1e-4) -> torch.Tensor:
    """(T, V) log-probs: each frame gives some units a probability, the rest share ``floor``."""
    rows = []
    for frame in frames:
        row = torch.full((vocab_size,), floor)
        for unit, p in frame.items():
            row[unit] = p
        rows.append(row / row.sum())
    return torch.stack(rows).log()


def clean_frames(ids: list[int], repeat: int = 2) -> list[dict[int, float]]:
    """Each unit held for ``repeat`` frames, then a blank frame (so doubled letters survive)."""
    frames = []
    for i in ids:
        frames += [{i: 1.0}] * repeat + [{0: 1.0}]
    return frames


@pytest.fixture
def char_tok():
    return CharTokenizer()


def test_greedy_collapses_repeats_and_drops_blanks(char_tok):
    u = {c: char_tok.units.index(c) for c in "cal|mo"}
    # c c _ a l l _ l | m o o _ m -> "call mom"
    path = [u["c"], u["c"], 0, u["a"], u["l"], u["l"], 0, u["l"], u["|"], u["m"], u["o"], u["o"], 0, u["m"]]
    lp = emissions(char_tok.vocab_size, [{i: 1.0} for i in path])
    second = torch.cat([emissions(char_tok.vocab_size, [{u["m"]: 1.0}]), lp[1:]])  # "m", then padding
    batch = torch.stack([lp, second])
    assert greedy_decode(batch, torch.tensor([len(path), 1]), char_tok) == ["call mom", "m"]


def test_lexicon_beam_without_lm_decodes_clean_emissions(char_tok):
    lp = emissions(char_tok.vocab_size, clean_frames(char_tok.encode("call mom now")))
    decoder = LexiconBeamDecoder(char_tok, ["call", "mom", "mum", "now", "no"], arpa_path=None)
    assert decoder.decode(lp) == "call mom now"
    short = emissions(char_tok.vocab_size, clean_frames(char_tok.encode("call")))
    batch = torch.stack([lp, torch.cat([short, lp[short.shape[0] :]])])  # "call", then padding
    assert decoder.decode_batch(batch, torch.tensor([lp.shape[0], short.shape[0]])) == ["call mom now", "call"]
    assert decoder.decode(lp[:0]) == ""


def test_the_last_word_needs_no_boundary_from_the_model(char_tok):
    """A model whose targets end without '|' gives the boundary ~0 after the last word: it is still decoded."""
    lp = emissions(char_tok.vocab_size, clean_frames(char_tok.encode("call mom now")), floor=1e-12)
    decoder = LexiconBeamDecoder(char_tok, ["call", "mom", "mum", "now", "no"], arpa_path=None)
    assert decoder.decode(lp) == "call mom now"  # before the end frame: "call mom"
    text, path = decoder.decode_path(lp)
    assert len(path) == lp.shape[0]  # the path covers the model's frames only


def ambiguous_call_mom(tok) -> torch.Tensor:
    """ "call mom" whose 'o' sounds a bit more like 'u': greedy reads "call mum"."""
    u = {c: tok.units.index(c) for c in "calmou|"}
    frames = clean_frames([u[c] for c in "call|m"])
    frames += [{u["u"]: 0.55, u["o"]: 0.45}] * 2 + [{0: 1.0}]
    frames += clean_frames([u["m"]])
    return emissions(tok.vocab_size, frames)


def test_lm_beam_beats_greedy(char_tok, tmp_path):
    arpa = tmp_path / "bigram.arpa"
    arpa.write_text(BIGRAM_ARPA)
    lp = ambiguous_call_mom(char_tok)
    ref = {"u": "call mom"}
    greedy = greedy_decode(lp[None], torch.tensor([lp.shape[0]]), char_tok)[0]
    no_lm = LexiconBeamDecoder(char_tok, ["call", "mom", "mum"], arpa_path=None).decode(lp)
    with_lm = LexiconBeamDecoder(char_tok, ["call", "mom", "mum"], str(arpa), lm_weight=1.0).decode(lp)
    assert greedy == no_lm == "call mum"
    assert score(ref, {"u": greedy})["wer"] == 0.5
    assert with_lm == "call mom"
    assert score(ref, {"u": with_lm})["wer"] == 0.0


def test_tune_lm_weights_finds_a_weight_that_uses_the_lm(char_tok, tmp_path):
    arpa = tmp_path / "bigram.arpa"
    arpa.write_text(BIGRAM_ARPA)
    decoder = LexiconBeamDecoder(char_tok, ["call", "mom", "mum"], str(arpa), lm_weight=0.0)
    dev = [(ambiguous_call_mom(char_tok), "call mom")]
    result = tune_lm_weights(decoder, dev, lm_weights=(0.0, 1.0), word_scores=(0.0, 1.0))
    assert [(w, s) for w, s, _ in result.table] == [(0.0, 0.0), (0.0, 1.0), (1.0, 0.0), (1.0, 1.0)]
    assert result.table[0][2] == 0.5
    assert (result.lm_weight, result.wer) == (1.0, 0.0)
    assert decoder.lm_weight == 0.0 and decoder.decode(dev[0][0]) == "call mum"


def test_bpe_tokenizer_with_lexicon_decoder(tmp_path):
    texts = ["call mom now", "call the office", "the mom is now at home", "office hours at home"] * 5
    tok = BpeTokenizer.train(texts, tmp_path / "bpe", vocab_size=40)
    words = sorted({w for t in texts for w in t.split()})
    lp = emissions(tok.vocab_size, clean_frames(tok.encode("call the mom at home")))
    decoder = LexiconBeamDecoder(tok, words, arpa_path=None)
    assert decoder.decode(lp) == "call the mom at home"
    # one-frame spikes, words back to back with no blank between them
    peaky = emissions(tok.vocab_size, [{i: 1.0} for i in tok.encode("the office now")] + [{0: 1.0}])
    assert decoder.decode(peaky) == "the office now"


def test_bad_lexicon_or_lm_is_an_error(char_tok):
    with pytest.raises(DasrError):
        LexiconBeamDecoder(char_tok, ["call", "c3po"], arpa_path=None)
    with pytest.raises(DasrError):
        LexiconBeamDecoder(char_tok, [""], arpa_path=None)
    with pytest.raises(DasrError):
        LexiconBeamDecoder(char_tok, ["call"], arpa_path="/nonexistent/lm.arpa")


def test_score_known_example():
    refs = {"a": "the cat sat", "b": "on the mat", "c": "hello"}
    hyps = {"a": "the bat sat down", "b": "on mat"}  # c missing: one deletion
    s = score(refs, hyps)
    # words: a 1 sub + 1 ins, b 1 del, c 1 del -> 4 errors / 7 words
    assert (s["substitutions"], s["deletions"], s["insertions"]) == (1, 2, 1)
    assert (s["num_words"], s["num_utts"]) == (7, 3)
    assert s["wer"] == pytest.approx(4 / 7)
    # chars: a "the cat sat"(11) -> "the bat sat down": 1 sub + 5 ins; b "on the mat"(10) -> "on mat":
    # 4 del; c "hello"(5): 5 del -> 15 / 26
    assert s["cer"] == pytest.approx(15 / 26)


def test_score_empty_references():
    assert score({"a": ""}, {"a": ""})["wer"] == 0.0
    assert score({"a": ""}, {"a": "x"})["wer"] == 1.0
    assert score({}, {})["num_utts"] == 0


def test_write_report(tmp_path):
    refs = {"u2": "call mom now", "u1": "hello world"}
    hyps = {"u2": "call mum now please"}
    s = write_report(refs, hyps, tmp_path / "report")
    report = tmp_path / "report"
    wer = json.loads((report / "wer.json").read_text())
    assert {"wer", "cer", "num_words"} <= wer.keys() and wer == s
    assert wer["wer"] == pytest.approx(4 / 5)
    assert (report / "ref.txt").read_text() == "u1 hello world\nu2 call mom now\n"
    assert (report / "hyp.txt").read_text() == "u1\nu2 call mum now please\n"
    lines = (report / "alignments.txt").read_text().splitlines()
    u2 = lines[lines.index("id: u2") :]
    assert u2[1].split() == ["REF:", "call", "MOM", "now", "***"]
    assert u2[2].split() == ["HYP:", "call", "MUM", "now", "PLEASE"]
    assert u2[3] == "Scores: (#C #S #D #I) 2 1 0 1"
    u1 = lines[lines.index("id: u1") :]
    assert u1[1:4] == ["REF: HELLO WORLD", "HYP: ***   ***", "Scores: (#C #S #D #I) 0 0 2 0"]


def test_word_alignment_gives_each_word_its_frames(char_tok, tmp_path):
    # characters: "call mom" held 2 frames per unit + a blank, after 3 frames of silence
    frames = [{0: 1.0}] * 3 + clean_frames(char_tok.encode("call mom"))
    path = emissions(char_tok.vocab_size, frames).argmax(-1).tolist()
    assert word_alignment(path, char_tok) == [("call", 3, 3 + 3 * 4 - 1), ("mom", 3 + 3 * 5, 3 + 3 * 8 - 1)]
    # the beam's path: the same words, each ending where its last unit ends
    decoder = LexiconBeamDecoder(char_tok, ["call", "mom", "now"], arpa_path=None)
    text, beam_path = decoder.decode_path(emissions(char_tok.vocab_size, frames))
    assert text == "call mom" and word_alignment(beam_path, char_tok, text) == word_alignment(path, char_tok)
    # only the words of the text, in order: a path may end inside a word the search never emitted
    assert word_alignment(path, char_tok, "mom") == [("mom", 18, 26)]
    # BPE: a word starts at a "▁" piece; the same piece twice after a blank is two words
    texts = ["call mom now", "call the office", "the mom is now at home", "office hours at home"] * 5
    bpe = BpeTokenizer.train(texts, tmp_path / "bpe", vocab_size=40)
    ids = bpe.encode("call call the office")
    path = [u for i in ids for u in (i, i, bpe.blank)]  # each piece 2 frames, then a blank
    aligned = word_alignment(path, bpe)
    assert [w for w, _, _ in aligned] == ["call", "call", "the", "office"]
    starts = [3 * k for k, i in enumerate(ids) if bpe.units[i].startswith("\u2581")]
    assert [start for _, start, _ in aligned] == starts and aligned[-1][2] == len(path) - 1
