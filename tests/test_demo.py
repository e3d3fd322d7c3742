import json
import subprocess
import sys


def test_quick_demo_runs_the_whole_pipeline_with_adpsgd(tmp_path):
    """`dasr demo --quick`: synth -> features -> LM -> adpsgd on 2 workers -> decode -> results.json."""
    done = subprocess.run(
        [sys.executable, "-m", "dasr", "demo", "--quick", "--out", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "demo" / "results.json").read_text())
    assert {"test_wer_greedy", "test_wer_lm", "wall_s"} <= results.keys()
    assert 0.0 <= results["test_wer_lm"] <= 1.5 and results["workers"] == 2 and results["strategy"] == "adpsgd"
    assert "test WER, 5-gram LM" in done.stdout
    exp = tmp_path / "demo" / "model"
    assert (exp / "plots" / "loss.png").exists() and (exp / "decode-test-lm" / "wer.json").exists()
    ranks = {json.loads(line)["rank"] for line in (exp / "metrics.jsonl").read_text().splitlines()}
    assert ranks == {0, 1}
