"""`dasr bench real-speech --recipes DIR`: what real speech, synthetic voices and their variety each buy,
scored per test set of real people.

Models (each `dasr recipe real` into ``DIR/<name>``, sharing ``DIR/corpora``, trained side by side:
the same model and recipe, the same minutes of training each, evaluated four times on the way):

- real only, synthetic only, both, both without the speaker and channel variety;
- the voices curve: both, with 7, 14 and all 21 natural voices (21 is "both").

With ``--recipe-out`` (repeatable), recipes trained to their plateau (`dasr recipe real --out ...`) join
the table, labelled by their model preset; the first one given is the one the goals are judged on.

Test sets, none ever trained on: the held-out uqm speakers (syreen, commander), pocketsphinx-testdata
(10 clips, 2 people) and klettres (94 letters and words). Each model is decoded greedily and with
two LMs, labelled: the LM of its train text, which never saw a test sentence, and that LM given the
test set's own sentences as domain text (`dasr lm --text`), as the demo does. The LM weight and
word score are tuned once per model on the uqm dev speakers with the first LM (the recipe does it)
and used for both. pocketsphinx 5.1.1 with its own en-us model and LM is the row a user would try
first.

Everything a finished step made is kept: a model's training (the recipe continues it) and its
scores (``DIR/<name>/bench.json``); a rerun measures only what is missing.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import yaml

from dasr.config import load_recipe
from dasr.data.manifest import Utterance, import_kaldi, read_manifest
from dasr.decode import real_speech
from dasr.decode.run import decode_split
from dasr.real_recipe import Parts, run_recipe

log = logging.getLogger(__name__)

#: name -> what it trains on, in the order they are trained (the headline first)
MODELS = {
    "both": Parts(),
    "real only": Parts(synthetic=False),
    "synthetic only": Parts(real=False),
    "both, no variety": Parts(variety=False),
    "both, 7 voices": Parts(voices=7),
    "both, 14 voices": Parts(voices=14),
}
RECIPE_PREFIX = "recipe: "
TEST_SETS = ("uqm held-out speakers", "pocketsphinx-testdata", "klettres")
EVALS_PER_RUN = 4


def train_models(root: Path, minutes: float, names: list[str]) -> dict[str, Path]:
    """Each named model trained for ``minutes`` of training (time mode) by the real recipe; their out dirs."""
    recipe = load_recipe("real")
    recipe.update(
        stop_at_plateau=False, eval_every_s=minutes * 60 / EVALS_PER_RUN, train_seconds=minutes * 60, epochs=1000
    )
    root.mkdir(parents=True, exist_ok=True)
    config = root / f"recipe-{minutes:g}min.yaml"
    config.write_text(yaml.safe_dump(recipe))
    outs = {}
    for name in names:
        out = root / name.replace(", ", "-").replace(" ", "-")
        if not (out / "results.json").exists():
            log.info("training %s into %s", name, out)
            run_recipe(out, MODELS[name], corpora=root / "corpora", recipe=str(config))
        outs[name] = out
    return outs


def test_sets(root: Path, uqm_test: Path) -> dict[str, list[Utterance]]:
    """The three test sets' utterances (klettres prepared into ``root/corpora/klettres`` once)."""
    from dasr.data.klettres import prepare_klettres

    klettres = root / "corpora" / "klettres"
    if not (klettres / "test.jsonl").exists():
        prepare_klettres(klettres, None, root / "corpora" / "deb-cache")
    with tempfile.TemporaryDirectory(prefix="dasr-pocketsphinx-") as tmp:
        recordings = real_speech.clips()
        pocketsphinx, rejected = import_kaldi(real_speech.write_kaldi_dir(recordings, Path(tmp)))
        assert not len(rejected), "the package's clips import whole (real_speech's tests check it)"
    return dict(
        zip(TEST_SETS, (read_manifest(uqm_test), pocketsphinx, read_manifest(klettres / "test.jsonl")), strict=True)
    )


def score_model(out: Path, sets: dict[str, list[Utterance]]) -> dict:
    """One model's WER and CER per test set: greedy, with its train-text LM, with that LM plus the set's sentences."""
    cached = out / "bench.json"
    if cached.exists() and cached.stat().st_mtime > (out / "model" / "best.pt").stat().st_mtime:
        return json.loads(cached.read_text())
    exp, data = out / "model", out / "data"
    tuned = json.loads((exp / "decode-test-lm" / "decode.json").read_text())  # the recipe's, tuned on uqm dev
    weights = tuned["lm_weight"], tuned["word_score"]
    scores: dict = {}
    with tempfile.TemporaryDirectory(prefix="dasr-bench-real-") as tmp:
        for index, (name, utts) in enumerate(sets.items()):
            split = f"set{index}"
            text = Path(tmp) / f"{split}.txt"
            text.write_text("".join(u.text + "\n" for u in utts))
            plain = real_speech.held_out_data_dir(data, split, utts, Path(tmp) / split)
            domain = real_speech.held_out_data_dir(data, split, utts, Path(tmp) / f"{split}-domain", domain_text=text)
            started = time.time()
            greedy = decode_split(str(exp), str(plain), split, use_lm=False)
            never = real_speech.decode_with_weights(str(exp), str(plain), split, *weights)
            given = real_speech.decode_with_weights(str(exp), str(domain), split, *weights)
            scores[name] = {
                "utterances": len(utts),
                "words": greedy["num_words"],
                **{f"{k}_greedy": greedy[k] for k in ("wer", "cer")},
                **{f"{k}_lm": never[k] for k in ("wer", "cer")},
                **{f"{k}_lm_domain": given[k] for k in ("wer", "cer")},
                "decode_s": round(time.time() - started, 1),
            }
    recipe = json.loads((out / "results.json").read_text())
    result = {"scores": scores, **{k: recipe[k] for k in _RECIPE_KEYS}}
    cached.write_text(json.dumps(result, indent=1))
    return result


_RECIPE_KEYS = ("parts", "natural_voices", "train_hours_real", "train_hours_synthetic", "dev_curve", "steps_s")


def score_pocketsphinx(root: Path, sets: dict[str, list[Utterance]], max_hours: float) -> dict:
    """pocketsphinx 5.1.1's WER and CER per test set of at most ``max_hours``, one thread (kept in
    ``root/pocketsphinx.json``; it decodes at about 3x real time here, so the uqm test set takes half an hour)."""
    from dasr.data.text import normalize
    from dasr.decode.score import score
    from lab.bench import pocketsphinx_row

    cached = root / "pocketsphinx.json"
    result = (
        json.loads(cached.read_text()) if cached.exists() else {"version": pocketsphinx_row.version(), "scores": {}}
    )
    for name, utts in sets.items():
        if name in result["scores"] or sum(u.duration for u in utts) > max_hours * 3600:
            continue
        started = time.time()
        hyps = pocketsphinx_row.transcribe(utts)
        scored = score({u.id: normalize(u.text) for u in utts}, hyps)
        result["scores"][name] = {
            "utterances": len(utts),
            "words": scored["num_words"],
            "wer": scored["wer"],
            "cer": scored["cer"],
            "decode_s": round(time.time() - started, 1),
        }
        cached.write_text(json.dumps(result, indent=1))
    return result


def recipe_label(preset: str) -> str:
    """The row of a recipe run trained to its plateau with model ``preset``."""
    return f"{RECIPE_PREFIX}both, {preset} model ({_shape(preset)}), to the plateau"


def _preset(out: Path) -> str:
    """The model preset a recipe run in ``out`` trained."""
    return yaml.safe_load((out / "model" / "config.yaml").read_text())["model"]


def _shape(preset: str) -> str:
    from dasr.model.blstm import PRESETS

    return f"{PRESETS[preset]['layers']} x {PRESETS[preset]['hidden']}"


def measure(root: Path, minutes: float, names: list[str], recipe_outs: list[Path], pocketsphinx_hours: float) -> dict:
    """Train what is missing, score every model and pocketsphinx; the benchmark's results."""
    trained = train_models(root, minutes, names)
    outs = {recipe_label(_preset(out)): out for out in recipe_outs}
    outs.update(trained)
    first = next(iter(outs.values()))
    sets = test_sets(root, first / "data" / "test.jsonl")
    models = {}
    for label, out in outs.items():
        models[label] = {"out": str(out), "model": _preset(out), **score_model(out, sets)}
        if label in MODELS:
            models[label]["train_minutes"] = minutes
    return {
        "test_sets": {
            name: {"utterances": len(u), "hours": sum(x.duration for x in u) / 3600} for name, u in sets.items()
        },
        "models": models,
        "pocketsphinx": score_pocketsphinx(root, sets, pocketsphinx_hours),
        "parts": {name: asdict(parts) for name, parts in MODELS.items()},
    }


TITLE = "Real human speech: models trained on real and synthetic speech, per test set of real people"
#: the goals of the real-voices issue: (summary key, test set, score, at most)
GOALS = (
    ("real_recipe_wer_lm_heldout_speakers", "uqm held-out speakers", "wer_lm", 0.30),
    ("real_recipe_cer_greedy_pocketsphinx", "pocketsphinx-testdata", "cer_greedy", 0.25),
    ("real_recipe_wer_lm_pocketsphinx", "pocketsphinx-testdata", "wer_lm_domain", 0.40),
)
COLUMNS = (
    ("wer_greedy", "WER greedy"),
    ("cer_greedy", "CER greedy"),
    ("wer_lm", "WER, LM never saw the set"),
    ("cer_lm", "CER, LM never saw"),
    ("wer_lm_domain", "WER, LM given the set's sentences"),
    ("cer_lm_domain", "CER, LM given them"),
)


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f} %"


def headline(results: dict) -> tuple[str, dict]:
    """The model the goals are judged on: the first recipe trained to its plateau where one was given, else "both"."""
    label = next((m for m in results["models"] if m.startswith(RECIPE_PREFIX)), "both")
    return label, results["models"][label]


def figures(results: dict) -> dict[str, float | None]:
    """The summary.json keys of the real-voices issue, from the headline model."""
    _, model = headline(results)
    out: dict[str, float | None] = {key: model["scores"][name][score] for key, name, score, _ in GOALS}
    out["real_recipe_train_hours_real"] = model["train_hours_real"]
    out["real_recipe_natural_voices"] = model["natural_voices"]
    return out


def _trained_on(model: dict) -> str:
    parts = model["parts"]
    synthetic = (
        f"{model['train_hours_synthetic']:.1f} h synthetic, {model['natural_voices']} voices"
        f"{'' if parts['variety'] else ', no variety'}"
        if parts["synthetic"]
        else "no synthetic"
    )
    return f"{model['train_hours_real']:.1f} h real, {synthetic}"


def _test_set_table(results: dict, name: str) -> str:
    rows = "| model | trained on | " + " | ".join(c for _, c in COLUMNS) + " |\n" + "|---" * (2 + len(COLUMNS)) + "|\n"
    ps = results["pocketsphinx"]["scores"].get(name)
    if ps:
        rows += f"| pocketsphinx {results['pocketsphinx']['version']} | its en-us model and LM (real speech) | — | — | "
        rows += f"{_pct(ps['wer'])} | {_pct(ps['cer'])} | — | — |\n"
    for label, model in results["models"].items():
        s = model["scores"][name]
        rows += f"| {label} | {_trained_on(model)} | " + " | ".join(_pct(s[k]) for k, _ in COLUMNS) + " |\n"
    return rows


def render(results: dict, report):
    """Per test set tables, the voices curve, the dev curves and the goals; the figure."""
    from lab.report import new_figure

    sets = results["test_sets"]
    minutes = {m.get("train_minutes") for m in results["models"].values()} - {None}
    presets = sorted({m["model"] for m in results["models"].values() if "train_minutes" in m and "model" in m})
    skipped = [name for name in sets if name not in results["pocketsphinx"]["scores"]]
    report.add(
        "What is measured",
        "Test sets, none ever trained on: "
        + "; ".join(f"{n} ({s['utterances']} utterances, {s['hours']:.2f} h)" for n, s in sets.items())
        + ". "
        + (
            f"The models of the comparison trained side by side for {', '.join(f'{m:g}' for m in sorted(minutes))} "
            "minutes of training each (adpsgd, 2 workers sharing 2 cores, "
            f"model {', '.join(f'{p} ({_shape(p)})' for p in presets) or 'of the real recipe'}), one after the other. "
            if minutes
            else "No model of the comparison (real only, synthetic only, ...) has been trained yet: only the recipe's "
            "run is here. "
        )
        + "klettres holds isolated letters and syllables (its file names are the texts), so a CER above 100 % "
        "means insertions. "
        "LM weight and word score were tuned once per model on the uqm dev speakers with the train-text LM and used "
        "with both LMs. pocketsphinx decodes with its own model and LM on 1 thread"
        + (f" (not run on {', '.join(skipped)}: longer than --pocketsphinx-max-hours)." if skipped else "."),
    )
    label, model = headline(results)
    goals = "\n".join(
        f"- {name}, {dict(COLUMNS)[score]}: **{_pct(model['scores'][name][score])}** (goal <= {_pct(limit)}: "
        f"{'met' if model['scores'][name][score] <= limit else 'missed'})"
        for _, name, score, limit in GOALS
    )
    report.add("Goals", f"Judged on **{label}**.\n\n{goals}")
    for name in sets:
        report.add(f"Test set: {name}", _test_set_table(results, name))
    curve = [
        (m["natural_voices"], label)
        for label, m in results["models"].items()
        if label.startswith("both") and m["parts"]["variety"] and label in MODELS
    ]
    if len(curve) > 1:
        rows = "| natural voices | " + " | ".join(f"{n}: CER greedy, WER LM never saw" for n in sets) + " |\n"
        rows += "|---" * (1 + len(sets)) + "|\n"
        for voices, name in sorted(curve):
            s = results["models"][name]["scores"]
            rows += (
                f"| {voices} | "
                + " | ".join(f"{_pct(s[n]['cer_greedy'])}, {_pct(s[n]['wer_lm'])}" for n in sets)
                + " |\n"
            )
        report.add("Voices curve (real + synthetic with variety)", rows)
    dev = "| model | dev WER (greedy) by evaluation | evaluations | minutes of training |\n|---|---|---|---|\n"
    for label, m in results["models"].items():
        wers = " ".join(f"{100 * e['dev_wer']:.1f}" for e in m["dev_curve"])
        dev += f"| {label} | {wers} | {len(m['dev_curve'])} | {m['dev_curve'][-1]['train_s'] / 60:.0f} |\n"
    report.add("Dev curves (uqm dev speakers, greedy)", dev)
    fig, (bars, voices, dev_ax) = new_figure(3, width_per_panel=5.0, height=4.2)
    labels = list(results["models"])
    width = 0.8 / len(sets)
    for i, name in enumerate(sets):
        bars.barh(
            [p + width * (i - (len(sets) - 1) / 2) for p in range(len(labels))],
            [100 * results["models"][m]["scores"][name]["cer_greedy"] for m in labels],
            width,
            label=name,
        )
    bars.set_yticks(range(len(labels)), labels, fontsize=7)
    bars.invert_yaxis()
    bars.set_xlabel("CER greedy, %")
    bars.legend(fontsize=6)
    for name in sets:
        points = sorted((v, 100 * results["models"][m]["scores"][name]["cer_greedy"]) for v, m in curve)
        voices.plot([v for v, _ in points], [c for _, c in points], marker="o", label=name)
    if len(curve) < 2:
        voices.text(0.5, 0.5, "voices curve: not trained yet", ha="center", transform=voices.transAxes)
    voices.set_xlabel("natural voices")
    voices.set_ylabel("CER greedy, %")
    if len(curve) > 1:
        voices.legend(fontsize=6)
    for label, m in results["models"].items():
        dev_ax.plot(
            [e["train_s"] / 60 for e in m["dev_curve"]],
            [100 * e["dev_wer"] for e in m["dev_curve"]],
            marker=".",
            label=label,
        )
    dev_ax.set_xlabel("training minutes")
    dev_ax.set_ylabel("dev WER greedy, %")
    dev_ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def run_cli(args, command: str) -> dict:
    """`dasr bench real-speech --recipes DIR`: train what is missing, score, write the report and summary keys."""
    from lab.report import publish
    from lab.summary import update_summary

    names = list(MODELS) if args.models is None else [n.strip() for n in args.models.split(";") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        from dasr.errors import DasrError

        raise DasrError(f"unknown --models {', '.join(unknown)}: choose from {'; '.join(MODELS)}")
    recipe_outs = [Path(out) for out in args.recipe_out or []]
    results = measure(Path(args.recipes), args.train_minutes, names, recipe_outs, args.pocketsphinx_max_hours)
    top = figures(results)
    report = publish("real-speech", TITLE, command, results, render, args.out, top_level=top)
    update_summary(args.out, top, report)
    return results
