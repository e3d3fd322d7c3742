"""A trained experiment as a recognizer: load the model, run it on features or audio files."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from dasr.data import audio
from dasr.data.features import Cmvn, fbank
from dasr.data.tokenizer import load_tokenizer
from dasr.decode.ctc import LexiconBeamDecoder, greedy_decode
from dasr.errors import DasrError
from dasr.model.blstm import BlstmCtc, ModelConfig
from dasr.train.checkpoint import load_file


class Recognizer:
    """The model of ``EXP/<checkpoint>.pt`` with the experiment's units and CMVN."""

    def __init__(self, exp: str | os.PathLike, checkpoint: str = "best", device: str = "cpu") -> None:
        self.exp = Path(exp)
        if not self.exp.is_dir():
            raise DasrError(f"experiment dir {self.exp} does not exist")
        path = self.exp / f"{checkpoint}.pt"
        if not path.exists():
            raise DasrError(
                f"no trained model in {self.exp}: {path.name} is missing (train with `dasr train --exp {self.exp}`)"
            )
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
        self.cmvn = Cmvn.load(self.exp)
        self.beam: LexiconBeamDecoder | None = None

    @torch.no_grad()
    def log_probs(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """CMVN-normalised (B, T, 80) features -> (B, T', V) log-probs and lengths, on the CPU."""
        lp, out_lens = self.model(feats.to(self.device), lengths.to(self.device))
        return lp.float().cpu(), out_lens.cpu()

    def use_lm(self, words, arpa_path: str | None, lm_weight: float, word_score: float, beam_size: int = 50) -> None:
        """Decode with a lexicon beam search (and the LM when ``arpa_path`` is given) from now on."""
        self.beam = LexiconBeamDecoder(self.tokenizer, words, arpa_path, lm_weight, word_score, beam_size)

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[str]:
        if self.beam is None:
            return greedy_decode(log_probs, lengths, self.tokenizer)
        return self.beam.decode_batch(log_probs, lengths)

    def transcribe(self, path: str) -> str:
        """Text of one audio file (any format and rate soundfile reads)."""
        samples = audio.load(path)
        if len(samples) < 400:
            raise DasrError(f"{path} is shorter than one 25 ms frame")
        feats = torch.from_numpy(self.cmvn(fbank(samples)).astype(np.float32))[None]
        lp, lens = self.log_probs(feats, torch.tensor([feats.shape[1]]))
        return self.decode(lp, lens)[0]
