import json

import kaldi_native_fbank as knf
import numpy as np
import pytest

from dasr.data import audio
from dasr.data.features import Cmvn, FeatureStore, compute_features, fbank, spec_augment, speed_perturb
from dasr.data.manifest import Utterance, read_manifest, write_manifest
from dasr.errors import DataError


def test_features_shape_storage_and_parity_with_kaldi_native_fbank(tiny_data_dir):
    summary = compute_features(tiny_data_dir, jobs=2)
    assert summary["train"] == 12 and summary["dev"] == 3 and summary["test"] == 3
    store = FeatureStore(tiny_data_dir, "train")
    utt = read_manifest(tiny_data_dir / "train.jsonl")[4]
    feats = store[utt.id]
    # 25 ms windows every 10 ms with snip_edges: 1 + (N - 400) // 160 frames
    samples = audio.load(utt.audio)
    assert feats.shape == (1 + (len(samples) - 400) // 160, 80)
    # the same numbers as calling kaldi-native-fbank directly (stored as float16)
    opts = knf.FbankOptions()
    opts.frame_opts.dither = 0.0
    opts.mel_opts.num_bins = 80
    direct = knf.OnlineFbank(opts)
    direct.accept_waveform(16000, (samples * 32768.0).tolist())
    direct.input_finished()
    expected = np.stack([direct.get_frame(i) for i in range(direct.num_frames_ready)])
    np.testing.assert_array_equal(feats, expected.astype(np.float16).astype(np.float32))
    assert isinstance(store.shards[0], np.memmap)


def test_cmvn_normalises_train_to_zero_mean_unit_variance(tiny_data_dir):
    """Per-utterance mean, pooled within-utterance variance: train is exactly mean 0, variance 1."""
    compute_features(tiny_data_dir, jobs=1)
    store = FeatureStore(tiny_data_dir, "train")
    cmvn = Cmvn.load(tiny_data_dir)
    normed = np.concatenate([cmvn(store[i]) for i in store.index])
    np.testing.assert_allclose(normed.mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_allclose(normed.std(axis=0), 1.0, atol=1e-3)
    np.testing.assert_allclose(cmvn(store[next(iter(store.index))]).mean(axis=0), 0.0, atol=1e-4)


def test_bad_utterances_rejected_and_too_short_for_ctc(tiny_data_dir, make_wav):
    utts = read_manifest(tiny_data_dir / "train.jsonl")
    short = make_wav("data/audio/short.wav", 0.2)
    corrupt = tiny_data_dir / "audio" / "corrupt.wav"
    corrupt.write_bytes(b"not audio at all")
    utts += [
        Utterance("short", short, 0.2, "this transcript is far too long for a fifth of a second"),
        Utterance("corrupt", str(corrupt), 1.0, "hello"),
        Utterance("empty", utts[0].audio, 1.0, " ,.! "),
        Utterance(utts[0].id, utts[0].audio, 1.0, "duplicate"),
    ]
    write_manifest(tiny_data_dir / "train.jsonl", utts)
    summary = compute_features(tiny_data_dir, jobs=2)
    assert summary["train"] == 12 and summary["rejected"] == 4
    reasons = {r["id"]: r["reason"] for r in map(json.loads, open(tiny_data_dir / "rejected.jsonl"))}
    assert reasons["short"].startswith("too short for transcript")
    assert reasons["corrupt"].startswith("corrupt audio")
    assert reasons["empty"].startswith("empty transcript")
    assert reasons[utts[0].id].startswith("duplicate id")


def test_nothing_usable_is_a_clear_error(tmp_path):
    write_manifest(tmp_path / "train.jsonl", [Utterance("x", str(tmp_path / "nope.wav"), 1.0, "hi")])
    with pytest.raises(DataError, match="no usable utterances"):
        compute_features(tmp_path, jobs=1)


def test_spec_augment_and_speed_perturb():
    rng = np.random.default_rng(0)
    feats = rng.standard_normal((200, 80)).astype(np.float32) + 5
    masked = spec_augment(feats, rng, freq_masks=1, freq_width=10, time_masks=1, time_width=20)
    assert masked.shape == feats.shape and 0 < (masked == 0).sum() < feats.size // 4
    assert speed_perturb(feats, 1.1).shape == (182, 80)
    assert speed_perturb(feats, 0.9).shape == (222, 80)
    np.testing.assert_array_equal(speed_perturb(feats, 1.0), feats)
    ramp = np.repeat(np.arange(200, dtype=np.float32)[:, None], 80, axis=1)
    slow = speed_perturb(ramp, 0.5)  # a ramp stays a ramp over twice the frames
    np.testing.assert_allclose(slow[:, 0], np.linspace(0, 199, 400), rtol=1e-6)


def test_fbank_of_silence_is_finite():
    assert np.isfinite(fbank(np.zeros(16000, np.float32))).all()


def test_load_bytes_decodes_uploads_and_refuses_truncated_or_empty_ones(make_wav):
    import io

    import soundfile

    path = make_wav("a.wav", 1.0, rate=44100, channels=2)
    data = open(path, "rb").read()
    assert np.array_equal(audio.load_bytes(data, "a.wav"), audio.load(path))  # 44.1 kHz stereo -> 16 kHz mono
    with pytest.raises(DataError, match="corrupt audio: a.wav is truncated: its header declares"):
        audio.load_bytes(data[: len(data) // 2], "a.wav")
    with pytest.raises(DataError, match="zero-length audio: upload is empty"):
        audio.load_bytes(b"", "upload")
    with pytest.raises(DataError, match=r"corrupt audio: notes.txt: Format not recognised") as refused:
        audio.load_bytes(b"not audio at all" * 10, "notes.txt")
    assert "BytesIO" not in str(refused.value)
    # a streaming writer's "unknown length" (0xFFFFFFFF) is not a cut
    buffer = io.BytesIO()
    soundfile.write(buffer, audio.load(path), 16000, format="WAV", subtype="PCM_16")
    streamed = bytearray(buffer.getvalue())
    data_at = streamed.index(b"data") + 4
    streamed[data_at : data_at + 4] = b"\xff\xff\xff\xff"
    assert len(audio.load_bytes(bytes(streamed), "streamed.wav")) == 16000
