"""PNG plots of a run's metrics.jsonl: training loss, learning rate, dev WER."""

from __future__ import annotations

import json
from pathlib import Path

from dasr.extras import require


def read_metrics(exp: Path) -> list[dict]:
    path = exp / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def plot_metrics(exp: Path) -> list[Path]:
    """Write EXP/plots/{loss,lr,dev_wer}.png from metrics.jsonl; returns the files written."""
    matplotlib = require("matplotlib", "plots", "plotting")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(exp)
    train = [r for r in records if r.get("kind") == "train" and r.get("loss") is not None]
    evals = [r for r in records if r.get("kind") == "eval" and r.get("rank") == 0]
    out_dir = exp / "plots"
    out_dir.mkdir(exist_ok=True)
    written = []
    panels = [
        ("loss", train, "step", "loss", "training CTC loss per utterance"),
        ("lr", train, "step", "lr", "learning rate"),
        ("dev_wer", evals, "epoch", "dev_wer", "dev WER (greedy)"),
    ]
    for name, rows, x, y, title in panels:
        if not rows:
            continue
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for rank in sorted({r["rank"] for r in rows}):
            mine = [r for r in rows if r["rank"] == rank]
            ax.plot(
                [r[x] for r in mine],
                [r[y] for r in mine],
                marker="o" if name == "dev_wer" else None,
                markersize=3,
                label=f"rank {rank}",
            )
        ax.set_xlabel(x)
        ax.set_title(title)
        if name == "loss":
            ax.set_yscale("log")
        if len({r["rank"] for r in rows}) > 1:
            ax.legend()
        fig.tight_layout()
        fig.savefig(out_dir / f"{name}.png", dpi=100)
        plt.close(fig)
        written.append(out_dir / f"{name}.png")
    return written
