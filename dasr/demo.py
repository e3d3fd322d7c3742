"""`dasr demo` (what `make demo` runs): corpus -> features -> LM -> train -> decode -> WER table."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path

from dasr.config import resolve
from dasr.errors import DasrError

log = logging.getLogger(__name__)

#: corpus size and training length of the full demo and of the --quick smoke version: natural flite
#: and festival voices beside espeak-ng. Without `--augment`'s speaker and channel variety, chosen on
#: the synthetic dev set: at the demo's 15 epochs the variety cost 8 points of dev WER (66.9 against
#: 75.0 %, greedy, dev sets drawn alike), and it did not help on real people either (docs/results/real-speech-synthetic.md).
#: `dasr corpus synth --augment` keeps it for longer runs.
ENGINES = ("espeak", "flite", "festival")


@dataclasses.dataclass(frozen=True)
class DemoSettings:
    """Corpus size, training recipe, synthesizers, and whether the real-speech check runs."""

    hours: float
    recipe: str
    engines: tuple[str, ...] = ENGINES
    augment: bool = False
    real_speech: bool = True


FULL = DemoSettings(hours=2.0, recipe="demo")
#: the smoke version skips the real-speech check: a tiny model's WER there means nothing (tests cover the check)
QUICK = DemoSettings(hours=0.1, recipe="demo-quick", real_speech=False)
#: the demo's sentences come from a template grammar, whose phrases a 5-gram captures well
LM_ORDER = 5


def run_demo(out: str, quick: bool = False, data_dir: str | None = None) -> dict:
    """Run the whole pipeline into ``out``; returns and writes OUT/results.json."""
    from dasr.data.features import compute_features
    from dasr.data.report import data_report
    from dasr.data.synth import synthesize_corpus
    from dasr.decode import real_speech
    from dasr.decode.lm_build import build_lm
    from dasr.decode.run import decode_split
    from dasr.train.run import train

    settings = QUICK if quick else FULL
    start = time.time()
    out_dir = Path(out)
    data = Path(data_dir) if data_dir else out_dir / "data"
    timings = {}
    if not (data / "train.jsonl").exists():
        log.info("synthesising %.2f h of demo speech into %s", settings.hours, data)
        # The real-speech check's sentences join the training text (never its audio), as a user's domain text would.
        synthesize_corpus(
            data,
            hours=settings.hours,
            seed=0,
            engines=settings.engines,
            augment_audio=settings.augment,
            train_text=real_speech.sentences(),
        )
    timings["corpus_s"] = time.time() - start
    if not (data / "cmvn.npz").exists():
        compute_features(data)
    print(data_report(data))
    build_lm(str(data), order=LM_ORDER)
    timings["features_lm_s"] = time.time() - start - timings["corpus_s"]
    exp = out_dir / "model"
    config = resolve(settings.recipe, {"data": str(data), "exp": str(exp)})
    t = time.time()
    train(config)
    timings["train_s"] = time.time() - t
    t = time.time()
    greedy = decode_split(str(exp), str(data), "test", use_lm=False)
    with_lm = decode_split(str(exp), str(data), "test", use_lm=True)
    real = _real_speech(str(exp), str(data), out_dir) if settings.real_speech else {}
    timings["decode_s"] = time.time() - t
    results = {
        "test_wer_greedy": greedy["wer"],
        "test_wer_lm": with_lm["wer"],
        "test_cer_greedy": greedy["cer"],
        "test_cer_lm": with_lm["cer"],
        "test_words": with_lm["num_words"],
        **real,
        "wall_s": round(time.time() - start, 1),
        "strategy": config.strategy,
        "workers": config.world_size,
        "model": config.model,
        "quick": quick,
        **{k: round(v, 1) for k, v in timings.items()},
        "config": dataclasses.asdict(config),
    }
    (out_dir / "results.json").write_text(json.dumps(results, indent=1))
    print(format_results(results, exp))
    return results


def _real_speech(exp: str, data: str, out_dir: Path) -> dict:
    """WER and CER on the recordings of real people (`dasr bench real-speech`); {} without pocketsphinx-testdata."""
    from dasr.decode import real_speech

    try:
        recordings = real_speech.clips()
    except DasrError as e:
        log.warning("no real-speech check: %s", e)
        return {}
    scores = real_speech.evaluate("demo", exp, data, recordings, out_dir / "real-speech", synthetic_test=False)
    return {f"real_{k}": v for k, v in scores["real"].items() if k != "utterances"}


def format_results(results: dict, exp: Path) -> str:
    """The table `make demo` ends with."""
    rows = [
        ("test WER, greedy", f"{100 * results['test_wer_greedy']:.2f} %"),
        (f"test WER, {LM_ORDER}-gram LM", f"{100 * results['test_wer_lm']:.2f} %"),
        (f"test CER, {LM_ORDER}-gram LM", f"{100 * results['test_cer_lm']:.2f} %"),
        ("test words", str(results["test_words"])),
        *(
            [
                (
                    "real human speech",
                    f"WER {100 * results['real_wer_lm']:.1f} % with the LM, "
                    f"CER {100 * results['real_cer_greedy']:.1f} % greedy ({results['real_words']} words)",
                )
            ]
            if "real_wer_lm" in results
            else []
        ),
        ("training", f"{results['strategy']} on {results['workers']} workers, {results['train_s']:.0f} s"),
        ("wall time", f"{results['wall_s']:.0f} s"),
        ("plots", str(exp / "plots")),
        ("details", str(exp / "decode-test-lm" / "alignments.txt")),
    ]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 30)
    return "\n".join([line] + [f"{k:<{width}}  {v}" for k, v in rows] + [line])
