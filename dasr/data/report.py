"""A short human-readable report on a data dir, and a duration histogram PNG."""

from __future__ import annotations

import json
import os
from pathlib import Path

from dasr.data.features import SPLITS, FeatureStore
from dasr.data.manifest import read_manifest
from dasr.data.text import normalize
from dasr.errors import DasrError
from dasr.extras import require


def data_report(data_dir: str | os.PathLike) -> str:
    """Utterances, hours, speakers, words and features per split, rejections; writes durations.png."""
    data_dir = Path(data_dir)
    rows = []
    durations = {}
    speaker_hours: dict[str, dict[str, float]] = {}
    engine_hours: dict[str, dict[str, float]] = {}
    vocab: set[str] = set()
    for split in SPLITS:
        path = data_dir / f"{split}.jsonl"
        if not path.exists():
            continue
        utts = read_manifest(path)
        words = [w for u in utts for w in normalize(u.text).split()]
        vocab.update(words)
        try:
            with_features = len(FeatureStore(data_dir, split))
        except Exception:
            with_features = 0
        durations[split] = [u.duration for u in utts]
        speaker_hours[split] = _hours_by(utts, lambda u: u.speaker or u.id)
        engine_hours[split] = _hours_by(utts, lambda u: u.extra.get("engine", "recorded"))
        rows.append(
            (split, len(utts), sum(durations[split]) / 3600, len({u.speaker for u in utts}), len(words), with_features)
        )
    rejected_path = data_dir / "rejected.jsonl"
    rejected = sum(1 for _ in open(rejected_path)) if rejected_path.exists() else 0
    lines = [
        f"data dir {data_dir}",
        f"{'split':<6} {'utts':>7} {'hours':>7} {'speakers':>9} {'words':>8} {'features':>9}",
    ]
    lines += [f"{s:<6} {n:>7} {h:>7.2f} {spk:>9} {w:>8} {f:>9}" for s, n, h, spk, w, f in rows]
    lines += _hours_lines(engine_hours, speaker_hours)
    lines.append(f"vocabulary: {len(vocab)} words; rejected entries: {rejected}")
    if durations:
        try:
            lines.append(f"duration histogram: {_plot_durations(durations, data_dir / 'durations.png')}")
        except DasrError as e:
            lines.append(f"duration histogram: none ({e})")
    (data_dir / "report.json").write_text(
        json.dumps(
            {
                "splits": {
                    s: {"utts": n, "hours": h, "speakers": spk, "words": w, "with_features": f}
                    for s, n, h, spk, w, f in rows
                },
                "hours_per_engine": engine_hours,
                "hours_per_speaker": speaker_hours,
                "vocabulary": len(vocab),
                "rejected": rejected,
            },
            indent=1,
        )
    )
    return "\n".join(lines)


def _hours_lines(engine_hours: dict[str, dict[str, float]], speaker_hours: dict[str, dict[str, float]]) -> list[str]:
    """Per split: hours of each engine, and the spread of hours over its speakers."""
    lines = [
        f"{split} hours per engine: " + ", ".join(f"{e} {h:.2f}" for e, h in hours.items())
        for split, hours in engine_hours.items()
    ]
    for split, hours in speaker_hours.items():
        values = sorted(hours.values()) or [0.0]
        lines.append(
            f"{split} hours per speaker: {len(values)} speakers, min {values[0]:.3f}, "
            f"median {values[len(values) // 2]:.3f}, max {values[-1]:.3f} (all in report.json)"
        )
    return lines


def _hours_by(utts: list, key) -> dict[str, float]:
    """Hours of audio per value of ``key(utterance)``, largest first."""
    hours: dict[str, float] = {}
    for u in utts:
        hours[key(u)] = hours.get(key(u), 0.0) + u.duration / 3600
    return {k: round(h, 4) for k, h in sorted(hours.items(), key=lambda kv: (-kv[1], kv[0]))}


def _plot_durations(durations: dict[str, list[float]], path: Path) -> Path:
    matplotlib = require("matplotlib", "plots", "plotting")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for split, values in durations.items():
        ax.hist(values, bins=40, alpha=0.6, label=split)
    ax.set_xlabel("utterance duration (s)")
    ax.set_ylabel("utterances")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
