"""Resuming `dasr train` runs of the gossip strategies (real worker processes on 127.0.0.1, real checkpoints)."""

import shutil

import pytest

from dasr.data.loader import AsrDataset, DistributedBucketSampler, StoreClaims
from dasr.data.tokenizer import load_tokenizer
from dasr.train.checkpoint import atomic_save, list_complete, load_file


def _ranks_by_plane(world, group_size):
    """Hybrid's gossip planes: member r of every group (see Hybrid._planes)."""
    return [[a * group_size + r for a in range(world // group_size)] for r in range(group_size)]


@pytest.mark.slow  # two 4-worker runs (~45 s of CPU); test_parallel_regressions checks the planes' rounds fast
def test_hybrid_with_two_gossip_planes_resumes(speech_data_dir, tmp_path, dasr_train, read_metrics):
    """S1: each hybrid plane stops at its own agreed round, so a checkpoint holds one round per plane.

    4 workers in groups of 2 make 2 planes (ranks 0, 2 and ranks 1, 3). The epoch-0 checkpoint's
    plane-1 files are given 3 more rounds than plane 0's, a state any run reaches when the planes'
    threads ran different numbers of rounds. Before the fix the trainer required one round on
    all ranks and refused to resume ("holds gossip rounds 5 to 8 on different ranks").
    """
    exp = tmp_path / "exp"
    hybrid = ["--strategy", "hybrid", "--nproc", 4, "--group-size", 2, "--gossip-period-s", 0.01]
    first = dasr_train(speech_data_dir, exp, *hybrid, "--epochs", 1)
    assert first.returncode == 0, first.stderr[-3000:]
    (saved,) = list_complete(exp / "checkpoints")  # the end of epoch 0: 2 steps of each worker
    planes = _ranks_by_plane(4, 2)
    rounds = {}
    for q, ranks in enumerate(planes):
        states = {r: load_file(saved / f"rank{r}.pt") for r in ranks}
        assert len({s["strategy"]["round"] for s in states.values()}) == 1, states  # one round per plane
        for r, state in states.items():
            state["strategy"]["round"] += 3 * q
            atomic_save(state, saved / f"rank{r}.pt")
            rounds[r] = state["strategy"]["round"]
    assert rounds[0] != rounds[1]

    second = dasr_train(speech_data_dir, exp, *hybrid, "--epochs", 2, "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    train = [r for r in read_metrics(exp) if r["kind"] == "train"]
    for rank in range(4):
        mine = [r for r in train if r["rank"] == rank]
        assert [r["step"] for r in mine] == [1, 2, 3, 4], mine  # steps 3 and 4 after the resume, none again
        resumed = mine[2]
        assert resumed["gossip_round"] >= rounds[rank], (rank, resumed["gossip_round"], rounds)
    final = list_complete(exp / "checkpoints")[-1]
    states = [load_file(final / f"rank{r}.pt") for r in range(4)]
    assert [s["progress"]["step"] for s in states] == [4, 4, 4, 4]
    for ranks in planes:
        assert len({states[r]["strategy"]["round"] for r in ranks}) == 1, [s["strategy"] for s in states]
    models = [s["model"] for s in states]
    assert all((models[0][k] == m[k]).all() for m in models[1:] for k in models[0])  # consensus at the save


def _trained_once(data, exp, checkpoint_dir, world):
    """(steps of all ranks, batches before the furthest point any rank reached) of a checkpoint.

    Claimed batches are handed out in order, and every rank trains its claims before a
    checkpoint, so the batches trained are all those before the furthest (epoch, position):
    the two numbers are equal exactly when no batch was trained twice or skipped.
    """
    states = [load_file(checkpoint_dir / f"rank{r}.pt") for r in range(world)]
    epoch, position = max((s["sampler"]["epoch"], s["sampler"]["position"]) for s in states)
    frames = AsrDataset(data, "train", load_tokenizer(exp)).frames
    sampler = DistributedBucketSampler(frames, 200, 0, world, seed=0, claims=StoreClaims(store=None))
    lengths = []  # batches per epoch (two short utterances may share one)
    for e in range(epoch):
        sampler.set_epoch(e)
        lengths.append(len(sampler))
    return sum(s["progress"]["step"] for s in states), sum(lengths) + position


@pytest.mark.slow  # two 2-worker runs of 2 and 2 more seconds of training, plus evaluations
@pytest.mark.parametrize("strategy", ["adpsgd", "ps"])
def test_time_mode_resume_trains_each_batch_once(speech_data_dir, tmp_path, dasr_train, strategy):
    """S2: in time mode each rank saves its own position; resumed, they continue at the furthest one.

    Rank 1 is 3x slow, so the ranks' positions (and maybe epochs) differ at every checkpoint.
    Before the fix each rank claimed from its own saved position on a counter of its own, so
    the batches between the positions (or a whole epoch's start) were trained twice.
    """
    exp = tmp_path / "exp"
    timed = ["--strategy", strategy, "--nproc", 2, "--straggler", "1:3", "--eval-every-s", 1]
    first = dasr_train(speech_data_dir, exp, *timed, "--train-seconds", 2, "--keep-checkpoints", 10)
    assert first.returncode == 0, first.stderr[-3000:]
    saved = list_complete(exp / "checkpoints")[-1]
    steps, claimed = _trained_once(speech_data_dir, exp, saved, 2)
    assert steps == claimed, (steps, claimed)  # the invariant holds without a resume
    points = [load_file(saved / f"rank{r}.pt")["sampler"] for r in range(2)]
    points = [(p["epoch"], p["position"]) for p in points]
    assert points[0] != points[1], points  # each rank saved its own point of the epochs

    second = dasr_train(speech_data_dir, exp, *timed, "--train-seconds", 4, "--keep-checkpoints", 10, "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    final = list_complete(exp / "checkpoints")[-1]
    assert final != saved
    steps, claimed = _trained_once(speech_data_dir, exp, final, 2)
    assert steps == claimed, (steps, claimed)


@pytest.mark.slow  # two 2-worker runs of 2 epochs
def test_adpsgd_resumed_from_a_checkpoint_mark_trains_each_batch_once(speech_data_dir, tmp_path, dasr_train):
    """--checkpoint-every with claimed batches and a 3x straggler: marks meet on every rank; resume from one.

    Marks fall every 4 claimed batches (2 steps x 2 workers). The run is then cut back to its
    first checkpoint (as if killed right after it) and resumed: every batch of the 2 epochs is
    trained exactly once along the resumed run.
    """
    exp = tmp_path / "exp"
    args = ["--strategy", "adpsgd", "--nproc", 2, "--epochs", 2, "--checkpoint-every", 2, "--straggler", "0:3"]
    args += ["--eval-every-epochs", 2, "--keep-checkpoints", 20]
    first = dasr_train(speech_data_dir, exp, *args)
    assert first.returncode == 0, first.stderr[-3000:]
    complete = list_complete(exp / "checkpoints")
    for d in complete:
        points = {(s["sampler"]["epoch"], s["sampler"]["position"]) for s in map(load_file, d.glob("rank*.pt"))}
        assert len(points) == 1, (d, points)  # one point of global progress on both ranks
        steps, claimed = _trained_once(speech_data_dir, exp, d, 2)
        assert steps == claimed, (d, steps, claimed)
    marks = [load_file(d / "rank0.pt")["sampler"]["position"] for d in complete[:2]]
    assert marks == [4, 8], marks  # the first marks of epoch 0
    for d in complete[1:]:  # cut back to the first mark's checkpoint
        shutil.rmtree(d)

    second = dasr_train(speech_data_dir, exp, *args, "--resume")
    assert second.returncode == 0, second.stderr[-3000:]
    final = list_complete(exp / "checkpoints")[-1]
    states = [load_file(final / f"rank{r}.pt") for r in range(2)]
    assert [s["progress"]["epoch"] for s in states] == [2, 2]  # both epochs done ...
    assert len({(s["sampler"]["epoch"], s["sampler"]["position"]) for s in states}) == 1  # ... at epoch 1's end
    steps, claimed = _trained_once(speech_data_dir, exp, final, 2)  # claimed: the batches of epochs 0 and 1
    assert steps == claimed, (steps, claimed)
