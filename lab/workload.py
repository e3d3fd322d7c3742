"""What the benchmarks run: a small synthesised corpus when none is given, and a bare PyTorch training step.

The bare step is the reference the trainer is measured against: forward, CTC loss, backward,
gradient clipping and the optimizer step, nothing else.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

from dasr.config import load_recipe
from dasr.data.loader import Batch

#: hours of the synthesised corpus: quick smoke run, full benchmark
SYNTH_HOURS = {True: 0.05, False: 0.3}


def demo_settings() -> dict:
    """The `demo` recipe's training settings (dasr/recipes/demo.yaml): batch_frames, lr, grad_clip, ..."""
    return load_recipe("demo")


def synthesize(out_dir: str | os.PathLike, quick: bool) -> dict:
    """Synthesise the small benchmark corpus into ``out_dir`` with all cores, then compute its features.

    Returns:
        The synthesis summary (with ``x_real_time`` and ``jobs``) plus ``features_s``.
    """
    from dasr.data.features import compute_features
    from dasr.data.synth import synthesize_corpus

    summary = synthesize_corpus(out_dir, hours=SYNTH_HOURS[quick], seed=0, jobs=os.cpu_count() or 1)
    start = time.perf_counter()
    compute_features(out_dir)
    summary["features_s"] = time.perf_counter() - start
    return summary


def ensure_lm(data_dir: str | os.PathLike) -> Path:
    """``DATA/lm.arpa``, estimated with :func:`dasr.decode.lm_build.build_lm` when it is missing."""
    from dasr.decode.lm_build import LM_FILE, build_lm

    path = Path(data_dir) / LM_FILE
    if not path.exists():
        path, _ = build_lm(str(data_dir))
    return path


def bare_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: Batch, grad_clip: float) -> float:
    """One plain PyTorch training step on ``batch``: forward, ctc_loss, backward, clip, optimizer step.

    Returns:
        The loss (CTC summed over the batch, divided by its utterances).
    """
    optimizer.zero_grad(set_to_none=True)
    log_probs, out_lens = model(batch.feats, batch.feat_lens)
    loss = torch.nn.functional.ctc_loss(
        log_probs.transpose(0, 1),
        batch.labels,
        out_lens,
        batch.label_lens,
        blank=0,
        reduction="sum",
        zero_infinity=True,
    ) / len(batch.ids)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip or math.inf)
    optimizer.step()
    return float(loss.detach())


def random_batch(
    utterances: int, seconds: float, vocab_size: int, chars_per_second: float = 12.0, seed: int = 0
) -> Batch:
    """A batch of ``utterances`` equal-length random feature sequences with random labels."""
    g = torch.Generator().manual_seed(seed)
    frames = int(seconds * 100)
    label_len = max(1, int(seconds * chars_per_second))
    return Batch(
        ids=[f"random-{i}" for i in range(utterances)],
        feats=torch.randn(utterances, frames, 80, generator=g),
        feat_lens=torch.full((utterances,), frames, dtype=torch.long),
        labels=torch.randint(1, vocab_size, (utterances, label_len), generator=g),
        label_lens=torch.full((utterances,), label_len, dtype=torch.long),
        texts=[""] * utterances,
    )
