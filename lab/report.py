"""What every benchmark output shares: the machine it ran on, and writing its Markdown, JSON and PNG.

Each file under ``docs/results/`` states the command that made it, the machine and the date. A
benchmark measures first, into a JSON-able ``results`` dict, then renders only from it::

    def render(results: dict, report: Report) -> Figure | None:   # adds sections, returns the figure
        report.add("Features", table_of(results))
        ...

    publish("data", "Data pipeline speed", command, measure(...), render, out_dir)  # data.md/.json/.png

so that :func:`rerender` can rebuild a report from its stored JSON without measuring again.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch


def cpu_model(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """The CPU's model name from ``/proc/cpuinfo`` ("unknown CPU" where there is none)."""
    try:
        for line in Path(cpuinfo).read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info() -> dict:
    """The machine a benchmark runs on: CPU model, cores, torch and Python versions, load at start."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (0.0, 0.0, 0.0)
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count() or 1,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_1min": round(load[0], 2),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def describe_machine(machine: dict) -> str:
    """One line for a report header, e.g. ``AMD EPYC, 2 cores, torch 2.13.0+cpu, Python 3.11.2``."""
    gpu = f", {machine['gpu']}" if machine.get("gpu") else ""  # older results have no "gpu"
    return (
        f"{machine['cpu']}, {machine['cores']} cores{gpu}, torch {machine['torch']}, Python {machine['python']} "
        f"(1-min load average {machine['load_avg_1min']} at start)"
    )


def sharing(count: int, cores: int, what: str = "worker") -> str:
    """``"N workers shared C cores"``: how many processes or threads (``what``, singular) ran on how many cores."""
    return f"{count} {what}{'s' if count != 1 else ''} shared {cores} core{'s' if cores != 1 else ''}"


def today() -> str:
    """Local date and time, e.g. ``2025-05-01 14:03 UTC``."""
    return datetime.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


@dataclass
class Report:
    """A benchmark's outputs ``NAME.md``, ``NAME.json`` and ``NAME.png``, all naming command, machine, date."""

    name: str
    title: str
    command: str
    machine: dict
    date: str = field(default_factory=today)
    sections: list[str] = field(default_factory=list)

    def add(self, heading: str, text: str) -> None:
        """Append a Markdown section (a heading and its body) to the report."""
        self.sections.append(f"## {heading}\n\n{text.rstrip()}\n")

    def header(self) -> str:
        """The Markdown lines naming command, machine and date."""
        return f"Command: `{self.command}`\n\nMachine: {describe_machine(self.machine)}\n\nDate: {self.date}\n"

    def footer(self) -> str:
        """The one line a figure carries: command, machine, date."""
        return f"{self.command}  |  {self.machine['cpu']}, {self.machine['cores']} cores, torch {self.machine['torch']}  |  {self.date}"

    def write(
        self, out_dir: str | os.PathLike, results: dict, figure=None, top_level: dict | None = None
    ) -> list[Path]:
        """Write ``NAME.md`` and ``NAME.json`` (and ``NAME.png`` from a matplotlib ``figure``) into ``out_dir``.

        Args:
            out_dir: directory to write into (created if missing).
            results: the raw measurements, stored in the JSON beside command, machine and date.
            figure: a matplotlib figure, or None for no PNG.
            top_level: headline values also stored at the JSON's top level (an interface others read).

        Returns:
            The paths written.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written = []
        if figure is not None:
            written.append(save_figure(figure, out / f"{self.name}.png", self.footer()))
        image = f"\n![{self.title}]({self.name}.png)\n" if figure is not None else ""
        md = out / f"{self.name}.md"
        md.write_text(f"# {self.title}\n\n{self.header()}\n" + "\n".join(self.sections) + image)
        js = out / f"{self.name}.json"
        js.write_text(
            json.dumps(
                {
                    "command": self.command,
                    "machine": self.machine,
                    "date": self.date,
                    **(top_level or {}),
                    "results": results,
                },
                indent=1,
            )
            + "\n"
        )
        return [md, js, *written]


#: a benchmark's renderer: adds its sections to the report from the results, returns a figure or None
Render = Callable[[dict, Report], Any]


def publish(
    name: str,
    title: str,
    command: str,
    results: dict,
    render: Render,
    out_dir: str | os.PathLike,
    top_level: dict | None = None,
    machine: dict | None = None,
) -> Report:
    """Render measured ``results`` and write ``NAME.md``, ``NAME.json`` (and ``NAME.png``) into ``out_dir``.

    ``machine`` defaults to this machine as :func:`machine_info` sees it now; ``top_level`` as in
    :meth:`Report.write`. Returns the report (name, command, machine, date: what
    :func:`lab.summary.update_summary` credits the headline figures to).
    """
    report = Report(name, title, command, machine or machine_info())
    report.write(out_dir, results, render(results, report), top_level)
    return report


def rerender(stored: str | os.PathLike, title: str, render: Render, out_dir: str | os.PathLike) -> list[Path]:
    """Write the report of a stored ``NAME.json`` again into ``out_dir`` from its results alone (nothing is measured).

    Command, machine and date are the stored ones, so an unchanged renderer reproduces the stored
    Markdown exactly.
    """
    stored = Path(stored)
    data = json.loads(stored.read_text())
    top_level = {k: v for k, v in data.items() if k not in ("command", "machine", "date", "results")}
    report = Report(stored.stem, title, data["command"], data["machine"], date=data["date"])
    return report.write(out_dir, data["results"], render(data["results"], report), top_level or None)


def new_figure(panels: int, width_per_panel: float = 4.5, height: float = 3.8):
    """A matplotlib figure (Agg backend, no display needed) with ``panels`` side-by-side axes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(width_per_panel * panels, height), squeeze=False)
    return fig, list(axes[0])


def save_figure(fig, path: Path, footer: str) -> Path:
    """Save ``fig`` as PNG with ``footer`` (command, machine, date) along its bottom edge, then close it."""
    import matplotlib.pyplot as plt

    fig.text(0.01, 0.01, footer, fontsize=6, color="0.35")
    fig.tight_layout(rect=(0, 0.04, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bar(
    ax,
    labels: list[str],
    values: list[float],
    low: list[float],
    high: list[float],
    title: str,
    ylabel: str,
    goal: float | None = None,
) -> None:
    """Bars with error bars from ``low`` to ``high``, value labels, and an optional dashed goal line."""
    errors = [[v - lo for v, lo in zip(values, low)], [hi - v for v, hi in zip(values, high)]]
    bars = ax.bar(labels, values, yerr=errors, capsize=4, color=["C0", "C1", "C2", "C3", "C4"][: len(values)])
    ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], padding=2, fontsize=8)
    if goal is not None:
        ax.axhline(goal, color="k", linestyle="--", linewidth=1, label=f"goal {goal:g}")
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelsize=8)


def stats_bar(ax, labels: list[str], values: list[dict], title: str, ylabel: str, goal: float | None = None) -> None:
    """:func:`bar` of stored statistics (dicts with ``median``, ``q1``, ``q3``): median bars, IQR error bars."""
    bar(
        ax,
        labels,
        [v["median"] for v in values],
        [v["q1"] for v in values],
        [v["q3"] for v in values],
        title,
        ylabel,
        goal,
    )


def table(header: list[str], rows: list[list]) -> str:
    """A Markdown table: a header row, its rule, and one row per list of cells (no trailing newline)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(c) for c in r) + " |" for r in rows])


def verdict(met: bool) -> str:
    """How a report states a goal: ``met``, or a bold ``**not met**``."""
    return "met" if met else "**not met**"


def plot_evals(ax, runs: list[dict], metric: str) -> None:
    """One line per run of ``metric`` over training time (``run["evals"]``: dicts with ``train_s``), labelled by strategy."""
    for r in runs:
        ax.plot([e["train_s"] for e in r["evals"]], [e[metric] for e in r["evals"]], marker="o", label=r["strategy"])


def measures_table(rows: list[tuple[str, str]]) -> str:
    """A two-column Markdown table of timed measures: ``(measure, "median (IQR, n)" text)`` per row."""
    return table(["measure", "median (IQR, n)"], [list(r) for r in rows])
