"""Word and character error rates (jiwer), per-utterance alignments and the report files.

Texts are compared as given (normalise them first); words are split on whitespace, and the
CER counts the spaces between words as characters, as jiwer does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import jiwer


def _rate(errors: int, total: int) -> float:
    # with no reference tokens there is nothing to divide by: jiwer's convention, 0 or 1
    if total == 0:
        return 0.0 if errors == 0 else 1.0
    return errors / total


def _paired(refs: dict[str, str], hyps: dict[str, str]) -> tuple[list[str], list[str], list[str]]:
    ids = sorted(refs)
    return ids, [refs[i] for i in ids], [hyps.get(i, "") for i in ids]


def score(refs: dict[str, str], hyps: dict[str, str]) -> dict:
    """Corpus-level error rates.

    Args:
        refs: utterance id → reference text; defines the utterances scored.
        hyps: utterance id → hypothesis; a missing id counts as an empty hypothesis
            (all its reference words deleted), ids absent from ``refs`` are ignored.

    Returns:
        ``wer``, ``cer`` (fractions, not percent), ``num_words`` (reference words),
        ``num_utts``, ``substitutions``, ``deletions``, ``insertions`` (word level). With no
        reference words the rate is 0.0 when the hypotheses are empty too, else 1.0.
    """
    _, ref_list, hyp_list = _paired(refs, hyps)
    if not ref_list:
        return {
            "wer": 0.0,
            "cer": 0.0,
            "num_words": 0,
            "num_utts": 0,
            "substitutions": 0,
            "deletions": 0,
            "insertions": 0,
        }
    words = jiwer.process_words(ref_list, hyp_list)
    chars = jiwer.process_characters(ref_list, hyp_list)
    num_words = sum(len(r) for r in words.references)
    num_chars = sum(len(r) for r in chars.references)
    word_errors = words.substitutions + words.deletions + words.insertions
    char_errors = chars.substitutions + chars.deletions + chars.insertions
    return {
        "wer": _rate(word_errors, num_words),
        "cer": _rate(char_errors, num_chars),
        "num_words": num_words,
        "num_utts": len(ref_list),
        "substitutions": words.substitutions,
        "deletions": words.deletions,
        "insertions": words.insertions,
    }


def _align(ref: list[str], hyp: list[str], chunks) -> tuple[str, str, dict[str, int]]:
    """sclite-style aligned REF/HYP lines: errors in upper case, '***' where a side has no word."""
    ref_out, hyp_out = [], []
    counts = {"C": 0, "S": 0, "D": 0, "I": 0}
    for chunk in chunks:
        r = ref[chunk.ref_start_idx : chunk.ref_end_idx]
        h = hyp[chunk.hyp_start_idx : chunk.hyp_end_idx]
        if chunk.type == "equal":
            pairs = list(zip(r, h))
            counts["C"] += len(pairs)
        elif chunk.type == "substitute":
            pairs = [(a.upper(), b.upper()) for a, b in zip(r, h)]
            counts["S"] += len(pairs)
        elif chunk.type == "delete":
            pairs = [(a.upper(), "***") for a in r]
            counts["D"] += len(pairs)
        else:
            pairs = [("***", b.upper()) for b in h]
            counts["I"] += len(pairs)
        for a, b in pairs:
            width = max(len(a), len(b))
            ref_out.append(a.ljust(width))
            hyp_out.append(b.ljust(width))
    return " ".join(ref_out).rstrip(), " ".join(hyp_out).rstrip(), counts


def write_report(refs: dict[str, str], hyps: dict[str, str], out_dir: str | os.PathLike) -> dict:
    """Score and write ``ref.txt``, ``hyp.txt``, ``alignments.txt`` and ``wer.json``.

    ``ref.txt``/``hyp.txt`` hold ``id text`` lines sorted by id (missing hypotheses as empty).
    ``alignments.txt`` has, per utterance, the id, aligned ``REF:``/``HYP:`` lines with errors
    in upper case and ``***`` for deleted/inserted words, and a ``Scores: (#C #S #D #I)`` line.
    ``wer.json`` holds the dict :func:`score` returns.

    Args:
        refs: utterance id → reference text.
        hyps: utterance id → hypothesis text.
        out_dir: created if needed.

    Returns:
        The :func:`score` dict.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ids, ref_list, hyp_list = _paired(refs, hyps)
    (out / "ref.txt").write_text("".join(f"{i} {t}".rstrip() + "\n" for i, t in zip(ids, ref_list)))
    (out / "hyp.txt").write_text("".join(f"{i} {t}".rstrip() + "\n" for i, t in zip(ids, hyp_list)))
    lines = []
    if ids:
        words = jiwer.process_words(ref_list, hyp_list)
        for i, ref, hyp, chunks in zip(ids, words.references, words.hypotheses, words.alignments):
            ref_line, hyp_line, c = _align(ref, hyp, chunks)
            lines += [
                f"id: {i}",
                f"REF: {ref_line}",
                f"HYP: {hyp_line}",
                f"Scores: (#C #S #D #I) {c['C']} {c['S']} {c['D']} {c['I']}",
                "",
            ]
    (out / "alignments.txt").write_text("\n".join(lines))
    result = score(refs, hyps)
    (out / "wer.json").write_text(json.dumps(result, indent=2) + "\n")
    return result
