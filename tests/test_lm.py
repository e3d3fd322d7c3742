"""Kneser-Ney n-gram estimation checked by hand, by normalisation, via ARPA and via KenLM."""

import math
import random

import pytest

from dasr.decode.lm import BOS, EOS, UNK, NgramLM, estimate, read_arpa
from dasr.errors import DasrError

# Tokens: <s> a b </s> (twice), <s> c b a </s>, <s> d b </s>, <s> b c </s>.
TOY = ["a b", "c b a", "d b", "b c", "a b", ""]

# Unigram continuation counts (distinct left neighbours), the same for orders 2 and 3:
#   a {<s>, b} = 2, b {<s>, a, c, d} = 4, c {<s>, b} = 2, d {<s>} = 1, </s> {a, b, c} = 3
#   total 12; n1 = 1, n2 = 2, n3 = 1, n4 = 1 -> Y = 1 / (1 + 2*2) = 0.2
#   D1 = 1 - 2*0.2*2/1 = 0.2, D2 = 2 - 3*0.2*1/2 = 1.7, D3+ = 3 - 4*0.2*1/1 = 2.2
#   gamma() = (0.2*1 + 1.7*2 + 2.2*2) / 12 = 2/3; uniform over {a b c d </s> <unk>} = 1/6
P1 = {
    "a": (2 - 1.7) / 12 + (2 / 3) / 6,  # 0.136111
    "b": (4 - 2.2) / 12 + (2 / 3) / 6,  # 0.261111
    "c": (2 - 1.7) / 12 + (2 / 3) / 6,
    "d": (1 - 0.2) / 12 + (2 / 3) / 6,  # 0.177778
    EOS: (3 - 2.2) / 12 + (2 / 3) / 6,
    UNK: (2 / 3) / 6,  # only the interpolated mass
}


def close(lm: NgramLM, word: str, context: tuple[str, ...], expected: float) -> None:
    assert 10 ** lm.logprob(word, context) == pytest.approx(expected, abs=1e-6)


def test_unigrams_by_hand():
    lm = estimate(TOY, order=2)
    for word, p in P1.items():
        close(lm, word, (), p)
    assert sum(P1.values()) == pytest.approx(1.0)
    assert lm.logprob(BOS, ()) == -99.0


def test_bigram_model_by_hand():
    lm = estimate(TOY, order=2)
    # Raw bigram counts: <s> a 2, a b 2, b </s> 3, the 9 others 1.
    # n1 = 9, n2 = 2, n3 = 1, n4 = 0 -> Y = 9/13
    d1, d2, d3 = 1 - 2 * (9 / 13) * 2 / 9, 2 - 3 * (9 / 13) * 1 / 2, 3.0  # 9/13, 25/26, 3
    # context <s>: <s> a 2, <s> b 1, <s> c 1, <s> d 1 -> total 5
    gamma_bos = (d2 + 3 * d1) / 5  # 79/130
    close(lm, "a", (BOS,), (2 - d2) / 5 + gamma_bos * P1["a"])  # 0.290406
    # context b: b </s> 3, b a 1, b c 1 -> total 5
    gamma_b = (d3 + 2 * d1) / 5  # 57/65
    close(lm, EOS, ("b",), (3 - d3) / 5 + gamma_b * P1[EOS])  # 0.155897
    close(lm, "a", ("b",), (1 - d1) / 5 + gamma_b * P1["a"])  # 0.180897
    close(lm, "d", ("b",), gamma_b * P1["d"])  # unseen: backoff
    # context a: a b 2, a </s> 1 -> total 3
    gamma_a = (d2 + d1) / 3  # 43/78
    close(lm, "b", ("a",), (2 - d2) / 3 + gamma_a * P1["b"])  # 0.490100
    assert lm.ngrams[0][("a",)][1] == pytest.approx(math.log10(gamma_a))


def test_trigram_model_by_hand():
    lm = estimate(TOY, order=3)
    # Trigrams (raw): <s> a b 2, a b </s> 2, the 7 others 1: n3 = 0 -> fallback 0.5, 1, 1.5.
    # Bigrams: <s> a 2, <s> b/c/d 1 (raw, they start with <s>); continuation counts
    #   b </s> {a, d} = 2, the 7 others 1: n3 = 0 -> fallback 0.5, 1, 1.5 as well.
    # bigram context <s>: total 5, gamma = (1 + 3*0.5)/5 = 0.5
    p_a_bos = (2 - 1) / 5 + 0.5 * P1["a"]  # 0.268056
    close(lm, "a", (BOS,), p_a_bos)
    # bigram context a: a b 1, a </s> 1 -> total 2, gamma = 0.5
    p_b_a = (1 - 0.5) / 2 + 0.5 * P1["b"]  # 0.380556
    # bigram context b: b </s> 2, b a 1, b c 1 -> total 4, gamma = (1 + 0.5 + 0.5)/4 = 0.5
    p_eos_b = (2 - 1) / 4 + 0.5 * P1[EOS]  # 0.338889
    p_a_b = (1 - 0.5) / 4 + 0.5 * P1["a"]  # 0.193056
    # trigram context <s> a: <s> a b 2 -> total 2, gamma = 1*1/2 = 0.5
    close(lm, "b", (BOS, "a"), (2 - 1) / 2 + 0.5 * p_b_a)  # 0.690278
    close(lm, "c", (BOS, "a"), 0.5 * 0.5 * P1["c"])  # backs off twice
    # trigram context a b: a b </s> 2 -> total 2, gamma 0.5
    close(lm, EOS, ("a", "b"), (2 - 1) / 2 + 0.5 * p_eos_b)  # 0.669444
    close(lm, "zzz", ("a", "b"), 0.5 * 0.5 * P1[UNK])  # OOV -> <unk>
    # trigram context c b: c b a 1 -> total 1, gamma 0.5
    close(lm, "a", ("c", "b"), (1 - 0.5) / 1 + 0.5 * p_a_b)  # 0.596528
    close(lm, "d", ("c", "b"), 0.5 * 0.5 * P1["d"])
    # a longer context uses only its last two words
    close(lm, EOS, ("d", "c", "a", "b"), (2 - 1) / 2 + 0.5 * p_eos_b)


def generated_corpus(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(30)]
    weights = [1 / (i + 1) for i in range(30)]
    return [" ".join(rng.choices(words, weights, k=rng.randint(1, 8))) for _ in range(n)]


def test_every_context_sums_to_one():
    lm = estimate(generated_corpus(300), order=3)
    words = sorted(lm.vocab - {BOS})
    assert EOS in words and UNK in words
    contexts = {()} | {gram for table in lm.ngrams[:-1] for gram in table}
    assert len(contexts) > 400
    for context in contexts:
        total = sum(10 ** lm.logprob(w, context) for w in words)
        assert total == pytest.approx(1.0, abs=1e-4), context


def test_arpa_round_trip(tmp_path):
    lm = estimate(generated_corpus(300), order=3)
    path = tmp_path / "lm.arpa"
    lm.write_arpa(path)
    text = path.read_text()
    assert text.startswith("\\data\\\nngram 1=") and text.endswith("\\end\\\n")
    assert "\\3-grams:" in text
    assert [p.name for p in tmp_path.iterdir()] == ["lm.arpa"]  # no temporary file left
    again = read_arpa(path)
    assert again.order == 3
    assert again.ngrams == lm.ngrams
    assert again.logprob("w1", (BOS, "w2")) == lm.logprob("w1", (BOS, "w2"))


def test_kenlm_agrees(tmp_path):
    from flashlight.lib.text.decoder.kenlm import KenLM
    from flashlight.lib.text.dictionary import Dictionary

    sentences = ["a b", "b a c d", "c zzz b", "a b c", "w0 w1 w2 w3", "w5 w0 a", "w9 w9 w0"]
    models = [("toy", 2, TOY), ("toy", 3, TOY)] + [("gen", k, generated_corpus(300)) for k in (3, 4, 5)]
    for name, order, corpus in models:
        lm = estimate(corpus, order=order)
        path = tmp_path / f"{name}{order}.arpa"
        lm.write_arpa(path)
        word_dict = Dictionary()  # holds words the model lacks too: KenLM scores them as <unk>
        for word in sorted(lm.vocab | {w for s in sentences for w in s.split()}):
            word_dict.add_entry(word)
        kenlm = KenLM(str(path), word_dict)
        for sentence in sentences:
            state = kenlm.start(False)
            history = (BOS,)
            for word in sentence.split():
                state, score = kenlm.score(state, word_dict.get_index(word))
                # flashlight passes KenLM's log10 score through unchanged
                assert score == pytest.approx(lm.logprob(word, history), abs=1e-5)
                history += (word,)
            state, score = kenlm.finish(state)
            assert score == pytest.approx(lm.logprob(EOS, history), abs=1e-5)


@pytest.mark.parametrize("order", [0, 6])
def test_bad_order(order):
    with pytest.raises(ValueError, match="order"):
        estimate(TOY, order=order)


def test_empty_corpus():
    with pytest.raises(ValueError, match="no words"):
        estimate(["", "   "], order=3)


def test_degenerate_counts_fall_back():
    # one sentence: every count is 1, so n2 = 0; fallback D1 = 0.5 everywhere
    lm = estimate(["a"], order=2)
    # unigrams: a {<s>} = 1, </s> {a} = 1; gamma = 2*0.5/2 = 0.5; uniform 1/3
    close(lm, "a", (), 0.5 / 2 + 0.5 / 3)
    # bigram <s> a 1: total 1, gamma 0.5
    close(lm, "a", (BOS,), 0.5 + 0.5 * (0.5 / 2 + 0.5 / 3))


def test_truncated_arpa(tmp_path):
    path = tmp_path / "lm.arpa"
    estimate(generated_corpus(50), order=3).write_arpa(path)
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[: len(lines) // 2]))
    with pytest.raises(DasrError, match=r"lm\.arpa: (line \d+|end of file)"):
        read_arpa(path)


def test_malformed_arpa_line(tmp_path):
    path = tmp_path / "bad.arpa"
    path.write_text("\\data\\\nngram 1=2\n\n\\1-grams:\n-1.0\t<unk>\nx\ta\n\n\\end\\\n")
    with pytest.raises(DasrError, match=r"bad\.arpa: line 6"):
        read_arpa(path)
    with pytest.raises(DasrError, match="cannot read"):
        read_arpa(tmp_path / "missing.arpa")
