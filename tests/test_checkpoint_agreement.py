"""All ranks resume from one step: the newest checkpoint that loads on every rank.

Real worker processes agree over gloo on 127.0.0.1. Rank 1's file of the newest step is
torn: with rank-local fallbacks rank 0 resumed from step 20 and rank 1 from step 10.
"""

from pathlib import Path

import torch

from dasr.parallel.launch import launch
from dasr.train import checkpoint


def _write_checkpoints(root: Path, world_size: int) -> None:
    for step in (10, 20):
        for rank in range(world_size):
            checkpoint.save_rank(root, step, rank, {"step": step, "round": step // 10})
        checkpoint.mark_complete(root, step, world_size, keep=5)


def _resume(root: str) -> int | None:
    import faulthandler

    import torch.distributed as dist

    from dasr.parallel.launch import init_worker

    faulthandler.dump_traceback_later(60, exit=True)
    init_worker(timeout_s=30)

    def agree_min(value: int) -> int:
        t = torch.tensor([value], dtype=torch.int64)
        dist.all_reduce(t, op=dist.ReduceOp.MIN)
        return int(t.item())

    state = checkpoint.load_agreed(Path(root), dist.get_rank(), agree_min)
    dist.destroy_process_group()
    return None if state is None else state["step"]


def test_a_torn_file_on_one_rank_makes_every_rank_fall_back_together(tmp_path):
    root = tmp_path / "checkpoints"
    _write_checkpoints(root, 2)
    torn = checkpoint.step_dir(root, 20) / "rank1.pt"
    torn.write_bytes(torn.read_bytes()[:100])
    assert launch(_resume, (str(root),), nproc=2) == {0: 10, 1: 10}


def test_newest_step_when_every_rank_can_load_it(tmp_path):
    root = tmp_path / "checkpoints"
    _write_checkpoints(root, 2)
    assert launch(_resume, (str(root),), nproc=2) == {0: 20, 1: 20}


def test_no_step_usable_everywhere_starts_every_rank_from_scratch(tmp_path):
    root = tmp_path / "checkpoints"
    _write_checkpoints(root, 2)
    for step in (10, 20):
        (checkpoint.step_dir(root, step) / f"rank{step // 10 - 1}.pt").write_bytes(b"not a checkpoint")
    assert launch(_resume, (str(root),), nproc=2) == {0: None, 1: None}
