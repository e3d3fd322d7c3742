"""Process bookkeeping for the reliability checks: runs in their own session, their workers, leftovers.

run = Run.start([sys.executable, "-m", "dasr", "train", ...], log=exp / "run.log")
workers(run.pid)        # the spawned worker processes, oldest first
run.wait(timeout_s)     # exit code, or None after killing the whole session on timeout
session_leftovers(run.pid)  # processes of the session still alive after the run exited
"""

from __future__ import annotations

import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, session id, state letter) of ``pid`` from /proc, or None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    return int(fields[1]), int(fields[3]), fields[0]


def _pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def descendants(pid: int) -> list[int]:
    """Every living descendant of ``pid``, in pid order."""
    children: dict[int, list[int]] = {}
    for p in _pids():
        st = _stat(p)
        if st is not None:
            children.setdefault(st[0], []).append(p)
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return sorted(found)


def cmdline(pid: int) -> str:
    """The command line of ``pid`` ("" when it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def workers(launcher_pid: int) -> list[int]:
    """The worker processes torch's launcher spawned under ``launcher_pid``, oldest (local rank 0) first."""
    return [p for p in descendants(launcher_pid) if "spawn_main" in cmdline(p)]


def threads(pid: int) -> int | None:
    """How many threads ``pid`` runs (None when it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def session_leftovers(session: int) -> list[int]:
    """Living processes of session ``session`` (zombies hold nothing but their pid and are left out)."""
    return [p for p in _pids() if (st := _stat(p)) is not None and st[1] == session and st[2] != "Z" and p != session]


@dataclass
class Run:
    """A command running in a session of its own, its output in a log file."""

    process: subprocess.Popen
    log: Path

    @classmethod
    def start(cls, args: list[str], log: str | os.PathLike, env: dict | None = None) -> Run:
        """Start ``args`` with stdout and stderr going to ``log``."""
        log = Path(log)
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "wb") as out:
            process = subprocess.Popen(
                args,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
            )
        return cls(process, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait(self, timeout_s: float) -> int | None:
        """The exit code, or None when it ran past ``timeout_s`` (its whole session is then killed)."""
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            return None

    def kill(self) -> None:
        """SIGKILL every process of the session and reap the leader."""
        for pid in [self.pid, *session_leftovers(self.pid)]:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait()

    def tail(self, chars: int = 2000) -> str:
        """The end of the log."""
        return self.log.read_bytes()[-chars:].decode(errors="replace")


def _socket_inodes(pid: int) -> set[int]:
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    except OSError:
        pass
    return inodes


def _address(hex_addr: str) -> str:
    """``0100007F:1F90`` (/proc/net/tcp) or its IPv6 form -> ``127.0.0.1`` / ``::``, ports dropped."""
    import ipaddress

    raw = bytes.fromhex(hex_addr.split(":")[0])
    if len(raw) == 4:
        return str(ipaddress.IPv4Address(raw[::-1]))
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))  # four host-order 32-bit words
    address = ipaddress.IPv6Address(words)
    return str(address.ipv4_mapped or address)


def listening_addresses(pids: list[int]) -> set[str]:
    """The local addresses the TCP sockets of ``pids`` listen on (e.g. ``{"127.0.0.1"}``)."""
    inodes = set().union(*(_socket_inodes(p) for p in pids)) if pids else set()
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and int(fields[9]) in inodes:  # state 0A: LISTEN
                found.add(_address(fields[1]))
    return found
