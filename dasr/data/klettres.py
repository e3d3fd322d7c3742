"""`dasr corpus prepare klettres`: KDE KLettres' English letters and words, a small test-only set.

Debian's ``klettres-data`` (main) holds, under ``/usr/share/klettres/en`` and ``en_GB``, one
speaker each saying the 26 letters (``alpha/A.ogg``) and short words (``syllab/dog.ogg``): 94
clips, 44.1 kHz mono, 2 s each. The file name is the text. Three ``syllab`` clips are phonics
sounds, not words (``aw``, ``ch``, ``th``): rejected. Only ``test.jsonl`` is written, never a
train set: these recordings are for testing. Licence: GPL-2+ (KDE Edu).
"""

from __future__ import annotations

import os
from pathlib import Path

from dasr.data import audio
from dasr.data.debfetch import DebCache
from dasr.data.manifest import RejectionLog, Utterance, write_manifest
from dasr.errors import DataError

PACKAGE = "klettres-data"
SYSTEM_DIR = Path("/usr/share/klettres")
LICENSE = "KLettres sounds (Debian klettres-data): (C) 2001-2011 Anne-Marie Mahfouf and KDE contributors; GPL-2+."
LANGUAGES = ("en", "en_GB")
PHONICS = ("aw", "ch", "th")  # sounds a child learns to read, with no word to write them as


def _locate(source: str | os.PathLike | None, cache: Path) -> Path:
    """The ``klettres`` data dir: under ``source`` (data or the .deb), installed, or fetched into ``cache``."""
    if source is None and (SYSTEM_DIR / "en").is_dir():
        return SYSTEM_DIR
    if source is None:
        root = DebCache(cache).fetch([PACKAGE])
    else:
        root = Path(source)
        for deb in sorted(root.glob(f"{PACKAGE}_*.deb")):
            DebCache(cache).unpack(deb)
            root = DebCache(cache).root
    found = [p.parent.parent for p in root.rglob("en/alpha")]
    if not found:
        raise DataError(f"no klettres en/alpha directory under {root}")
    return found[0]


def prepare_klettres(
    out_dir: str | os.PathLike, source: str | os.PathLike | None = None, cache: str | os.PathLike | None = None
) -> dict:
    """Write ``out_dir/test.jsonl`` (16 kHz FLAC under ``out_dir/audio/test``) and rejected.jsonl."""
    out = Path(out_dir).resolve()
    print(LICENSE)
    data = _locate(source, Path(cache) if cache else out / "deb-cache")
    rejections = RejectionLog()
    utts = []
    for language in LANGUAGES:
        target = out / "audio" / "test" / language
        target.mkdir(parents=True, exist_ok=True)
        for path in sorted((data / language).glob("*/*.ogg")):
            text = path.stem.lower()
            if path.parent.name == "syllab" and text in PHONICS:
                rejections.add(path, None, path.stem, f"not a word: {text!r} is a phonics sound")
                continue
            try:
                samples = audio.load(str(path))
            except DataError as e:
                rejections.add(path, None, path.stem, str(e))
                continue
            utt_id = f"klettres-{language}-{path.parent.name}-{text}"
            wav = target / f"{utt_id}.flac"
            audio.write(wav, samples, audio.TARGET_RATE)
            extra = {"kind": "letter" if path.parent.name == "alpha" else "word"}
            utts.append(
                Utterance(utt_id, str(wav), len(samples) / audio.TARGET_RATE, text, f"klettres-{language}", extra=extra)
            )
    if not utts:
        raise DataError(f"no KLettres clips under {data}")
    write_manifest(out / "test.jsonl", utts)
    rejections.write(out / "rejected.jsonl", "import", "klettres")
    (out / "LICENSE-klettres.txt").write_text(LICENSE + "\n")
    return {"test": {"utterances": len(utts), "speakers": len({u.speaker for u in utts})}, "rejected": len(rejections)}
