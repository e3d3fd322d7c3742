"""GPU clusters of the paper's era, from the vendors' public specifications (every number names its source).

A :class:`Node` is a machine of ``gpus`` learners joined by ``intra`` (NVLink), with a network
adapter ``nic`` to the other nodes. When learners of several nodes talk at once, the
adapter is shared by all learners of a node, so each gets ``nic / gpus`` (:meth:`Node.cluster`).
"""

from __future__ import annotations

from dataclasses import dataclass

from lab.sim.cluster import Cluster
from lab.sim.model import Link


@dataclass(frozen=True)
class Gpu:
    """A GPU's peak FP32 throughput and memory bandwidth."""

    name: str
    fp32_tflops: float
    memory_GBps: float
    source: str


@dataclass(frozen=True)
class Node:
    """A node of ``gpus`` GPUs: NVLink between them, one network adapter to the rest."""

    name: str
    gpu: Gpu
    gpus: int
    intra: Link
    nic: Link
    source: str

    def cluster(self) -> Cluster:
        """The simulator's view: one learner per GPU, the adapter's bandwidth split among the node's learners."""
        shared = Link(self.nic.latency_s, self.nic.bandwidth_Bps / self.gpus)
        return Cluster(cores=None, link=shared, node_link=self.intra, node_size=self.gpus)

    def describe(self) -> str:
        """One line: GPUs, links and where the numbers come from."""
        return (
            f"{self.name}: {self.gpus} x {self.gpu.name} per node; NVLink {self.intra.describe()} per direction "
            f"between GPUs; network {self.nic.describe()} per direction per node, shared by its {self.gpus} "
            f"learners ({self.source})"
        )


V100 = Gpu("V100", 15.7, 900, "NVIDIA Tesla V100 datasheet (SXM2): 15.7 TFLOPS FP32, 900 GB/s HBM2, NVLink 300 GB/s")
P100 = Gpu("P100", 10.6, 732, "NVIDIA Tesla P100 datasheet (SXM2): 10.6 TFLOPS FP32, 732 GB/s HBM2, NVLink 160 GB/s")

#: NVLink 2.0: 25 GB/s per direction per link; 2 links between two GPUs of a 4-GPU POWER9 node
NVLINK2 = Link(5e-6, 50e9)
#: NVLink 1.0: 20 GB/s per direction per link; 2 links between two GPUs of a 4-GPU POWER8 (Minsky) node
NVLINK1 = Link(5e-6, 40e9)
#: InfiniBand EDR: 100 Gb/s = 12.5 GB/s per direction per port; ~5 us MPI-level latency (assumed)
IB_EDR = Link(5e-6, 12.5e9)
#: 100 Gb/s Ethernet, as in Interspeech 2019's cluster; ~10 us latency (assumed)
ETH_100G = Link(10e-6, 12.5e9)

NODES = {
    "v100-nvlink-edr": Node(
        "4x V100 + EDR", V100, 4, NVLINK2, IB_EDR, "IBM Power System AC922, 4-GPU configuration; Mellanox EDR 100 Gb/s"
    ),
    "p100-nvlink-edr": Node(
        "4x P100 + EDR",
        P100,
        4,
        NVLINK1,
        IB_EDR,
        "IBM Power System S822LC for HPC (Minsky), 4 P100; Mellanox EDR 100 Gb/s",
    ),
    "v100-nvlink-100gbe": Node(
        "4x V100 + 100GbE",
        V100,
        4,
        NVLINK2,
        ETH_100G,
        "AC922-class node; 100 Gb/s Ethernet as stated in Interspeech 2019",
    ),
    "v100x6-nvlink-2xedr": Node(
        "6x V100 + dual-rail EDR",
        V100,
        6,
        NVLINK2,
        Link(5e-6, 25e9),
        "IBM AC922 6-GPU configuration (as in Summit-class POWER9 supercomputers), "
        "two EDR ports = 25 GB/s per direction",
    ),
}


def per_sample_s(gpu: Gpu, reference: Gpu, reference_s: float) -> float:
    """Compute per sample on ``gpu``, scaled from ``reference`` by peak FP32 throughput."""
    return reference_s * reference.fp32_tflops / gpu.fp32_tflops
