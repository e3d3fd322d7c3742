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


class DistributedBucketSampler:
    """Yields this rank's batches of dataset indices for one epoch at a time.

    All ranks build the same batch list from (seed, epoch); rank r takes batches r, r+N, ...
    and every rank stops after ``len(batches) // N`` batches, so counts are equal and data
    disjoint; the few leftover batches of an epoch are dropped (a different few each epoch).
    """

    def __init__(
        self, frames: np.ndarray, batch_frames: int, rank: int = 0, world_size: int = 1, seed: int = 0
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
        self.epoch = 0
        self.position = 0  # batches of the current epoch already handed out on this rank
        self._cached_key: tuple[int, int] | None = None
        self._cached: list[list[int]] = []

    def _epoch_batches(self) -> list[list[int]]:
        key = (self.seed, self.epoch)
        if self._cached_key != key:  # built once per epoch: len() is called every step
            rng = np.random.default_rng([self.seed, self.epoch])
            batches = bucket_batches(self.frames, self.batch_frames, rng)
            per_rank = len(batches) // self.world_size
            self._cached_key, self._cached = key, batches[self.rank :: self.world_size][:per_rank]
        return self._cached

    def __len__(self) -> int:
        return len(self._epoch_batches())

    def set_epoch(self, epoch: int) -> None:
        """Start ``epoch`` from its beginning."""
        self.epoch = epoch
        self.position = 0

    def __iter__(self):
        batches = self._epoch_batches()
        while self.position < len(batches):
            batch = batches[self.position]
            self.position += 1
            yield batch

    def state_dict(self) -> dict:
        return {
            "seed": self.seed,
            "epoch": self.epoch,
            "position": self.position,
            "rank": self.rank,
            "world_size": self.world_size,
        }

    def load_state_dict(self, state: dict) -> None:
        if state["world_size"] != self.world_size:
            raise ValueError(f"sampler state is for {state['world_size']} workers, this run has {self.world_size}")
        self.seed, self.epoch, self.position = state["seed"], state["epoch"], state["position"]


def batches(dataset: AsrDataset, sampler: DistributedBucketSampler):
    """Iterate collated batches of ``dataset`` in the sampler's order (in the main process)."""
    for indices in sampler:
        yield collate([dataset[i] for i in indices])
