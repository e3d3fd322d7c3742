"""Debian packages (also from contrib and non-free) fetched into a private cache, never installed.

``DebCache(dir).fetch(["uqm-voice"])`` downloads the packages' .deb files with the system's own
``apt-get``, told by options to use a private sources list, package lists, cache and log dir under
``dir``: the machine's apt configuration (/etc/apt) and its installed packages are read, never
changed, and no root is needed. The sources list copies the archive URIs and suites of the
system's own (``/etc/apt/sources.list`` and ``sources.list.d/*.list`` / ``*.sources``), with the
components ``main contrib non-free``. Each .deb is unpacked with ``dpkg-deb -x`` into ``dir/root``
(a private ``/``): data is read from there, and programs run from there with ``LD_LIBRARY_PATH``
and their data paths pointed into it (see :mod:`dasr.data.tts`).

``with_deps=True`` also fetches the dependencies the machine lacks (``apt-get install
--download-only`` against the system's package status, read-only), so an engine's libraries
come along; data packages are fetched alone (``uqm-voice`` depends on the game itself).
"""

from __future__ import annotations

import getpass
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from dasr.errors import DasrError

log = logging.getLogger(__name__)

COMPONENTS = "main contrib non-free"
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
APT_TIMEOUT_S = 1800
_ARCHIVE = re.compile(r"/debian/?$")  # the main archive, not debian-security


def system_sources(etc: Path = Path("/etc/apt")) -> list[tuple[str, str]]:
    """The (URI, suite) pairs of the system's Debian archive entries, in order, without duplicates.

    Reads one-line ``deb URI SUITE COMPONENTS`` entries (``sources.list``, ``*.list``) and deb822
    stanzas (``*.sources``); keeps only ``deb`` entries of a ``.../debian`` archive.
    """
    pairs: list[tuple[str, str]] = []
    files = [etc / "sources.list", *sorted((etc / "sources.list.d").glob("*.list"))]
    for path in files:
        if path.is_file():
            for line in path.read_text(errors="replace").splitlines():
                fields = re.sub(r"\[[^]]*\]", " ", line.split("#")[0]).split()
                if len(fields) >= 3 and fields[0] == "deb":
                    pairs.append((fields[1], fields[2]))
    for path in sorted((etc / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            stanza_fields: dict[str, list[str]] = dict(
                (key.strip().lower(), value.split())
                for key, _, value in (line.partition(":") for line in stanza.splitlines())
                if value and not key.startswith("#")
            )
            if "deb" in stanza_fields.get("types", []) and stanza_fields.get("enabled", ["yes"]) != ["no"]:
                uris, suites = stanza_fields.get("uris", []), stanza_fields.get("suites", [])
                pairs += [(uri, suite) for uri in uris for suite in suites]
    return list(dict.fromkeys((uri, suite) for uri, suite in pairs if _ARCHIVE.search(uri)))


class DebCache:
    """A private apt cache and unpack root under ``directory``."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory).resolve()
        self.root = self.dir / "root"
        self.archives = self.dir / "archives"

    def _options(self) -> list[str]:
        options = {
            "Dir::Etc::SourceList": self.dir / "sources.list",
            "Dir::Etc::SourceParts": "/dev/null",
            "Dir::State::Lists": self.dir / "lists",
            "Dir::Cache": self.dir / "cache",
            "Dir::Cache::archives": self.archives,
            "Dir::Log": self.dir / "log",
            "Debug::NoLocking": "1",
            "APT::Sandbox::User": getpass.getuser(),
        }
        return [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]

    def _apt(self, *args: str, cwd: Path | None = None) -> None:
        if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
            raise DasrError("fetching Debian packages needs apt-get and dpkg-deb (a Debian or Ubuntu system)")
        command = ["apt-get", *self._options(), *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=APT_TIMEOUT_S, cwd=cwd)
        except subprocess.TimeoutExpired:
            raise DasrError(f"apt-get {args[0]} took over {APT_TIMEOUT_S} s") from None
        if done.returncode != 0:
            lines = [line for line in done.stderr.splitlines() if line.startswith("E:")] or done.stderr.splitlines()
            raise DasrError(f"apt-get {' '.join(args)} failed: {' '.join(lines[-2:]) or done.returncode}")

    def update(self) -> None:
        """Write the private sources list (system archives + contrib non-free) and fetch its package lists."""
        sources = system_sources()
        if not sources:
            raise DasrError("no Debian archive in /etc/apt/sources.list(.d): cannot fetch Debian packages")
        for sub in ("lists/partial", "cache", "log", "archives/partial"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        signed = f"[signed-by={KEYRING}] " if Path(KEYRING).exists() else ""
        (self.dir / "sources.list").write_text(
            "".join(f"deb {signed}{uri} {suite} {COMPONENTS}\n" for uri, suite in sources)
        )
        self._apt("update")

    def fetch(self, packages: list[str], with_deps: bool = False) -> Path:
        """Download ``packages`` (and with ``with_deps`` the dependencies this machine lacks), unpack them
        into :attr:`root`, and return it. Packages already unpacked are not fetched again."""
        stamps = self.dir / "unpacked"
        if all((stamps / name).exists() for name in packages):
            return self.root
        print(f"fetching Debian {' '.join(packages)} into {self.dir} (private apt cache; nothing is installed)")
        self.update()
        before = set(self.archives.glob("*.deb"))
        if with_deps:
            self._apt("install", "--download-only", "--no-install-recommends", "-y", *packages)
        else:
            self._apt("download", *packages, cwd=self.archives)
        stamps.mkdir(parents=True, exist_ok=True)
        for deb in sorted(set(self.archives.glob("*.deb")) - before) or sorted(self.archives.glob("*.deb")):
            self.unpack(deb)
        for name in packages:
            (stamps / name).touch()
        return self.root

    def unpack(self, deb: Path) -> None:
        """Extract one .deb's files into :attr:`root` (``dpkg-deb -x``: no install scripts run)."""
        self.root.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(["dpkg-deb", "-x", str(deb), str(self.root)], capture_output=True, text=True)
        if done.returncode != 0:
            raise DasrError(f"cannot unpack {deb.name}: {done.stderr.strip()}")
        log.info("unpacked %s into %s", deb.name, self.root)

    def licences(self, packages: list[str]) -> dict[str, str]:
        """Per package: the licence names in its Debian copyright file, and where the full text is."""
        out = {}
        for package in packages:
            path = self.root / "usr/share/doc" / package / "copyright"
            text = path.read_text(errors="replace") if path.exists() else ""
            names = re.findall(r"^License:\s*([A-Za-z][\w.+-]*(?: (?:or|and) [\w.+-]+)*)\s*$", text, re.M)
            short = ", ".join(dict.fromkeys(names)) or "not in DEP-5 form"
            out[package] = f"{short} (full text: {path})"
        return out

    def library_path(self) -> str:
        """``LD_LIBRARY_PATH`` entries for the unpacked libraries (multiarch dirs and /usr/lib)."""
        dirs = [d for d in sorted((self.root / "usr/lib").glob("*-linux-gnu*")) if d.is_dir()]
        return os.pathsep.join(str(d) for d in [*dirs, self.root / "usr/lib"])
