"""etcd members started for a test or a benchmark: one on the loopback, or one per test-bed node.

The binary comes from Debian main's etcd-server, unpacked by ``scripts/fetch-etcd.sh`` into
``.venv/etcd`` (installing the package would start a system service), else from ``PATH``::

    with EtcdCluster(tmp_path / "etcd", members=3) as cluster:
        store = EtcdStore.from_address(cluster.address("run-1"))

    members = [bed.popen(i, command) for i, command in enumerate(etcd_commands(hosts, data_dir))]

A member's ``--heartbeat-interval`` is 100 ms and its ``--election-timeout`` 1 s (etcd's
defaults): after the leader's loss the others elect a new one within about a second.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dasr.parallel.launch import free_port

CLIENT_PORT, PEER_PORT = 2379, 2380
_UNPACKED = Path(sys.prefix) / "etcd" / "usr" / "bin" / "etcd"


def etcd_binary() -> str | None:
    """The etcd program to run (the venv's unpacked one first), or None if there is none."""
    return str(_UNPACKED) if _UNPACKED.exists() else shutil.which("etcd")


def etcd_commands(
    hosts: list[str], data_dir: Path, client_ports: list[int] | None = None, peer_ports: list[int] | None = None
) -> list[list[str]]:
    """One command per member of a new cluster of ``len(hosts)`` members, member i on ``hosts[i]``."""
    binary = etcd_binary()
    if binary is None:
        raise FileNotFoundError("no etcd: run scripts/fetch-etcd.sh (Debian's etcd-server, unpacked into .venv)")
    client_ports = client_ports or [CLIENT_PORT] * len(hosts)
    peer_ports = peer_ports or [PEER_PORT] * len(hosts)
    cluster = ",".join(f"m{i}=http://{h}:{p}" for i, (h, p) in enumerate(zip(hosts, peer_ports, strict=True)))
    commands = []
    for i, host in enumerate(hosts):
        client, peer = f"http://{host}:{client_ports[i]}", f"http://{host}:{peer_ports[i]}"
        commands.append(
            [binary, "--name", f"m{i}", "--data-dir", str(data_dir / f"m{i}")]
            + ["--listen-client-urls", client, "--advertise-client-urls", client]
            + ["--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer]
            + ["--initial-cluster", cluster, "--initial-cluster-state", "new"]
            + ["--initial-cluster-token", f"dasr-{data_dir.name}", "--logger", "zap", "--log-level", "error"]
            + ["--auto-compaction-mode", "periodic", "--auto-compaction-retention", "1h"]  # every add is a revision
        )
    return commands


def wait_healthy(endpoint: str, timeout_s: float = 30.0) -> None:
    """Wait until the member at ``host:port`` answers with a leader elected (``/health``)."""
    import requests

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if requests.get(f"http://{endpoint}/health", timeout=1).json().get("health") == "true":
                return
        except (requests.RequestException, ValueError):
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"etcd at {endpoint} was not healthy within {timeout_s:.0f} s")
        time.sleep(0.1)


class EtcdCluster:
    """``members`` etcd processes on 127.0.0.1 and free ports, with their data under ``data_dir``;
    ended (and their data removed) on leaving the ``with`` block."""

    def __init__(self, data_dir: Path, members: int = 1):
        self.data_dir = data_dir
        self.client_ports = [free_port() for _ in range(members)]
        peer_ports = [free_port() for _ in range(members)]
        commands = etcd_commands(["127.0.0.1"] * members, data_dir, self.client_ports, peer_ports)
        self.procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for c in commands]

    def endpoints(self) -> list[str]:
        return [f"127.0.0.1:{p}" for p in self.client_ports]

    def address(self, namespace: str) -> str:
        """The ``etcd://`` address of this cluster under ``namespace``."""
        return "etcd://" + ",".join(self.endpoints()) + "/" + namespace

    def __enter__(self) -> EtcdCluster:
        with contextlib.ExitStack() as on_failure:  # a member that never gets healthy: stop them all
            on_failure.callback(self.close)
            for endpoint in self.endpoints():
                wait_healthy(endpoint)
            on_failure.pop_all()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(self.data_dir, ignore_errors=True)
