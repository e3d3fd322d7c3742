"""Regenerate tests/data/speech: 8 short utterances spoken by espeak-ng (committed, so tests need no TTS).

.venv/bin/python scripts/make_test_fixtures.py
"""

import shutil
import tempfile
from pathlib import Path

from dasr.data.manifest import read_manifest
from dasr.data.synth import synthesize_corpus

SENTENCES = [
    "call mom",
    "set an alarm for seven",
    "play some jazz music",
    "turn on the kitchen lights",
    "what time is it in paris",
    "remind me to buy milk",
    "how is the weather today",
    "send a message to anna",
    "open the garage door",
    "stop the timer",
]
OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "speech"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "sentences.txt").write_text("\n".join(SENTENCES) + "\n")
        synthesize_corpus(Path(tmp) / "corpus", hours=0.012, seed=5, jobs=2, text_file=Path(tmp) / "sentences.txt")
        utts = read_manifest(Path(tmp) / "corpus" / "train.jsonl")[:8]
        shutil.rmtree(OUT, ignore_errors=True)
        OUT.mkdir(parents=True)
        with open(OUT / "transcripts.tsv", "w") as f:
            for u in utts:
                shutil.copy(u.audio, OUT / f"{u.id}.flac")
                f.write(f"{u.id}\t{u.speaker}\t{u.text}\n")
    print(f"wrote {len(utts)} utterances to {OUT}")


if __name__ == "__main__":  # synthesis uses spawned processes, which import this file
    main()
