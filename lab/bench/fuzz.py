"""Property-based fuzzing (hypothesis) of every path hostile input takes: JSONL manifests, Kaldi
data dirs, LibriSpeech transcript trees, audio headers.

The property: whatever the bytes, the code returns, records a rejection, or raises the
documented :class:`~dasr.errors.DataError`; never another exception (a traceback), and a
wav.scp shell pipe never runs without ``allow_pipes``::

    tally = fuzz_all(workdir, cases_per_target=250)     # {"cases": 1000, "tracebacks": 0, ...}
"""

from __future__ import annotations

import json
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dasr.data import audio
from dasr.data.manifest import RejectionLog, import_kaldi, import_librispeech, read_manifest
from dasr.errors import DataError


@dataclass
class Tally:
    """Cases run and the unexpected exceptions among them (the first few kept with their traceback)."""

    cases: int = 0
    tracebacks: int = 0
    examples: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"cases": self.cases, "tracebacks": self.tracebacks, "examples": self.examples}


def seed_audio(directory: Path) -> dict[str, Path]:
    """Small valid audio files the cases start from: 16 kHz wav, flac, ogg (and mp3 where libsndfile
    writes it), 8 kHz stereo wav."""
    import soundfile

    directory.mkdir(parents=True, exist_ok=True)
    t = np.arange(4000) / 16000
    wave = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    kinds = ["wav", "flac", "ogg"] + (["mp3"] if "MP3" in soundfile.available_formats() else [])
    files = {kind: directory / f"a.{kind}" for kind in kinds}
    for path in files.values():
        audio.write(path, wave)
    files["stereo"] = directory / "b.wav"
    audio.write(files["stereo"], np.stack([wave[::2], wave[::2]], axis=1), 8000)
    return files


# ----------------------------------------------------------------------------- the cases


def manifest_case(workdir: Path, lines: list[bytes]) -> None:
    """A manifest of ``lines``: read strictly (DataError allowed), then with a rejection log (no error allowed)."""
    path = workdir / "m.jsonl"
    data = b"\n".join(lines)
    path.write_bytes(data)
    try:
        read_manifest(path)
    except DataError:
        pass
    rejections = RejectionLog()
    utts = read_manifest(path, rejections)
    assert len(utts) + len(rejections) <= data.count(b"\n") + 1, "more records than lines"


def kaldi_case(workdir: Path, files: dict[str, list[bytes]], sentinel: Path) -> None:
    """A Kaldi dir of ``files`` (name -> lines); its wav.scp pipes would create ``sentinel``."""
    kaldi = workdir / "kaldi"
    kaldi.mkdir()
    for name, lines in files.items():
        (kaldi / name).write_bytes(b"\n".join(lines))
    try:
        utts, rejections = import_kaldi(kaldi)
        assert all(not audio.is_pipe(u.audio) for u in utts), "a pipe entry was imported"
    except DataError:
        pass
    assert not sentinel.exists(), "a wav.scp shell pipe ran without allow_pipes"


def librispeech_case(workdir: Path, transcript: list[bytes], audio_files: dict[str, bytes]) -> None:
    """A LibriSpeech-style tree: one ``*.trans.txt`` of ``transcript`` lines beside ``audio_files``."""
    chapter = workdir / "libri" / "19" / "198"
    chapter.mkdir(parents=True)
    (chapter / "19-198.trans.txt").write_bytes(b"\n".join(transcript))
    for name, data in audio_files.items():
        (chapter / name).write_bytes(data)
    try:
        import_librispeech(workdir / "libri")
    except DataError:
        pass


def audio_case(workdir: Path, data: bytes, suffix: str) -> None:
    """An audio file of ``data``: probe and load give valid audio or DataError."""
    path = workdir / f"x{suffix}"
    path.write_bytes(data)
    for read in (audio.probe, audio.load):
        try:
            out = read(str(path))
        except DataError:
            continue
        if isinstance(out, np.ndarray):
            assert out.dtype == np.float32 and out.ndim == 1 and np.isfinite(out).all(), "bad samples returned"
        else:
            assert out.num_samples > 0 and audio.MIN_RATE <= out.sample_rate <= audio.MAX_RATE, "bad header accepted"


# ----------------------------------------------------------------------------- strategies


def _strategies(seeds: dict[str, Path], sentinel: Path) -> dict[str, tuple]:
    """The hypothesis strategies of every target: name -> (strategies..., case function)."""
    from hypothesis import strategies as st

    audio_bytes = _audio_bytes([p.read_bytes() for p in seeds.values()])
    return {
        "manifest": (st.lists(_manifest_line(seeds["wav"]), max_size=5), manifest_case),
        "kaldi": (_kaldi_files(seeds, sentinel), lambda w, f: kaldi_case(w, f, sentinel)),
        "librispeech": (*_librispeech_tree(audio_bytes), librispeech_case),
        "audio": (audio_bytes, st.sampled_from([".wav", ".flac", ".ogg", ".mp3", ".bin"]), audio_case),
    }


def _manifest_line(wav: Path):
    """One manifest line: random bytes, a JSON record of known and unknown fields, or a broken literal."""
    from hypothesis import strategies as st

    json_value = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
        max_leaves=6,
    )
    keys = st.sampled_from(["id", "audio", "duration", "text", "speaker", "sample_rate", "start", "end", "extra", "x"])
    record = st.dictionaries(keys, json_value | st.sampled_from([str(wav), "a", 1.5, -1]), max_size=10)
    return st.one_of(
        st.binary(max_size=40),
        record.map(lambda d: json.dumps(d).encode()),
        st.sampled_from([b"{", b"[]", b"null", b'{"id": "a"}', b"\xff\xfe"]),
    )


def _kaldi_files(seeds: dict[str, Path], sentinel: Path):
    """A Kaldi data dir's files as lists of lines: wav.scp entries (shell pipes among them), text, utt2spk, segments."""
    from hypothesis import strategies as st

    token = st.sampled_from(["u1", "u2", "r1", "r2", "a-b", "\u00e9", "u1 extra"]) | st.text(max_size=6)
    entry = st.sampled_from(
        [
            str(seeds["wav"]),
            str(seeds["flac"]),
            str(seeds["stereo"]),
            "a.wav",
            "/no/such.wav",
            f"touch {sentinel} |",
            f"touch {sentinel}|",
            "sox x.wav -t wav - |",
            str(sentinel.parent),
        ]
    )
    number = st.sampled_from(["0", "0.1", "0.2", "-1", "nan", "inf", "1e9", "x", ""]) | st.floats().map(str)

    def table_line(rest):
        return st.one_of(
            st.builds(lambda k, r: f"{k} {r}".encode(), token, rest),
            st.binary(max_size=30),
        )

    segments_rest = st.builds(lambda r, a, b: f"{r} {a} {b}", token, number, number)
    return st.fixed_dictionaries(
        {
            "wav.scp": st.lists(table_line(entry), max_size=5),
            "text": st.lists(table_line(st.text(max_size=12)), max_size=5),
        },
        optional={
            "utt2spk": st.lists(table_line(token), max_size=4),
            "segments": st.lists(table_line(segments_rest), max_size=4),
        },
    )


def _mutate(base: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    """``base`` with the bytes at the ``edits`` positions (modulo its length) replaced, cut at ``cut``."""
    data = bytearray(base)
    for position, value in edits:
        data[position % len(data)] = value
    return bytes(data[:cut] if cut is not None else data)


def _audio_bytes(seed_bytes: list[bytes]):
    """An audio file's bytes: a mutated valid file, random bytes, or random bytes behind a RIFF or fLaC magic."""
    from hypothesis import strategies as st

    edits = st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=8)
    mutated = st.builds(_mutate, st.sampled_from(seed_bytes), edits, st.none() | st.integers(0, 4000))
    return st.one_of(
        mutated,
        st.binary(max_size=200),
        st.binary(max_size=60).map(lambda b: b"RIFF" + b),
        st.binary(max_size=60).map(lambda b: b"fLaC" + b),
    )


def _librispeech_tree(audio_bytes) -> tuple:
    """(transcript lines, audio files by name) of one LibriSpeech chapter."""
    from hypothesis import strategies as st

    ids = st.sampled_from(["19-198-0001", "19-198-0002", "19-198-0003", "x", ""])
    transcript = st.lists(
        st.one_of(st.builds(lambda i, t: f"{i} {t}".encode(), ids, st.text(max_size=12)), st.binary(max_size=30)),
        max_size=4,
    )
    libri_audio = st.dictionaries(
        st.sampled_from(["19-198-0001.flac", "19-198-0002.wav", "19-198-0003.flac"]), audio_bytes, max_size=3
    )
    return transcript, libri_audio


TARGETS = ("manifest", "kaldi", "librispeech", "audio")


def fuzz(target: str, cases: int, workdir: str | Path, seed: int = 0, raise_errors: bool = False) -> Tally:
    """Run ``cases`` hypothesis examples of ``target`` (one of :data:`TARGETS`).

    Args:
        raise_errors: re-raise the first unexpected exception (tests, so hypothesis shrinks it);
            otherwise count it in the tally and go on (the soak).
    """
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    workdir = Path(workdir)
    sentinel = workdir / "PIPE-RAN"
    *strategies, case = _strategies(seed_audio(workdir / "seeds"), sentinel)[target]
    tally = Tally()

    @hypothesis_seed(seed)
    @settings(max_examples=cases, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(st.tuples(*strategies))
    def run(drawn):
        tally.cases += 1
        with tempfile.TemporaryDirectory(dir=workdir) as tmp:
            try:
                case(Path(tmp), *drawn)
            except Exception as e:
                if raise_errors:
                    raise
                tally.tracebacks += 1
                if len(tally.examples) < 5:
                    tally.examples.append(
                        f"{target}: {type(e).__name__}: {e} with {drawn!r:.300}\n"
                        + "".join(traceback.format_tb(e.__traceback__)[-2:])
                    )
            finally:
                sentinel.unlink(missing_ok=True)

    run()
    return tally


def fuzz_all(workdir: str | Path, cases_per_target: int, seed: int = 0) -> dict[str, dict]:
    """:func:`fuzz` every target; ``{target: tally}`` plus ``"total"``."""
    out = {}
    for target in TARGETS:
        (Path(workdir) / target).mkdir(parents=True, exist_ok=True)
        out[target] = fuzz(target, cases_per_target, Path(workdir) / target, seed).as_dict()
    out["total"] = {
        "cases": sum(t["cases"] for t in out.values()),
        "tracebacks": sum(t["tracebacks"] for t in out.values()),
    }
    return out
