"""`dasr bench real-speech`: models trained on synthesized speech only, decoded on recordings of real people
(scored by :mod:`dasr.decode.real_speech`).

Debian's ``pocketsphinx-testdata`` ships 10 transcribed 16 kHz recordings by two people:
``cards`` (5 card names, "eight of spades four of clubs ...") and ``librivox`` (5 sentences
of a LibriVox reading of *Sense and Sensibility*). They are written as a Kaldi data dir and
imported with :func:`dasr.data.manifest.import_kaldi` (what `dasr corpus import-kaldi` runs),
then decoded as a split ``real`` of a temporary data dir that borrows the model's data dir for
everything else: CMVN, dev (where the LM weights are tuned; never on the real clips), the
LM and its lexicon. The recordings are never trained on; their *sentences* are in the
training text of the demo recipe (:func:`sentences`, passed to ``synthesize_corpus(train_text=...)``),
as a user's domain text would be, so the LM has seen them: the greedy CER is the measure of
the acoustic model alone.

Each model given is decoded greedily and with its LM on the real clips and on its own
synthetic test set; the first is the headline (``real_speech_wer_lm``,
``real_speech_cer_greedy``), a model labelled ``espeak-only`` gives
``real_speech_cer_greedy_espeak_only``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from dasr.cli import arg
from dasr.decode.real_speech import TESTDATA, clips, evaluate
from dasr.errors import DasrError
from lab.report import Report, new_figure, publish
from lab.summary import update_summary

ARGUMENTS = (
    arg(
        "--recipes",
        default=None,
        help="train and compare the real recipe's models in this dir (see real_speech_recipes)",
    ),
    arg("--train-minutes", type=float, default=20.0, help="--recipes: minutes of training per model (default 20)"),
    arg("--models", default=None, help="--recipes: the models to train, ';'-separated (default all; '' for none)"),
    arg(
        "--recipe-out",
        action="append",
        help="--recipes: a `dasr recipe real --out` dir trained to its plateau, as a row (repeatable; the goals are "
        "judged on the first)",
    ),
    arg("--pocketsphinx-max-hours", type=float, default=2.0, help="--recipes: skip the baseline on longer sets"),
    arg("--exp", default=None, help="the model to check (trained on --data, e.g. exp/demo/model)"),
    arg("--label", default="demo", help="its name in the report (default demo)"),
    arg("--compare", action="append", metavar="LABEL=EXP,DATA", help="more models, e.g. espeak-only=..."),
)

BASELINE_LABEL = "espeak-only"
TITLE = "Real human speech: models trained on synthesized speech only"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def run(models: list[tuple[str, str, str]], out_dir: str, command: str, root: str | Path = TESTDATA) -> dict:
    """Decode every (label, exp, data) model on the recordings and its synthetic test; write the report.

    Returns:
        The results: ``models`` (per model: real, per clip set, synthetic test) and the clips.
    """
    recordings = clips(root)
    with tempfile.TemporaryDirectory(prefix="dasr-real-speech-") as tmp:
        evaluated = [evaluate(label, exp, data, recordings, Path(tmp)) for label, exp, data in models]
    results = {
        "clips": [{"set": n, "id": u, "wav": str(w), "text": t} for n, u, w, t in recordings],
        "models": evaluated,
    }
    head = evaluated[0]
    baseline = next((m for m in evaluated if m["label"] == BASELINE_LABEL), None)
    figures = {
        "real_speech_wer_lm": head["real"]["wer_lm"],
        "real_speech_cer_greedy": head["real"]["cer_greedy"],
        "real_speech_cer_greedy_espeak_only": baseline["real"]["cer_greedy"] if baseline else None,
    }
    report = publish("real-speech-synthetic", TITLE, command, results, render, out_dir, top_level=figures)
    update_summary(out_dir, figures, report)
    return results


def render(results: dict, report: Report):
    """The report's sections and its figure (each model's real-speech CER and WER), from the results alone."""
    evaluated, clip_count = results["models"], len(results["clips"])
    people = list(dict.fromkeys(c["set"] for c in results["clips"]))  # one clip set per person, in file order
    report.add(
        "What is measured",
        f"{clip_count} recordings of {len(people)} people from Debian's pocketsphinx-testdata "
        f"({', '.join(people)}), imported as a Kaldi data dir, never trained on. Their sentences are in the "
        "training text of the models marked so below (as a user's domain text would be), so the LM has seen them; "
        "the greedy CER measures the acoustic model alone. LM weights are tuned on each model's synthetic dev set, "
        "never on the recordings or a test set. Decoding ran on 1 core.",
    )
    rows = (
        "| model | train: engines, augmentation, hours | network, epochs | real sentences in train text | real WER greedy "
        "| real CER greedy | real WER LM | real CER LM | synthetic test WER greedy | synthetic test WER LM |\n"
        "|---|---|---|---|---|---|---|---|---|---|\n"
    )
    for m in evaluated:
        r, s = m["real"], m["synthetic_test"]
        rows += (
            f"| {m['label']} | {'+'.join(m['train_engines'])}, {'augmented' if m['train_augmented'] else 'not augmented'}"
            f", {m['train_hours']:.2f} h | {m['model']}, {m['epochs']} | {m['real_sentences_in_train_text']}/{clip_count} | "
            f"{_pct(r['wer_greedy'])} | {_pct(r['cer_greedy'])} | {_pct(r['wer_lm'])} | {_pct(r['cer_lm'])} | "
            f"{_pct(s['wer_greedy'])} | {_pct(s['wer_lm'])} |\n"
        )
    report.add("Results", rows)
    report.add("Per clip set (person)", _group_table(evaluated, "real_per_set", "clip set"))
    report.add(
        "Synthetic test per engine",
        "The test voices are held-out variants (pitch shifts, espeak-ng variants) of voices heard in training. "
        "A model that is worse than espeak-only on the espeak-ng test voices too has not learned the "
        "corpus it was given; a model that is good on them but bad on the recordings has learned voices, not people.\n\n"
        + _group_table(evaluated, "synthetic_test_per_engine", "synthetic test voices"),
    )
    fig, (ax,) = new_figure(1, width_per_panel=8, height=1.2 + 0.55 * len(evaluated))
    y = range(len(evaluated))
    for i, (key, name) in enumerate((("cer_greedy", "CER greedy"), ("wer_greedy", "WER greedy"), ("wer_lm", "WER LM"))):
        ax.barh([p + 0.27 * (i - 1) for p in y], [100 * m["real"][key] for m in evaluated], 0.27, label=name)
    ax.set_yticks(list(y), [m["label"] for m in evaluated], fontsize=8)
    ax.invert_yaxis()  # the table's order, top to bottom
    ax.axvline(30, color="0.3", linestyle=":", linewidth=1, label="goal: WER LM <= 30 %")
    ax.set_xlabel("% on the real recordings")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1 - 0.4 / len(evaluated)), ncol=4)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    return fig


def _group_table(evaluated: list[dict], key: str, column: str) -> str:
    """Markdown rows of every model's per-group scores ``m[key]`` (see :func:`dasr.decode.real_speech.evaluate`)."""
    rows = f"| model | {column} | WER greedy | CER greedy | WER LM | CER LM |\n|---|---|---|---|---|---|\n"
    for m in evaluated:
        for name, r in sorted(m[key].items()):
            rows += (
                f"| {m['label']} | {name} | {_pct(r['wer_greedy'])} | {_pct(r['cer_greedy'])} | "
                f"{_pct(r['wer_lm'])} | {_pct(r['cer_lm'])} |\n"
            )
    return rows


def _model(spec: str) -> tuple[str, str, str]:
    """``LABEL=EXP,DATA`` -> (label, exp, data)."""
    label, _, rest = spec.partition("=")
    exp, _, data = rest.partition(",")
    if not (label and exp and data):
        raise DasrError(f"--compare expects LABEL=EXP,DATA, got {spec!r}")
    return label, exp, data


def run_cli(args, command: str) -> dict:
    """`dasr bench real-speech`: with ``--recipes``, the real recipe's comparison (:mod:`lab.bench.real_speech_recipes`);
    else the model EXP on DATA first, then every ``--compare LABEL=EXP,DATA`` (report real-speech-synthetic)."""
    if args.recipes:
        from lab.bench import real_speech_recipes

        return real_speech_recipes.run_cli(args, command)
    if args.exp is None or args.data is None:
        raise DasrError("dasr bench real-speech needs --exp and --data: a trained model and its data dir")
    models = [(args.label, args.exp, args.data)] + [_model(s) for s in args.compare or []]
    return run(models, args.out, command)
