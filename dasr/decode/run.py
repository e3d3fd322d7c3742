"""`dasr decode`: decode a split of a data dir with a trained experiment, tune LM weights on dev, score."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import torch

from dasr.data.loader import AsrDataset, DistributedBucketSampler, batches
from dasr.data.text import normalize
from dasr.decode.ctc import tune_lm_weights
from dasr.decode.lm_build import LM_FILE, lexicon_words
from dasr.decode.recognizer import Recognizer
from dasr.decode.score import write_report
from dasr.errors import DasrError
from dasr.progress import progress

log = logging.getLogger(__name__)


def split_log_probs(rec: Recognizer, data_dir: str, split: str, batch_frames: int = 20000):
    """(id, log-probs (T', V), reference) for every utterance of ``split`` with features."""
    dataset = AsrDataset(data_dir, split, rec.tokenizer)
    if len(dataset) == 0:
        raise DasrError(f"split {split!r} of {data_dir} has no utterances with features")
    out = []
    sampler = DistributedBucketSampler(dataset.frames, batch_frames, seed=0)
    for batch in progress(batches(dataset, sampler), total=len(sampler), desc=f"acoustic model {split}", unit="batch"):
        lp, lens = rec.log_probs(batch.feats, batch.feat_lens)
        out += [
            (i, lp[b, : int(lens[b])].contiguous(), normalize(t))
            for b, (i, t) in enumerate(zip(batch.ids, batch.texts))
        ]
    return out


def decode_split(
    exp: str, data_dir: str, split: str = "test", use_lm: bool = False, checkpoint: str = "best", beam_size: int = 300
) -> dict:
    """Decode ``split``; with ``use_lm`` tune LM weight and word score on dev first. Returns wer.json's dict."""
    rec = Recognizer(exp, checkpoint)
    out_dir = rec.exp / f"decode-{split}{'-lm' if use_lm else ''}"  # EXP itself, or `dasr demo`'s OUT/model
    utts = split_log_probs(rec, data_dir, split)
    tuning = None
    if use_lm:
        arpa = Path(data_dir) / LM_FILE
        if not arpa.exists():
            raise DasrError(f"no language model {arpa}: run `dasr lm --data {data_dir}` first")
        words = lexicon_words(data_dir)
        rec.use_lm(words, str(arpa), 0.5, 0.0, beam_size)
        dev = [(lp, ref) for _, lp, ref in split_log_probs(rec, data_dir, "dev")]
        assert rec.beam is not None, "use_lm has just made the beam decoder"
        tuning = tune_lm_weights(rec.beam, dev)
        log.info(
            "LM weight %.2f, word score %.2f: dev WER %.2f %%", tuning.lm_weight, tuning.word_score, 100 * tuning.wer
        )
        rec.use_lm(words, str(arpa), tuning.lm_weight, tuning.word_score, beam_size)
    start = time.time()
    hyps = {}
    for utt_id, lp, _ in progress(utts, desc=f"decode {split}", unit="utt"):
        hyps[utt_id] = rec.decode(lp[None], torch.tensor([lp.shape[0]]))[0]
    decode_s = time.time() - start
    result = write_report({i: ref for i, _, ref in utts}, hyps, out_dir)
    frames = sum(lp.shape[0] for _, lp, _ in utts) * rec.model.config.subsampling
    extra = {"search_x_real_time": frames * 0.01 / max(decode_s, 1e-9), "checkpoint": checkpoint}
    if tuning is not None:
        extra.update(
            lm_weight=tuning.lm_weight,
            word_score=tuning.word_score,
            dev_wer_tuned=tuning.wer,
            tuning_table=tuning.table,
        )
    (out_dir / "decode.json").write_text(json.dumps(extra, indent=1))
    return result
