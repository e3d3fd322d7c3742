"""A trained experiment, or its ONNX export, as a recognizer: audio files or features in, text out."""

from __future__ import annotations

import copy
import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dasr.data import audio
from dasr.data.features import Cmvn, fbank, fbank_options
from dasr.data.tokenizer import Tokenizer, load_tokenizer
from dasr.decode.ctc import LexiconBeamDecoder, greedy_decode, word_alignment
from dasr.errors import DasrError, DataError
from dasr.extras import require
from dasr.model.blstm import BlstmCtc, ModelConfig
from dasr.model.weights import load_file

#: where `dasr demo` puts the experiment inside its output dir
MODEL_SUBDIR = "model"
#: the LM weights of a model, as an export dir holds them
LM_WEIGHTS_FILE = "lm_weights.json"
#: the ONNX model `dasr export` writes and :class:`OnnxRecognizer` reads
MODEL_FILE = "model.onnx"
DEFAULT_LM_WEIGHTS = {"lm_weight": 1.0, "word_score": 0.0}
#: the fewest samples that make one fbank frame (25 ms at 16 kHz)
MIN_SAMPLES = 400


@dataclass(frozen=True)
class Word:
    """A recognised word and the seconds it spans in the audio."""

    word: str
    start: float
    end: float


@dataclass(frozen=True)
class Recognition:
    """What a recognizer heard in one utterance."""

    text: str
    #: seconds of audio
    duration: float
    #: the words of ``text`` with their times on the best CTC path
    words: list[Word]


def find_experiment(exp: str | os.PathLike, checkpoint: str = "best") -> Path:
    """The experiment dir holding ``<checkpoint>.pt``: ``exp`` itself, or ``exp/model`` (`dasr demo`'s layout)."""
    exp = Path(exp)
    if not exp.is_dir():
        raise DasrError(f"experiment dir {exp} does not exist")
    for candidate in (exp, exp / MODEL_SUBDIR):
        if (candidate / f"{checkpoint}.pt").exists():
            return candidate
    raise DasrError(
        f"no trained model in {exp}: {checkpoint}.pt is missing there and in {exp / MODEL_SUBDIR} "
        f"(train with `dasr train --exp {exp}`)"
    )


def tuned_lm_weights(directory: str | os.PathLike) -> dict[str, float]:
    """``lm_weight`` and ``word_score`` for a model: DIR/lm_weights.json (an export), else the newest
    ``decode-*-lm/decode.json`` of `dasr decode --lm` (tuned on dev), else 1.0 and 0.0."""
    directory = Path(directory)
    decodes = sorted(directory.glob("decode-*-lm/decode.json"), key=lambda p: p.stat().st_mtime, reverse=True)
    for path in [directory / LM_WEIGHTS_FILE, *decodes]:
        if path.exists():
            try:
                found = json.loads(path.read_text())
                return {key: float(found[key]) for key in DEFAULT_LM_WEIGHTS}
            except (ValueError, KeyError, TypeError) as err:
                raise DasrError(f"{path} holds no LM weights ({err})") from None
    return dict(DEFAULT_LM_WEIGHTS)


class BaseRecognizer(ABC):
    """Decoding shared by the PyTorch and ONNX recognizers: greedy, or lexicon beam search with an LM."""

    tokenizer: Tokenizer
    #: input frames per output frame of the acoustic model
    subsampling: int
    #: the exp dir or export dir (its tuned LM weights are the defaults of :meth:`use_lm`)
    dir: Path
    beam: LexiconBeamDecoder | None = None

    @abstractmethod
    def fbank_log_probs(self, feats: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw fbank (T, 80) of one utterance -> (1, T', V) log-probs and (1,) lengths."""

    def use_lm(
        self,
        words,
        arpa_path: str | None,
        lm_weight: float | None = None,
        word_score: float | None = None,
        beam_size: int = 50,
    ) -> None:
        """Decode with a lexicon beam search (and the LM when ``arpa_path`` is given) from now on.

        ``lm_weight`` and ``word_score`` default to the model's tuned ones (:func:`tuned_lm_weights`).
        """
        tuned = tuned_lm_weights(self.dir)
        lm_weight = tuned["lm_weight"] if lm_weight is None else lm_weight
        word_score = tuned["word_score"] if word_score is None else word_score
        self.beam = LexiconBeamDecoder(self.tokenizer, words, arpa_path, lm_weight, word_score, beam_size)

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        """Texts of a batch of log-probs: greedy, or the beam search set by :meth:`use_lm`."""
        if self.beam is None:
            return greedy_decode(log_probs, lengths, self.tokenizer)
        return self.beam.decode_batch(log_probs, lengths)

    def transcribe(self, path: str) -> str:
        """Text of one audio file (any format and rate soundfile reads)."""
        return self.recognize(audio.load(path), path).text

    def recognize(self, samples: np.ndarray, name: str = "the audio") -> Recognition:
        """Text and word times of one utterance: 16 kHz float mono samples (``name`` labels errors)."""
        if len(samples) < MIN_SAMPLES:
            raise DataError(f"zero-length audio: {name} is shorter than one 25 ms frame")
        lp, lens = self.fbank_log_probs(fbank(samples))
        frames = lp[0, : int(lens[0])]
        if self.beam is None:
            text, path = greedy_decode(lp, lens, self.tokenizer)[0], frames.argmax(dim=-1).tolist()
        else:
            text, path = self.beam.decode_path(frames)
        frame_s = fbank_options().frame_opts.frame_shift_ms / 1000 * self.subsampling
        words = [
            Word(w, first * frame_s, end * frame_s) for w, first, end in word_alignment(path, self.tokenizer, text)
        ]
        return Recognition(text, len(samples) / audio.TARGET_RATE, words)

    def for_another_thread(self) -> BaseRecognizer:
        """A recognizer sharing this one's model and LM, with its own beam-search state (the search is
        stateful: one thread at a time per recognizer; the model and the LM are read-only)."""
        other = copy.copy(self)
        if self.beam is not None:
            other.beam = self.beam.with_weights(self.beam.lm_weight, self.beam.word_score)
        return other


class Recognizer(BaseRecognizer):
    """The model of ``EXP/<checkpoint>.pt`` (or ``EXP/model/``) with the experiment's units and CMVN."""

    def __init__(self, exp: str | os.PathLike, checkpoint: str = "best", device: str = "cpu") -> None:
        self.exp = self.dir = find_experiment(exp, checkpoint)
        path = self.exp / f"{checkpoint}.pt"
        state = load_file(path)
        self.tokenizer = load_tokenizer(self.exp)
        if state["units"] != self.tokenizer.units:
            raise DasrError(
                f"vocabulary mismatch: {path} was trained with {len(state['units'])} units, "
                f"{self.exp / 'tokenizer.json'} has {self.tokenizer.vocab_size}"
            )
        self.device = torch.device(device)
        self.model = BlstmCtc(ModelConfig(**state["model_config"])).to(self.device)
        self.model.load_state_dict(state["model"])
        self.model.eval()
        self.subsampling = self.model.config.subsampling
        self.cmvn = Cmvn.load(self.exp)

    @torch.no_grad()
    def log_probs(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CMVN-normalised (B, T, 80) features -> (B, T', V) log-probs and lengths, on the CPU."""
        lp, out_lens = self.model(feats.to(self.device), lengths.to(self.device))
        return lp.float().cpu(), out_lens.cpu()

    def fbank_log_probs(self, feats: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        normalised = torch.from_numpy(self.cmvn(feats).astype(np.float32))[None]
        return self.log_probs(normalised, torch.tensor([normalised.shape[1]]))


class OnnxRecognizer(BaseRecognizer):
    """An export dir of `dasr export` run with onnxruntime (raw fbank in; the CMVN is in the graph)."""

    def __init__(self, export_dir: str | os.PathLike, threads: int = 1) -> None:
        onnxruntime = require("onnxruntime", "export", "running an ONNX export")

        self.dir = Path(export_dir)
        path = self.dir / MODEL_FILE
        if not path.exists():
            raise DasrError(f"no exported model in {self.dir}: {MODEL_FILE} is missing (run `dasr export`)")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.subsampling = int(self.session.get_modelmeta().custom_metadata_map["subsampling_factor"])
        self.tokenizer = load_tokenizer(self.dir)
        vocab = self.session.get_outputs()[0].shape[-1]
        if vocab != self.tokenizer.vocab_size:
            raise DasrError(
                f"vocabulary mismatch: {path} has {vocab} outputs, {self.dir / 'tokenizer.json'} "
                f"has {self.tokenizer.vocab_size} units"
            )

    def log_probs(self, feats: np.ndarray, lengths: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw (B, T, 80) fbank, zero-padded, and (B,) lengths -> (B, T', V) log-probs and lengths."""
        inputs = [np.ascontiguousarray(feats, dtype=np.float32), np.asarray(lengths, dtype=np.int64)]
        lp, lens = self.session.run(None, dict(zip(self.input_names, inputs)))
        return torch.from_numpy(lp), torch.from_numpy(lens)

    def fbank_log_probs(self, feats: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return self.log_probs(feats[None], np.array([len(feats)]))


def open_recognizer(
    model_dir: str | os.PathLike,
    lm: str | os.PathLike | None = None,
    checkpoint: str = "best",
    lm_weight: float | None = None,
    word_score: float | None = None,
    onnx: bool | None = None,
) -> BaseRecognizer:
    """The recognizer of an exp dir (or `dasr demo`'s OUT) or of `dasr export`'s dir (``onnx``; None:
    the one holding model.onnx).

    It decodes with the LM of data dir ``lm`` (its words as the lexicon); an export dir holding
    lm.arpa (`dasr export --lm`) brings its own when ``lm`` is None. Else it decodes greedily.
    """
    from dasr.decode.lm_build import LM_FILE, lexicon_words

    model_dir = Path(model_dir)
    if onnx or (onnx is None and (model_dir / MODEL_FILE).exists()):
        rec: BaseRecognizer = OnnxRecognizer(model_dir)
        lm = lm or (model_dir if (model_dir / LM_FILE).exists() else None)
    else:
        rec = Recognizer(model_dir, checkpoint)
    if lm:
        rec.use_lm(lexicon_words(lm), str(Path(lm) / LM_FILE), lm_weight, word_score)
    return rec
