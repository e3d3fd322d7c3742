"""A cluster on one machine: K "nodes" in Linux network namespaces joined by rate-limited links.

Each node is a namespace with one veth interface ``eth0`` (address ``198.18.0.<i+1>/24``, from
the benchmarking range 198.18.0.0/15 of RFC 2544, existing only inside these namespaces); the
other end of every veth sits in a switch namespace, enslaved to a bridge. Every link is
rate-limited with ``tc ... tbf`` in both directions: on the node's ``eth0`` (what the node sends)
and on its switch port (what it receives). ``netem`` does not work on this kernel, so there is
no delay emulation: a link here has a rate, not a latency. Nothing is created in the host's own
namespace, and nothing is routed out of the test bed::

    with Testbed(nodes=2, rate_mbit=50) as bed:
        proc = bed.popen(0, ["python", "-c", "..."], env={"GLOO_SOCKET_IFNAME": bed.interface})
        bed.counters(0)           # {"rx_bytes": ..., "tx_bytes": ...} of node 0's eth0

Every name starts with a prefix unique to the run (``dasrnet<pid>x<n>``); namespaces of earlier
runs whose process is gone are removed at start. Leaving the ``with`` block (also on an error,
Ctrl-C or SIGTERM) stops the processes started in the nodes and deletes every namespace.
Needs root (``ip netns``); where namespaces cannot be made, :class:`Testbed` raises a
:class:`~dasr.errors.DasrError` saying so in one sentence.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from ipaddress import IPv4Network

from dasr.errors import DasrError

#: every namespace of this test bed is named ``<NAME_ROOT><pid>x-...``
NAME_ROOT = "dasrnet"
#: the nodes' subnet (inside the RFC 2544 benchmarking range 198.18.0.0/15)
SUBNET = IPv4Network("198.18.0.0/24")
BENCHMARK_RANGE = IPv4Network("198.18.0.0/15")
#: the node side of every link, in every node namespace
INTERFACE = "eth0"
#: how long tbf may queue a packet before dropping it
TBF_LATENCY_MS = 50


#: goodput probe: the receiver reads until the sender closes, then closes; the sender times send + that close
_RECEIVER = """import socket, sys
with socket.create_server((sys.argv[1], int(sys.argv[2]))) as server:
    conn, _ = server.accept()
    while conn.recv(1 << 20):
        pass
    conn.close()
"""
_SENDER = """import socket, sys, time
deadline = time.monotonic() + 20
while True:
    try:
        conn = socket.create_connection((sys.argv[1], int(sys.argv[2])))
        break
    except ConnectionRefusedError:
        if time.monotonic() > deadline:
            raise
        time.sleep(0.05)
data = bytes(int(sys.argv[3]))
start = time.perf_counter()
conn.sendall(data)
conn.shutdown(socket.SHUT_WR)
conn.recv(1)
print(len(data) * 8 / (time.perf_counter() - start) / 1e6)
"""


def _ip(*args: str) -> str:
    """Run ``ip ARGS`` (or ``tc`` when the first arg is "tc"); its stdout, or a DasrError naming the command."""
    cmd = list(args) if args[0] == "tc" else ["ip", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise DasrError(f"`{' '.join(cmd)}` failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def tbf_burst_bytes(rate_mbit: float) -> int:
    """tbf bucket size: 10 ms of traffic at ``rate_mbit``, at least 32 KiB (several full-size packets)."""
    return max(32 * 1024, int(rate_mbit * 1e6 / 8 * 0.010))


def _namespaces() -> list[str]:
    return [line.split()[0] for line in _ip("netns", "list").splitlines() if line.strip()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_namespace_processes(ns: str) -> None:
    """SIGKILL every process still running inside namespace ``ns`` (they were started there by this test bed)."""
    done = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=30)
    for pid in (int(p) for p in done.stdout.split()):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _delete_namespace(ns: str) -> None:
    _kill_namespace_processes(ns)
    subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def clean_stale() -> list[str]:
    """Delete the test-bed namespaces of earlier runs whose process is gone; return their names."""
    stale = []
    for ns in _namespaces():
        m = re.fullmatch(rf"{NAME_ROOT}(\d+)x\d+-.*", ns)
        if m and not _pid_alive(int(m.group(1))):
            _delete_namespace(ns)
            stale.append(ns)
    return stale


class _Terminated(BaseException):
    """SIGTERM/SIGHUP turned into an exception, so that ``finally`` blocks clean up."""


def _raise_on_signal(signum, frame) -> None:
    raise _Terminated(f"stopped by {signal.Signals(signum).name}")


#: signals that stop a run; while a test bed is up they raise, so that it is cleaned up (Ctrl-C already raises)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


class Testbed:
    """K node namespaces on a bridge, every link shaped to ``rate_mbit`` (one for all, or one per node)
    in both directions with tbf.

    Use as a context manager; see the module docstring.
    """

    interface = INTERFACE

    def __init__(self, nodes: int, rate_mbit: float | Sequence[float]):
        if not 1 <= nodes <= 250:
            raise ValueError(f"nodes must be in [1, 250], got {nodes}")
        rates = [float(rate_mbit)] * nodes if isinstance(rate_mbit, int | float) else [float(r) for r in rate_mbit]
        if len(rates) != nodes or min(rates) <= 0:
            raise ValueError(f"need one link rate > 0 Mbit/s per node ({nodes}), got {rate_mbit}")
        self.nodes = nodes
        self.rates_mbit = rates
        self.prefix = f"{NAME_ROOT}{os.getpid()}x{time.monotonic_ns() % 10**6}"
        self.switch = f"{self.prefix}-sw"
        self._created: list[str] = []
        self._procs: list[subprocess.Popen] = []
        self._previous_handlers: dict = {}

    def namespace(self, node: int) -> str:
        """The namespace of node ``node``."""
        return f"{self.prefix}-n{node}"

    def address(self, node: int) -> str:
        """Node ``node``'s IPv4 address (198.18.0.<node + 1>)."""
        return str(SUBNET.network_address + node + 1)

    def __enter__(self) -> Testbed:
        if threading.current_thread() is threading.main_thread():
            self._previous_handlers = {s: signal.signal(s, _raise_on_signal) for s in STOP_SIGNALS}
        try:
            clean_stale()
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _add_namespace(self, ns: str) -> None:
        try:
            _ip("netns", "add", ns)
        except DasrError as e:
            raise DasrError(
                f"network namespaces cannot be made here, so the test bed needs root and `ip netns` ({e})"
            ) from None
        self._created.append(ns)
        _ip("-n", ns, "link", "set", "lo", "up")

    def _shape(self, ns: str, dev: str, rate_mbit: float) -> None:
        _ip("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", f"{rate_mbit:g}mbit",
            "burst", str(tbf_burst_bytes(rate_mbit)), "latency", f"{TBF_LATENCY_MS}ms")  # fmt: skip

    def _create(self) -> None:
        self._add_namespace(self.switch)
        _ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.switch, "link", "set", "br0", "up")
        for i in range(self.nodes):
            ns, port = self.namespace(i), f"p{i}"
            self._add_namespace(ns)
            _ip(
                "link",
                "add",
                "name",
                INTERFACE,
                "netns",
                ns,
                "type",
                "veth",
                "peer",
                "name",
                port,
                "netns",
                self.switch,
            )
            _ip("-n", ns, "addr", "add", f"{self.address(i)}/{SUBNET.prefixlen}", "dev", INTERFACE)
            _ip("-n", ns, "link", "set", INTERFACE, "up")
            _ip("-n", self.switch, "link", "set", port, "master", "br0")
            _ip("-n", self.switch, "link", "set", port, "up")
            self._shape(ns, INTERFACE, self.rates_mbit[i])
            self._shape(self.switch, port, self.rates_mbit[i])

    def popen(self, node: int, cmd: list[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
        """Start ``cmd`` inside node ``node``'s namespace (own process group; stopped by :meth:`close`)."""
        extra = [f"{k}={v}" for k, v in (env or {}).items()]
        full = ["ip", "netns", "exec", self.namespace(node), "env", *extra, *cmd]
        proc = subprocess.Popen(full, start_new_session=True, **kwargs)
        self._procs.append(proc)
        return proc

    def set_link(self, node: int, up: bool) -> None:
        """Take node ``node``'s link down (the node is cut off, its processes run on) or bring it up again."""
        _ip("-n", self.namespace(node), "link", "set", INTERFACE, "up" if up else "down")

    def counters(self, node: int) -> dict[str, int]:
        """Bytes and packets node ``node``'s ``eth0`` has received and sent so far."""
        stats = json.loads(_ip("-n", self.namespace(node), "-j", "-s", "link", "show", "dev", INTERFACE))[0]["stats64"]
        return {f"{d}_{k}": stats[d][k] for d in ("rx", "tx") for k in ("bytes", "packets")}

    def goodput_mbit(self, src: int, dst: int, nbytes: int = 4_000_000, port: int = 5201) -> float:
        """Megabits per second of payload one TCP stream moves from node ``src`` to node ``dst`` (``nbytes``)."""
        receiver = self.popen(dst, [sys.executable, "-c", _RECEIVER, self.address(dst), str(port)])
        sender = self.popen(
            src,
            [sys.executable, "-c", _SENDER, self.address(dst), str(port), str(nbytes)],
            stdout=subprocess.PIPE,
            text=True,
        )
        out, _ = sender.communicate(timeout=120)
        receiver.wait(timeout=30)
        if sender.returncode != 0:
            raise DasrError(f"the goodput probe from node {src} to node {dst} failed (exit {sender.returncode})")
        return float(out)

    def qdisc(self, node: int) -> str:
        """``tc qdisc show`` of node ``node``'s ``eth0`` (shows the tbf rate)."""
        return _ip("tc", "-n", self.namespace(node), "qdisc", "show", "dev", INTERFACE).strip()

    def stop_processes(self) -> None:
        """Stop every process started with :meth:`popen` (SIGTERM, then SIGKILL after 5 s)."""
        for proc in self._procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 5
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        self._procs.clear()

    def close(self) -> None:
        """Stop the processes, delete every namespace (and with them the links and the bridge); idempotent."""
        try:
            self.stop_processes()
        finally:
            for ns in reversed(self._created):
                _delete_namespace(ns)
            self._created.clear()
            for s, handler in self._previous_handlers.items():
                signal.signal(s, handler)
            self._previous_handlers = {}


def available() -> str | None:
    """None when a test bed can be made here, else one sentence saying why not."""
    if os.geteuid() != 0:
        return "network namespaces cannot be made here, so the test bed needs root (this process is not root)"
    try:
        with Testbed(nodes=1, rate_mbit=10):
            pass
    except FileNotFoundError as e:
        return f"`{e.filename}` is not installed (iproute2 provides ip and tc)"
    except DasrError as e:
        return str(e)
    return None
