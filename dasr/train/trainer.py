"""The training loop. It knows nothing about how workers communicate: it talks to a Strategy.

Launch (one worker per process; `dasr train` starts them itself):
    dasr train --data data/demo --exp exp/demo --preset demo --epochs 8
    dasr train ... --strategy adpsgd --nproc 4
    torchrun --nproc-per-node 4 -m dasr.train --config exp/demo/config.yaml

Skeleton as icefall's recipes: compute_loss, train_one_epoch, evaluate, run.
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from dasr.config import TrainConfig, save_config
from dasr.data.loader import AsrDataset, Augment, Batch, DistributedBucketSampler, batches
from dasr.data.manifest import read_manifest
from dasr.data.text import normalize
from dasr.data.tokenizer import Tokenizer, build_tokenizer, load_tokenizer
from dasr.decode.ctc import greedy_decode
from dasr.decode.score import score
from dasr.errors import DasrError
from dasr.model.blstm import BlstmCtc, describe, preset_config
from dasr.parallel.straggler import Straggler
from dasr.parallel.strategy import SingleStrategy, Strategy
from dasr.train import checkpoint
from dasr.train.schedule import LrSchedule, scaled_peak_lr

log = logging.getLogger(__name__)


@dataclass
class Worker:
    """Where this process sits in the run."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class Progress:
    """Counters saved in checkpoints."""

    step: int = 0
    epoch: int = 0
    bad_in_a_row: int = 0
    bad_total: int = 0
    best_dev_wer: float = math.inf
    train_s: float = 0.0  # seconds spent training (evaluations and checkpoints left out)
    evals: int = 0  # time mode: evaluations done


def prepare_experiment(config: TrainConfig) -> Tokenizer:
    """Create the exp dir, its tokenizer and resolved config (once, before workers start)."""
    exp = Path(config.exp)
    exp.mkdir(parents=True, exist_ok=True)
    train_manifest = Path(config.data) / "train.jsonl"
    if not train_manifest.exists():
        raise DasrError(
            f"{config.data} has no train.jsonl: make one with `dasr corpus synth` or `dasr corpus import-*`"
        )
    if config.resume and (exp / "tokenizer.json").exists():
        tokenizer = load_tokenizer(exp)
    else:
        texts = [u.text for u in read_manifest(train_manifest)]
        tokenizer = build_tokenizer(config.units, texts, exp, config.bpe_vocab)
    cmvn = Path(config.data) / "cmvn.npz"
    if not cmvn.exists():
        raise DasrError(f"{config.data} has no features: run `dasr features {config.data}` first")
    shutil.copyfile(cmvn, exp / "cmvn.npz")  # transcribe needs it without the data dir
    save_config(config, exp / "config.yaml")
    return tokenizer


def select_device(name: str) -> torch.device:
    """'auto' means CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DasrError("--device cuda was asked for but no CUDA device is available")
    return torch.device(name)


def build_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay
        )
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def build_schedule(config: TrainConfig, world_size: int, steps_per_epoch: int) -> LrSchedule:
    """Peak LR scaled to the effective batch (world_size x batch_frames), warm-up, anneal."""
    reference = config.reference_batch_frames or config.batch_frames
    peak = scaled_peak_lr(config.lr, world_size * config.batch_frames, reference, config.lr_scaling)
    total = config.max_steps or config.epochs * steps_per_epoch
    return LrSchedule(peak, config.warmup_steps, config.anneal, config.anneal_start_epoch, total)


def forward(model: torch.nn.Module, batch: Batch, device: torch.device, amp: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch's float32 (B, T', V) log-probs and their lengths (bf16 autocast when ``amp``)."""
    feats, lens = batch.feats.to(device, non_blocking=True), batch.feat_lens.to(device)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
        log_probs, out_lens = model(feats, lens)
    return log_probs.float(), out_lens


def ctc_loss(log_probs: torch.Tensor, out_lens: torch.Tensor, batch: Batch) -> torch.Tensor:
    """CTC loss summed over the batch's utterances, divided by their number."""
    device = log_probs.device
    loss = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1),
        batch.labels.to(device),
        out_lens,
        batch.label_lens.to(device),
        blank=0,
        reduction="sum",
        zero_infinity=True,
    )
    return loss / len(batch.ids)


def compute_loss(model: torch.nn.Module, batch: Batch, device: torch.device, amp: bool) -> torch.Tensor:
    """Forward pass and CTC loss of one batch."""
    return ctc_loss(*forward(model, batch, device, amp), batch)


#: strategy counters the train record carries per step instead of cumulatively
_PER_STEP = ("comm_s", "exposed_comm_s")


class MetricsLog:
    """Appends JSON lines to EXP/metrics.jsonl (one write per line, so ranks can share the file)."""

    def __init__(self, path: Path, rank: int, tensorboard_dir: Path | None) -> None:
        self.path, self.rank = path, rank
        self.start = time.time()
        self.tb = None
        if tensorboard_dir is not None:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(tensorboard_dir))

    def write(self, record: dict) -> None:
        record = {"rank": self.rank, "wall_s": round(time.time() - self.start, 3), **record}
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())
        finally:
            os.close(fd)
        if self.tb is not None and "step" in record:
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("rank", "step"):
                    self.tb.add_scalar(f"{record.get('kind', 'train')}/{key}", value, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


def _all_reduce(values: list[float], worker: Worker, op) -> list[float]:
    if worker.world_size == 1:
        return values
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64, device=worker.device if worker.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=getattr(dist.ReduceOp, op))
    return t.tolist()


def _all_reduce_sum(values: list[float], worker: Worker) -> list[float]:
    return _all_reduce(values, worker, "SUM")


def _all_reduce_max(values: list[float], worker: Worker) -> list[float]:
    return _all_reduce(values, worker, "MAX")


@torch.no_grad()
def evaluate(
    model: torch.nn.Module, dataset: AsrDataset, tokenizer: Tokenizer, worker: Worker, batch_frames: int, amp: bool
) -> dict:
    """Dev loss and greedy WER over the whole split; ranks split the work and sum their counts."""
    model.eval()
    sampler = DistributedBucketSampler(dataset.frames, batch_frames, seed=0)
    loss_sum = utts = 0.0
    refs, hyps = {}, {}
    for i, batch in enumerate(batches(dataset, sampler)):
        if i % worker.world_size != worker.rank:
            continue
        log_probs, out_lens = forward(model, batch, worker.device, amp)
        loss_sum += float(ctc_loss(log_probs, out_lens, batch)) * len(batch.ids)
        utts += len(batch.ids)
        for utt_id, text, hyp in zip(batch.ids, batch.texts, greedy_decode(log_probs.cpu(), out_lens.cpu(), tokenizer)):
            refs[utt_id], hyps[utt_id] = normalize(text), hyp
    result = score(refs, hyps)
    errors = result["substitutions"] + result["deletions"] + result["insertions"]
    loss_sum, utts, errors, words = _all_reduce_sum([loss_sum, utts, errors, result["num_words"]], worker)
    model.train()
    return {"dev_loss": loss_sum / max(utts, 1), "dev_wer": errors / max(words, 1)}


def resident_mib() -> float | None:
    """This process's resident memory (VmRSS from /proc/self/status) in MiB; None where there is no /proc."""
    try:
        with open("/proc/self/status") as f:
            kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    except (OSError, StopIteration):
        return None
    return round(kib / 1024, 2)


def rng_state() -> dict:
    """Global RNG states as plain lists and tensors (loadable with weights_only=True)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [keys.tolist(), pos, has_gauss, gauss],  # type: ignore[attr-defined]  # numpy's stub: get_state() may be a dict
        "python": list(random.getstate()[1]),
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    random.setstate((3, tuple(state["python"]), None))


class Trainer:
    """One worker's training run."""

    def __init__(self, config: TrainConfig, strategy: Strategy, worker: Worker) -> None:
        self.config, self.strategy, self.worker = config, strategy, worker
        self.exp = Path(config.exp)
        self.checkpoints = self.exp / "checkpoints"
        torch.manual_seed(config.seed)  # identical initial replicas on every rank
        random.seed(config.seed)
        np.random.seed(config.seed)
        self.tokenizer = load_tokenizer(self.exp)
        augment = Augment(
            spec_augment=config.spec_augment, speed_factors=(0.9, 1.0, 1.1) if config.speed_perturb else ()
        )
        self.train_set = AsrDataset(
            config.data, "train", self.tokenizer, augment, seed=config.seed * 1000 + worker.rank
        )
        self.dev_set = AsrDataset(config.data, "dev", self.tokenizer)
        if len(self.train_set) == 0:
            raise DasrError(f"no training utterances with features in {config.data}")
        self.sampler = DistributedBucketSampler(
            self.train_set.frames, config.batch_frames, worker.rank, worker.world_size, config.seed
        )
        if len(self.sampler) == 0:
            raise DasrError(
                f"{len(self.train_set)} training utterances make fewer batches than the "
                f"{worker.world_size} workers: lower --batch-frames or use fewer workers"
            )
        self.model_config = preset_config(config.preset, self.tokenizer.vocab_size)
        self.model = BlstmCtc(self.model_config).to(worker.device)
        self.optimizer = build_optimizer(config, self.model)
        self.schedule = build_schedule(config, worker.world_size, len(self.sampler))
        self.amp = worker.device.type == "cuda"
        self.progress = Progress()
        self.metrics = MetricsLog(
            self.exp / "metrics.jsonl", worker.rank, self.exp / "tensorboard" if worker.is_main else None
        )
        self.resumed_mid_epoch = False
        self.evaluated_last = True
        self.straggler = Straggler.parse(",".join(config.straggler), worker.rank)
        self.busy_s = 0.0  # training-thread seconds of the steps since the last metrics record
        self.net = strategy.wrap(self.model, self.optimizer)  # after .to(device), before loading state
        if config.resume:
            self.load_latest()

    # -- checkpoints -------------------------------------------------------------------------
    def state(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "sampler": self.sampler.state_dict(),
            "strategy": self.strategy.state_dict(),
            "progress": asdict(self.progress),
            "rng": rng_state(),
            "data_rng": self.train_set.rng.bit_generator.state,
            "units": self.tokenizer.units,
        }

    def save_checkpoint(self) -> None:
        """Consensus, then every rank writes its file; rank 0 marks the checkpoint complete.

        The checkpoint is named after the largest step of any rank: ranks of independent
        strategies (adpsgd, ps, time mode) may have taken different numbers of steps.
        """
        self.strategy.consensus(self.model)
        step = int(_all_reduce_max([self.progress.step], self.worker)[0])
        checkpoint.save_rank(self.checkpoints, step, self.worker.rank, self.state())
        self._barrier()
        if self.worker.is_main:
            checkpoint.mark_complete(self.checkpoints, step, self.worker.world_size, self.config.keep_checkpoints)

    def load_latest(self) -> None:
        """Resume every rank from the newest step that is complete and loads on all of them."""
        state = checkpoint.load_agreed(
            self.checkpoints, self.worker.rank, lambda value: int(_all_reduce([value], self.worker, "MIN")[0])
        )
        if state is None:
            log.info("no checkpoint in %s: starting from scratch", self.checkpoints)
            return
        gossip_round = int(state["strategy"].get("round", 0))
        lowest, highest = _all_reduce([-gossip_round, gossip_round], self.worker, "MAX")
        if -lowest != highest:
            raise DasrError(
                f"checkpoint step {state['progress']['step']} holds gossip rounds {int(-lowest)} to {int(highest)} "
                "on different ranks; a checkpoint taken after consensus holds one round on every rank"
            )
        if state["units"] != self.tokenizer.units:
            raise DasrError(
                f"checkpoint in {self.checkpoints} was trained with other units than {self.exp}/tokenizer.json"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        self.strategy.load_state_dict(state["strategy"])
        self.progress = Progress(**state["progress"])
        set_rng_state(state["rng"])
        self.train_set.rng.bit_generator.state = state["data_rng"]
        self.resumed_mid_epoch = 0 < self.sampler.position < len(self.sampler)
        if self.sampler.position >= len(self.sampler):
            self.progress.epoch = self.sampler.epoch + 1
        log.info(
            "resumed from step %d (epoch %d, batch %d)", self.progress.step, self.progress.epoch, self.sampler.position
        )

    def _barrier(self) -> None:
        if self.worker.world_size > 1:
            import torch.distributed as dist

            dist.barrier()

    # -- training ----------------------------------------------------------------------------
    def finished(self) -> bool:
        c = self.config
        if c.eval_every_s > 0:
            return self.progress.evals * c.eval_every_s >= c.train_seconds
        return (c.max_steps and self.progress.step >= c.max_steps) or (
            not c.max_steps and self.progress.epoch >= c.epochs
        )

    def evaluation_due(self) -> bool:
        """Time mode: this step's training clock passed the next evaluation mark (as the strategy agrees)."""
        c, p = self.config, self.progress
        return c.eval_every_s > 0 and self.strategy.agree(p.train_s >= (p.evals + 1) * c.eval_every_s)

    def train_step(self, batch: Batch) -> float | None:
        """One optimizer step; None when the loss or gradient was not finite (batch skipped)."""
        c, p = self.config, self.progress
        lr = self.schedule.lr(p.step, p.epoch + self.sampler.position / len(self.sampler))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        started = time.perf_counter()
        with self.straggler.step():
            self.optimizer.zero_grad(set_to_none=True)
            loss = compute_loss(self.net, batch, self.worker.device, self.amp)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip or math.inf)
        if not (torch.isfinite(loss) and torch.isfinite(grad_norm)):
            p.bad_in_a_row += 1
            p.bad_total += 1
            log.warning(
                "rank %d step %d: non-finite loss/gradient, batch %s skipped (%d in a row)",
                self.worker.rank,
                p.step,
                batch.ids[:3],
                p.bad_in_a_row,
            )
            if p.bad_in_a_row >= c.max_bad_steps:
                raise DasrError(
                    f"{p.bad_in_a_row} non-finite losses in a row at step {p.step}: the run diverged; "
                    f"lower --lr or raise --warmup-steps and resume from the last checkpoint"
                )
            return None
        p.bad_in_a_row = 0
        self.strategy.step(self.optimizer)
        self.busy_s += time.perf_counter() - started
        return float(loss.detach())

    def train_one_epoch(self) -> None:
        c, p = self.config, self.progress
        self.evaluated_last = False
        if not self.resumed_mid_epoch:
            self.sampler.set_epoch(p.epoch)
        self.resumed_mid_epoch = False
        bar = tqdm(
            total=len(self.sampler),
            initial=self.sampler.position,
            desc=f"epoch {p.epoch}",
            disable=None if self.worker.is_main else True,
            unit="batch",
            leave=False,
        )
        window_loss, window_frames, window_utts, window_start = [], 0, 0, time.time()
        window_steps, window_comm = 0, self._comm_totals()
        data_time = self.busy_s = 0.0
        data_start = tick = time.time()
        for batch in batches(self.train_set, self.sampler):
            data_time += time.time() - data_start
            loss = self.train_step(batch)
            p.step += 1
            bar.update(1)
            if loss is not None:
                window_loss.append(loss)
            window_frames += batch.num_frames
            window_utts += len(batch.ids)
            window_steps += 1
            last = self.sampler.position == len(self.sampler) or (c.max_steps and p.step >= c.max_steps)
            if p.step % c.log_every == 0 or last:
                elapsed = max(time.time() - window_start, 1e-9)
                stats = self.strategy.stats()
                comm = self._comm_totals(stats)
                comm_s, exposed_s = ((now - before) / window_steps for now, before in zip(comm, window_comm))
                record = {
                    "kind": "train",
                    "step": p.step,
                    "epoch": p.epoch,
                    "loss": float(np.mean(window_loss)) if window_loss else None,
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "samples_per_s": window_utts / elapsed,
                    "x_real_time": window_frames * 0.01 / elapsed,
                    "data_share": data_time / elapsed,
                    "step_s": elapsed / window_steps,
                    "compute_s": self.busy_s / window_steps - exposed_s,
                    "comm_s": comm_s,
                    "exposed_comm_s": exposed_s,
                    "utts_per_step": window_utts / window_steps,
                    "rss_mib": resident_mib(),
                    "skipped_total": p.bad_total,
                    **{k: v for k, v in stats.items() if k not in _PER_STEP},
                }
                self.metrics.write(record)
                bar.set_postfix(loss=record["loss"], lr=f"{record['lr']:.3g}")
                window_loss, window_frames, window_utts, window_start, data_time = [], 0, 0, time.time(), 0.0
                window_steps, window_comm, self.busy_s = 0, comm, 0.0
            p.train_s += time.time() - tick
            if c.checkpoint_every and p.step % c.checkpoint_every == 0:
                self.save_checkpoint()
            tick = time.time()
            due = self.evaluation_due()
            p.train_s += time.time() - tick  # waiting for the others to agree is training time
            if due:
                p.evals += 1
                self.evaluate_and_save()
                if self.finished():
                    break
            if c.max_steps and p.step >= c.max_steps:
                break
            data_start = tick = time.time()
        bar.close()

    def _comm_totals(self, stats: dict | None = None) -> tuple[float, float]:
        """The strategy's cumulative (communication, exposed communication) seconds."""
        stats = self.strategy.stats() if stats is None else stats
        return stats.get("comm_s", 0.0), stats.get("exposed_comm_s", 0.0)

    def end_of_epoch(self) -> None:
        """Consensus, dev loss and WER, best model, epoch checkpoint."""
        self.evaluate_dev()
        if self.sampler.position >= len(self.sampler):
            self.progress.epoch += 1
        self.save_checkpoint()

    def evaluate_and_save(self) -> None:
        """Time mode's evaluation: as at an epoch end, without ending the epoch."""
        self.evaluate_dev()
        self.save_checkpoint()

    def evaluate_dev(self) -> None:
        """Consensus, dev loss and WER, best model (collective: every worker calls it)."""
        p = self.progress
        self.strategy.consensus(self.model)
        self.evaluated_last = True
        result = evaluate(self.model, self.dev_set, self.tokenizer, self.worker, self.config.batch_frames, self.amp)
        self.metrics.write({"kind": "eval", "step": p.step, "epoch": p.epoch, "train_s": p.train_s, **result})
        log.info(
            "epoch %d step %d: dev loss %.3f, dev WER (greedy) %.2f %%",
            p.epoch,
            p.step,
            result["dev_loss"],
            100 * result["dev_wer"],
        )
        if self.worker.is_main and result["dev_wer"] < p.best_dev_wer:
            self.save_model(self.exp / "best.pt")
        p.best_dev_wer = min(p.best_dev_wer, result["dev_wer"])

    def save_model(self, path: Path) -> None:
        """The consensus model with what decoding needs (model shape, units)."""
        checkpoint.atomic_save(
            {
                "model": self.model.state_dict(),
                "model_config": asdict(self.model_config),
                "units": self.tokenizer.units,
            },
            path,
        )

    def run(self) -> Progress:
        """Train to the configured end; returns the final counters."""
        if self.worker.is_main:
            log.info(
                "%s; strategy %s on %d workers; %d batches per worker per epoch",
                describe(self.model_config),
                self.strategy.name,
                self.worker.world_size,
                len(self.sampler),
            )
        try:
            while not self.finished():
                self.train_one_epoch()
                if self.config.eval_every_s > 0:  # time mode: each worker's epochs are its own
                    self.progress.epoch += self.sampler.position >= len(self.sampler)
                elif (
                    self.sampler.position < len(self.sampler)
                    or (self.progress.epoch + 1) % self.config.eval_every_epochs == 0
                ):
                    self.end_of_epoch()
                else:
                    self.progress.epoch += 1
            if not self.evaluated_last:
                self.end_of_epoch()
            self.strategy.consensus(self.model)
            if self.worker.is_main:
                self.save_model(self.exp / "final.pt")
                if not (self.exp / "best.pt").exists():
                    self.save_model(self.exp / "best.pt")
        except BaseException:
            self._close_after_error()
            raise
        else:
            self.strategy.close()
        finally:
            self.metrics.close()
        return self.progress

    def _close_after_error(self) -> None:
        """Close the strategy after a failure without hiding the failure behind a closing error."""
        try:
            self.strategy.close()
        except Exception as e:
            log.warning(
                "rank %d: closing the %s strategy after the error also failed: %s",
                self.worker.rank,
                self.strategy.name,
                e,
            )


def strategy_from_config(config: TrainConfig) -> Strategy:
    """The Strategy the config names, with its options."""
    from dasr.parallel import make_strategy

    gossip = dict(graph=config.graph, seed=config.seed, period_s=config.gossip_period_s)
    options = {
        "single": {},
        "sync": {},
        "adpsgd": gossip,
        "hybrid": {**gossip, "group_size": config.group_size},
        "ps": {},
    }
    if config.strategy not in options:
        raise DasrError(f"unknown strategy {config.strategy!r}")
    return make_strategy(config.strategy, **options[config.strategy])


def run_worker(config: TrainConfig, prepare: bool = False) -> dict:
    """Entry point of one worker process (also the whole run with one worker).

    ``prepare``: started by a plain ``torchrun`` rather than `dasr train`, so each node's
    local rank 0 prepares the experiment dir while the others wait.
    """
    if not logging.getLogger().handlers:  # a spawned worker process
        logging.basicConfig(
            level=logging.INFO,
            format="%(asctime)s %(levelname)s rank %(process)d %(name)s: %(message)s",
            datefmt="%H:%M:%S",
        )
    if int(os.environ.get("WORLD_SIZE", "1")) == 1 and config.strategy == "single":
        if prepare:
            prepare_experiment(config)
        worker = Worker(device=select_device(config.device))
        return asdict(Trainer(config, SingleStrategy(), worker).run())
    from dasr.parallel.launch import finish_worker, init_worker

    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        config = replace(config, resume=True)  # a restarted worker continues from the checkpoint
    info = init_worker()
    try:
        if prepare:
            if info.local_rank == 0:
                prepare_experiment(config)
            import torch.distributed as dist

            dist.barrier()
        worker = Worker(info.rank, info.world_size, info.device if config.device != "cpu" else torch.device("cpu"))
        return asdict(Trainer(config, strategy_from_config(config), worker).run())
    finally:
        finish_worker()
