import numpy as np
import pytest

from dasr.data.features import compute_features
from dasr.data.loader import (
    AsrDataset,
    DistributedBucketSampler,
    ElasticClaims,
    StoreClaims,
    batches,
    bucket_batches,
    release_claim,
)
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


def _claimed(world, store, mark_every=0):
    return [
        DistributedBucketSampler(
            _frames(), 2000, rank=r, world_size=world, seed=5, claims=StoreClaims(store), mark_every=mark_every
        )
        for r in range(world)
    ]


def _drain(samplers, speeds):
    """Interleave the ranks' iterators, rank r taking speeds[r] batches per turn; stop all at marks/ends."""
    taken = [[] for _ in samplers]
    iters = [iter(s) for s in samplers]
    live = set(range(len(samplers)))
    while live:
        for r in sorted(live):
            for _ in range(speeds[r]):
                batch = next(iters[r], None)
                if batch is None:
                    live.discard(r)
                    break
                taken[r].append(batch)
    return taken


def test_elastic_claims_count_the_last_batch_of_the_run_as_trained():
    """The worker that trains an epoch's last batch asks for no claim after it, yet it is counted
    (it was re-offered, never taken, by the coordinator when the worker left at the run's end)."""
    import torch.distributed as dist

    store = dist.HashStore()
    samplers = [
        DistributedBucketSampler(
            _frames(), 2000, rank=r, world_size=2, seed=5, claims=ElasticClaims(store, "p", r, lambda: "inc")
        )
        for r in range(2)
    ]
    taken = _drain(samplers, speeds=[1, 1])
    counts = samplers[0].claims.done_counts(0, len(samplers[0]))
    assert len(taken[0]) + len(taken[1]) == len(counts) and counts == [1] * len(counts)
    assert not any(release_claim(store, "p", r, "inc") for r in range(2))  # the run ends: nothing re-offered


def test_elastic_claims_a_batch_reoffered_after_its_epoch_is_trained_in_the_next():
    """A worker lost holding a batch near an epoch's end: its batch is re-offered a lease later, when
    the others are in the next epoch. The next claim trains it (from its own epoch's batch list)."""
    import torch.distributed as dist

    store = dist.HashStore()
    samplers = [
        DistributedBucketSampler(
            _frames(), 2000, rank=r, world_size=3, seed=5, claims=ElasticClaims(store, "p", r, lambda: "inc")
        )
        for r in range(3)
    ]
    lost = next(iter(samplers[2]))  # slot 2 claims a batch and dies with it
    taken = _drain(samplers[:2], speeds=[1, 1])
    epoch0 = bucket_batches(_frames(), 2000, np.random.default_rng([5, 0]))
    assert samplers[0].claims.done_counts(0, len(epoch0)).count(0) == 1  # only the lost one
    assert release_claim(store, "p", 2, "inc")  # the coordinator drops slot 2, after the epoch's end
    for s in samplers[:2]:
        s.set_epoch(1)
    first = next(iter(samplers[0]))
    assert first == lost and len(taken[0]) + len(taken[1]) == len(epoch0) - 1
    assert samplers[0].position == 0  # a re-offered batch is not the epoch's progress
    next(iter(samplers[0]), None)  # asking for the next counts it
    assert samplers[0].claims.done_counts(0, len(epoch0)) == [1] * len(epoch0)


def test_elastic_claims_a_batch_reoffered_epochs_later_is_still_trained():
    """Epochs shorter than a lease: the survivors are two epochs on when the lost batch is re-offered."""
    import torch.distributed as dist

    store = dist.HashStore()
    alive = ElasticClaims(store, "p", 0, lambda: "a")
    lost = ElasticClaims(store, "p", 1, lambda: "b")
    assert lost.claim(0, 0, 4) == 0  # slot 1 dies holding epoch 0's batch 0
    for epoch in range(3):  # slot 0 trains the rest of epoch 0, then epochs 1 and 2
        while alive.claim(epoch, 0, 4) < 4:
            pass
    assert release_claim(store, "p", 1, "b")
    assert alive.claim_reoffered() == (0, 0) and alive.claim_reoffered() is None  # finishes it, no other
    assert alive.done_counts(0, 4) == [1, 1, 1, 1]


def test_claimed_sampler_a_fast_worker_takes_more_of_the_epoch_and_nothing_twice():
    import torch.distributed as dist

    samplers = _claimed(2, dist.HashStore())
    taken = _drain(samplers, speeds=[3, 1])
    everything = bucket_batches(_frames(), 2000, np.random.default_rng([5, 0]))
    assert sorted(map(sorted, taken[0] + taken[1])) == sorted(map(sorted, everything))  # each batch once
    assert len(taken[0]) >= 2.5 * len(taken[1])
    assert all(s.position == len(everything) for s in samplers)
    assert samplers[0].steps_per_epoch == len(everything) // 2


def test_claimed_sampler_marks_stop_every_rank_at_the_same_global_point_and_resume_from_it():
    import torch.distributed as dist

    samplers = _claimed(2, dist.HashStore(), mark_every=4)  # a mark every 8 batches of the epoch
    first = _drain(samplers, speeds=[3, 1])
    assert all(s.at_mark and s.position == 8 for s in samplers)
    assert sum(map(len, first)) == 8  # exactly the batches before the mark, between them
    state = samplers[1].state_dict()
    for s in samplers:
        s.pass_mark()
    rest = _drain(samplers, speeds=[3, 1])
    assert all(s.at_mark and s.position == 16 for s in samplers)
    resumed = _claimed(2, dist.HashStore(), mark_every=4)  # a restarted run: fresh store, claims from 8 on
    for s in resumed:
        s.load_state_dict(state)
    again = _drain(resumed, speeds=[1, 3])
    assert sorted(map(sorted, rest[0] + rest[1])) == sorted(map(sorted, again[0] + again[1]))


def test_claimed_samplers_resumed_from_their_own_positions_train_each_batch_once():
    """S2 (time mode): each rank saves its own position, and a fast rank may be an epoch ahead.

    Rank 1 took 2 batches of epoch 0; rank 0 took the rest of epoch 0 and 3 of epoch 1. Resumed
    from their own states (a fresh store), both must continue at epoch 1's batch 3. Before the
    fix rank 1 claimed epoch 0 from its own position again, on a counter of its own.
    """
    import torch.distributed as dist

    samplers = _claimed(2, dist.HashStore())
    fast, slow = (iter(s) for s in samplers)
    before = [next(slow), next(slow), *fast]  # rank 0's iterator ends with the epoch
    samplers[0].set_epoch(1)
    fast = iter(samplers[0])
    before += [next(fast) for _ in range(3)]
    states = [s.state_dict() for s in samplers]
    assert [(st["epoch"], st["position"]) for st in states] == [(1, 3), (0, 2)]
    resumed = _claimed(2, dist.HashStore())
    for s, state in zip(resumed, states):
        s.load_state_dict(state)
    furthest = max(s.progress_key for s in resumed)  # what the trainer's all-reduce MAX gives every rank
    for s in resumed:
        s.continue_from(furthest)
    after = [b for taken in _drain(resumed, speeds=[1, 2]) for b in taken]
    epochs = [bucket_batches(_frames(), 2000, np.random.default_rng([5, e])) for e in (0, 1)]
    assert sorted(map(sorted, before + after)) == sorted(map(sorted, epochs[0] + epochs[1]))  # each batch once
    assert all(s.epoch == 1 and s.position == len(epochs[1]) for s in resumed)


def test_claimed_sampler_max_steps_end_the_data_at_one_global_point():
    import torch.distributed as dist

    samplers = [
        DistributedBucketSampler(_frames(), 2000, rank=r, world_size=2, seed=5, claims=StoreClaims(store), max_steps=3)
        for r, store in enumerate([dist.HashStore()] * 2)
    ]
    taken = _drain(samplers, speeds=[2, 1])
    assert sum(map(len, taken)) == 6 and len(taken[0]) > len(taken[1])  # 3 steps of each worker, shared
    assert all(s.exhausted and s.position == 6 and s.progress_steps() == 3 for s in samplers)
