import json
import subprocess
import sys
import time
from dataclasses import replace

import pytest
import torch

from dasr.cli import main
from dasr.config import TrainConfig
from dasr.data.loader import AsrDataset, DistributedBucketSampler
from dasr.errors import DasrError
from dasr.train.checkpoint import list_complete, load_file
from dasr.train.device import BF16_MIN_PARAMETERS, use_bf16
from dasr.train.experiment import prepare_experiment
from dasr.train.plateau import plateau_epochs
from dasr.train.run import train


def _config(data, exp, **kw) -> TrainConfig:
    values = dict(
        data=str(data),
        exp=str(exp),
        model="tiny",
        epochs=1000,
        batch_frames=100000,
        optimizer="adamw",
        lr=0.01,
        warmup_steps=10,
        anneal="paper",
        anneal_start_epoch=10000,
        log_every=10,
        seed=1,
    )
    values.update(kw)
    return TrainConfig(**values)


def test_tiny_model_overfits_eight_utterances(speech_data_dir, tmp_path):
    start = time.time()
    train(_config(speech_data_dir, tmp_path / "exp", max_steps=220, eval_every_epochs=55))
    assert time.time() - start < 60
    assert main(["decode", "--exp", str(tmp_path / "exp"), "--data", str(speech_data_dir), "--split", "train"]) == 0
    wer = json.loads((tmp_path / "exp" / "decode-train" / "wer.json").read_text())
    assert wer["wer"] == 0.0, (tmp_path / "exp" / "decode-train" / "alignments.txt").read_text()


def _final_params(exp):
    return load_file(list_complete(exp / "checkpoints")[-1] / "rank0.pt")["model"]


def test_resume_gives_identical_parameters(speech_data_dir, tmp_path):
    common = dict(
        batch_frames=900,
        optimizer="sgd",
        lr=0.05,
        spec_augment=True,
        speed_perturb=True,
        warmup_steps=4,
        checkpoint_every=10,
        anneal_start_epoch=1,
    )
    train(_config(speech_data_dir, tmp_path / "straight", max_steps=20, **common))
    train(_config(speech_data_dir, tmp_path / "resumed", max_steps=10, **common))
    train(_config(speech_data_dir, tmp_path / "resumed", max_steps=20, resume=True, **common))
    straight, resumed = _final_params(tmp_path / "straight"), _final_params(tmp_path / "resumed")
    assert straight.keys() == resumed.keys()
    for k in straight:
        torch.testing.assert_close(resumed[k], straight[k], rtol=0, atol=1e-6)
    first = _final_params(tmp_path / "straight")
    assert any(
        (first[k] - load_file(list_complete(tmp_path / "straight" / "checkpoints")[0] / "rank0.pt")["model"][k])
        .abs()
        .max()
        > 0
        for k in first
    )


def test_a_checkpoint_mark_at_an_epoch_end_writes_that_step_once(speech_data_dir, tmp_path, monkeypatch):
    """L3: with marks every epoch's worth of batches, each mark falls on an evaluated epoch end.

    Before the fix the mark wrote step-N and marked it COMPLETE, then the epoch-end save
    rewrote the rank files of the same step-N under that COMPLETE.
    """
    from dasr.train import checkpoint

    written = []
    save_rank = checkpoint.save_rank

    def recording_save_rank(root, step, rank, state):
        written.append((step, (root / f"step-{step:09d}" / "COMPLETE").exists()))
        return save_rank(root, step, rank, state)

    monkeypatch.setattr(checkpoint, "save_rank", recording_save_rank)
    exp = tmp_path / "exp"
    config = _config(speech_data_dir, exp, epochs=2, batch_frames=900)
    frames = AsrDataset(speech_data_dir, "train", prepare_experiment(config)).frames
    per_epoch = len(DistributedBucketSampler(frames, 900, seed=config.seed))
    train(replace(config, checkpoint_every=per_epoch))
    assert written == [(per_epoch, False), (2 * per_epoch, False)]  # each step once, never under a COMPLETE


def test_truncated_checkpoint_falls_back_to_previous(speech_data_dir, tmp_path):
    exp = tmp_path / "exp"
    train(_config(speech_data_dir, exp, max_steps=6, batch_frames=900, checkpoint_every=3))
    latest = list_complete(exp / "checkpoints")[-1] / "rank0.pt"
    latest.write_bytes(latest.read_bytes()[:100])
    progress = train(_config(speech_data_dir, exp, max_steps=8, batch_frames=900, checkpoint_every=3, resume=True))
    assert progress["step"] == 8


def _dasr(*args):
    return subprocess.run([sys.executable, "-m", "dasr", *map(str, args)], capture_output=True, text=True, timeout=300)


def _dasr_here(capsys, *args) -> tuple[int, str]:
    """`dasr ARGS` in this process: its exit code and stderr (the CLI's own error handling, no torch import per call)."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def test_cli_errors_are_one_clear_sentence(speech_data_dir, tmp_path, capsys):
    missing = _dasr("decode", "--exp", tmp_path / "nothing", "--data", speech_data_dir)  # the real entry point
    assert missing.returncode == 1 and "does not exist" in missing.stderr and "Traceback" not in missing.stderr
    assert missing.stderr.count("\n") == 1 and missing.stderr.startswith("dasr: error: ")

    exp = tmp_path / "exp"
    assert (
        main(["train", "--data", str(speech_data_dir), "--exp", str(exp), "--model", "tiny", "--max-steps", "2"]) == 0
    )
    capsys.readouterr()
    # an exception other than DasrError would escape main() and fail the test: these are one line each
    code, err = _dasr_here(capsys, "transcribe", tmp_path / "empty_exp", speech_data_dir / "train.jsonl")
    assert code == 1 and err.startswith("dasr: error: ")

    bad_audio = tmp_path / "bad.wav"
    bad_audio.write_bytes(b"RIFF....WAVEfmt garbage")
    code, err = _dasr_here(capsys, "transcribe", exp, bad_audio)
    assert code == 1 and "corrupt audio" in err

    code, err = _dasr_here(capsys, "transcribe", exp, speech_data_dir.parent.parent / "nonexistent.flac", "--json")
    assert code == 1 and "missing audio file" in err

    (exp / "tokenizer.json").write_text(json.dumps({"kind": "bpe", "model": "bpe.model"}))
    from dasr.data.tokenizer import BpeTokenizer

    BpeTokenizer.train(["call mom please"] * 20 + ["set an alarm"] * 20, exp, vocab_size=20)
    code, err = _dasr_here(capsys, "decode", "--exp", exp, "--data", speech_data_dir)
    assert code == 1 and "vocabulary mismatch" in err


def test_non_finite_losses_stop_the_run_with_a_clear_message(speech_data_dir, tmp_path):
    from dasr.errors import DasrError

    with pytest.raises(DasrError, match="non-finite losses in a row"):
        train(
            _config(
                speech_data_dir,
                tmp_path / "exp",
                max_steps=50,
                lr=1e30,
                optimizer="sgd",
                warmup_steps=0,
                grad_clip=0.0,
                max_bad_steps=3,
            )
        )


def test_the_epoch_advances_once_per_epoch_and_the_last_one_is_evaluated(speech_data_dir, tmp_path):
    exp = tmp_path / "exp"
    progress = train(_config(speech_data_dir, exp, epochs=3, eval_every_epochs=2))
    records = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines()]
    assert progress["epoch"] == 3
    assert [r["epoch"] for r in records if r["kind"] == "eval"] == [1, 2]  # every 2nd epoch, and the last
    assert sorted({r["epoch"] for r in records if r["kind"] == "train"}) == [0, 1, 2]


def test_stop_at_plateau_ends_the_run_at_the_third_flat_evaluation(speech_data_dir, tmp_path):
    """A model trained on, then resumed at a learning rate too small to change its text: its dev
    WER stays put, so the run stops at the evaluation where three of them first agree within 2 %."""
    exp = tmp_path / "exp"
    train(_config(speech_data_dir, exp, max_steps=120, eval_every_epochs=1000))
    progress = train(
        _config(speech_data_dir, exp, epochs=130, lr=1e-12, eval_every_epochs=1, stop_at_plateau=True, resume=True)
    )
    evals = [json.loads(line) for line in (exp / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    wers, losses = [e["dev_wer"] for e in evals], [e["dev_loss"] for e in evals]
    assert max(wers) < 1.0, "the first run must leave a model better than blank-only output"
    assert progress["dev_wers"] == wers
    assert len(wers) == plateau_epochs(wers, losses=losses) < 6  # the stop came at the first plateau, not at --epochs
    assert progress["epoch"] < 130
    assert wers[-1] == wers[-2] == wers[-3]


def test_stop_at_plateau_without_dev_utterances_is_refused(speech_data_dir, tmp_path):
    (speech_data_dir / "dev.jsonl").write_text("")  # e.g. every dev clip's audio went missing: no dev WER to watch
    with pytest.raises(DasrError, match="--stop-at-plateau needs a dev set: no dev utterances with features"):
        train(_config(speech_data_dir, tmp_path / "exp", epochs=3, stop_at_plateau=True))


def test_a_plateau_needs_the_dev_loss_flat_too_where_it_is_given():
    hovering = [0.985, 0.99, 0.98]  # greedy WER just below 100 %: CTC still emitting mostly blanks
    assert plateau_epochs(hovering) == 3
    assert plateau_epochs(hovering, losses=[270.0, 262.0, 257.0]) is None  # the loss still falls 5 %
    assert plateau_epochs(hovering + [0.97], losses=[270.0, 262.0, 257.0, 256.0]) is None
    assert plateau_epochs(hovering + [0.97, 0.975], losses=[270.0, 262.0, 257.0, 256.0, 255.5]) == 5
    # losses recorded only from a later evaluation on (a run resumed from an older checkpoint): aligned at the end
    assert plateau_epochs([0.5, 0.5, 0.5, 0.5], losses=[10.0, 10.0]) is None
    assert plateau_epochs([0.5, 0.5, 0.5, 0.5, 0.5], losses=[10.0, 10.0, 10.0]) == 5
    assert plateau_epochs([1.0, 1.0, 1.0]) is None and plateau_epochs([0.5, 0.52, 0.5]) is None


def test_precision_auto_takes_bf16_only_for_large_models_on_cuda():
    cuda, cpu = torch.device("cuda", 0), torch.device("cpu")
    paper, demo = 34_201_117, 2_521_757  # the presets' sizes (H200: bf16 0.80-0.88x a step of paper, 1.13x of demo)
    assert use_bf16("auto", cuda, paper) and not use_bf16("auto", cuda, demo)
    assert not use_bf16("auto", cpu, paper)
    assert use_bf16("bf16", cpu, demo) and not use_bf16("fp32", cuda, paper)
    assert use_bf16("auto", cuda, BF16_MIN_PARAMETERS) and not use_bf16("auto", cuda, BF16_MIN_PARAMETERS - 1)
