"""`dasr export`: a trained experiment as an ONNX CTC model that sherpa-onnx and onnxruntime run.

An export dir holds::

    model.onnx        raw 80-dim fbank (N, T, 80) float32 + lengths (N,) int64
                      -> CTC log-probs (N, T', V) + lengths (N,) int64; the CMVN is inside
    tokens.txt        "symbol id" per unit, blank "<blank>" = 0, the word boundary "|" as "▁"
    tokenizer.json    dasr's tokenizer (+ bpe.model), for `dasr transcribe --onnx`
    lm.arpa           the word LM, when exported with ``--lm DATA``
    lm_weights.json   with it: the LM weight and word score `dasr decode --lm` tuned for EXP

This is the interface of sherpa-onnx's offline zipformer-CTC model (``model_type``
``zipformer2_ctc`` in the metadata), so its ``OfflineRecognizer`` loads the file as it is.
The features must be the ones dasr trains on (see :func:`sherpa_feature_config`).
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dasr.data.features import NUM_MEL_BINS, Cmvn, fbank_options
from dasr.data.tokenizer import WORD_BOUNDARY, Tokenizer
from dasr.decode.lm_build import LM_FILE
from dasr.decode.recognizer import LM_WEIGHTS_FILE, MODEL_FILE, Recognizer, tuned_lm_weights
from dasr.errors import DasrError
from dasr.extras import require
from dasr.model.blstm import BlstmCtc

TOKENS_FILE = "tokens.txt"
INPUTS = ("x", "x_lens")
OUTPUTS = ("log_probs", "log_probs_len")
OPSET = 17
#: sherpa-onnx turns a leading "▁" of a token into a space
SHERPA_SPACE = "\u2581"


class FbankCtc(nn.Module):
    """The acoustic model behind its CMVN: raw fbank of a padded batch in, CTC log-probs out.

    The mean of each utterance is taken over its own ``x_lens`` frames only, as
    :class:`dasr.data.features.Cmvn` does on an unpadded utterance.
    """

    def __init__(self, model: BlstmCtc, cmvn: Cmvn) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("inv_std", torch.from_numpy(cmvn.inv_std))
        self.subsampling = model.config.subsampling

    def forward(self, x: torch.Tensor, x_lens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N, T, 80) fbank and (N,) lengths -> (N, T', V) log-probs and (N,) lengths."""
        valid = (torch.arange(x.shape[1]).unsqueeze(0) < x_lens.unsqueeze(1)).unsqueeze(-1).to(x.dtype)
        mean = (x * valid).sum(dim=1, keepdim=True) / x_lens.clamp(min=1).to(x.dtype).view(-1, 1, 1)
        feats = (x - mean) * self.get_buffer("inv_std") * valid
        # One stacked frame of padding: the traced graph then never needs the model's
        # shorter-than-one-stacked-frame branch, and the real frames' outputs are unchanged.
        feats = nn.functional.pad(feats, (0, 0, 0, self.subsampling))
        return self.model(feats, x_lens)


def sherpa_feature_config() -> dict:
    """sherpa-onnx ``FeatureExtractorConfig`` arguments that give dasr's fbank exactly.

    dasr uses kaldi-native-fbank with Kaldi's defaults (see :func:`dasr.data.features.fbank_options`);
    sherpa-onnx's own defaults differ in ``snip_edges`` (False), ``high_freq`` (-400) and
    sample scaling (``normalize_samples``: dasr scales samples to the int16 range as Kaldi does).
    """
    opts = fbank_options()
    return dict(
        sampling_rate=int(opts.frame_opts.samp_freq),
        feature_dim=NUM_MEL_BINS,
        low_freq=opts.mel_opts.low_freq,
        high_freq=opts.mel_opts.high_freq,
        dither=opts.frame_opts.dither,
        normalize_samples=False,
        snip_edges=opts.frame_opts.snip_edges,
    )


def sherpa_recognizer(export_dir: str | os.PathLike, threads: int = 1, features: dict | None = None):
    """sherpa-onnx's offline CTC recognizer (greedy) for an export dir.

    ``features``: ``FeatureExtractorConfig`` arguments, by default :func:`sherpa_feature_config`
    (dasr's fbank); ``{}`` gives sherpa-onnx's own defaults.

    Use it as any sherpa-onnx recognizer: ``s = rec.create_stream(); s.accept_waveform(16000, samples);
    rec.decode_stream(s); s.result.text``.
    """
    sherpa_onnx = require("sherpa_onnx", "export", "decoding with sherpa-onnx")
    from sherpa_onnx.lib._sherpa_onnx import OfflineRecognizer  # the factories' class, built from a full config

    export_dir = Path(export_dir)
    for name in (MODEL_FILE, TOKENS_FILE):
        if not (export_dir / name).exists():  # sherpa-onnx would end the process
            raise DasrError(f"no exported model in {export_dir}: {name} is missing (run `dasr export`)")
    model = sherpa_onnx.OfflineModelConfig(
        zipformer_ctc=sherpa_onnx.OfflineZipformerCtcModelConfig(model=str(export_dir / MODEL_FILE)),
        tokens=str(export_dir / TOKENS_FILE),
        num_threads=threads,
    )
    config = sherpa_onnx.OfflineRecognizerConfig(
        feat_config=sherpa_onnx.FeatureExtractorConfig(**(sherpa_feature_config() if features is None else features)),
        model_config=model,
        decoding_method="greedy_search",
    )
    return OfflineRecognizer(config)


def token_lines(tokenizer: Tokenizer) -> list[str]:
    """tokens.txt's "symbol id" lines; the word boundary becomes sherpa-onnx's "▁" (a space)."""
    symbols = [SHERPA_SPACE if unit == WORD_BOUNDARY else unit for unit in tokenizer.units]
    if len(set(symbols)) != len(symbols) or any(not s or any(c.isspace() for c in s) for s in symbols):
        raise DasrError("the tokenizer's units cannot be written as tokens.txt: empty, repeated or with spaces")
    return [f"{symbol} {i}" for i, symbol in enumerate(symbols)]


def _metadata(rec: Recognizer) -> dict[str, str]:
    config = rec.model.config
    features = ",".join(f"{k}={v}" for k, v in sherpa_feature_config().items())
    return {
        "model_type": "zipformer2_ctc",  # the interface sherpa-onnx's offline CTC recognizer expects
        "model_author": "dasr",
        "comment": "BLSTM-CTC; input raw fbank, per-utterance mean and train pooled std applied inside",
        "vocab_size": str(config.vocab_size),
        "subsampling_factor": str(config.subsampling),
        "blank_id": str(rec.tokenizer.blank),
        "units": rec.tokenizer.kind,
        "feature_config": features,
    }


def _check(wrapper: FbankCtc, path: Path) -> float:
    """Largest |ONNX - PyTorch| log-prob over a batch of three lengths (the valid frames only)."""
    onnxruntime = require("onnxruntime", "export", "checking an ONNX export")

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    lengths = torch.tensor([97, 40, 2])
    x = torch.randn(len(lengths), int(lengths.max()), NUM_MEL_BINS, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want, want_lens = wrapper(x, lengths)
    got, got_lens = session.run(None, {INPUTS[0]: x.numpy(), INPUTS[1]: lengths.numpy()})
    if got_lens.tolist() != want_lens.tolist():
        raise DasrError(f"{path}: exported output lengths {got_lens.tolist()} != PyTorch's {want_lens.tolist()}")
    return max(float(np.abs(got[b, :n] - want[b, :n].numpy()).max()) for b, n in enumerate(want_lens.tolist()))


def export_onnx(
    exp: str | os.PathLike, out: str | os.PathLike, checkpoint: str = "best", lm_data: str | None = None
) -> dict:
    """Write OUT/model.onnx, tokens.txt and the tokenizer (and lm.arpa from ``lm_data``) for ``exp``.

    The export is checked with onnxruntime against PyTorch on a batch of different lengths.
    Returns a summary: ``dir``, ``files``, ``vocab_size`` and ``max_abs_diff``.
    """
    onnx = require("onnx", "export", "the ONNX export")

    arpa = Path(lm_data) / LM_FILE if lm_data is not None else None
    if arpa is not None and not arpa.exists():
        raise DasrError(f"no language model {arpa}: run `dasr lm --data {lm_data}` first")
    rec = Recognizer(exp, checkpoint)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    wrapper = FbankCtc(rec.model, rec.cmvn).eval()
    path = out / MODEL_FILE
    example = (torch.zeros(2, 30, NUM_MEL_BINS), torch.tensor([30, 20]))
    dynamic = dict(zip(INPUTS + OUTPUTS, ({0: "N", 1: "T"}, {0: "N"}, {0: "N", 1: "T_out"}, {0: "N"})))
    with warnings.catch_warnings():
        # the tracer warns about the model's Python branches on shapes; _check runs other shapes
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            example,
            str(path),
            input_names=list(INPUTS),
            output_names=list(OUTPUTS),
            dynamic_axes=dynamic,
            opset_version=OPSET,
            dynamo=False,
        )
    proto = onnx.load(str(path))
    for key, value in _metadata(rec).items():
        proto.metadata_props.add(key=key, value=value)
    onnx.save(proto, str(path))
    diff = _check(wrapper, path)
    if diff > 1e-3:
        raise DasrError(f"{path} disagrees with the PyTorch model by {diff:.2g} in log-probability")
    (out / TOKENS_FILE).write_text("".join(f"{line}\n" for line in token_lines(rec.tokenizer)), encoding="utf-8")
    rec.tokenizer.save(out)
    if arpa is not None:
        shutil.copyfile(arpa, out / LM_FILE)
        (out / LM_WEIGHTS_FILE).write_text(json.dumps(tuned_lm_weights(rec.exp)) + "\n")
    return {
        "dir": str(out),
        "files": sorted(p.name for p in out.iterdir()),
        "vocab_size": rec.model.config.vocab_size,
        "max_abs_diff": diff,
    }
