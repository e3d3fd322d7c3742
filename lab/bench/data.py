"""`dasr bench data`: how fast the data pipeline is, against what training consumes.

Measures, in one process with one thread unless said otherwise:

* synthesis of the demo corpus, in x real time with all cores (``jobs`` espeak-ng processes);
* fbank extraction per core, in x real time over a few hundred real utterances, and the share
  of it spent fetching frames one by one (kaldi-native-fbank's ``get_frame`` loop);
* the loader's batches/s (dataset + bucket sampler + collate, from the on-disk features)
  against the batches/s a `demo` training step consumes on the same batches.
"""

from __future__ import annotations

import itertools
import os
import tempfile
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import torch

from dasr.data import audio
from dasr.data.features import fbank, fbank_options
from dasr.data.loader import AsrDataset, DistributedBucketSampler, batches
from dasr.data.manifest import read_manifest
from dasr.data.tokenizer import CharTokenizer
from dasr.model.blstm import BlstmCtc, preset_config
from lab.bench.timing import interleave, paired_ratio, stats, stats_text
from lab.report import Report, bar, measures_table, new_figure, publish, sharing, stats_bar, verdict
from lab.workload import bare_step, demo_settings, synthesize

TITLE = "Data pipeline speed"
FEATURE_GOAL_X_RT = 1000.0
#: (utterances for fbank, passes over them, loader/step rounds): quick smoke run, full benchmark
SIZES = {True: (40, 3, 4), False: (300, 7, 20)}


def fbank_compute_only(samples: np.ndarray) -> None:
    """kaldi-native-fbank's work for ``samples`` without reading the frames out (see :func:`fbank`)."""
    extractor = knf.OnlineFbank(fbank_options())
    extractor.accept_waveform(audio.TARGET_RATE, samples * 32768.0)
    extractor.input_finished()


def feature_speed(data_dir: str | os.PathLike, utterances: int, passes: int) -> dict:
    """fbank x real time per core over the first ``utterances`` train utterances, and the frame-fetch share."""
    utts = read_manifest(Path(data_dir) / "train.jsonl")[:utterances]
    waves = [audio.load(u.audio, u.start, u.end) for u in utts]
    seconds = sum(len(w) for w in waves) / audio.TARGET_RATE
    times = interleave(
        {"fbank": lambda: [fbank(w) for w in waves], "compute only": lambda: [fbank_compute_only(w) for w in waves]},
        passes,
    )
    return {
        "utterances": len(waves),
        "audio_s": seconds,
        "x_real_time": stats(times["fbank"]).inverse(seconds).as_dict(),
        "x_real_time_compute_only": stats(times["compute only"]).inverse(seconds).as_dict(),
        "get_frame_share": stats([1 - c / f for c, f in zip(times["compute only"], times["fbank"])]).as_dict(),
        "times_s": times,
    }


def loader_vs_step(data_dir: str | os.PathLike, rounds: int) -> dict:
    """Loader batches/s against `demo` training steps/s on the same batches, interleaved batch by batch."""
    settings = demo_settings()
    tokenizer = CharTokenizer()
    dataset = AsrDataset(data_dir, "train", tokenizer)
    sampler = DistributedBucketSampler(dataset.frames, settings["batch_frames"], seed=0)
    torch.manual_seed(0)
    model = BlstmCtc(preset_config("demo", tokenizer.vocab_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=settings["lr"])
    epochs = itertools.count()

    def endless():
        for epoch in epochs:
            sampler.set_epoch(epoch)
            yield from batches(dataset, sampler)

    stream = endless()
    current = {"batch": next(stream)}
    bare_step(model, optimizer, current["batch"], settings["grad_clip"])  # warm-up, untimed
    frames = []

    def load():
        current["batch"] = next(stream)
        frames.append(current["batch"].num_frames)

    times = interleave(
        {"loader": load, "train step": lambda: bare_step(model, optimizer, current["batch"], settings["grad_clip"])},
        rounds,
        alternate=False,
    )  # each step trains on the batch just loaded
    return {
        "batch_frames": settings["batch_frames"],
        "batch_real_frames": frames,
        "loader_batches_per_s": stats(times["loader"]).inverse().as_dict(),
        "step_batches_per_s": stats(times["train step"]).inverse().as_dict(),
        "loader_over_step": paired_ratio(times["train step"], times["loader"]).as_dict(),
        "times_s": times,
    }


def _bottleneck(features: dict) -> str:
    """Which part of fbank extraction keeps it from the goal, in one or two sentences."""
    share = features["get_frame_share"]["median"]
    loop = (
        f"The per-frame Python loop over `OnlineFbank.get_frame` (kaldi-native-fbank returns one frame "
        f"per call) takes {100 * share:.0f} % of the time."
    )
    if features["x_real_time"]["median"] >= FEATURE_GOAL_X_RT:
        return loop
    if features["x_real_time_compute_only"]["median"] >= FEATURE_GOAL_X_RT:
        return loop + " It is the bottleneck: without it extraction would meet the goal."
    return loop + (
        " It is not the main bottleneck: even without it extraction stays below the goal, "
        "so the fbank computation itself (kaldi-native-fbank's C++) sets the speed."
    )


def run(data_dir: str | None, quick: bool, out_dir: str, command: str) -> dict:
    """Run the data benchmark and write ``data.md``, ``data.json`` and ``data.png`` into ``out_dir``.

    Args:
        data_dir: a data dir with features; None to use the corpus synthesised for the synthesis speed.
        quick: a smoke-sized run (well under a minute).
        out_dir: where the report goes.
        command: the command line that started this run, for the report.

    Returns:
        The raw results written to ``data.json``.
    """
    torch.set_num_threads(1)
    utterances, passes, rounds = SIZES[quick]
    with tempfile.TemporaryDirectory(prefix="dasr-bench-") as tmp:
        corpus = Path(tmp) / "corpus"
        synth = synthesize(corpus, quick)
        data = data_dir or str(corpus)
        features = feature_speed(data, utterances, passes)
        loading = loader_vs_step(data, rounds)
    results = {
        "data": data_dir or f"synthesised {synth['hours']:.2f} h (temporary)",
        "quick": quick,
        "synthesis": {k: synth[k] for k in ("hours", "elapsed_s", "x_real_time", "jobs", "features_s")},
        "features": features,
        "loader": loading,
    }
    publish("data", TITLE, command, results, render, out_dir)
    return results


def render(results: dict, report: Report):
    """The sections and figure of the measured ``results``."""
    _, passes, rounds = SIZES[results["quick"]]
    synth = results["synthesis"]
    report.add(
        "Synthesis",
        (
            f"{synth['hours']:.3f} h of demo corpus in {synth['elapsed_s']:.1f} s: **{synth['x_real_time']:.1f}x real time** "
            f"({sharing(synth['jobs'], report.machine['cores'], 'espeak-ng job')}). One run, so no spread."
        ),
    )
    report.add("Feature extraction per core", _features_text(results["features"], passes))
    report.add("Loader against training", _loader_text(results["loader"], rounds))
    return _figure(results)


def _features_text(features: dict, passes: int) -> str:
    x = features["x_real_time"]
    rows = [
        ("fbank, x real time per core", stats_text(x, ".0f")),
        ("compute only (no `get_frame` loop), x real time", stats_text(features["x_real_time_compute_only"], ".0f")),
        ("share of fbank time in the per-frame `get_frame` loop", stats_text(features["get_frame_share"], ".2f")),
    ]
    return (
        f"80-dim fbank (kaldi-native-fbank) of {features['utterances']} train utterances "
        f"({features['audio_s']:.0f} s of audio), 1 process, 1 thread, {passes} passes interleaved with the "
        "same extraction without reading the frames out.\n\n"
        + measures_table(rows)
        + f"\n\nGoal ≥ {FEATURE_GOAL_X_RT:.0f}x real time per core: {verdict(x['median'] >= FEATURE_GOAL_X_RT)}. "
        + _bottleneck(features)
    )


def _loader_text(loading: dict, rounds: int) -> str:
    rows = [
        ("loader, batches/s", stats_text(loading["loader_batches_per_s"])),
        ("training step, batches/s", stats_text(loading["step_batches_per_s"])),
        ("loader ÷ training speed (per batch)", stats_text(loading["loader_over_step"])),
    ]
    return (
        f"`demo` preset batches of {loading['batch_frames']} padded frames from the on-disk features "
        f"(AsrDataset + DistributedBucketSampler + collate), each timed right before a training step on it "
        f"(forward + backward + AdamW, 1 thread); {rounds} batches.\n\n"
        + measures_table(rows)
        + f"\n\nThe loader produces batches {loading['loader_over_step']['median']:.0f}x as fast as one training "
        "process consumes them."
    )


def _figure(results: dict):
    """Synthesis speed, fbank speed against its goal, loader against training step."""
    synth, features, loading = results["synthesis"], results["features"], results["loader"]
    fig, (ax1, ax2, ax3) = new_figure(3)
    x = synth["x_real_time"]
    bar(ax1, ["synthesis\n(all cores)"], [x], [x], [x], f"synthesis ({synth['jobs']} jobs)", "x real time")
    stats_bar(
        ax2,
        ["fbank", "compute only"],
        [features["x_real_time"], features["x_real_time_compute_only"]],
        "features, 1 core",
        "x real time",
        goal=FEATURE_GOAL_X_RT,
    )
    stats_bar(
        ax3,
        ["loader", "demo train step"],
        [loading["loader_batches_per_s"], loading["step_batches_per_s"]],
        "batches/s, 1 thread (median, IQR)",
        "batches/s",
    )
    ax3.set_yscale("log")
    return fig


def run_cli(args, command: str) -> dict:
    """`dasr bench data`: :func:`run` with the command line's options."""
    return run(args.data, args.quick, args.out, command)
