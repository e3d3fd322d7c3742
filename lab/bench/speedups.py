"""`dasr bench speedups --data DATA`: the cheap CPU speed-ups of the real recipe, on its own data.

One process, one thread, the real recipe's model and settings (dasr/recipes/real.yaml) on one worker:

* (a) step time, in interleaved rounds on the same batches: a bare PyTorch loop (loader, forward,
  ``ctc_loss``, backward, clip, AdamW; float32, no augmentation), the dasr trainer in float32, and
  the trainer with bfloat16 autocast (``--precision bf16``: the matrix products of the LSTMs and
  projections in bf16, weights, optimizer and CTC in float32);
* (b) what bf16 costs in accuracy: two runs of the same steps from the same initial weights on the
  same batches, float32 and bf16, then the dev loss and greedy WER of each (evaluated in float32);
* (c) length-sorted batches: padded frames per frame of speech of the bucket sampler's batches
  (sorted by length within buckets of 100 batches) against batches of the same budget drawn
  without sorting (buckets of one batch): the recurrent layers run over every padded frame.
"""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dasr.cli import arg
from dasr.config import TrainConfig, load_recipe
from dasr.data.loader import DistributedBucketSampler, batches, bucket_batches
from dasr.errors import DasrError
from dasr.model.blstm import BlstmCtc
from dasr.parallel.launch import Worker
from dasr.parallel.strategy import SingleStrategy
from dasr.train.experiment import prepare_experiment
from dasr.train.trainer import Trainer, build_optimizer, evaluate
from lab.bench.timing import interleave, paired_ratio, stats, stats_text
from lab.report import Report, measures_table, new_figure, publish, sharing
from lab.workload import bare_step

ARGUMENTS = (
    arg("--rounds", type=int, default=5, help="(a) interleaved rounds (default 5)"),
    arg("--steps", type=int, default=30, help="(a) steps per round (default 30)"),
    arg("--accuracy-steps", type=int, default=1200, help="(b) steps of each run (default 1200)"),
)
TITLE = "Cheap CPU speed-ups of the real recipe: bf16 autocast, sorted batches, the trainer against a bare loop"


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bfloat16 natively (avx512_bf16 or amx_bf16 among its flags)."""
    try:
        flags = Path(cpuinfo).read_text().split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def _trainer(data: str, exp: Path, precision: str) -> Trainer:
    """A one-worker CPU trainer of the real recipe's settings, at ``precision``, in ``exp``."""
    settings = load_recipe("real")
    settings.update(data=data, exp=str(exp), strategy="single", nproc=1, device="cpu", precision=precision)
    settings.update(stop_at_plateau=False, checkpoint_every=0)  # the LR schedule of the recipe's epochs
    config = TrainConfig(**settings)
    config.validate()
    prepare_experiment(config)
    return Trainer(config, SingleStrategy(), Worker())


def _train_steps(trainer: Trainer, steps: int) -> None:
    """The first ``steps`` batches of epoch 0 (``train_one_epoch`` restarts the epoch: the same batches each time)."""
    trainer.sampler.max_batches = steps
    trainer.train_one_epoch()


def step_times(data: str, work: Path, rounds: int, steps: int) -> dict:
    """(a): seconds per step of the bare loop, the trainer in float32 and in bf16, interleaved."""
    fp32, bf16 = _trainer(data, work / "fp32", "fp32"), _trainer(data, work / "bf16", "bf16")
    model = BlstmCtc(fp32.model_config)
    model.load_state_dict(fp32.model.state_dict())
    optimizer = build_optimizer(fp32.config, model)
    sampler = DistributedBucketSampler(fp32.train_set.frames, fp32.config.batch_frames, seed=fp32.config.seed)

    def bare_round() -> None:
        sampler.set_epoch(0)
        for batch in itertools.islice(batches(fp32.train_set, sampler), steps):  # as the trainer: at most an epoch
            bare_step(model, optimizer, batch, fp32.config.grad_clip)

    tasks = {"bare": bare_round, "fp32": lambda: _train_steps(fp32, steps), "bf16": lambda: _train_steps(bf16, steps)}
    for task in tasks.values():  # warm-up, untimed
        task()
    times = interleave(tasks, rounds)
    for trainer in (fp32, bf16):
        trainer.metrics.close()
    return {
        "steps_per_round": steps,
        "rounds": rounds,
        "step_s": {name: stats(t).scaled(1 / steps).as_dict() for name, t in times.items()},
        "fp32_over_bare": paired_ratio(times["fp32"], times["bare"]).as_dict(),
        "fp32_over_bf16": paired_ratio(times["fp32"], times["bf16"]).as_dict(),
        "times_s": times,
    }


def bf16_accuracy(data: str, work: Path, steps: int) -> dict:
    """(b): dev loss and greedy WER after ``steps`` steps in float32 and in bf16 from the same start."""
    out = {}
    for precision in ("fp32", "bf16"):
        trainer = _trainer(data, work / f"accuracy-{precision}", precision)
        started = time.perf_counter()
        _train_steps(trainer, steps)
        train_s = time.perf_counter() - started
        trainer.metrics.close()
        dev = evaluate(trainer.model, trainer.dev_set, trainer.tokenizer, Worker(), trainer.config.batch_frames, False)
        out[precision] = {**dev, "train_s": train_s, "steps": trainer.progress.step}
    return out


def padding(frames: np.ndarray, batch_frames: int, seed: int = 0) -> dict:
    """(c): padded frames per frame of speech, sorted (buckets of 100 batches) and unsorted (buckets of 1)."""
    out = {}
    for name, bucket in (("sorted", 100), ("unsorted", 1)):
        drawn = bucket_batches(frames, batch_frames, np.random.default_rng(seed), bucket_size=bucket)
        padded = sum(len(b) * int(frames[b].max()) for b in drawn)
        out[name] = {"batches": len(drawn), "padded_per_speech_frame": padded / int(frames.sum())}
    return out


def run_cli(args, command: str) -> dict:
    """Measure (a), (b), (c) on ``--data`` (the real recipe's data dir) and write speedups.md/.json/.png."""
    if args.data is None:
        raise DasrError("dasr bench speedups needs --data: the real recipe's data dir (e.g. exp/real/data)")
    torch.set_num_threads(1)
    rounds, steps, accuracy_steps = (2, 3, 20) if args.quick else (args.rounds, args.steps, args.accuracy_steps)
    with tempfile.TemporaryDirectory(prefix="dasr-speedups-") as tmp:
        timing = step_times(args.data, Path(tmp), rounds, steps)
        accuracy = bf16_accuracy(args.data, Path(tmp), accuracy_steps)
        trainer = _trainer(args.data, Path(tmp) / "frames", "fp32")
        trainer.metrics.close()
        pad = padding(trainer.train_set.frames, trainer.config.batch_frames)
    results = {
        "data": args.data,
        "cpu_has_bf16": cpu_has_bf16(),
        "timing": timing,
        "accuracy": accuracy,
        "padding": pad,
    }
    publish("speedups", TITLE, command, results, render, args.out)
    return results


def render(results: dict, report: Report):
    """The three parts' tables and a figure of the step times."""
    t, a, p = results["timing"], results["accuracy"], results["padding"]
    cores = report.machine["cores"]
    rows = [(f"{name}, s per step", stats_text(s, ".4f")) for name, s in t["step_s"].items()]
    rows += [("trainer fp32 ÷ bare loop", stats_text(t["fp32_over_bare"], ".3f"))]
    rows += [("trainer fp32 ÷ trainer bf16 (the bf16 speed-up)", stats_text(t["fp32_over_bf16"], ".3f"))]
    report.add(
        "(a) Step time",
        f"{t['rounds']} interleaved rounds of {t['steps_per_round']} steps each, on the same batches; 1 process, "
        f"1 thread ({sharing(1, cores, 'worker')}); this CPU {'has' if results['cpu_has_bf16'] else 'lacks'} "
        "native bf16 (avx512_bf16 or amx_bf16). The trainer also speed-perturbs and masks (SpecAugment) each "
        "batch, which the bare loop does not.\n\n" + measures_table(rows),
    )
    acc = "| precision | steps | train s | dev loss | dev WER greedy |\n|---|---|---|---|---|\n"
    for name, r in a.items():
        acc += f"| {name} | {r['steps']} | {r['train_s']:.0f} | {r['dev_loss']:.2f} | {100 * r['dev_wer']:.1f} % |\n"
    report.add("(b) bf16 and accuracy (same start, same batches, evaluated in float32)", acc)
    pad = "| batches | count | padded frames per frame of speech |\n|---|---|---|\n"
    for name, r in p.items():
        pad += f"| {name} | {r['batches']} | {r['padded_per_speech_frame']:.3f} |\n"
    report.add("(c) Length-sorted batches", pad)
    bf16_ratio = 1 / t["fp32_over_bf16"]["median"]
    saved = 1 - p["sorted"]["padded_per_speech_frame"] / p["unsorted"]["padded_per_speech_frame"]
    report.add(
        "What is taken",
        f"- bf16 autocast: a bf16 step takes {bf16_ratio:.2f}x a float32 one here"
        + (
            ", a speed-up: ask for it with `--precision bf16` (`--precision auto` keeps float32 on the CPU)."
            if bf16_ratio < 0.95
            else ", no speed-up on these long utterances and small batches: `--precision auto` keeps float32 on "
            "the CPU, and `--precision bf16` asks for it."
        )
        + f"\n- Length-sorted batches (the bucket sampler, already the default) pad {100 * saved:.0f} % fewer frames "
        "than unsorted batches of the same budget.\n"
        f"- The trainer's step costs {t['fp32_over_bare']['median']:.2f}x a bare loop's, with the speed perturbation "
        "and masking the bare loop leaves out.",
    )
    fig, (ax,) = new_figure(1, width_per_panel=6.0, height=3.2)
    names = list(t["step_s"])
    ax.barh(names, [t["step_s"][n]["median"] for n in names], xerr=None)
    ax.set_xlabel("seconds per step (median)")
    ax.invert_yaxis()
    fig.tight_layout()
    return fig
