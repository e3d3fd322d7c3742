"""The published SWB2000 training times, and the simulator's predictions for the same runs.

The workload is the paper's: SWB2000 (2000 h; 30 M training samples per epoch), the 6-layer
BLSTM acoustic model, 16 epochs. Compute per sample comes from the one single-GPU figure
("about one week on one V100", batch 256), scaled to each learner's batch by a public cuDNN
LSTM benchmark (:mod:`lab.sim.gpu`); P100s are scaled by peak FP32 throughput; links come from
:mod:`lab.sim.hardware`. Nothing is fitted to the multi-GPU times being predicted.
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.sim import gpu as gpu_model
from lab.sim import hardware
from lab.sim.cluster import Workload, simulate

SAMPLES_PER_EPOCH = 30e6
EPOCHS = 16
SINGLE_GPU_HOURS = 7 * 24
SINGLE_GPU_BATCH = 256
COMPUTE_CV = 0.05

ASSUMPTIONS = [
    (
        "SWB2000 training samples per epoch",
        f"{SAMPLES_PER_EPOCH:.3g}",
        "the project's summary of the paper (docs/DESIGN.md: 2000 h, 30 M samples, 32 k outputs)",
    ),
    ("epochs per training run", f"{EPOCHS}", "assumed (the paper's recipe); scales hours, not speed-ups"),
    (
        "single-GPU time",
        f"{SINGLE_GPU_HOURS} h (1 week) on 1 V100, batch {SINGLE_GPU_BATCH}",
        "IBM Research blog, Oct 2019 and Jul 2020 ('from one week on a single V100')",
    ),
    (
        "compute per sample, V100, batch 256",
        "1 week / (epochs x samples per epoch)",
        "derived from the single-GPU figure",
    ),
    (
        "compute per sample at another per-learner batch b",
        "batch 256's x t(b) / t(256), t = cuDNN LSTM (512 hidden) "
        f"train time per sample: {gpu_model.describe()}; log-log interpolation, the end segment's slope beyond the table "
        "(t(256) is an extrapolation); the same curve for P100",
        gpu_model.SOURCE,
    ),
    ("compute per sample, P100", "V100's x 15.7 / 10.6 (peak FP32 ratio)", "NVIDIA V100 and P100 datasheets"),
    ("step-to-step compute variation", f"lognormal, coefficient of variation {COMPUTE_CV}", "assumed"),
    (
        "ADPSGD gossip",
        "a communication thread per learner, rounds back to back, ring graph; the gradient step never waits for it",
        "ICASSP 2019 design (docs/DESIGN.md)",
    ),
    (
        "hybrid / H-ADPSGD",
        "sync all-reduce inside a node (groups of 4 GPUs), ADPSGD between nodes",
        "Interspeech 2019 ('learners on the same computing node construct a super learner')",
    ),
    ("network sharing", "a node's adapter bandwidth is split evenly among its learners", "assumed (worst case)"),
]


def blstm_parameters(
    input_dim: int = 260, cells: int = 512, layers: int = 6, bottleneck: int = 256, outputs: int = 32000
) -> int:
    """Parameters of the paper's acoustic model: ``layers`` BLSTM layers of ``cells`` per direction,
    a linear bottleneck, a softmax over ``outputs`` (two bias vectors per LSTM, as cuDNN/PyTorch)."""
    total, width = 0, input_dim
    for _ in range(layers):
        total += 2 * 4 * cells * (width + cells + 2)
        width = 2 * cells
    return total + width * bottleneck + bottleneck + bottleneck * outputs + outputs


PARAM_BYTES = 4 * blstm_parameters()
V100_SAMPLE_S = SINGLE_GPU_HOURS * 3600 / (EPOCHS * SAMPLES_PER_EPOCH)


@dataclass(frozen=True)
class Published:
    """One published training time."""

    label: str
    source: str
    strategy: str
    learners: int
    node: str  # a key of hardware.NODES
    hours: float
    batch: int  # total batch over all learners
    batch_source: str

    @property
    def speedup(self) -> float:
        """Speed-up over the single-V100 week."""
        return SINGLE_GPU_HOURS / self.hours


PUBLISHED = [
    Published(
        "HYBRID, 32 V100",
        "ICASSP 2019 (Zhang et al.): 11.5 h, 15x",
        "hybrid",
        32,
        "v100-nvlink-edr",
        11.5,
        2560,
        "paper: batch 2560",
    ),
    Published(
        "ADPSGD, 16 P100",
        "ICASSP 2019 (Zhang et al.): 14 h",
        "adpsgd",
        16,
        "p100-nvlink-edr",
        14.0,
        2560,
        "assumed: the paper's 2560",
    ),
    Published(
        "H-ADPSGD, 64 V100",
        "Interspeech 2019 (Zhang et al.): 5.2 h",
        "hybrid",
        64,
        "v100-nvlink-100gbe",
        5.2,
        8192,
        "assumed: 128 per learner (ADPSGD allows ~3x sync's batch)",
    ),
    Published(
        "ADPSGD, 64 V100",
        "ICASSP 2020 (Zhang et al.): 2.28 h",
        "adpsgd",
        64,
        "v100x6-nvlink-2xedr",
        2.28,
        8192,
        "assumed: 128 per learner",
    ),
    Published(
        "ADPSGD, 128 V100",
        "ICASSP 2020 (Zhang et al.): 1.98 h",
        "adpsgd",
        128,
        "v100x6-nvlink-2xedr",
        1.98,
        16384,
        "assumed: 128 per learner",
    ),
]


def workload(node: str, batch_per_learner: float, group_size: int = 4) -> Workload:
    """The SWB2000 BLSTM step of one learner on ``node``'s GPU with ``batch_per_learner`` samples."""
    gpu = hardware.NODES[node].gpu
    sample_s = hardware.per_sample_s(gpu, hardware.V100, V100_SAMPLE_S) * gpu_model.per_sample_factor(
        batch_per_learner, SINGLE_GPU_BATCH
    )
    return Workload(
        compute_s=batch_per_learner * sample_s,
        samples_per_step=batch_per_learner,
        param_bytes=PARAM_BYTES,
        pass_s=PARAM_BYTES * 3 / (gpu.memory_GBps * 1e9),
        compute_cv=COMPUTE_CV,
        gossip_period_s=0.0,
        group_size=group_size,
    )


def predict(strategy: str, learners: int, node: str, batch_per_learner: float, steps: int) -> dict:
    """Simulated samples/s, hours per epoch, hours for the run and speed-up over the single-V100 week."""
    res = simulate(strategy, learners, workload(node, batch_per_learner), hardware.NODES[node].cluster(), steps=steps)
    epoch_h = SAMPLES_PER_EPOCH / res.samples_per_s / 3600
    return {
        "strategy": strategy,
        "learners": learners,
        "node": node,
        "batch_per_learner": batch_per_learner,
        "samples_per_s": res.samples_per_s,
        "epoch_h": epoch_h,
        "hours": EPOCHS * epoch_h,
        "speedup": SINGLE_GPU_HOURS / (EPOCHS * epoch_h),
    }


def compare_published(steps: int) -> list[dict]:
    """Every published run beside the simulator's prediction for it, with the relative error of the speed-up."""
    rows = []
    for pub in PUBLISHED:
        pred = predict(pub.strategy, pub.learners, pub.node, pub.batch / pub.learners, steps)
        rows.append(
            {
                "label": pub.label,
                "source": pub.source,
                "batch": pub.batch,
                "batch_source": pub.batch_source,
                "published_hours": pub.hours,
                "published_speedup": pub.speedup,
                **pred,
                "rel_err": abs(pred["speedup"] - pub.speedup) / pub.speedup,
            }
        )
    return rows


def scaling(learners: list[int], steps: int, node: str = "v100-nvlink-edr", batch_per_learner: int = 80) -> list[dict]:
    """Predicted speed-up and time per epoch of sync, adpsgd and hybrid for each N in ``learners``."""
    return [
        predict(s, n, node, batch_per_learner, steps)
        for n in learners
        for s in ("sync", "adpsgd", "hybrid")
        if not (s == "hybrid" and n % 4)
    ]
