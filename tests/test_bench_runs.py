"""The training-run benchmarks' own logic: metrics summaries, time to target, and the reports they write
(with the `dasr train` runs replaced by recorded summaries; the real runs are benchmarks, not tests)."""

from __future__ import annotations

import json

import pytest

from lab.bench import stragglers, strategies
from lab.bench.runs import summarise, time_to_target


def _train_record(rank, step, step_s, utts=10.0, comm=0.0, exposed=0.0):
    return {
        "kind": "train",
        "rank": rank,
        "step": step,
        "step_s": step_s,
        "compute_s": step_s - exposed,
        "comm_s": comm,
        "exposed_comm_s": exposed,
        "utts_per_step": utts,
    }


def test_summary_skips_warm_up_and_adds_up_the_workers_rates():
    records = [
        _train_record(0, 5, 9.0),
        _train_record(0, 10, 1.0, comm=0.5, exposed=0.25),
        _train_record(1, 5, 9.0),
        _train_record(1, 10, 0.5, comm=0.5, exposed=0.25),
        {"kind": "eval", "rank": 0, "epoch": 0, "step": 10, "train_s": 7.5, "dev_wer": 0.5, "dev_loss": 3.0},
    ]
    s = summarise(records, skip_steps=5)
    assert s["samples_per_s"] == pytest.approx(10 / 1.0 + 10 / 0.5)  # the 9 s warm-up window left out
    assert s["step_s"] == pytest.approx(0.75) and s["overlap"] == pytest.approx(0.5)
    assert s["evals"] == [{"epoch": 0, "step": 10, "train_s": 7.5, "dev_wer": 0.5, "dev_loss": 3.0}]


def test_summary_of_a_straggler_with_few_claimed_steps_skips_its_first_half():
    records = [_train_record(0, 5, 9.0), _train_record(0, 20, 1.0), _train_record(1, 2, 9.0), _train_record(1, 4, 2.0)]
    s = summarise(records, skip_steps=5)
    assert s["per_rank"][1]["steps"] == 2 and s["per_rank"][1]["step_s"] == pytest.approx(2.0)
    assert s["per_rank"][0]["steps"] == 15 and s["per_rank"][0]["step_s"] == pytest.approx(1.0)


def test_time_to_target_interpolates_between_evaluations():
    evals = [{"train_s": 10.0, "dev_wer": 0.9}, {"train_s": 20.0, "dev_wer": 0.5}, {"train_s": 30.0, "dev_wer": 0.3}]
    assert time_to_target(evals, 0.7) == pytest.approx(15.0)
    assert time_to_target(evals, 0.3) == pytest.approx(30.0)
    assert time_to_target(evals, 0.95) == pytest.approx(5.0)  # from (0 s, WER 1.0)
    assert time_to_target(evals, 0.1) is None


def _fake_run(strategy, nproc, factor=1, samples=50.0):
    speed = {"sync": 1.0 / factor, "adpsgd": 1.0, "hybrid": 0.8}.get(strategy, 1.0)
    return {
        "samples_per_s": samples * speed,
        "step_s": 1.0,
        "compute_s": 0.9,
        "comm_s": 0.2,
        "exposed_comm_s": 0.1,
        "overlap": 0.5,
        "utts_per_step": 13.0,
        "per_rank": {},
        "process_wall_s": 9.0,
        "evals": [
            {"epoch": 0, "step": 10, "train_s": 10.0 * i, "dev_wer": 1.0 - 0.2 * i * speed, "dev_loss": 1.0}
            for i in (1, 2, 3)
        ],
    }


def test_straggler_report_and_headline_ratio(tmp_path, monkeypatch):
    def fake_train(run, data_dir, exp_dir, skip_steps):
        factor = (
            int(run.options[run.options.index("--straggler") + 1].split(":")[1]) if "--straggler" in run.options else 1
        )
        return {
            **_fake_run(run.strategy, run.nproc, factor),
            "label": run.label,
            "strategy": run.strategy,
            "nproc": run.nproc,
        }

    monkeypatch.setattr(stragglers, "train", fake_train)
    out = str(tmp_path / "out")
    results = stragglers.run(str(tmp_path), True, out, "dasr bench stragglers", str(tmp_path / "work"))
    # sync at 2x learns half as fast per second: twice the time to the common target
    assert (results["target_metric"], results["target"]) == ("dev_wer", pytest.approx(0.85))  # sync 4x's best
    assert results["sync_over_adpsgd_time_to_target"][2] == pytest.approx(2.0)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["straggler2x_time_to_target_ratio_sync_over_adpsgd"]["value"] == pytest.approx(2.0)
    assert (tmp_path / "out" / "stragglers.png").exists()
    assert stragglers.limit(2) == 1.75 and stragglers.limit(4) == 3.25
    assert "localsgd ÷ adpsgd time to target" in (tmp_path / "out" / "stragglers.md").read_text()
    monkeypatch.setattr(stragglers, "train", None)  # a rerun trains nothing: every run's summary was kept
    again = stragglers.run(str(tmp_path), True, out, "dasr bench stragglers", str(tmp_path / "work"))
    assert again["sync_over_adpsgd_time_to_target"] == results["sync_over_adpsgd_time_to_target"]


def test_strategies_report_pairs_rounds_side_by_side(tmp_path, monkeypatch):
    def fake_train(run, data_dir, exp_dir, skip_steps):
        samples = {"adpsgd": 55.0, "sync": 50.0}.get(run.strategy, 40.0) * (1.0 if "round0" in str(exp_dir) else 0.5)
        return {
            **_fake_run(run.strategy, run.nproc, samples=samples),
            "samples_per_s": samples,
            "label": run.label,
            "strategy": run.strategy,
            "nproc": run.nproc,
        }

    monkeypatch.setattr(strategies, "train", fake_train)
    data = tmp_path / "data"
    data.mkdir()
    (data / "train.jsonl").write_text("")
    results = strategies.run(str(data), quick=False, out_dir=str(tmp_path / "out"), command="dasr bench strategies")
    assert results["adpsgd_over_sync_x4"]["each_round"] == pytest.approx([1.1, 1.1])  # a slow round cancels out
    rows = {r["label"]: r for r in results["runs"]}
    assert rows["sync x4"]["samples_per_s"] == pytest.approx(37.5)  # median of 50 and 25
    assert {r["nproc"] for r in results["runs"]} == {1, 2, 4}


def test_accuracy_report_has_one_row_per_strategy(tmp_path, monkeypatch):
    from lab.bench import accuracy

    def fake_train(run, data_dir, exp_dir, skip_steps):
        return {**_fake_run(run.strategy, run.nproc), "label": run.label, "strategy": run.strategy, "nproc": run.nproc}

    monkeypatch.setattr(accuracy, "train", fake_train)
    monkeypatch.setattr(
        accuracy,
        "decoded_test_wer",
        lambda exp, data: {"test_wer_greedy": 0.3, "test_wer_lm": 0.05, "test_words": 2000},
    )
    results = accuracy.run(str(tmp_path), quick=True, out_dir=str(tmp_path / "out"), command="dasr bench accuracy")
    assert [r["strategy"] for r in results["runs"]] == ["single", "sync", "adpsgd", "hybrid", "ps"]
    text = (tmp_path / "out" / "accuracy.md").read_text()
    assert text.count("| 5.00 % | 30.00 % |") == 5 and "Command: `dasr bench accuracy`" in text


def test_common_target_falls_back_to_dev_loss_when_no_wer_says_anything():
    from lab.bench.stragglers import common_target

    def run(wers, losses):
        return {
            "evals": [
                {"train_s": 10.0 * (i + 1), "dev_wer": w, "dev_loss": loss}
                for i, (w, loss) in enumerate(zip(wers, losses))
            ]
        }

    assert common_target([run([0.9, 0.5], [80, 40]), run([1.0, 0.7], [90, 50])]) == ("dev_wer", 0.7)
    runs = [run([1.0, 0.95], [80, 40]), run([1.0, 0.97], [90, 60])]
    assert common_target(runs) == ("dev_loss", 60)
    assert time_to_target(runs[0]["evals"], 60, "dev_loss", start=None) == pytest.approx(15.0)
    assert time_to_target(runs[0]["evals"], 85, "dev_loss", start=None) == pytest.approx(
        10.0
    )  # first eval already there
