"""The benchmark code: report writing, side-by-side timing, the CLI. No real benchmark runs here."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest
import torch

from dasr.cli import build_parser, main
from dasr.model.blstm import BlstmCtc, preset_config
from lab.bench.timing import interleave, paired_ratio, stats, stats_text
from lab.report import Report, bar, cpu_model, machine_info, new_figure, sharing
from lab.workload import bare_step, random_batch


def test_cpu_model_reads_model_name(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: X\nmodel name\t: Test CPU 9000 @ 3 GHz\nflags\t: a b\n")
    assert cpu_model(info) == "Test CPU 9000 @ 3 GHz"


def test_machine_info_names_cpu_cores_and_torch():
    m = machine_info()
    assert m["cores"] >= 1 and m["torch"] == torch.__version__ and m["cpu"]
    assert sharing(4, 2) == "4 workers shared 2 cores"
    assert sharing(1, 1, "thread") == "1 thread shared 1 core"


def test_report_writes_md_json_png_with_command_machine_date(tmp_path):
    machine = {"cpu": "Test CPU", "cores": 2, "torch": "9.9", "python": "3.11.0", "load_avg_1min": 0.5}
    report = Report("demo", "A title", "dasr bench data --quick", machine, date="2030-01-02 03:04 UTC")
    report.add("Part", "| a | b |\n|---|---|\n| 1 | 2 |")
    fig, (ax,) = new_figure(1)
    bar(ax, ["x", "y"], [2.0, 1.0], [1.5, 0.5], [2.5, 1.5], "t", "s", goal=1.5)
    written = report.write(tmp_path / "out", {"value": 1.5}, fig)
    assert {p.name for p in written} == {"demo.md", "demo.json", "demo.png"}
    md = (tmp_path / "out" / "demo.md").read_text()
    for needle in (
        "# A title",
        "`dasr bench data --quick`",
        "Test CPU, 2 cores, torch 9.9",
        "2030-01-02",
        "## Part",
        "| 1 | 2 |",
        "![A title](demo.png)",
    ):
        assert needle in md
    data = json.loads((tmp_path / "out" / "demo.json").read_text())
    assert data["command"] == "dasr bench data --quick" and data["machine"] == machine
    assert data["date"] == "2030-01-02 03:04 UTC" and data["results"] == {"value": 1.5}
    assert (tmp_path / "out" / "demo.png").read_bytes()[:4] == b"\x89PNG"


def test_report_without_figure_writes_no_png(tmp_path):
    machine = {"cpu": "C", "cores": 1, "torch": "1", "python": "3", "load_avg_1min": 0.0}
    written = Report("x", "X", "dasr bench train", machine).write(tmp_path, {})
    assert sorted(p.name for p in written) == ["x.json", "x.md"]
    assert "png" not in (tmp_path / "x.md").read_text()


def test_report_json_carries_headline_values_at_its_top_level(tmp_path):
    machine = {"cpu": "C", "cores": 1, "torch": "1", "python": "3", "load_avg_1min": 0.0}
    Report("r", "R", "dasr bench reliability", machine).write(
        tmp_path, {"kills": 2, "runs": []}, top_level={"kills": 2}
    )
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["kills"] == 2 and data["results"]["kills"] == 2 and data["command"] == "dasr bench reliability"


def test_stats_median_quartiles_and_derived():
    s = stats([4.0, 1.0, 3.0, 2.0, 5.0])
    assert (s.median, s.q1, s.q3, s.low, s.high, s.n) == (3.0, 2.0, 4.0, 1.0, 5.0, 5)
    assert s.scaled(0.5).median == 1.5
    rates = s.inverse(6.0)
    assert (rates.median, rates.q1, rates.q3, rates.low, rates.high) == (2.0, 1.5, 3.0, 1.2, 6.0)
    assert stats_text(s.as_dict(), ".1f") == "3.0 (IQR 2.0–4.0, n=5)"
    with pytest.raises(ValueError):
        stats([])


def test_interleave_runs_tasks_in_turn_and_times_them_with_the_clock():
    now = [0.0]
    order = []

    def task(name, seconds):
        def run():
            order.append(name)
            now[0] += seconds

        return run

    times = interleave({"a": task("a", 1.1), "b": task("b", 1.0)}, repeats=3, clock=lambda: now[0])
    assert order == ["a", "b", "b", "a", "a", "b"]
    assert times["a"] == pytest.approx([1.1] * 3) and times["b"] == pytest.approx([1.0] * 3)
    assert paired_ratio(times["a"], times["b"]).median == pytest.approx(1.1)
    order.clear()
    interleave({"a": task("a", 1.0), "b": task("b", 1.0)}, repeats=2, clock=lambda: now[0], alternate=False)
    assert order == ["a", "b", "a", "b"]


def test_paired_ratio_cancels_a_slow_round():
    # round 2 is slowed 3x on both sides (a busy machine): per-round ratios stay 1.05
    a, b = [1.05, 3.15, 1.05], [1.0, 3.0, 1.0]
    r = paired_ratio(a, b)
    assert r.median == pytest.approx(1.05) and r.low == pytest.approx(1.05) and r.high == pytest.approx(1.05)
    with pytest.raises(ValueError):
        paired_ratio([1.0], [1.0, 2.0])


def test_bare_step_trains_the_tiny_model():
    torch.manual_seed(0)
    model = BlstmCtc(preset_config("tiny", 29))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batch = random_batch(2, 0.5, 29)
    assert batch.feats.shape == (2, 50, 80) and int(batch.label_lens[0]) == 6
    losses = [bare_step(model, optimizer, batch, 5.0) for _ in range(5)]
    assert losses[-1] < losses[0]


def test_cli_bench_help_and_arguments(capsys):
    with pytest.raises(SystemExit) as e:
        main(["bench", "train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "--quick" in out and "--exp" in out and "docs/results" in out
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "data", "--exp", "exp/a"])  # --exp is train's only
    args = build_parser().parse_args(["bench", "train", "--quick", "--out", "/tmp/x", "--exp", "exp/a"])
    assert (args.bench, args.quick, args.out, args.exp, args.data) == ("train", True, "/tmp/x", "exp/a", None)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "nothing"])


def test_elastic_headline_excludes_the_dead_share_and_counts_rejoins():
    from lab.bench.elastic import headline

    def run(sps, wer, kills=(), live=None, code=0):
        return {"samples_per_s": sps, "final_dev_wer": wer, "kills": list(kills), "mean_live": live, "returncode": code}

    kills = [{"slot": 0, "rejoined_s": 12.0}, {"slot": 1, "rejoined_s": 20.0}, {"slot": 2}]
    results = {"runs": [run(40.0, 0.50, live=4.0), run(27.0, 0.51, kills, live=3.0)]}
    assert headline(results) == {
        "elastic_kills": 3,
        "elastic_kills_survived": 2,  # the third replacement never got in
        "elastic_throughput_ratio": (27.0 / 3) / (40.0 / 4),  # per live worker (3 of 4 alive on average)
        "elastic_wer_rel_diff": (0.51 - 0.50) / 0.50,
        "elastic_wer_pairs": 1,
        "elastic_rejoin_s_median": 16.0,
    }
    results["runs"][1]["returncode"] = 1  # a run that failed survived nothing
    assert headline(results)["elastic_kills_survived"] == 0
    results["runs"][0]["final_dev_wer"] = 1.0  # a model that emits no words yet: no WER comparison
    assert headline(results)["elastic_wer_rel_diff"] is None
    hung = {**run(30.0, 0.52, [{"slot": 0, "rejoined_s": 17.0}, {"slot": 1}], live=3.5), "hang_s": 15.0}
    results["runs"].append(hung)  # the hang run: counted apart, found by its hang_s
    assert {k: headline(results)[k] for k in ("elastic_hangs", "elastic_hangs_back")} == {
        "elastic_hangs": 2,
        "elastic_hangs_back": 1,
    }


def test_elastic_pairs_are_compared_side_by_side_and_averaged():
    from lab.bench.elastic import Faults, Plan, headline, runs

    def run(sps, wer, kills=(), live=4.0):
        return {"samples_per_s": sps, "final_dev_wer": wer, "kills": list(kills), "mean_live": live, "returncode": 0}

    kills = [{"slot": 0, "rejoined_s": 6.0}, {"slot": 1, "rejoined_s": 8.0}]
    pair1 = [run(40.0, 0.60), run(36.0, 0.66, kills)]  # +10 %, ratio 0.9
    pair2 = [run(50.0, 0.50), run(35.0, 0.49, kills[:1], live=3.5)]  # -2 %, ratio 0.8
    head = headline({"pairs": 2, "runs": [*pair1, *pair2, run(30.0, 0.7)]})  # then a sync run: not a pair
    assert head["elastic_kills"] == 3 and head["elastic_kills_survived"] == 3
    assert abs(head["elastic_wer_rel_diff"] - (0.10 - 0.02) / 2) < 1e-12 and head["elastic_wer_pairs"] == 2
    assert abs(head["elastic_throughput_ratio"] - (0.9 + 0.8) / 2) < 1e-12
    assert head["elastic_rejoin_s_median"] == 6.0
    faults = Faults(kills=20, hangs=0, hang_s=15.0, every_s=10.0)
    planned = runs(Plan("demo", 2000, 15, faults, only_elastic=True, pairs=2))
    assert [(r.label, n) for r, n, _ in planned] == [
        ("adpsgd elastic, no faults (pair 1)", 0),
        ("adpsgd elastic, kills (pair 1)", 20),
        ("adpsgd elastic, no faults (pair 2)", 0),
        ("adpsgd elastic, kills (pair 2)", 20),
    ]


def test_elastic_runs_train_the_demo_recipe_and_skip_a_hang_run_without_hangs():
    from lab.bench.elastic import Faults, Plan, runs

    planned = runs(Plan("demo", 2000, 30, Faults(kills=20, hangs=0, hang_s=15.0, every_s=5.0), only_elastic=True))
    assert [r.label for r, _, _ in planned] == ["adpsgd elastic, no faults", "adpsgd elastic, kills"]
    assert all(r.options[:2] == ["--config", "demo"] for r, _, _ in planned)
    assert len(runs(Plan("demo", 2000, 30, Faults(20, 5, 15.0, 5.0)))) == 5
    for run, _, _ in runs(Plan("demo", 2000, 30, Faults(20, 0, 15.0, 5.0), pair_timeout_s=1.5)):
        options = run.options
        assert ("--pair-timeout-s" in options) == ("--elastic" in options), options  # elastic runs only
        assert "--elastic" not in options or options[options.index("--pair-timeout-s") + 1] == "1.5"


def test_speedups_quick_on_the_fixture_times_three_loops_and_measures_padding(speech_data_dir, tmp_path):
    from dasr.cli import main

    out = tmp_path / "out"
    assert main(["bench", "speedups", "--quick", "--data", str(speech_data_dir), "--out", str(out)]) == 0
    results = json.loads((out / "speedups.json").read_text())["results"]
    assert set(results["timing"]["step_s"]) == {"bare", "fp32", "bf16"}
    assert all(s["median"] > 0 for s in results["timing"]["step_s"].values())
    steps = {r["steps"] for r in results["accuracy"].values()}
    assert len(steps) == 1 and 1 <= steps.pop() <= 20  # both runs, the same batches (the fixture is one epoch of few)
    sorted_pad, unsorted_pad = (results["padding"][k]["padded_per_speech_frame"] for k in ("sorted", "unsorted"))
    assert 1.0 <= sorted_pad <= unsorted_pad
    assert "(b) bf16 and accuracy" in (out / "speedups.md").read_text()


def test_elastic_bench_continues_a_hung_worker_when_its_hang_is_over(tmp_path):
    from lab.bench.elastic import Watch, _continue_due

    def state(pid):
        text = open(f"/proc/{pid}/stat").read()
        return text[text.rindex(")") + 2]

    proc = subprocess.Popen(["sleep", "60"])
    try:
        os.kill(proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while state(proc.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        w = Watch(tmp_path, stopped=[(100.0, proc.pid)])
        _continue_due(w, now=99.0)  # not yet due: still stopped
        assert state(proc.pid) == "T" and w.stopped == [(100.0, proc.pid)]
        _continue_due(w, now=100.0)
        deadline = time.monotonic() + 5
        while state(proc.pid) == "T" and time.monotonic() < deadline:
            time.sleep(0.01)
        assert state(proc.pid) != "T" and w.stopped == []
    finally:
        proc.kill()
        proc.wait()


def test_node_loss_times_the_takeover_from_the_cut_and_judges_each_loss(tmp_path):
    from datetime import datetime

    from lab.bench.node_loss import _rate, _took_office_s, headline, summarise

    cut = datetime(2026, 12, 4, 23, 24, 0).timestamp()
    (tmp_path / "node1.log").write_text(
        "2026-12-04 23:23:58,000 __main__ INFO coordinator in office at view version 0\n"  # before the cut: not it
        "23:24:01 INFO rank 3 dasr.progress: epoch 1: 50 %\n"
    )
    (tmp_path / "node2.log").write_text(
        "2026-12-04 23:24:03,250 __main__ INFO coordinator in office at view version 4\n"
    )
    assert _took_office_s([tmp_path / "node1.log", tmp_path / "node2.log"], cut) == 3.25
    assert _took_office_s([tmp_path / "node1.log"], cut) is None
    records = [(t, {"utts_per_step": 2}) for t in (10.0, 11.0, 12.0, 13.0)]
    assert _rate(records, 10.0, 12.0) == 3.0  # 3 records of 2 samples over 2 s
    seen = {"records": [(t, {"rank": t % 4, "epoch": t // 12, "utts_per_step": 2}) for t in (10.0, 11.0, 12.0, 13.0)]}
    seen |= {"first": 10.0, "cut_at": 11.5, "cut_wall": cut, "codes": [0, None], "timed_out": False, "stalled": False}
    summary = summarise(seen, [tmp_path / "node2.log"])
    assert summary["slots_after_cut"] == [0, 1] and summary["last_epoch"] == 1 and summary["took_office_s"] == 3.25
    assert summary["samples_per_s_before"] == 4 / 1.5 and summary["samples_per_s_after"] == 4 / 1.5
    run = {"store": "etcd", "exit_codes": [0, 0], "slots_after_cut": [0, 1, 2, 3], "took_office_s": 3.25}
    tcp = {"store": "tcp", "cut_node": 0, "exit_codes": [1, 1], "slots_after_cut": [], "took_office_s": None}
    results = {"runs": [{**run, "cut_node": 0}, {**run, "cut_node": 2, "exit_codes": [0, None]}, tcp]}
    assert headline(results) == {
        "elastic_store_host_loss_survived": True,
        "elastic_worker_node_loss_survived": True,
        "elastic_store_takeover_s": 3.25,
    }
    results["runs"][0]["slots_after_cut"] = [0, 1]  # node 2's workers stopped when the store's host went
    assert headline(results)["elastic_store_host_loss_survived"] is False
