import numpy as np
import pytest

from dasr.data.features import compute_features
from dasr.data.loader import AsrDataset, DistributedBucketSampler, batches, bucket_batches
from dasr.data.tokenizer import CharTokenizer


def _frames(n=503, seed=0):
    return np.random.default_rng(seed).integers(50, 1500, size=n)


def test_batches_respect_frame_budget_and_cover_everything():
    frames = _frames()
    out = bucket_batches(frames, 6000, np.random.default_rng(1))
    assert sorted(i for b in out for i in b) == list(range(len(frames)))
    assert all(max(frames[b]) * len(b) <= 6000 for b in out if len(b) > 1)
    spread = np.mean([frames[b].max() / frames[b].min() for b in out])
    assert spread < 1.3  # bucketing: similar lengths together


@pytest.mark.parametrize("world", [2, 3, 4])
def test_sampler_equal_counts_disjoint_deterministic(world):
    frames = _frames()
    samplers = [DistributedBucketSampler(frames, 6000, rank=r, world_size=world, seed=7) for r in range(world)]
    for epoch in (0, 1):
        per_rank = []
        for s in samplers:
            s.set_epoch(epoch)
            per_rank.append(list(s))
        assert len({len(b) for b in per_rank}) == 1
        seen = [i for batches_ in per_rank for b in batches_ for i in b]
        assert len(seen) == len(set(seen))
        again = DistributedBucketSampler(frames, 6000, rank=1, world_size=world, seed=7)
        again.set_epoch(epoch)
        assert list(again) == per_rank[1]
    other_epoch = DistributedBucketSampler(frames, 6000, rank=0, world_size=world, seed=7)
    assert list(other_epoch) != per_rank[0]


def test_sampler_resumes_mid_epoch_with_exactly_the_remaining_order():
    frames = _frames()
    sampler = DistributedBucketSampler(frames, 6000, rank=1, world_size=2, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.set_epoch(2)
    it = iter(sampler)
    head = [next(it) for _ in range(5)]
    state = sampler.state_dict()
    resumed = DistributedBucketSampler(frames, 6000, rank=1, world_size=2, seed=0)
    resumed.load_state_dict(state)
    assert head + list(resumed) == full
    with pytest.raises(ValueError, match="workers"):
        DistributedBucketSampler(frames, 6000, rank=0, world_size=3).load_state_dict(state)


def test_dataset_batches(tiny_data_dir):
    compute_features(tiny_data_dir, jobs=1)
    tok = CharTokenizer()
    ds = AsrDataset(tiny_data_dir, "train", tok)
    sampler = DistributedBucketSampler(ds.frames, 400, seed=0)
    out = list(batches(ds, sampler))
    assert sum(len(b.ids) for b in out) == len(ds)
    b = out[0]
    assert b.feats.shape[0] == len(b.ids) and b.feats.shape[2] == 80
    assert b.feats.shape[1] == int(b.feat_lens.max())
    first = b.labels[0, : b.label_lens[0]].tolist()
    assert tok.decode(first) == b.texts[0]
