"""`dasr bench export`: the ONNX export against the PyTorch model, on a data dir's test recordings.

The experiment is exported with :func:`dasr.decode.export.export_onnx` and every test recording
is recognised greedily, from its audio, by

- ``pytorch``: dasr's fbank, CMVN and the PyTorch model (what `dasr transcribe EXP` runs);
- ``onnxruntime``: dasr's fbank into ``model.onnx`` (what `dasr transcribe --onnx` runs);
- ``sherpa-onnx``: sherpa-onnx's own fbank, given dasr's settings, and its greedy CTC decoder;
- ``sherpa-onnx defaults``: the same with sherpa-onnx's default fbank (``snip_edges`` off,
  ``high_freq`` -400, no int16 scaling), what ``OfflineRecognizer.from_zipformer_ctc`` builds;
- ``sherpa-onnx-offline --high-freq=0``: the defaults with the one setting its command line can
  change to dasr's (it has no option for ``snip_edges``).

Each engine runs on one thread; per recording the engines take turns (the order reversed every
other recording), so drifting load on a shared machine hits them alike. Reported per engine:
WER and CER against the references, how many texts equal PyTorch's, and x real time per core
(audio seconds per second of processing, fbank included). Also the largest difference between
onnxruntime's and PyTorch's log-probabilities over all recordings.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from dasr.cli import arg
from dasr.data import audio
from dasr.data.features import fbank
from dasr.data.manifest import read_manifest
from dasr.data.text import normalize
from dasr.decode.export import export_onnx, sherpa_feature_config, sherpa_recognizer
from dasr.decode.recognizer import OnnxRecognizer, Recognizer
from dasr.decode.score import score
from dasr.errors import DasrError
from lab.report import Report, machine_info

ARGUMENTS = (arg("--exp", default=None, help="the model to export (e.g. exp/demo/model)"),)

QUICK_UTTERANCES = 20
#: sherpa-onnx variants: engine name -> FeatureExtractorConfig arguments
SHERPA_VARIANTS = {
    "sherpa-onnx": sherpa_feature_config(),
    "sherpa-onnx defaults": {},
    "sherpa-onnx-offline --high-freq=0": {"high_freq": 0.0},
}


def _sherpa_text(recognizer, samples: np.ndarray) -> str:
    stream = recognizer.create_stream()
    stream.accept_waveform(audio.TARGET_RATE, samples)
    recognizer.decode_stream(stream)
    return " ".join(stream.result.text.split())  # sherpa-onnx keeps repeated word boundaries as double spaces


def measure(exp: str, data: str, split: str = "test", limit: int | None = None) -> dict:
    """Export ``exp``, recognise ``data``'s ``split`` with every engine; the results dict of the report."""
    manifest = Path(data) / f"{split}.jsonl"
    if not manifest.exists():
        raise DasrError(f"{data} has no {split}.jsonl to recognise")
    utts = read_manifest(manifest)[:limit]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        exported = export_onnx(exp, tmp)
        torch_rec, onnx_rec = Recognizer(exp), OnnxRecognizer(tmp)
        sherpas = {name: sherpa_recognizer(tmp, features=config) for name, config in SHERPA_VARIANTS.items()}
        max_diff = 0.0

        def pytorch(samples: np.ndarray) -> str:
            return torch_rec.decode(*torch_rec.fbank_log_probs(fbank(samples)))[0]

        def onnxruntime(samples: np.ndarray) -> str:
            return onnx_rec.decode(*onnx_rec.fbank_log_probs(fbank(samples)))[0]

        engines: dict[str, Callable[[np.ndarray], str]] = {"pytorch": pytorch, "onnxruntime": onnxruntime}
        engines.update({name: (lambda samples, r=r: _sherpa_text(r, samples)) for name, r in sherpas.items()})
        texts: dict[str, dict[str, str]] = {name: {} for name in engines}
        seconds = dict.fromkeys(engines, 0.0)
        audio_s = 0.0
        for i, utt in enumerate(utts):
            samples = audio.load(utt.audio, utt.start, utt.end)
            audio_s += len(samples) / audio.TARGET_RATE
            for name in reversed(engines) if i % 2 else engines:
                start = time.perf_counter()
                texts[name][utt.id] = engines[name](samples)
                seconds[name] += time.perf_counter() - start
            feats = fbank(samples)
            want, lens = torch_rec.fbank_log_probs(feats)
            got, _ = onnx_rec.fbank_log_probs(feats)
            max_diff = max(max_diff, float((got[0, : int(lens[0])] - want[0, : int(lens[0])]).abs().max()))
    refs = {u.id: normalize(u.text) for u in utts}
    rows = {}
    for name in engines:
        scored = score(refs, texts[name])
        rows[name] = {
            "wer": scored["wer"],
            "cer": scored["cer"],
            "same_as_pytorch": sum(texts[name][i] == texts["pytorch"][i] for i in refs),
            "x_real_time": audio_s / max(seconds[name], 1e-9),
        }
    return {
        "exp": exp,
        "data": data,
        "split": split,
        "utterances": len(utts),
        "words": score(refs, texts["pytorch"])["num_words"],
        "audio_s": round(audio_s, 1),
        "export_check_max_abs_diff": exported["max_abs_diff"],
        "max_abs_log_prob_diff": max_diff,
        "engines": rows,
    }


def render(results: dict, report: Report) -> None:
    """The report's sections from the stored results."""
    n = results["utterances"]
    lines = [
        "| engine | WER | CER | text equal to PyTorch's | x real time per core |",
        "|---|---|---|---|---|",
    ]
    for name, row in results["engines"].items():
        lines.append(
            f"| {name} | {100 * row['wer']:.2f} % | {100 * row['cer']:.2f} % | {row['same_as_pytorch']} / {n} "
            f"| {row['x_real_time']:.0f} |"
        )
    report.add(
        f"Greedy decoding of {n} recordings ({results['audio_s']} s, {results['words']} words)",
        "\n".join(lines)
        + f"\n\nModel `{results['exp']}`, recordings: `{results['data']}/{results['split']}.jsonl`; each engine on one "
        "thread, one after another (other jobs' load: see the header), fbank included in its time. Largest "
        f"|onnxruntime - PyTorch| log-probability over all recordings: {results['max_abs_log_prob_diff']:.2g}.",
    )


def run(exp: str, data: str, quick: bool, out_dir: str, command: str) -> dict:
    """Measure and write ``OUT/export.md`` and ``.json``."""
    results = measure(exp, data, limit=QUICK_UTTERANCES if quick else None)
    report = Report("export", "ONNX export: onnxruntime and sherpa-onnx against PyTorch", command, machine_info())
    render(results, report)
    report.write(out_dir, results)
    return results


def run_cli(args, command: str) -> dict:
    """`dasr bench export`: :func:`run` with the command line's options."""
    if args.exp is None or args.data is None:
        raise DasrError("dasr bench export needs --exp and --data: a trained model and a data dir with test.jsonl")
    return run(args.exp, args.data, args.quick, args.out, command)
