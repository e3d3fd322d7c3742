"""`dasr bench train`: the trainer's overhead, decoding speed, and the paper-size model's step time.

Measures, in one process with one thread unless said otherwise:

* (a) the dasr trainer (``Trainer.train_one_epoch``: loader, LR schedule, clipping,
  ``strategy.step``, metrics) against a bare PyTorch loop on the same model, optimizer and
  batches, interleaved round by round, on the `demo` preset; samples/s, x real time, peak RSS
  and the loader's share of the step time;
* (b) decoding in x real time per core: the acoustic model's forward pass and the lexicon beam
  search with the data dir's word LM;
* (c) the `paper` preset: parameter count and step time of one batch on 1 and 2 threads.
"""

from __future__ import annotations

import dataclasses
import itertools
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dasr.cli import arg
from dasr.config import TrainConfig
from dasr.data.features import FRAME_SHIFT_S
from dasr.data.loader import AsrDataset, DistributedBucketSampler, batches, collate
from dasr.data.tokenizer import Tokenizer
from dasr.decode.ctc import LexiconBeamDecoder
from dasr.decode.lm_build import lexicon_words
from dasr.model.blstm import BlstmCtc, num_parameters, preset_config
from dasr.parallel.launch import Worker
from dasr.parallel.strategy import SingleStrategy
from dasr.train.experiment import prepare_experiment
from dasr.train.plots import read_metrics
from dasr.train.trainer import Trainer, build_optimizer
from lab.bench.timing import interleave, paired_ratio, stats, stats_text
from lab.report import Report, measures_table, new_figure, publish, sharing, stats_bar, verdict
from lab.workload import bare_step, demo_settings, ensure_lm, random_batch, synthesize

ARGUMENTS = (arg("--exp", default=None, help="decode with EXP/best.pt (default: the briefly trained demo model)"),)

TITLE = "Training and decoding speed"
OVERHEAD_GOAL = 0.05
DATA_SHARE_GOAL = 0.02
DECODE_GOAL_X_RT = 100.0
LM_WEIGHT, WORD_SCORE, BEAM_SIZE = 1.0, 0.0, 50


@dataclasses.dataclass
class Sizes:
    """How much each part runs: a quick smoke run or the full benchmark."""

    rounds: int  # (a) interleaved rounds
    steps: int  # (a) training steps per round
    decode_utts: int  # (b) test utterances
    decode_passes: int  # (b) interleaved passes
    paper_batch: tuple[int, float]  # (c) utterances x seconds
    paper_repeats: int  # (c) interleaved steps per thread count
    paper_threads: tuple[int, ...]  # (c) thread counts (2 threads can stall for minutes on a busy machine)


SIZES = {True: Sizes(3, 2, 10, 2, (2, 1.0), 1, (1,)), False: Sizes(7, 10, 100, 3, (8, 4.0), 3, (1, 2))}


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (``getrusage`` maxrss, KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def demo_trainer(data_dir: str, exp_dir: str, steps: int) -> tuple[TrainConfig, Trainer]:
    """A single-process CPU trainer of the `demo` settings for ``steps`` steps, no checkpoints, in ``exp_dir``."""
    settings = demo_settings()
    config = TrainConfig(
        **{
            **settings,
            "data": data_dir,
            "exp": exp_dir,
            "strategy": "single",
            "nproc": 1,
            "device": "cpu",
            "max_steps": steps,
            "checkpoint_every": 0,
        }
    )
    config.validate()
    prepare_experiment(config)
    return config, Trainer(config, SingleStrategy(), Worker())


def _round_size(sampler: DistributedBucketSampler, frames: np.ndarray, steps: int) -> tuple[int, int]:
    """Utterances and feature frames of the first ``steps`` batches of epoch 0 (what every round trains on)."""
    sampler.set_epoch(0)
    round_batches = list(itertools.islice(sampler, steps))
    return sum(len(b) for b in round_batches), sum(int(frames[i]) for b in round_batches for i in b)


def trainer_vs_bare(data_dir: str, exp_dir: str, rounds: int, steps: int) -> tuple[dict, Trainer]:
    """Rounds of ``steps`` trainer steps and ``steps`` bare steps on the same batches, interleaved.

    Returns:
        The results, and the trainer (its model has now been trained briefly).
    """
    config, trainer = demo_trainer(data_dir, exp_dir, steps)
    steps = min(steps, len(trainer.sampler))
    model = BlstmCtc(trainer.model_config)
    model.load_state_dict(trainer.model.state_dict())
    optimizer = build_optimizer(config, model)
    sampler = DistributedBucketSampler(trainer.train_set.frames, config.batch_frames, seed=config.seed)
    load_times: list[float] = []

    def trainer_round():
        config.max_steps = trainer.progress.step + steps  # train_one_epoch restarts epoch 0: the same batches
        trainer.train_one_epoch()

    def bare_round():
        sampler.set_epoch(0)
        stream, loading = batches(trainer.train_set, sampler), 0.0
        for _ in range(steps):
            start = time.perf_counter()
            batch = next(stream)
            loading += time.perf_counter() - start
            bare_step(model, optimizer, batch, config.grad_clip)
        load_times.append(loading)

    trainer_round()  # warm-up, untimed
    bare_round()
    load_times.clear()
    times = interleave({"trainer": trainer_round, "bare": bare_round}, rounds)
    utts, frames = _round_size(sampler, trainer.train_set.frames, steps)
    trainer_shares = [m["data_share"] for m in read_metrics(Path(exp_dir)) if m.get("kind") == "train"]
    trainer.metrics.close()
    trainer_time = stats(times["trainer"])
    return {
        "steps_per_round": steps,
        "rounds": rounds,
        "utterances_per_round": utts,
        "audio_s_per_round": frames * FRAME_SHIFT_S,
        "trainer_step_s": trainer_time.scaled(1 / steps).as_dict(),
        "bare_step_s": stats(times["bare"]).scaled(1 / steps).as_dict(),
        "trainer_over_bare": paired_ratio(times["trainer"], times["bare"]).as_dict(),
        "samples_per_s": trainer_time.inverse(utts).as_dict(),
        "x_real_time": trainer_time.inverse(frames * FRAME_SHIFT_S).as_dict(),
        "data_share_bare": paired_ratio(load_times, times["bare"]).as_dict(),
        "data_share_trainer_metrics": stats(trainer_shares).as_dict() if trainer_shares else None,
        "peak_rss_mib": peak_rss_mib(),
        "times_s": times,
    }, trainer


@torch.no_grad()
def decode_speed(data_dir: str, model: BlstmCtc, tokenizer: Tokenizer, utterances: int, passes: int) -> dict:
    """x real time per core of the acoustic model and of the LM beam search on test utterances."""
    dataset = AsrDataset(data_dir, "test", tokenizer)
    items = [dataset[i] for i in range(min(utterances, len(dataset)))]
    words = lexicon_words(data_dir)
    decoder = LexiconBeamDecoder(tokenizer, words, str(ensure_lm(data_dir)), LM_WEIGHT, WORD_SCORE, BEAM_SIZE)
    model.eval()
    inputs = [collate([item]) for item in items]
    emissions = [model(b.feats, b.feat_lens) for b in inputs]
    seconds = sum(len(feats) for _, feats, _, _ in items) * FRAME_SHIFT_S
    times = interleave(
        {
            "acoustic model": lambda: [model(b.feats, b.feat_lens) for b in inputs],
            "beam search + LM": lambda: [decoder.decode_batch(lp, n) for lp, n in emissions],
        },
        passes,
    )
    hyps = [decoder.decode_batch(lp, n)[0] for lp, n in emissions]
    return {
        "utterances": len(items),
        "audio_s": seconds,
        "lm_weight": LM_WEIGHT,
        "word_score": WORD_SCORE,
        "beam_size": BEAM_SIZE,
        "lexicon_words": len(words),
        "mean_words_per_hypothesis": float(np.mean([len(h.split()) for h in hyps])),
        "acoustic_x_real_time": stats(times["acoustic model"]).inverse(seconds).as_dict(),
        "search_x_real_time": stats(times["beam search + LM"]).inverse(seconds).as_dict(),
        "times_s": times,
    }


def paper_step(vocab_size: int, batch_shape: tuple[int, float], repeats: int, threads: tuple[int, ...]) -> dict:
    """Parameters of the `paper` preset and its training step time on each thread count, interleaved."""
    torch.manual_seed(0)
    model = BlstmCtc(preset_config("paper", vocab_size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batch = random_batch(*batch_shape, vocab_size)

    def step(n: int):
        torch.set_num_threads(n)
        bare_step(model, optimizer, batch, 5.0)

    try:
        for n in threads:  # warm-up of each thread pool, untimed
            step(n)
        times = interleave({n: lambda n=n: step(n) for n in threads}, repeats)
    finally:
        torch.set_num_threads(1)
    return {
        "parameters": num_parameters(model),
        "output_units": vocab_size,
        "utterances": batch_shape[0],
        "seconds_each": batch_shape[1],
        "step_s": {n: stats(t).as_dict() for n, t in times.items()},
        "speedup_over_1_thread": {n: paired_ratio(times[1], t).as_dict() for n, t in times.items() if n != 1},
        "times_s": times,
    }


def run(data_dir: str | None, exp: str | None, quick: bool, out_dir: str, command: str) -> dict:
    """Run the training benchmark and write ``train.md``, ``train.json`` and ``train.png`` into ``out_dir``.

    Args:
        data_dir: a data dir with features; None to synthesise a small one in a temporary dir.
        exp: an experiment dir whose ``best.pt`` makes the emissions for the decoding speed; None to
            use the demo model trained briefly in part (a).
        quick: a smoke-sized run (well under a minute).
        out_dir: where the report goes.
        command: the command line that started this run, for the report.

    Returns:
        The raw results written to ``train.json``.
    """
    torch.set_num_threads(1)
    sizes = SIZES[quick]
    with tempfile.TemporaryDirectory(prefix="dasr-bench-") as tmp:
        if data_dir is None:
            data_dir = str(Path(tmp) / "corpus")
            synthesize(data_dir, quick)
        steps, trainer = trainer_vs_bare(data_dir, str(Path(tmp) / "exp"), sizes.rounds, sizes.steps)
        if exp is None:
            model, tokenizer = trainer.model, trainer.tokenizer
            source = (
                f"the `demo` model after the {trainer.progress.step} training steps of part (a) "
                "(barely trained: search speed depends on the emissions, and a converged model's "
                "peakier emissions usually prune better; pass `--exp EXP` to use EXP/best.pt)"
            )
        else:
            from dasr.decode.recognizer import Recognizer

            recognizer = Recognizer(exp)
            model, tokenizer = recognizer.model, recognizer.tokenizer
            source = f"`{exp}/best.pt`"
        decoding = decode_speed(data_dir, model, tokenizer, sizes.decode_utts, sizes.decode_passes)
        paper = paper_step(tokenizer.vocab_size, sizes.paper_batch, sizes.paper_repeats, sizes.paper_threads)
    results = {
        "data": data_dir,
        "exp": exp,
        "quick": quick,
        "emissions_from": source,
        "trainer": steps,
        "decode": decoding,
        "paper": paper,
        "peak_rss_mib": peak_rss_mib(),
    }
    publish("train", TITLE, command, results, render, out_dir)
    return results


def render(results: dict, report: Report):
    """The sections and figure of the measured ``results``."""
    sizes, cores = SIZES[results["quick"]], report.machine["cores"]
    report.add(
        "(a) Trainer against a bare PyTorch loop (`demo` preset)", _trainer_text(results["trainer"], sizes, cores)
    )
    report.add("(b) Decoding speed per core", _decode_text(results["decode"], results["emissions_from"], sizes))
    report.add("(c) The `paper` preset", _paper_text(results["paper"], sizes, cores))
    return _figure(results)


def _trainer_text(steps: dict, sizes: Sizes, cores: int) -> str:
    overhead = steps["trainer_over_bare"]["median"] - 1
    share = steps["data_share_bare"]["median"]
    trainer_share = steps["data_share_trainer_metrics"]
    rows = [
        ("trainer step, s", stats_text(steps["trainer_step_s"])),
        ("bare step, s", stats_text(steps["bare_step_s"])),
        ("trainer ÷ bare (per round)", stats_text(steps["trainer_over_bare"], ".3f")),
        ("samples/s (trainer)", stats_text(steps["samples_per_s"])),
        ("x real time (trainer)", stats_text(steps["x_real_time"])),
        ("loader share of step time (bare loop)", stats_text(steps["data_share_bare"], ".4f")),
    ]
    if trainer_share:
        rows.append(("loader share (trainer's own metrics.jsonl)", stats_text(trainer_share, ".4f")))
    rows.append(("peak RSS of the process, MiB", f"{steps['peak_rss_mib']:.0f}"))
    return (
        f"{sizes.rounds} rounds, interleaved, of {steps['steps_per_round']} steps each of the dasr trainer "
        "(`Trainer.train_one_epoch`: loader, LR schedule, clipping, `strategy.step`, metrics) and of a bare loop "
        "(loader, forward, `ctc_loss`, backward, clip, AdamW step) on the same model, optimizer and batches; "
        f"1 process, 1 thread ({sharing(1, cores, 'worker')}).\n\n"
        + measures_table(rows)
        + f"\n\nOverhead {100 * overhead:+.1f} % (goal ≤ {100 * OVERHEAD_GOAL:.0f} %: "
        f"{verdict(overhead <= OVERHEAD_GOAL)}); loader share {100 * share:.2f} % "
        f"(goal ≤ {100 * DATA_SHARE_GOAL:.0f} %: {verdict(share <= DATA_SHARE_GOAL)})."
    )


def _decode_text(decoding: dict, source: str, sizes: Sizes) -> str:
    search = decoding["search_x_real_time"]
    rows = [
        ("acoustic model forward, x real time", stats_text(decoding["acoustic_x_real_time"], ".0f")),
        ("beam search + LM, x real time", stats_text(search, ".0f")),
    ]
    return (
        f"{decoding['utterances']} test utterances ({decoding['audio_s']:.0f} s of audio), 1 thread, "
        f"{sizes.decode_passes} passes interleaved. Emissions from {source}. Lexicon beam search "
        f"(flashlight) over {decoding['lexicon_words']} words with the data dir's `lm.arpa`, beam {BEAM_SIZE}, "
        f"LM weight {LM_WEIGHT}, word score {WORD_SCORE}; {decoding['mean_words_per_hypothesis']:.1f} words per "
        "hypothesis on average.\n\n"
        + measures_table(rows)
        + f"\n\nBeam search goal ≥ {DECODE_GOAL_X_RT:.0f}x real time per core: "
        f"{verdict(search['median'] >= DECODE_GOAL_X_RT)}."
    )


def _paper_text(paper: dict, sizes: Sizes, cores: int) -> str:
    rows = [(f"step, {sharing(n, cores, 'thread')}, s", stats_text(d)) for n, d in paper["step_s"].items()]
    rows += [
        (f"speed-up of {n} threads over 1", stats_text(d, ".2f")) for n, d in paper["speedup_over_1_thread"].items()
    ]
    return (
        f"{paper['parameters'] / 1e6:.1f} M parameters ({paper['output_units']} output units). One training step "
        f"(forward + backward + AdamW) on a random batch of {paper['utterances']} utterances x "
        f"{paper['seconds_each']:g} s, {sizes.paper_repeats} steps per thread count, interleaved.\n\n"
        + measures_table(rows)
        + "\n\nMore threads help only where the cores are free: beside other busy processes (see the load "
        "average above) OpenMP threads wait on each other and a step can take many times longer."
    )


def _figure(results: dict):
    """Trainer against bare step, decoding speed against its goal, the paper preset's step per thread count."""
    steps, decoding, paper = results["trainer"], results["decode"], results["paper"]
    overhead = steps["trainer_over_bare"]["median"] - 1
    fig, (ax1, ax2, ax3) = new_figure(3)
    stats_bar(
        ax1,
        ["dasr trainer", "bare PyTorch"],
        [steps["trainer_step_s"], steps["bare_step_s"]],
        f"demo step, 1 thread (overhead {100 * overhead:+.1f} %)",
        "seconds per step",
    )
    stats_bar(
        ax2,
        ["acoustic model", "beam search + LM"],
        [decoding["acoustic_x_real_time"], decoding["search_x_real_time"]],
        "decoding, 1 core",
        "x real time",
        goal=DECODE_GOAL_X_RT,
    )
    stats_bar(
        ax3,
        [f"{n} thread{'s' if int(n) > 1 else ''}" for n in paper["step_s"]],
        list(paper["step_s"].values()),
        f"paper preset step, {paper['utterances']} x {paper['seconds_each']:g} s",
        "seconds per step",
    )
    return fig


def run_cli(args, command: str) -> dict:
    """`dasr bench train`: :func:`run` with the command line's options."""
    return run(args.data, args.exp, args.quick, args.out, command)
