"""The training loop. It knows nothing about how workers communicate: it talks to a Strategy.

Launch (one worker per process; `dasr train` starts them itself):
    dasr train --data data/demo --exp exp/demo --config demo --epochs 8
    dasr train ... --strategy adpsgd --nproc 4
    torchrun --nproc-per-node 4 -m dasr.train --config exp/demo/config.yaml

Beside it: metrics.py (what is recorded), rng.py, device.py, collectives.py, experiment.py (the exp
dir), worker.py (the process entry: environment, restarts, process group, strategy).

Skeleton as icefall's recipes: compute_loss, train_one_epoch, evaluate, run.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from dasr.config import TrainConfig
from dasr.data.loader import AsrDataset, Augment, Batch, DistributedBucketSampler, batches
from dasr.data.text import normalize
from dasr.data.tokenizer import Tokenizer, load_tokenizer
from dasr.decode.ctc import greedy_decode
from dasr.decode.score import score
from dasr.errors import DasrError
from dasr.model.blstm import BlstmCtc, describe, num_parameters, preset_config
from dasr.parallel.launch import Worker
from dasr.parallel.straggler import Straggler
from dasr.parallel.strategy import Strategy
from dasr.progress import progress
from dasr.train import checkpoint
from dasr.train.collectives import all_reduce, barrier, batch_claims
from dasr.train.device import use_bf16
from dasr.train.metrics import MetricsLog, StepWindow, comm_totals
from dasr.train.plateau import plateau_epochs
from dasr.train.rng import rng_state, seed_all, set_rng_state
from dasr.train.schedule import build_schedule

log = logging.getLogger(__name__)


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
    dev_wers: list[float] = field(default_factory=list)  # every evaluation's dev WER, in order (--stop-at-plateau)
    dev_losses: list[float] = field(default_factory=list)  # and its dev loss (may start later: older checkpoints)


def build_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Nesterov SGD (the paper's), AdamW or LAMB, at the configured base LR (the schedule sets each step's).

    LAMB comes from torch-optimizer (You et al. 2020's layer-wise trust ratio on AdamW's update);
    :meth:`TrainConfig.validate` has checked that it is installed.
    """
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay
        )
    if config.optimizer == "lamb":
        import torch_optimizer

        return torch_optimizer.Lamb(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


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
    loss_sum, utts, errors, words = all_reduce([loss_sum, utts, errors, result["num_words"]], worker, "SUM")
    model.train()
    return {"dev_loss": loss_sum / max(utts, 1), "dev_wer": errors / max(words, 1)}


def _batch_claims(strategy: Strategy, worker: Worker):
    """How this worker gets its batches: equal shares (None), claims on the rendezvous store, or elastic claims."""
    if strategy.elastic:
        return strategy.claims()  # type: ignore[attr-defined]
    return batch_claims(worker) if strategy.independent_steps and worker.world_size > 1 else None


class Trainer:
    """One worker's training run."""

    def __init__(self, config: TrainConfig, strategy: Strategy, worker: Worker) -> None:
        self.config, self.strategy, self.worker = config, strategy, worker
        self.exp = Path(config.exp)
        self.checkpoints = self.exp / "checkpoints"
        seed_all(config.seed)  # identical initial replicas on every rank
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
        if config.stop_at_plateau and len(self.dev_set) == 0:
            raise DasrError(f"--stop-at-plateau needs a dev set: no dev utterances with features in {config.data}")
        self.sampler = DistributedBucketSampler(
            self.train_set.frames,
            config.batch_frames,
            worker.rank,
            worker.world_size,
            config.seed,
            claims=_batch_claims(strategy, worker),
            mark_every=config.checkpoint_every,
            max_steps=config.max_steps,
        )
        if len(self.sampler) == 0:
            raise DasrError(
                f"{len(self.train_set)} training utterances make fewer batches than the "
                f"{worker.world_size} workers: lower --batch-frames or use fewer workers"
            )
        self.model_config = preset_config(config.model, self.tokenizer.vocab_size)
        self.model = BlstmCtc(self.model_config).to(worker.device)
        self.optimizer = build_optimizer(config, self.model)
        self.schedule = build_schedule(config, worker.world_size, self.sampler.steps_per_epoch)
        self.amp = use_bf16(config.precision, worker.device, num_parameters(self.model))
        self.progress = Progress()
        self.metrics = MetricsLog(
            self.exp / "metrics.jsonl", worker.rank, self.exp / "tensorboard" if worker.is_main else None
        )
        self.resumed_mid_epoch = False
        self.mark_at_end = False  # the pass's last checkpoint mark fell on its end (end_of_pass saves it)
        self.straggler = Straggler.parse(",".join(config.straggler), worker.rank)
        self.window = StepWindow((0.0, 0.0))  # the steps since the last train record (reopened by each pass)
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
        Elastic runs keep the live set's model in ``last.pt`` instead (written at each evaluation):
        their workers come and go, and a replacement takes the model from a live peer.
        """
        if self.strategy.elastic:
            return
        self.strategy.consensus(self.model)
        step = int(all_reduce([self.progress.step], self.worker, "MAX")[0])
        checkpoint.save_rank(self.checkpoints, step, self.worker.rank, self.state())
        barrier(self.worker)
        if self.worker.is_main:
            checkpoint.mark_complete(self.checkpoints, step, self.worker.world_size, self.config.keep_checkpoints)

    def load_latest(self) -> None:
        """Resume every rank from the newest step that is complete and loads on all of them."""
        state = checkpoint.load_agreed(
            self.checkpoints, self.worker.rank, lambda value: int(all_reduce([value], self.worker, "MIN")[0])
        )
        if state is None:
            log.info("no checkpoint in %s: starting from scratch", self.checkpoints)
            return
        if state["units"] != self.tokenizer.units:
            raise DasrError(
                f"checkpoint in {self.checkpoints} was trained with other units than {self.exp}/tokenizer.json"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.sampler.load_state_dict(state["sampler"])
        if self.sampler.claims is not None:  # each rank saved its own position (time mode: maybe its own epoch)
            self.sampler.continue_from(int(all_reduce([self.sampler.progress_key], self.worker, "MAX")[0]))
        try:  # collective; checks what the strategy needs equal (e.g. the gossip round of each plane)
            self.strategy.load_state_dict(state["strategy"])
        except ValueError as e:
            raise DasrError(f"checkpoint step {state['progress']['step']} in {self.checkpoints}: {e}") from None
        self.progress = Progress(**state["progress"])
        self.progress.epoch = max(self.progress.epoch, self.sampler.epoch)  # a rank an epoch behind moved on
        set_rng_state(state["rng"])
        self.train_set.rng.bit_generator.state = state["data_rng"]
        # a checkpoint taken within a pass (even after its last batch) continues that pass; the
        # epoch advances at its end as always
        self.resumed_mid_epoch = self.sampler.epoch == self.progress.epoch and self.sampler.position > 0
        log.info(
            "resumed from step %d (epoch %d, batch %d)", self.progress.step, self.progress.epoch, self.sampler.position
        )

    # -- training ----------------------------------------------------------------------------
    def finished(self) -> bool:
        """Whether the run has reached its end: the epochs or training time, its steps, or a dev plateau."""
        c = self.config
        p = self.progress
        if c.stop_at_plateau and plateau_epochs(p.dev_wers, losses=p.dev_losses) is not None:
            return True
        if c.eval_every_s > 0:
            return self.progress.evals * c.eval_every_s >= c.train_seconds
        return self.sampler.exhausted or (not c.max_steps and self.progress.epoch >= c.epochs)

    def evaluation_due(self) -> bool:
        """Time mode: this step's training clock passed the next evaluation mark (as the strategy agrees)."""
        c, p = self.config, self.progress
        return c.eval_every_s > 0 and self.strategy.agree(p.train_s >= (p.evals + 1) * c.eval_every_s)

    def train_step(self, batch: Batch) -> float | None:
        """One optimizer step; None when the loss or gradient was not finite (batch skipped)."""
        c, p = self.config, self.progress
        lr = self.schedule.lr(self.sampler.progress_steps(), p.epoch + self.sampler.position / len(self.sampler))
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
        self.window.busy_s += time.perf_counter() - started
        return float(loss.detach())

    def train_one_epoch(self) -> None:
        """One pass over this worker's batches of the epoch (or the rest of it after a resume).

        A checkpoint mark (``--checkpoint-every``) pauses the data at the same point of the
        epoch's progress on every rank (:class:`DistributedBucketSampler`): the pass writes the
        checkpoint there and goes on. A mark at the data's end is left to :meth:`end_of_pass`,
        which writes that step's one checkpoint (after the evaluation, if one is due).
        """
        p = self.progress
        if not self.resumed_mid_epoch:
            self.sampler.set_epoch(p.epoch)
        if self.strategy.elastic:
            self.strategy.announce_epoch(p.epoch)  # type: ignore[attr-defined]
        self.resumed_mid_epoch = False
        bar = progress(
            total=len(self.sampler),
            initial=self.sampler.position,
            desc=f"epoch {p.epoch}",
            enabled=self.worker.is_main,
            unit="batch",
            step=25,
        )
        self.window = StepWindow(comm_totals(self.strategy.stats()))
        self.mark_at_end = False
        while self._train_until_mark(bar) and self.sampler.at_mark:
            if self.sampler.position < self.sampler.end():
                self.save_checkpoint()
            else:  # the same step as the end of the pass: one checkpoint, written there
                self.mark_at_end = True
            self.sampler.pass_mark()
        bar.close()

    def _train_until_mark(self, bar) -> bool:
        """Train on the sampler's batches up to its next mark or the data's end; False when time mode finished."""
        c, p = self.config, self.progress
        data_start = tick = time.time()
        for batch in batches(self.train_set, self.sampler):
            self.window.data_s += time.time() - data_start
            self.window.add(self.train_step(batch), batch.num_frames, len(batch.ids))
            p.step += 1
            bar.update(self.sampler.position - bar.n)  # the epoch's progress: global when batches are claimed
            last = self.sampler.position >= self.sampler.end()
            if p.step % c.log_every == 0 or last:
                record = self.write_train_record()
                bar.set_postfix(loss=record["loss"], lr=f"{record['lr']:.3g}")
            p.train_s += time.time() - tick
            tick = time.time()
            due = self.evaluation_due()
            p.train_s += time.time() - tick  # waiting for the others to agree is training time
            if due:
                p.evals += 1
                self.evaluate_and_save()
                if self.finished():
                    return False
            data_start = tick = time.time()
        return True

    def write_train_record(self) -> dict:
        """Write the train record of the steps since the last one, and start the next window."""
        stats = self.strategy.stats()
        record = {
            "kind": "train",
            "step": self.progress.step,
            "epoch": self.progress.epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            "skipped_total": self.progress.bad_total,
            **self.window.record(stats),
        }
        self.metrics.write(record)
        self.window = StepWindow(comm_totals(stats))
        return record

    def end_of_pass(self) -> None:
        """After a pass over the sampler: advance the epoch if the pass completed it (the only place
        the epoch advances), then evaluate and checkpoint when that is due (a checkpoint also
        when a mark fell on the pass's end).

        Epoch mode evaluates every ``eval_every_epochs`` epochs, at a stop within an epoch
        (``max_steps``) and at the end; time mode evaluates by the clock, within the passes.
        """
        c, p = self.config, self.progress
        trained = p.epoch
        complete = self.sampler.position >= len(self.sampler)  # not at a stop within it (max_steps)
        p.epoch += complete
        if c.eval_every_s > 0:
            return
        evaluate = not complete or not p.epoch % c.eval_every_epochs or self.finished()
        if evaluate:
            self.evaluate_dev(trained)
        if evaluate or self.mark_at_end:
            self.save_checkpoint()

    def evaluate_and_save(self) -> None:
        """Time mode's evaluation: as at an epoch end, without ending the epoch."""
        self.evaluate_dev(self.progress.epoch)
        self.save_checkpoint()

    def evaluate_dev(self, epoch: int) -> None:
        """Consensus, dev loss and WER of the model trained in ``epoch``, best model (every worker calls it)."""
        p = self.progress
        self.strategy.consensus(self.model)
        model, evaluator = self.model, self.worker
        if self.strategy.elastic:  # the live set's leader evaluates a copy of the average alone; the others go on
            if not self.strategy.leads(self.worker.rank):
                return
            model, evaluator = copy.deepcopy(self.model), replace(self.worker, rank=0, world_size=1)
            self.strategy.resume()  # type: ignore[attr-defined]
            self.save_model(self.exp / "last.pt", model)
        result = evaluate(model, self.dev_set, self.tokenizer, evaluator, self.config.batch_frames, self.amp)
        self.metrics.write({"kind": "eval", "step": p.step, "epoch": epoch, "train_s": p.train_s, **result})
        p.dev_wers.append(result["dev_wer"])  # summed over the ranks: the same on every one, so all stop together
        p.dev_losses.append(result["dev_loss"])
        log.info(
            "epoch %d step %d: dev loss %.3f, dev WER (greedy) %.2f %%",
            epoch,
            p.step,
            result["dev_loss"],
            100 * result["dev_wer"],
        )
        if self.strategy.leads(self.worker.rank) and result["dev_wer"] < p.best_dev_wer:
            self.save_model(self.exp / "best.pt", model)
        p.best_dev_wer = min(p.best_dev_wer, result["dev_wer"])

    def save_model(self, path: Path, model: torch.nn.Module | None = None) -> None:
        """The consensus model (or ``model``, a copy of it) with what decoding needs (model shape, units)."""
        checkpoint.atomic_save(
            {
                "model": (model or self.model).state_dict(),
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
        if self.strategy.elastic:  # a replacement joins the epoch the live workers are in
            self.progress.epoch = self.strategy.live_epoch()  # type: ignore[attr-defined]
        try:
            while not self.finished():
                self.train_one_epoch()
                self.end_of_pass()
            self.strategy.consensus(self.model)
            if self.strategy.leads(self.worker.rank):
                self.save_model(self.exp / "final.pt")
                if not (self.exp / "best.pt").exists():
                    self.save_model(self.exp / "best.pt")
        except BaseException as e:
            self._abort_after_error(e)
            raise
        else:
            self.strategy.close()
        finally:
            self.metrics.close()
        return self.progress

    def _abort_after_error(self, error: BaseException) -> None:
        """Abort the strategy after a failure on this rank, without hiding the failure behind an aborting error."""
        try:
            self.strategy.abort(f"{type(error).__name__}: {error}")
        except Exception as e:
            log.warning(
                "rank %d: aborting the %s strategy after the error also failed: %s",
                self.worker.rank,
                self.strategy.name,
                e,
            )
