"""`dasr` command line: one thin function per subcommand; the work happens in the modules."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from dasr import __version__
from dasr.errors import DasrError

log = logging.getLogger("dasr")


def _finish_import(utts, rejections, out: Path, strict: bool) -> None:
    from dasr.data.manifest import write_manifest

    out.parent.mkdir(parents=True, exist_ok=True)
    rejected_path = out.parent / "rejected.jsonl"
    rejections.write(rejected_path, "import", out.name)
    if rejections:
        log.warning("rejected %d entries (%s); details in %s", len(rejections), rejections.summary(), rejected_path)
    if not utts:
        raise DasrError(f"no usable utterances remain ({len(rejections)} rejected, see {rejected_path})")
    if strict and rejections:
        raise DasrError(f"--strict: {len(rejections)} entries were rejected, see {rejected_path}")
    write_manifest(out, utts)
    print(
        f"wrote {len(utts)} utterances ({sum(u.duration for u in utts) / 3600:.2f} h) to {out}; "
        f"rejected {len(rejections)}"
    )


def cmd_corpus_synth(args) -> None:
    from dasr.data.synth import read_sentences, synthesize_corpus

    summary = synthesize_corpus(
        args.out,
        hours=args.hours,
        seed=args.seed,
        jobs=args.jobs,
        text_file=args.text,
        engines=tuple(e.strip() for e in args.engines.split(",") if e.strip()),
        augment_audio=args.augment,
        train_text=read_sentences(args.train_text) if args.train_text else None,
    )
    print(_format_summary(summary))


def cmd_corpus_import_kaldi(args) -> None:
    from dasr.data.manifest import import_kaldi

    utts, rejections = import_kaldi(args.kaldi_dir, allow_pipes=args.allow_pipes)
    _finish_import(utts, rejections, Path(args.out), args.strict)


def cmd_corpus_import_librispeech(args) -> None:
    from dasr.data.manifest import import_librispeech

    utts, rejections = import_librispeech(args.root)
    _finish_import(utts, rejections, Path(args.out), args.strict)


def cmd_corpus_import_lhotse(args) -> None:
    from dasr.data.lhotse_io import import_lhotse

    utts, rejections = import_lhotse(args.manifest, args.supervisions, allow_pipes=args.allow_pipes)
    _finish_import(utts, rejections, Path(args.out), args.strict)


def cmd_corpus_export_lhotse(args) -> None:
    from dasr.data.lhotse_io import export_lhotse
    from dasr.data.manifest import read_manifest

    utts = read_manifest(args.manifest)
    recordings, supervisions = export_lhotse(utts, args.out, allow_pipes=args.allow_pipes)
    print(f"wrote {len(utts)} utterances as lhotse manifests {recordings} and {supervisions}")


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
        raise DasrError(
            f"--strict: {summary['rejected']} entries were rejected, see {Path(args.data) / 'rejected.jsonl'}"
        )
    print(data_report(args.data))


def train_config(args):
    """TrainConfig of the recipe ``--config`` (if given) overridden by the `dasr train` flags given."""
    from dasr.config import resolve

    return resolve(args.config, vars(args))


def cmd_train(args) -> None:
    from dasr.train.run import train

    progress = train(train_config(args))
    print(f"trained {progress['step']} steps; models in {args.exp}")


def cmd_lm(args) -> None:
    from dasr.decode.lm_build import SENTENCE_MARKS, build_lm

    path, lm = build_lm(args.data, args.order, args.text)
    print(f"wrote {lm.order}-gram LM with {len(lm.vocab - SENTENCE_MARKS)} words (the decoder's lexicon) to {path}")


def cmd_decode(args) -> None:
    from dasr.decode.recognizer import find_experiment
    from dasr.decode.run import decode_split

    result = decode_split(args.exp, args.data, args.split, args.lm, args.checkpoint, args.beam_size)
    out = find_experiment(args.exp, args.checkpoint) / f"decode-{args.split}{'-lm' if args.lm else ''}"
    print(
        f"{args.split}: WER {100 * result['wer']:.2f} %, CER {100 * result['cer']:.2f} % "
        f"over {result['num_words']} words; details in {out}"
    )


def cmd_transcribe(args) -> None:
    import json

    from dasr.decode.lm_build import LM_FILE, lexicon_words
    from dasr.decode.recognizer import OnnxRecognizer, Recognizer

    if args.onnx:
        rec, files = OnnxRecognizer(args.onnx), args.paths
        lm = args.lm or (args.onnx if (Path(args.onnx) / LM_FILE).exists() else None)
    elif len(args.paths) < 2:
        raise DasrError("give an experiment dir and one or more audio files (or --onnx DIR and audio files)")
    else:
        rec, files, lm = Recognizer(args.paths[0], args.checkpoint), args.paths[1:], args.lm
    if lm:
        rec.use_lm(lexicon_words(lm), str(Path(lm) / LM_FILE), args.lm_weight, args.word_score)
    failed = 0
    for path in files:
        try:
            text = rec.transcribe(path)
        except DasrError as e:
            print(f"dasr: error: {e}", file=sys.stderr)
            failed += 1
            continue
        print(json.dumps({"file": path, "text": text}) if args.json else f"{path}\t{text}", flush=True)
    if failed:
        raise DasrError(f"{failed} of {len(files)} files could not be transcribed")


def cmd_export(args) -> None:
    from dasr.decode.export import export_onnx

    summary = export_onnx(args.exp, args.out, args.checkpoint, args.lm)
    print(
        f"wrote {', '.join(summary['files'])} to {summary['dir']} "
        f"(onnxruntime agrees with PyTorch to {summary['max_abs_diff']:.1g} in log-probability)"
    )


def cmd_average(args) -> None:
    from dasr.train.run import average_last

    path, used = average_last(args.exp, args.last)
    print(f"averaged {len(used)} checkpoints into {path}")


def cmd_demo(args) -> None:
    from dasr.demo import run_demo

    run_demo(args.out, quick=args.quick, data_dir=args.data)


def cmd_simulate(args) -> None:
    import shlex

    from dasr.sim.run import run

    if args.link_mbit:  # the network test bed's settings, calibrated on `dasr bench network`'s reference run
        from dasr.parallel import STRATEGIES
        from dasr.sim.network import run_cli

        rates = [float(r) for r in args.link_mbit.split(",")]
        run_cli(args.network, rates, [int(k) for k in args.nodes.split(",")], [s for s in STRATEGIES if s != "single"])
        return
    learners = [int(n) for n in args.learners.split(",")]
    run(args.calibration, args.out, learners, args.quick, shlex.join(["dasr", *sys.argv[1:]]))
    print(f"wrote {args.out}/simulate.md, .json and .png")


#: `dasr bench NAME` -> the module whose ``run_cli(args, command)`` runs it
BENCHMARKS = {
    "data": "dasr.bench.data",
    "train": "dasr.bench.train",
    "strategies": "dasr.bench.strategies",
    "stragglers": "dasr.bench.stragglers",
    "consensus": "dasr.bench.consensus",
    "large-batch": "dasr.bench.large_batch",
    "accuracy": "dasr.bench.accuracy",
    "reliability": "dasr.bench.reliability",
    "network": "dasr.bench.network",
    "export": "dasr.bench.export",
    "real-speech": "dasr.bench.real_speech",
}


def cmd_bench(args) -> None:
    import importlib
    import shlex

    command = shlex.join(["dasr", *sys.argv[1:]])
    importlib.import_module(BENCHMARKS[args.bench]).run_cli(args, command)
    written = [ext for ext in (".md", ".json", ".png") if (Path(args.out) / f"{args.bench}{ext}").exists()]
    print(f"wrote {args.out}/{args.bench}{', '.join(written)}")


def _format_summary(summary: dict) -> str:
    return "\n".join(f"{k}: {v}" for k, v in summary.items())


def build_parser() -> argparse.ArgumentParser:
    """The `dasr` argument parser; the train flags come from :class:`dasr.config.TrainConfig`'s fields."""
    from dasr.config import add_options as add_train_options

    parser = argparse.ArgumentParser(
        prog="dasr", description="Fast distributed training of BLSTM-CTC speech recognizers."
    )
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    corpus = sub.add_parser("corpus", help="make, import and export corpora (manifests)")
    corpus_sub = corpus.add_subparsers(dest="corpus_command", required=True, metavar="ACTION")
    p = corpus_sub.add_parser("synth", help="synthesise the demo corpus into a data dir")
    p.add_argument("--out", required=True, help="data dir to create")
    p.add_argument("--hours", type=float, default=1.0, help="total audio over train/dev/test (default 1.0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=None, help="parallel synthesis processes (default: all cores)")
    p.add_argument("--text", default=None, help="sentences from this file (one per line) instead of the generator")
    p.add_argument(
        "--engines", default="espeak", help="comma-separated synthesizers: espeak, flite, festival (default espeak)"
    )
    p.add_argument(
        "--augment", action="store_true", help="speaker and channel variety: pitch, tempo, room, noise, telephone"
    )
    p.add_argument("--train-text", default=None, help="more sentences (one per line) spoken in train only")
    p.set_defaults(func=cmd_corpus_synth)
    p = corpus_sub.add_parser(
        "import-kaldi", help="Kaldi data dir (wav.scp, text, utt2spk[, segments]) -> JSONL manifest"
    )
    p.add_argument("kaldi_dir")
    p.add_argument("--out", required=True, help="manifest FILE.jsonl to write (rejected.jsonl goes beside it)")
    p.add_argument("--allow-pipes", action="store_true", help="run wav.scp entries that are shell pipes ('cmd |')")
    p.add_argument("--strict", action="store_true", help="fail if any entry is rejected")
    p.set_defaults(func=cmd_corpus_import_kaldi)
    p = corpus_sub.add_parser(
        "import-librispeech", help="LibriSpeech-style tree (*.trans.txt + flac) -> JSONL manifest"
    )
    p.add_argument("root")
    p.add_argument("--out", required=True, help="manifest FILE.jsonl to write (rejected.jsonl goes beside it)")
    p.add_argument("--strict", action="store_true", help="fail if any entry is rejected")
    p.set_defaults(func=cmd_corpus_import_librispeech)
    p = corpus_sub.add_parser("export-kaldi", help="JSONL manifest -> Kaldi data dir")
    p.add_argument("manifest")
    p.add_argument("--out", required=True, help="Kaldi data dir to write")
    p.set_defaults(func=cmd_corpus_export_kaldi)
    p = corpus_sub.add_parser(
        "import-lhotse", help="lhotse RECORDINGS SUPERVISIONS manifests, or one CUTS manifest -> JSONL manifest"
    )
    p.add_argument("manifest", help="recordings manifest (with SUPERVISIONS), or a cuts manifest alone")
    p.add_argument("supervisions", nargs="?", help="supervisions manifest")
    p.add_argument("--out", required=True, help="manifest FILE.jsonl to write (rejected.jsonl goes beside it)")
    p.add_argument("--allow-pipes", action="store_true", help="run lhotse 'command' audio sources")
    p.add_argument("--strict", action="store_true", help="fail if any entry is rejected")
    p.set_defaults(func=cmd_corpus_import_lhotse)
    p = corpus_sub.add_parser(
        "export-lhotse", help="JSONL manifest -> lhotse recordings.jsonl.gz + supervisions.jsonl.gz"
    )
    p.add_argument("manifest")
    p.add_argument("--out", required=True, help="directory to write the two lhotse manifests into")
    p.add_argument("--allow-pipes", action="store_true", help="run shell-pipe entries to measure their audio")
    p.set_defaults(func=cmd_corpus_export_lhotse)

    p = sub.add_parser("features", help="compute fbank features and CMVN for every manifest of a data dir")
    p.add_argument("data", help="data dir holding train/dev/test.jsonl")
    p.add_argument("--jobs", type=int, default=None, help="parallel processes (default: all cores)")
    p.add_argument(
        "--subsampling",
        type=int,
        default=3,
        help="frame subsampling of the model, for the CTC length check (default 3)",
    )
    p.add_argument("--strict", action="store_true", help="fail if any entry is rejected")
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("train", help="train a BLSTM-CTC model (one or many workers)")
    add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "lm", help="estimate a word n-gram LM (modified Kneser-Ney) on the train text; writes DATA/lm.arpa"
    )
    p.add_argument("--data", required=True)
    p.add_argument("--order", type=int, default=3)
    p.add_argument("--text", metavar="FILE", help="domain sentences (one per line) to add to the LM and the lexicon")
    p.set_defaults(func=cmd_lm)

    p = sub.add_parser("decode", help="decode a split, write hypotheses, alignments and wer.json")
    p.add_argument("--exp", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--lm", action="store_true", help="lexicon beam search with DATA/lm.arpa, weights tuned on dev")
    p.add_argument("--checkpoint", default="best", help="model file EXP/<name>.pt (best, final, averaged)")
    p.add_argument("--beam-size", type=int, default=300)
    p.set_defaults(func=cmd_decode)

    p = sub.add_parser("transcribe", help="print the text of audio files: FILE<TAB>text")
    p.add_argument("paths", nargs="+", metavar="PATH", help="EXP (or `dasr demo`'s OUT), then audio files")
    p.add_argument("--onnx", metavar="DIR", help="no EXP: run `dasr export`'s DIR (with DIR/lm.arpa if there)")
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument("--checkpoint", default="best")
    p.add_argument("--lm", metavar="DATA", help="decode with DATA/lm.arpa, its words as the lexicon")
    p.add_argument("--lm-weight", type=float, help="default: tuned by `dasr decode --lm` (else 1.0)")
    p.add_argument("--word-score", type=float, help="default: tuned by `dasr decode --lm` (else 0.0)")
    p.set_defaults(func=cmd_transcribe)

    p = sub.add_parser("export", help="write EXP's model as ONNX + tokens.txt for onnxruntime and sherpa-onnx")
    p.add_argument("exp", help="experiment dir (or `dasr demo`'s OUT)")
    p.add_argument("--out", required=True, help="dir to write model.onnx, tokens.txt and the tokenizer into")
    p.add_argument("--checkpoint", default="best", help="model file EXP/<name>.pt (best, final, averaged)")
    p.add_argument("--lm", metavar="DATA", help="also copy DATA/lm.arpa, used by `dasr transcribe --onnx`")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("average", help="average the last K checkpoints into EXP/averaged.pt")
    p.add_argument("--exp", required=True)
    p.add_argument("--last", type=int, default=3)
    p.set_defaults(func=cmd_average)

    p = sub.add_parser("demo", help="synthesise the demo corpus, train, decode, print the WER table")
    p.add_argument("--out", default="exp/demo")
    p.add_argument("--data", default=None, help="data dir to use/create (default: OUT/data)")
    p.add_argument("--quick", action="store_true", help="a few-minute smoke version")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("simulate", help="cluster simulator: calibrate here, check N = 2/4, predict the paper's GPUs")
    p.add_argument(
        "--calibration",
        default="docs/results/strategies.json",
        help="strategies benchmark output to calibrate on (default docs/results/strategies.json)",
    )
    p.add_argument(
        "--out", default="docs/results", help="directory for simulate.md, .json, .png (default docs/results)"
    )
    p.add_argument("--learners", default="8,16,32,64,128", help="learner counts to predict (default 8,16,32,64,128)")
    p.add_argument("--quick", action="store_true", help="fewer simulated steps and link repetitions")
    p.add_argument(
        "--link-mbit",
        help="predict the network test bed at these link rates, e.g. 1000,200,50 (prints, writes nothing)",
    )
    p.add_argument("--nodes", default="2,4", help="with --link-mbit: node counts (default 2,4)")
    p.add_argument(
        "--network",
        default="docs/results/network.json",
        help="with --link-mbit: `dasr bench network` output to calibrate on (default docs/results/network.json)",
    )
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("bench", help="benchmarks behind docs/results (Markdown + JSON + PNG)")
    benches = p.add_subparsers(dest="bench", required=True, metavar="BENCH")
    helps = {
        "data": "synthesis, features, loader speed",
        "train": "trainer overhead, decoding speed, paper-size model",
        "strategies": "samples/s and compute/communication per strategy at N = 1, 2, 4",
        "stragglers": "time to a target dev WER with one worker 1x/2x/4x slower",
        "consensus": "gossip rounds to shrink the replica spread 10x per graph at N = 4, 8, 16 (exact)",
        "large-batch": "dev WER at m x B (m = 1..16) trained to the plateau, sync and adpsgd, seeds, recipe rivals",
        "accuracy": "test WER of every strategy at equal epochs",
        "reliability": "killed workers, torn checkpoints, fuzzed inputs, long adpsgd soak",
        "network": "every strategy on K nodes in network namespaces over tbf rate-limited links (needs root)",
        "export": "the ONNX export in onnxruntime and sherpa-onnx against PyTorch: texts, WER, speed",
        "real-speech": "WER/CER on recordings of real people (pocketsphinx-testdata) of models trained on synthesis",
    }
    bench_parsers = {}
    for name, text in helps.items():
        b = bench_parsers[name] = benches.add_parser(name, help=text)
        b.add_argument("--data", default=None, help="data dir with features (default: synthesise a small one)")
        b.add_argument("--quick", action="store_true", help="a smoke-sized run")
        b.add_argument(
            "--out", default="docs/results", help="directory for BENCH.md, .json, .png (default docs/results)"
        )
        b.set_defaults(func=cmd_bench)
    bench_parsers["train"].add_argument(
        "--exp", default=None, help="decode with EXP/best.pt (default: the briefly trained demo model)"
    )
    bench_parsers["export"].add_argument("--exp", default=None, help="the model to export (e.g. exp/demo/model)")
    large = bench_parsers["large-batch"]
    large.add_argument(
        "--work",
        default="exp/large-batch",
        help="keeps each run and its result; a rerun resumes (default exp/large-batch)",
    )
    large.add_argument(
        "--only", default=None, metavar="TEXT", help="run only the runs whose id contains TEXT, e.g. m10"
    )
    large.add_argument(
        "--report-only", action="store_true", help="rewrite the report from the finished runs, train nothing"
    )
    real = bench_parsers["real-speech"]
    real.add_argument("--exp", default=None, help="the model to check (trained on --data, e.g. exp/demo/model)")
    real.add_argument("--label", default="demo", help="its name in the report (default demo)")
    real.add_argument("--compare", action="append", metavar="LABEL=EXP,DATA", help="more models, e.g. espeak-only=...")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dasr` console script."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
    )
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
