"""Scores of a trained model on recordings of real people: Debian's ``pocketsphinx-testdata``.

The package ships 10 transcribed 16 kHz recordings by two people:
``cards`` (5 card names, "eight of spades four of clubs ...") and ``librivox`` (5 sentences
of a LibriVox reading of *Sense and Sensibility*). They are written as a Kaldi data dir and
imported with :func:`dasr.data.manifest.import_kaldi` (what `dasr corpus import-kaldi` runs),
then decoded as a split ``real`` of a temporary data dir that borrows the model's data dir for
everything else: CMVN, dev (where the LM weights are tuned; never on the real clips), the
LM and its lexicon. The recordings are never trained on; their *sentences* may be in the
training text (:func:`sentences`, passed to ``synthesize_corpus(train_text=...)``),
as a user's domain text would be, so the LM has seen them: the greedy CER is the measure of
the acoustic model alone.

`dasr demo` ends with :func:`evaluate`; the lab's `dasr bench real-speech` compares models with it.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from dasr.errors import DasrError

TESTDATA = Path("/usr/share/pocketsphinx/test/data")
#: clip set -> its transcription file, relative to TESTDATA (lines "<s> text </s> (id)"; audio DIR/id.wav)
CLIP_SETS = {"cards": "cards/cards.transcription", "librivox": "librivox/transcription"}
SPLIT = "real"
BEAM = 300  # as `dasr decode`
_LINE = re.compile(r"<s>(?P<text>.*)</s>\s*\((?P<id>[^)]+)\)")


def clips(root: str | Path = TESTDATA) -> list[tuple[str, str, Path, str]]:
    """The transcribed recordings: (clip set, utterance id, wav path, text), in file order.

    Raises:
        DasrError: the package (or a transcription) is missing, or a line does not parse.
    """
    root = Path(root)
    out = []
    for name, relative in CLIP_SETS.items():
        path = root / relative
        if not path.is_file():
            raise DasrError(f"{path} is missing: install the recordings with `apt-get install pocketsphinx-testdata`")
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            match = _LINE.fullmatch(line.strip())
            if match is None:
                raise DasrError(f"{path}:{lineno}: expected '<s> text </s> (id)', got {line!r}")
            utt = match["id"]
            out.append((name, f"{name}-{utt}", path.parent / f"{utt}.wav", " ".join(match["text"].split())))
    return out


def sentences(root: str | Path = TESTDATA) -> list[str]:
    """The recordings' sentences (for the training text); empty when pocketsphinx-testdata is not installed."""
    try:
        return [text for _, _, _, text in clips(root)]
    except DasrError:
        return []


def write_kaldi_dir(recordings: list[tuple[str, str, Path, str]], out: Path) -> Path:
    """wav.scp, text and utt2spk (one speaker per clip set) of the recordings, in Kaldi's sorted order."""
    out.mkdir(parents=True, exist_ok=True)
    rows = sorted(recordings, key=lambda r: r[1])
    (out / "wav.scp").write_text("".join(f"{utt} {wav}\n" for _, utt, wav, _ in rows))
    (out / "text").write_text("".join(f"{utt} {text}\n" for _, utt, _, text in rows))
    (out / "utt2spk").write_text("".join(f"{utt} {name}\n" for name, utt, _, _ in rows))
    return out


def real_data_dir(model_data: Path, recordings: list[tuple[str, str, Path, str]], out: Path) -> Path:
    """A data dir whose split ``real`` holds the recordings (imported from a Kaldi dir, with features)
    and whose dev, train text, LM and CMVN are the model data dir's (linked, not copied)."""
    from dasr.data.manifest import import_kaldi

    utts, rejections = import_kaldi(write_kaldi_dir(recordings, out / "kaldi"))
    if len(rejections) or len(utts) != len(recordings):
        raise DasrError(f"importing the recordings rejected some: {rejections.summary()}")
    return held_out_data_dir(model_data, SPLIT, utts, out / "data")


def held_out_data_dir(model_data: Path, split: str, utts: list, data: Path, domain_text: Path | None = None) -> Path:
    """A data dir ``data`` whose split ``split`` holds ``utts`` (with features) and whose dev, train text,
    CMVN and LM are the model data dir's (linked, not copied); with ``domain_text``, its own LM
    estimated on the model's LM text and that file (what `dasr lm --text` does)."""
    from dasr.data.features import compute_split
    from dasr.data.manifest import RejectionLog, write_manifest
    from dasr.decode.lm import read_arpa
    from dasr.decode.lm_build import LM_FILE, build_lm

    shutil.rmtree(data, ignore_errors=True)
    (data / "features").mkdir(parents=True)
    linked = ("train.jsonl", "dev.jsonl", "lm_text.txt", "cmvn.npz", "features/dev")
    for name in (*linked, "lm.arpa") if domain_text is None else linked:
        if (model_data / name).exists():
            (data / name).symlink_to((model_data / name).resolve())
    if domain_text is not None:
        build_lm(data, order=read_arpa(model_data / LM_FILE).order, text_file=domain_text)
    write_manifest(data / f"{split}.jsonl", utts)
    log = RejectionLog()
    accepted = compute_split(data, split, 1, 3, log)[0]
    if accepted != len(utts):
        raise DasrError(f"features of {split} rejected some utterances: {log.summary()}")
    return data


def scores(exp: str, data: str, split: str, reuse: bool = False) -> dict:
    """Greedy and LM WER/CER of one split (LM weights tuned on the data dir's dev).

    With ``reuse``, a decode of the split newer than the model (``dasr demo`` and ``dasr recipe real``
    make them) is read instead of made again.
    """
    from dasr.decode.run import decode_split

    def decoded(use_lm: bool) -> dict:
        wer = Path(exp) / f"decode-{split}{'-lm' if use_lm else ''}" / "wer.json"
        if reuse and _fresh(exp, wer):
            return json.loads(wer.read_text())
        tuned = _tuned_weights(exp) if use_lm else None
        if tuned is not None:
            return decode_with_weights(exp, data, split, *tuned)
        return decode_split(exp, data, split, use_lm=use_lm)

    greedy, lm = decoded(False), decoded(True)
    return {
        "wer_greedy": greedy["wer"],
        "cer_greedy": greedy["cer"],
        "wer_lm": lm["wer"],
        "cer_lm": lm["cer"],
        "words": lm["num_words"],
        "utterances": lm["num_utts"],
    }


def _fresh(exp: str, path: Path) -> bool:
    """Whether ``path`` was written after the model EXP/best.pt."""
    model = Path(exp) / "best.pt"
    return path.exists() and model.exists() and path.stat().st_mtime > model.stat().st_mtime


def _tuned_weights(exp: str) -> tuple[float, float] | None:
    """LM weight and word score of a fresh LM decode of the synthetic test: tuned on the same dev, so reusable."""
    path = Path(exp) / "decode-test-lm" / "decode.json"
    if not _fresh(exp, path):
        return None
    tuned = json.loads(path.read_text())
    if "lm_weight" not in tuned:
        return None
    return tuned["lm_weight"], tuned["word_score"]


def decode_with_weights(exp: str, data: str, split: str, lm_weight: float, word_score: float) -> dict:
    """LM decode of ``split`` with given weights (what `dasr decode --lm` does after tuning); writes its report
    into EXP/decode-SPLIT-lm and returns its scores."""
    import torch

    from dasr.decode.lm_build import LM_FILE, lexicon_words
    from dasr.decode.recognizer import Recognizer
    from dasr.decode.run import split_log_probs
    from dasr.decode.score import write_report

    rec = Recognizer(exp)
    utts = split_log_probs(rec, data, split)
    rec.use_lm(lexicon_words(data), str(Path(data) / LM_FILE), lm_weight, word_score, BEAM)
    hyps = {i: rec.decode(lp[None], torch.tensor([lp.shape[0]]))[0] for i, lp, _ in utts}
    out = Path(exp) / f"decode-{split}-lm"
    result = write_report({i: ref for i, _, ref in utts}, hyps, out)
    (out / "decode.json").write_text(json.dumps({"lm_weight": lm_weight, "word_score": word_score}, indent=1))
    return result


def _per_group(exp: str, split: str, groups: dict[str, set[str]]) -> dict:
    """Greedy and LM WER/CER of each group of utterance ids of ``split``, rescored from the references
    and hypotheses its decodes wrote."""
    from dasr.decode.score import score

    out: dict = {}
    for kind, suffix in (("greedy", ""), ("lm", "-lm")):
        decode_dir = Path(exp) / f"decode-{split}{suffix}"
        refs, hyps = _read_lines(decode_dir / "ref.txt"), _read_lines(decode_dir / "hyp.txt")
        for name, ids in groups.items():
            result = score({i: t for i, t in refs.items() if i in ids}, hyps)
            out.setdefault(name, {}).update({f"wer_{kind}": result["wer"], f"cer_{kind}": result["cer"]})
    return out


def _read_lines(path: Path) -> dict[str, str]:
    """``id text`` lines (a decode's ref.txt or hyp.txt) as a dict."""
    if not path.exists():
        raise DasrError(f"{path} is missing: the decode did not finish")
    return {utt: text.strip() for utt, _, text in (line.partition(" ") for line in path.read_text().splitlines())}


def evaluate(label: str, exp: str, data: str, recordings: list, work: Path, synthetic_test: bool = True) -> dict:
    """One model's scores on the real recordings (all and per clip set) and, with ``synthetic_test``,
    on its synthetic test set; ``work`` holds the recordings' Kaldi and data dirs."""
    import yaml

    from dasr.data.manifest import read_manifest
    from dasr.data.text import normalize

    result: dict = {"label": label, "exp": exp, "data": data}
    if synthetic_test:  # first: its LM decode tunes the weights on dev, which the recordings' decode reuses
        result["synthetic_test"] = scores(exp, data, "test", reuse=True)
    real = real_data_dir(Path(data), recordings, work / label)
    result["real"] = scores(exp, str(real), SPLIT)
    result["real_per_set"] = _per_group(exp, SPLIT, {n: {u for s, u, _, _ in recordings if s == n} for n in CLIP_SETS})
    if synthetic_test:  # is a model that does badly on real people also bad on the synthetic voices it heard?
        by_engine: dict[str, set[str]] = {}
        for utt in read_manifest(Path(data) / "test.jsonl"):
            by_engine.setdefault(utt.extra.get("engine", "espeak"), set()).add(utt.id)
        result["synthetic_test_per_engine"] = _per_group(exp, "test", by_engine)
    train = read_manifest(Path(data) / "train.jsonl")
    train_text = {normalize(u.text) for u in train}
    result["real_sentences_in_train_text"] = sum(normalize(text) in train_text for _, _, _, text in recordings)
    result["train_engines"] = sorted({u.extra.get("engine", "espeak") for u in train})
    result["train_augmented"] = any(u.extra.get("tempo", 1.0) != 1.0 for u in train)
    result["train_hours"] = sum(u.duration for u in train) / 3600
    trained = yaml.safe_load((Path(exp) / "config.yaml").read_text())  # the run's resolved TrainConfig
    result["model"], result["epochs"] = trained["model"], trained["epochs"]
    return result
