"""One report writer: benchmarks measure into results, render only from them, and publish NAME.md/.json/.png."""

import json
from pathlib import Path

import pytest

from lab.bench import (
    accuracy,
    consensus,
    data,
    large_batch_report,
    real_speech,
    real_speech_recipes,
    reliability,
    speedups,
    stragglers,
)
from lab.report import Report, new_figure, publish, rerender
from lab.sim import run as simulate

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"


@pytest.mark.parametrize(
    "name, module",
    [
        ("accuracy", accuracy),
        ("consensus", consensus),
        ("data", data),
        ("large-batch", large_batch_report),
        ("real-speech", real_speech_recipes),
        ("real-speech-synthetic", real_speech),
        ("speedups", speedups),
        ("reliability", reliability),
        ("simulate", simulate),
        ("stragglers", stragglers),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_stored_reports_render_again_from_their_json_alone(name, module, tmp_path):
    """The Markdown under docs/results is exactly what the renderer makes of the stored results (nothing re-measured)."""
    stored = RESULTS / f"{name}.json"
    written = rerender(stored, module.TITLE, module.render, tmp_path)
    assert (tmp_path / f"{name}.md").read_text() == (RESULTS / f"{name}.md").read_text()
    assert json.loads((tmp_path / f"{name}.json").read_text()) == json.loads(stored.read_text())
    assert (tmp_path / f"{name}.png" in written) == (RESULTS / f"{name}.png").exists()


def test_publish_writes_what_the_renderer_made_of_the_results(tmp_path):
    seen = []

    def render(results: dict, report: Report):
        seen.append(results)
        report.add("Speed", f"| x real time |\n|---|\n| {results['x']:.1f} |")
        fig, (ax,) = new_figure(1)
        ax.plot([1, 2], [results["x"], results["x"]])
        return fig

    report = publish("toy", "A toy", "dasr bench toy", {"x": 12.5}, render, tmp_path, top_level={"headline": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["toy.json", "toy.md", "toy.png"] and seen == [{"x": 12.5}]
    assert (report.name, report.command) == ("toy", "dasr bench toy")
    md = (tmp_path / "toy.md").read_text()
    assert md.startswith("# A toy\n\nCommand: `dasr bench toy`") and "## Speed" in md and "| 12.5 |" in md
    stored = json.loads((tmp_path / "toy.json").read_text())
    assert stored["results"] == {"x": 12.5} and stored["headline"] == 1 and stored["machine"]["cores"] >= 1
    assert (tmp_path / "toy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
