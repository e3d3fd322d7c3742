"""``docs/results/summary.json``: the headline figures, each with the benchmark, command, machine and date that produced it.

Benchmarks add their figures as they finish; figures from other benchmarks stay::

    update_summary("docs/results", {"throughput_ratio_adpsgd_vs_sync": 1.04}, report)
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lab.report import Report, describe_machine

SUMMARY_FILE = "summary.json"


def update_summary(out_dir: str | os.PathLike, figures: dict[str, float | None], report: Report) -> Path:
    """Set ``figures`` in ``OUT/summary.json``, each beside ``report``'s benchmark name, command, machine and date.

    Args:
        out_dir: the results directory (created if missing).
        figures: headline name -> value (None where the benchmark could not measure it).
        report: the benchmark's report, naming what produced the figures.

    Returns:
        The summary file's path.
    """
    path = Path(out_dir) / SUMMARY_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    summary = json.loads(path.read_text()) if path.exists() else {}
    for name, value in figures.items():
        summary[name] = {
            "value": value,
            "benchmark": report.name,
            "command": report.command,
            "machine": describe_machine(report.machine),
            "date": report.date,
        }
    path.write_text(json.dumps(dict(sorted(summary.items())), indent=1) + "\n")
    return path
