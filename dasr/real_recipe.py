"""`dasr recipe real`: the recognizer trained on real and synthetic speech together, to its dev plateau.

The steps, each skipped when its output is there, so that a run stopped anywhere continues with
the same command::

    CORPORA/uqm                 `dasr corpus prepare uqm`: 21 characters to train on; dev and test
                                characters are never heard in training
    CORPORA/synth-<variety>-<N>  the uqm train text spoken by N natural voices (7, 14 or 21), with the
                                speaker and channel variety of `dasr corpus synth --augment` or without
    OUT/data                    train: the parts chosen (uqm train, synthetic train); dev: uqm dev;
                                test: uqm test; features, and a 3-gram LM on the train text
    OUT/model                   `dasr train --config real`: adpsgd on 2 workers until the dev WER
                                plateaus (--stop-at-plateau), resumed from its last checkpoint
    OUT/results.json            the held-out speakers' WER and CER, greedy and with the LM; the dev
                                curve; hours, voices and the time of every step

Dev and test are real speakers only: the recipe is chosen, and stops, on how it does on people.
The synthetic part speaks the real train sentences, so the text the LM learns stays the uqm train
text whatever parts are chosen, and the held-out speakers' sentences are never in it.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from dasr.config import resolve
from dasr.errors import DasrError

#: natural voices -> the engines that give them (4 flite + 3 festival; + 4 mbrola, 2 pico, 1 rab; + 6 rhvoice, 1 piper)
VOICE_ENGINES = {
    7: ("flite", "festival"),
    14: ("flite", "festival", "mbrola", "pico", "rab"),
    21: ("flite", "festival", "mbrola", "pico", "rab", "rhvoice", "piper"),
}
LM_ORDER = 3  # 64k words of dialogue: a 4-gram's contexts would be seen once or never


@dataclasses.dataclass(frozen=True)
class Parts:
    """What the recipe trains on: the real speakers, the synthetic voices, and how those sound."""

    real: bool = True
    synthetic: bool = True
    variety: bool = True
    voices: int = 21
    #: hours of synthesis (80 % of it lands in train: the synthesizer holds voice variants out for its own dev/test)
    synthetic_hours: float = 4.0

    def check(self) -> None:
        """Raise :class:`DasrError` naming what cannot be trained on."""
        if not (self.real or self.synthetic):
            raise DasrError("give the recipe real speech, synthetic speech or both (not --no-real with --no-synthetic)")
        if self.voices not in VOICE_ENGINES:
            raise DasrError(f"--voices must be one of {', '.join(map(str, VOICE_ENGINES))}, not {self.voices}")

    def synth_name(self) -> str:
        return f"synth-{'variety' if self.variety else 'plain'}-{self.voices}"


def run_recipe(
    out: str | Path,
    parts: Parts = Parts(),
    corpora: str | Path | None = None,
    recipe: str = "real",
    deb_cache: str | Path | None = None,
) -> dict:
    """Prepare, train and score as the module docstring says; returns and writes OUT/results.json."""
    parts.check()
    out = Path(out)
    corpora = Path(corpora) if corpora else out / "corpora"
    deb_cache = Path(deb_cache) if deb_cache else corpora / "deb-cache"
    steps = StepTimes(out / "steps.json")
    uqm = _step(steps, "uqm_s", corpora / "uqm", lambda d: _prepare_uqm(d, deb_cache))
    sources = [uqm] if parts.real else []
    if parts.synthetic:
        synth = _step(steps, "synth_s", corpora / parts.synth_name(), lambda d: _synthesize(d, uqm, parts, deb_cache))
        sources.append(synth)
    data = _step(steps, "data_s", out / "data", lambda d: _build_data_dir(d, sources, uqm))
    exp = out / "model"
    config = resolve(recipe, {"data": str(data), "exp": str(exp), "resume": (exp / "checkpoints").exists() or None})
    if not (exp / "final.pt").exists():
        from dasr.train.run import train

        started = time.time()
        try:
            train(config)
        finally:  # a stopped run's training time counts too: the next invocation continues it
            steps.add("train_s", time.time() - started)
    started = time.time()
    results = _results(exp, data, uqm, parts, config.stop_at_plateau)
    steps.add("score_s", time.time() - started)
    results["steps_s"] = dict(steps.seconds)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    print(format_results(results))
    return results


class StepTimes:
    """Seconds spent in each step over every invocation of one recipe run, kept in ``path`` as they are spent."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seconds: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] = round(self.seconds.get(name, 0.0) + seconds, 1)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(self.seconds, indent=1))


def _step(steps: StepTimes, name: str, path: Path, make) -> Path:
    """``make(path)`` unless ``path`` already holds its result (a train.jsonl); its seconds go to ``steps``."""
    if not (path / "train.jsonl").exists():
        started = time.time()
        make(path)
        steps.add(name, time.time() - started)
    return path


def _prepare_uqm(path: Path, deb_cache: Path) -> None:
    from dasr.data.uqm import prepare_uqm

    prepare_uqm(path, cache=deb_cache)


def _synthesize(path: Path, uqm: Path, parts: Parts, deb_cache: Path) -> None:
    """The uqm train sentences spoken by the chosen natural voices (their packages fetched into ``deb_cache``)."""
    from dasr.data.manifest import read_manifest
    from dasr.data.synth import synthesize_corpus

    path.mkdir(parents=True, exist_ok=True)
    text = path / "uqm-train-text.txt"
    text.write_text("".join(u.text + "\n" for u in read_manifest(uqm / "train.jsonl")))
    synthesize_corpus(
        path,
        hours=parts.synthetic_hours,
        seed=0,
        text_file=text,
        engines=VOICE_ENGINES[parts.voices],
        augment_audio=parts.variety,
        fetch=True,
        deb_cache=deb_cache,
    )


def _build_data_dir(path: Path, sources: list[Path], uqm: Path) -> None:
    """Train from every source, dev and test from uqm; features and the LM. The manifest goes last, as
    the step's mark of completion."""
    from dasr.data.features import compute_features
    from dasr.data.manifest import read_manifest, write_manifest
    from dasr.data.report import data_report
    from dasr.decode.lm_build import build_lm

    train = []
    seen: dict[str, Path] = {}
    for source in sources:
        for utt in read_manifest(source / "train.jsonl"):
            if utt.id in seen:
                raise DasrError(f"utterance id {utt.id} is in both {seen[utt.id]} and {source}: cannot combine them")
            seen[utt.id] = source
            train.append(utt)
    path.mkdir(parents=True, exist_ok=True)
    for split in ("dev", "test"):
        write_manifest(path / f"{split}.jsonl", read_manifest(uqm / f"{split}.jsonl"))
    write_manifest(path / "train.jsonl.partial", train)
    (path / "train.jsonl.partial").rename(path / "train.jsonl")
    try:
        compute_features(path)
        build_lm(path, order=LM_ORDER)
    except BaseException:
        (path / "train.jsonl").rename(path / "train.jsonl.partial")  # not complete: made again next time
        raise
    print(data_report(path))


def _results(exp: Path, data: Path, uqm: Path, parts: Parts, plateau_stop: bool) -> dict:
    """The held-out speakers' scores, the dev curve and the hours (what `dasr recipe real` prints)."""
    from dasr.data.manifest import read_manifest
    from dasr.decode.real_speech import scores
    from dasr.train.plateau import plateau_epochs
    from dasr.train.plots import read_metrics

    evals = [r for r in read_metrics(exp) if r.get("kind") == "eval" and r["rank"] == 0]
    curve = [{k: r[k] for k in ("epoch", "step", "train_s", "dev_wer", "dev_loss")} for r in evals]
    test = scores(str(exp), str(data), "test", reuse=True)  # decodes newer than the model are read, not made
    train = read_manifest(data / "train.jsonl")
    real_ids = {u.id for u in read_manifest(uqm / "train.jsonl")} if parts.real else set()
    return {
        "parts": dataclasses.asdict(parts),
        "natural_voices": parts.voices if parts.synthetic else 0,
        "train_hours_real": sum(u.duration for u in train if u.id in real_ids) / 3600,
        "train_hours_synthetic": sum(u.duration for u in train if u.id not in real_ids) / 3600,
        **{f"test_{k}": test[k] for k in ("wer_greedy", "cer_greedy", "wer_lm", "cer_lm", "words")},
        "dev_curve": curve,
        "plateau_at_eval": plateau_epochs([e["dev_wer"] for e in curve], losses=[e["dev_loss"] for e in curve]),
        "stopped_at_plateau": plateau_stop,
    }


def format_results(results: dict) -> str:
    """The table `dasr recipe real` ends with."""
    curve = results["dev_curve"]
    plateau = results["plateau_at_eval"]
    rows = [
        (
            "trained on",
            f"{results['train_hours_real']:.2f} h real, {results['train_hours_synthetic']:.2f} h synthetic "
            f"({results['natural_voices']} natural voices)",
        ),
        (
            "held-out speakers, greedy",
            f"WER {100 * results['test_wer_greedy']:.2f} %, CER {100 * results['test_cer_greedy']:.2f} %",
        ),
        (
            f"held-out speakers, {LM_ORDER}-gram LM",
            f"WER {100 * results['test_wer_lm']:.2f} %, CER {100 * results['test_cer_lm']:.2f} %",
        ),
        ("dev WER by evaluation", " ".join(f"{100 * e['dev_wer']:.1f}" for e in curve)),
        ("plateau", f"at evaluation {plateau}" if plateau else "not reached"),
        ("time per step", ", ".join(f"{k.removesuffix('_s')} {v:.0f} s" for k, v in results["steps_s"].items())),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
