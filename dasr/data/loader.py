"""From a data dir to padded training batches: dataset, frame-budget bucketing, distributed sampler.

The sampler gives every rank the same number of batches (so no rank waits forever in a
collective), disjoint utterances per rank, an order fixed by (seed, epoch), and resumes
mid-epoch from ``state_dict()``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from dasr.data.features import Cmvn, FeatureStore, spec_augment, speed_perturb
from dasr.data.manifest import read_manifest
from dasr.data.tokenizer import Tokenizer


@dataclass
class Batch:
    ids: list[str]
    feats: torch.Tensor  # (B, T, 80) float32, zero padded
    feat_lens: torch.Tensor  # (B,) int64
    labels: torch.Tensor  # (B, L) int64, zero padded
    label_lens: torch.Tensor  # (B,) int64
    texts: list[str]

    @property
    def num_frames(self) -> int:
        return int(self.feat_lens.sum())


@dataclass
class Augment:
    """Training-time augmentation settings."""

    spec_augment: bool = False
    speed_factors: tuple[float, ...] = ()


class AsrDataset:
    """Utterances of one split that have features: ``dataset[i]`` -> (id, feats, labels, text)."""

    def __init__(
        self,
        data_dir: str | os.PathLike,
        split: str,
        tokenizer: Tokenizer,
        augment: Augment | None = None,
        seed: int = 0,
    ) -> None:
        self.store = FeatureStore(data_dir, split)
        self.cmvn = Cmvn.load(data_dir)
        self.tokenizer = tokenizer
        self.augment = augment or Augment()
        self.rng = np.random.default_rng(seed)
        utts = [u for u in read_manifest(os.path.join(data_dir, f"{split}.jsonl")) if u.id in self.store]
        self.ids = [u.id for u in utts]
        self.texts = [u.text for u in utts]
        self.frames = np.array([self.store.frames(i) for i in self.ids], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray, list[int], str]:
        feats = self.cmvn(self.store[self.ids[i]])
        if self.augment.speed_factors:
            feats = speed_perturb(feats, float(self.rng.choice(self.augment.speed_factors)))
        if self.augment.spec_augment:
            feats = spec_augment(feats, self.rng)
        return self.ids[i], feats, self.tokenizer.encode(self.texts[i]), self.texts[i]


def collate(items: list[tuple[str, np.ndarray, list[int], str]]) -> Batch:
    """Pad features and labels of a list of dataset items into a :class:`Batch`."""
    max_frames = max(len(f) for _, f, _, _ in items)
    max_labels = max(max(len(lab) for _, _, lab, _ in items), 1)
    feats = torch.zeros(len(items), max_frames, items[0][1].shape[1])
    labels = torch.zeros(len(items), max_labels, dtype=torch.long)
    for b, (_, f, lab, _) in enumerate(items):
        feats[b, : len(f)] = torch.from_numpy(f)
        labels[b, : len(lab)] = torch.tensor(lab, dtype=torch.long)
    return Batch(
        ids=[i for i, _, _, _ in items],
        feats=feats,
        feat_lens=torch.tensor([len(f) for _, f, _, _ in items]),
        labels=labels,
        label_lens=torch.tensor([len(lab) for _, _, lab, _ in items]),
        texts=[t for _, _, _, t in items],
    )


def bucket_batches(
    frames: np.ndarray, batch_frames: int, rng: np.random.Generator, bucket_size: int = 100
) -> list[list[int]]:
    """Group utterance indices into batches whose padded size (max frames x count) fits ``batch_frames``.

    Utterances are shuffled, then sorted by length inside buckets of ``bucket_size`` batches'
    worth of utterances, so a batch holds similar lengths; the batch order is shuffled again.
    An utterance longer than the budget gets a batch of its own.
    """
    order = rng.permutation(len(frames))
    mean_frames = max(1, int(np.mean(frames))) if len(frames) else 1
    chunk = max(1, batch_frames // mean_frames) * bucket_size
    batches: list[list[int]] = []
    for start in range(0, len(order), chunk):
        part = sorted(order[start : start + chunk], key=lambda i: frames[i])
        current: list[int] = []
        longest = 0
        for i in part:
            longest_if_added = max(longest, int(frames[i]))
            if current and longest_if_added * (len(current) + 1) > batch_frames:
                batches.append(current)
                current, longest_if_added = [], int(frames[i])
            current.append(int(i))
            longest = longest_if_added
        if current:
            batches.append(current)
    return [batches[i] for i in rng.permutation(len(batches))]


_EPOCH_KEY = 1 << 32  # DistributedBucketSampler.progress_key: epoch * this + position (positions stay below)


class StoreClaims:
    """Hands out the batches of an epoch to whichever worker asks first (global progress).

    Backed by a key-value store shared by all workers (torch.distributed's rendezvous store):
    its atomic ``add`` is the whole protocol, so a claim costs one round trip and no collective.
    ``attempt`` (the launcher's restart count) keeps a restarted run's claims apart from the
    killed attempt's.
    """

    def __init__(self, store, attempt: int = 0) -> None:
        self.store = store
        self.attempt = attempt

    def claim(self, epoch: int, start: int) -> int:
        """The next unclaimed batch of ``epoch``, counting claims from batch ``start`` on."""
        return start + int(self.store.add(f"dasr/claims/{self.attempt}/{epoch}/{start}", 1)) - 1


class ElasticClaims:
    """Batch claims of an elastic run: each records its owner, and a lost owner's claim is re-offered.

    A claim first takes a re-offered batch of the epoch (``requeue/<epoch>``, filled by
    :func:`release_claim` when the coordinator drops a member), else the next unclaimed one.
    The batch in hand is recorded as ``held/<slot> = "<incarnation> <epoch> <index>"``; asking
    for the next one (or :meth:`finish`; the sampler does when asked for the next batch, so it
    must not be prefetched) counts it in ``done/<epoch>/<index>``, so after an
    epoch every batch's count is 1 except those in flight when a member was lost (0 or 2).

    Args:
        store: the coordinator's store (a client of this process's own).
        prefix: the run's key prefix there.
        slot: this worker's slot; ``incarnation()`` its current incarnation (it changes on a rejoin).
    """

    def __init__(self, store, prefix: str, slot: int, incarnation) -> None:
        self.store, self.prefix, self.slot, self.incarnation = store, prefix, slot, incarnation
        self._held: tuple[int, int] | None = None
        self.reoffered_taken = 0

    def claim(self, epoch: int, start: int, end: int) -> int:
        """The next batch of ``epoch`` for this worker (``>= end``: none left), finishing the one in hand."""
        import torch.distributed as dist

        self.finish()
        try:
            index = int(self.store.queue_pop(f"{self.prefix}/requeue/{epoch}", block=False))
            self.reoffered_taken += 1
        except dist.QueueEmptyError:
            index = start + int(self.store.add(f"{self.prefix}/claims/{epoch}/{start}", 1)) - 1
        if index < end:
            self.store.set(f"{self.prefix}/held/{self.slot}", f"{self.incarnation()} {epoch} {index}")
            self._held = (epoch, index)
        return index

    def claim_reoffered(self) -> tuple[int, int] | None:
        """A re-offered batch of any epoch, now in hand, as ``(epoch, index)``; None if there is none.

        Each re-offer also queues its epoch in ``requeue-epochs``: a worker that has moved on (the
        owner was lost within a lease of the epoch's end, or epochs are shorter than the lease)
        still finds it, where :meth:`claim` looks only in its own epoch's queue.
        """
        import torch.distributed as dist

        self.finish()
        while True:
            try:
                epoch = int(self.store.queue_pop(f"{self.prefix}/requeue-epochs", block=False))
            except dist.QueueEmptyError:
                return None
            try:
                index = int(self.store.queue_pop(f"{self.prefix}/requeue/{epoch}", block=False))
            except dist.QueueEmptyError:  # a claim of that epoch took it already
                continue
            self.reoffered_taken += 1
            self.store.set(f"{self.prefix}/held/{self.slot}", f"{self.incarnation()} {epoch} {index}")
            self._held = (epoch, index)
            return epoch, index

    def finish(self) -> None:
        """Count the batch in hand as trained (after its optimizer step)."""
        if self._held is not None:
            epoch, index = self._held
            self.store.add(f"{self.prefix}/done/{epoch}/{index}", 1)  # held/<slot> may stay: a done batch
            self._held = None  # is never re-offered

    def exhausted(self, epoch: int, start: int, end: int) -> bool:
        """Whether every batch of ``epoch`` from ``start`` to ``end`` was handed out (a replacement skips such epochs)."""
        handed = int(self.store.add(f"{self.prefix}/claims/{epoch}/{start}", 0))
        return handed >= end - start and not self.store.queue_len(f"{self.prefix}/requeue/{epoch}")

    def done_counts(self, epoch: int, batches: int) -> list[int]:
        """How often each batch of ``epoch`` was trained (read from the store)."""
        return [int(self.store.add(f"{self.prefix}/done/{epoch}/{i}", 0)) for i in range(batches)]


def release_claim(store, prefix: str, slot: int, incarnation: str) -> bool:
    """Re-offer the batch ``slot``'s lost ``incarnation`` held, unless it was trained; True if re-offered.

    Called by the coordinator when it drops a member; counted in ``reoffered/<epoch>``.
    """
    held = store.get(f"{prefix}/held/{slot}").decode().split()
    if len(held) != 3 or held[0] != incarnation:
        return False
    epoch, index = held[1], held[2]
    store.set(f"{prefix}/held/{slot}", "")
    if int(store.add(f"{prefix}/done/{epoch}/{index}", 0)):
        return False
    store.queue_push(f"{prefix}/requeue/{epoch}", index)
    store.queue_push(f"{prefix}/requeue-epochs", epoch)  # where workers in later epochs look
    store.add(f"{prefix}/reoffered/{epoch}", 1)
    return True


class DistributedBucketSampler:
    """Yields this rank's batches of dataset indices for one epoch at a time.

    All ranks build the same batch list from (seed, epoch) and share it in one of two ways:

    - sharded (lockstep strategies: sync, hybrid, localsgd): rank r takes batches r, r+N, ...
      and every rank stops after ``len(batches) // N`` batches, so counts are equal and data
      disjoint; the few leftover batches of an epoch are dropped (a different few each epoch).
    - claimed (``claims`` given; independent workers: adpsgd, ps): every rank trains the next
      batch nobody has claimed yet, so a fast worker takes more of the epoch than a slow one and
      nobody waits at the epoch end for a straggler's fixed share (Lian et al.'s workers also
      draw their samples independently). ``position`` is then the epoch's global progress.

    ``max_steps`` (a worker's steps; over all workers when claimed) ends the data early, like
    an epoch's end, at the same point of global progress on every rank.

    ``mark_every`` sets marks every that many batches of a worker's share, counted over all
    epochs (checkpoints; also one that falls on an epoch's end): the iteration stops before
    the first batch past a mark with :attr:`at_mark` set, at the same
    point of global progress on every rank (a claim past the mark is held, not lost); after
    :meth:`pass_mark`, iterating again continues. Every rank so meets the same marks in the same
    order, and an epoch's end comes after all of them.
    """

    def __init__(
        self,
        frames: np.ndarray,
        batch_frames: int,
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        claims: StoreClaims | ElasticClaims | None = None,
        mark_every: int = 0,
        max_steps: int = 0,
    ) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world size {world_size}")
        if batch_frames <= 0:
            raise ValueError(f"batch_frames must be positive, got {batch_frames}")
        self.frames = frames
        self.batch_frames = batch_frames
        self.rank = rank
        self.world_size = world_size
        self.seed = seed
        self.claims = claims
        self.share = world_size if claims is not None else 1  # ranks consuming one batch list
        self.mark_every = mark_every * self.share
        self.max_batches = max_steps * self.share  # over all epochs, of the whole batch list when claimed
        self._cached_key: tuple[int, int] | None = None
        self._cached: list[list[int]] = []
        self.set_epoch(0)

    def _epoch_batches(self) -> list[list[int]]:
        key = (self.seed, self.epoch)
        if self._cached_key != key:  # built once per epoch: len() is called every step
            batches = self._batches_of(self.epoch)
            if self.claims is None:
                per_rank = len(batches) // self.world_size
                batches = batches[self.rank :: self.world_size][:per_rank]
            self._cached_key, self._cached = key, batches
        return self._cached

    def _batches_of(self, epoch: int) -> list[list[int]]:
        return bucket_batches(self.frames, self.batch_frames, np.random.default_rng([self.seed, epoch]))

    def __len__(self) -> int:
        """Batches of the epoch this sampler's ranks consume: this rank's share, or all (claimed)."""
        return len(self._epoch_batches())

    @property
    def steps_per_epoch(self) -> int:
        """A worker's steps per epoch (on average, when claimed)."""
        return max(1, len(self) // self.share)

    def progress_steps(self) -> int:
        """Progress in a worker's steps since the first epoch: global progress when claimed."""
        return self.epoch * self.steps_per_epoch + self.position // self.share

    def end(self) -> int:
        """Where the current epoch's data ends: its length, or earlier where ``max_steps`` is reached."""
        if not self.max_batches:
            return len(self)
        return min(len(self), max(0, self.max_batches - self.epoch * len(self)))

    @property
    def exhausted(self) -> bool:
        """``max_steps`` reached (on every rank alike when claimed)."""
        return bool(self.max_batches) and self.epoch * len(self) + self.position >= self.max_batches

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning."""
        self.epoch = epoch
        self._start_at(0)

    def _start_at(self, position: int) -> None:
        self.position = position  # batches of the epoch handed out (on this rank, or on all when claimed)
        self._claim_start = position
        self._held: int | None = None
        self.at_mark = False
        self._next_mark = 0
        if self.mark_every:  # marks count the progress of all epochs, as a step counter would
            done = self.epoch * len(self) + position
            self._next_mark = (done // self.mark_every + 1) * self.mark_every - self.epoch * len(self)

    def pass_mark(self) -> None:
        """The mark is handled (checkpoint written): iterating goes on to the next one."""
        self.at_mark = False
        self._next_mark += self.mark_every

    def __iter__(self):
        batches, end = self._epoch_batches(), self.end()
        while not self.at_mark:
            if self._held is None and isinstance(self.claims, ElasticClaims):
                reoffered = self.claims.claim_reoffered()  # first: a lost worker's batch, of any epoch
                if reoffered is not None:
                    epoch, index = reoffered
                    yield (batches if epoch == self.epoch else self._batches_of(epoch))[index]
                    self.claims.finish()
                    continue
            if self._held is None:
                claims = self.claims if self.position < end else None
                if isinstance(claims, ElasticClaims):
                    self._held = claims.claim(self.epoch, self._claim_start, end)
                else:
                    self._held = claims.claim(self.epoch, self._claim_start) if claims is not None else self.position
            index = self._held
            if self.mark_every and index >= self._next_mark and self._next_mark <= end:
                self.position = self._next_mark  # marks come before the data's end, on every rank
                self.at_mark = True
                return
            if index >= end:
                self.position = end
                return
            self._held = None
            self.position = index + 1
            yield batches[index]
            if isinstance(self.claims, ElasticClaims):  # asked for the next: this one was trained. Counted
                self.claims.finish()  # now, not at the next claim: after an epoch's last batch none may come

    @property
    def progress_key(self) -> int:
        """(epoch, position) as one number that orders like the pair (exact in a float64 all-reduce)."""
        return self.epoch * _EPOCH_KEY + self.position

    def continue_from(self, furthest_key: int) -> None:
        """Claimed sharing after a resume: continue where the furthest rank was (the max of :attr:`progress_key`).

        Each rank saves its own position (after its last claim), and in time mode a fast rank
        may already be in the next epoch. Claims are handed out in order and every rank trains
        its claims before a checkpoint, so every batch before the furthest point was trained
        once: all ranks continue there, on one claim counter (its key holds the start).
        """
        if self.claims is None:
            raise ValueError("continue_from is for claimed sharing; sharded ranks resume at their own positions")
        epoch, position = divmod(int(furthest_key), _EPOCH_KEY)
        if (epoch, position) != (self.epoch, self.position):
            self.epoch = epoch
            self._start_at(position)

    def state_dict(self) -> dict:
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "rank": self.rank,
            "world_size": self.world_size,
            "claimed": self.claims is not None,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["world_size"] != self.world_size:
            raise ValueError(f"sampler state is for {state['world_size']} workers, this run has {self.world_size}")
        if state.get("claimed", False) != (self.claims is not None):
            raise ValueError("sampler state shares batches differently (claimed vs sharded) than this run")
        self.seed, self.epoch = state["seed"], state["epoch"]
        self._start_at(state["position"])


def batches(dataset: AsrDataset, sampler: DistributedBucketSampler):
    """Iterate collated batches of ``dataset`` in the sampler's order (in the main process)."""
    for indices in sampler:
        yield collate([dataset[i] for i in indices])
