"""`dasr` command line: one thin function per subcommand; the work happens in the modules."""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dasr.errors import DasrError

log = logging.getLogger("dasr")


def _finish_import(utts, rejections, out: Path, strict: bool) -> None:
    from dasr.data.manifest import write_manifest

    out.parent.mkdir(parents=True, exist_ok=True)
    rejected_path = out.parent / "rejected.jsonl"
    if rejections:
        rejections.write(rejected_path)
        log.warning("rejected %d entries (%s); details in %s", len(rejections), rejections.summary(), rejected_path)
    if not utts:
        raise DasrError(f"no usable utterances remain ({len(rejections)} rejected, see {rejected_path})")
    if strict and rejections:
        raise DasrError(f"--strict: {len(rejections)} entries were rejected, see {rejected_path}")
    write_manifest(out, utts)
    print(f"wrote {len(utts)} utterances ({sum(u.duration for u in utts) / 3600:.2f} h) to {out}; "
          f"rejected {len(rejections)}")


def cmd_corpus_synth(args) -> None:
    from dasr.data.synth import synthesize_corpus

    summary = synthesize_corpus(args.out, hours=args.hours, seed=args.seed, jobs=args.jobs, text_file=args.text)
    print(_format_summary(summary))


def cmd_corpus_import_kaldi(args) -> None:
    from dasr.data.manifest import import_kaldi

    utts, rejections = import_kaldi(args.kaldi_dir, allow_pipes=args.allow_pipes)
    _finish_import(utts, rejections, Path(args.out), args.strict)


def cmd_corpus_import_librispeech(args) -> None:
    from dasr.data.manifest import import_librispeech

    utts, rejections = import_librispeech(args.root)
    _finish_import(utts, rejections, Path(args.out), args.strict)


def cmd_corpus_export_kaldi(args) -> None:
    from dasr.data.manifest import export_kaldi, read_manifest

    utts = read_manifest(args.manifest)
    export_kaldi(utts, args.out)
    print(f"wrote Kaldi data dir {args.out} with {len(utts)} utterances")


def cmd_features(args) -> None:
    from dasr.data.features import compute_features
    from dasr.data.report import data_report

    summary = compute_features(args.data, jobs=args.jobs, subsampling=args.subsampling)
    if args.strict and summary["rejected"]:
        raise DasrError(f"--strict: {summary['rejected']} entries were rejected, see {Path(args.data) / 'rejected.jsonl'}")
    print(data_report(args.data))


def _format_summary(summary: dict) -> str:
    return "\n".join(f"{k}: {v}" for k, v in summary.items())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dasr", description="Fast distributed training of BLSTM-CTC speech recognizers.")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="logging level (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    corpus = sub.add_parser("corpus", help="make, import and export corpora (manifests)")
    corpus_sub = corpus.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")
    p = corpus_sub.add_parser("synth", help="synthesise the demo corpus into a data dir")
    p.add_argument("--out", required=True, help="data dir to create")
    p.add_argument("--hours", type=float, default=1.0, help="total audio over train/dev/test (default 1.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=None, help="parallel synthesis processes (default: all cores)")
    p.add_argument("--text", default=None, help="sentences from this file (one per line) instead of the generator")
    p.set_defaults(func=cmd_corpus_synth)
    p = corpus_sub.add_parser("import-kaldi", help="Kaldi data dir (wav.scp, text, utt2spk[, segments]) -> JSONL manifest")
    p.add_argument("kaldi_dir")
    p.add_argument("--out", required=True, help="manifest FILE.jsonl to write (rejected.jsonl goes beside it)")
    p.add_argument("--allow-pipes", action="store_true", help="run wav.scp entries that are shell pipes ('cmd |')")
    p.add_argument("--strict", action="store_true", help="fail if any entry is rejected")
    p.set_defaults(func=cmd_corpus_import_kaldi)
    p = corpus_sub.add_parser("import-librispeech", help="LibriSpeech-style tree (*.trans.txt + flac) -> JSONL manifest")
    p.add_argument("root")
    p.add_argument("--out", required=True, help="manifest FILE.jsonl to write (rejected.jsonl goes beside it)")
    p.add_argument("--strict", action="store_true", help="fail if any entry is rejected")
    p.set_defaults(func=cmd_corpus_import_librispeech)
    p = corpus_sub.add_parser("export-kaldi", help="JSONL manifest -> Kaldi data dir")
    p.add_argument("manifest")
    p.add_argument("--out", required=True, help="Kaldi data dir to write")
    p.set_defaults(func=cmd_corpus_export_kaldi)

    p = sub.add_parser("features", help="compute fbank features and CMVN for every manifest of a data dir")
    p.add_argument("data", help="data dir holding train/dev/test.jsonl")
    p.add_argument("--jobs", type=int, default=None, help="parallel processes (default: all cores)")
    p.add_argument("--subsampling", type=int, default=3,
                   help="frame subsampling of the model, for the CTC length check (default 3)")
    p.add_argument("--strict", action="store_true", help="fail if any entry is rejected")
    p.set_defaults(func=cmd_features)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dasr` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    try:
        args.func(args)
    except DasrError as e:
        print(f"dasr: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"dasr: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dasr: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
