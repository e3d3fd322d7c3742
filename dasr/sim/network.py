"""The simulator with link rates as inputs: this machine's workers, one per node, joined by links of ``rate_mbit``.

What `dasr bench network` builds: every node has its own link to a switch, shaped to the rate in
both directions (tbf, no delay), so a transfer between two nodes runs at the rate per direction,
full duplex, and disjoint pairs do not share a link. The transfers wait on the wire (wall time),
not on the CPU: at these rates gloo's own CPU work is a small fraction of a transfer. The
workers' compute shares the machine's cores at the measured contention::

    work = reference_workload(single_run, param_bytes, pass_s, gossip_period_s=0.5, group_size=2)
    predict("adpsgd", nodes=4, rate_mbit=50, work=work, cores=2, speedup={1: 1.0, 2: 1.9, 4: 1.9})
"""

from __future__ import annotations

from dasr.sim.cluster import Cluster, Result, Workload, simulate
from dasr.sim.model import Link

#: per-message latency of a veth + bridge hop (no delay is emulated: netem does not work on this kernel)
VETH_LATENCY_S = 50e-6
#: step-to-step variation of a worker's compute (batches of equal padded frames; as in `dasr simulate`)
COMPUTE_CV = 0.05


def link(rate_mbit: float) -> Link:
    """A test-bed link of ``rate_mbit`` megabits per second per direction."""
    if rate_mbit <= 0:
        raise ValueError(f"link rate must be > 0 Mbit/s, got {rate_mbit}")
    return Link(VETH_LATENCY_S, rate_mbit * 1e6 / 8)


def reference_workload(
    single: dict, param_bytes: int, pass_s: float, gossip_period_s: float, group_size: int, average_period: int = 8
) -> Workload:
    """A learner's step from a one-worker reference run's summary (``compute_s``, ``step_s``, ``utts_per_step``)."""
    return Workload(
        compute_s=single["compute_s"],
        other_s=max(single["step_s"] - single["compute_s"], 0.0),
        samples_per_step=single["utts_per_step"],
        param_bytes=param_bytes,
        pass_s=pass_s,
        compute_cv=COMPUTE_CV,
        gossip_period_s=gossip_period_s,
        group_size=group_size,
        average_period=average_period,
    )


def predict(
    strategy: str,
    nodes: int,
    rate_mbit: float,
    work: Workload,
    cores: int,
    speedup: dict[int, float] | None,
    steps: int = 60,
) -> Result:
    """Simulated run of ``strategy`` on ``nodes`` single-worker nodes whose links run at ``rate_mbit``."""
    cluster = Cluster(cores=cores, link=link(rate_mbit), comm_on_cpu=False, speedup=speedup)
    return simulate(strategy, nodes, work, cluster, steps=steps, warmup_steps=3)
