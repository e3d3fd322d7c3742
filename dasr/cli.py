"""`dasr` command line: one thin function per subcommand, registered with its help and options.

A command is declared once, where it is defined::

    @command("lm", "estimate a word n-gram LM", arg("--data", required=True), arg("--order", type=int, default=3))
    def cmd_lm(args): ...

and :func:`build_parser` is a loop over :data:`COMMANDS`. `dasr bench` and `dasr simulate` are the
lab's (``lab/`` in a checkout, not installed with the package): their parsers are built from the
lab's own declarations the first time they are used.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dasr import __version__
from dasr.errors import DasrError

log = logging.getLogger("dasr")

#: an option declaration: ``(flags, keyword arguments of ArgumentParser.add_argument)``
Argument = tuple[tuple[str, ...], dict[str, Any]]


def arg(*flags: str, **options: Any) -> Argument:
    """One option or positional of a command, as :meth:`argparse.ArgumentParser.add_argument` takes it."""
    return flags, options


def add_arguments(parser: argparse.ArgumentParser, arguments: Iterable[Argument]) -> None:
    """Add every declared argument to ``parser``."""
    for flags, options in arguments:
        parser.add_argument(*flags, **options)


@dataclass(frozen=True)
class Command:
    """One `dasr` subcommand: its one-line help and how its parser is filled (options, and what it runs)."""

    help: str
    fill: Callable[[argparse.ArgumentParser], None]


#: "NAME" or "GROUP ACTION" -> the command; groups are in :data:`GROUPS`
COMMANDS: dict[str, Command] = {}
GROUPS = {
    "corpus": "make, import and export corpora (manifests)",
    "recipe": "whole recipes: corpora, training to the plateau, scores",
}


def command(name: str, help: str, *arguments: Argument, options: Callable | None = None) -> Callable:
    """Register the decorated ``run(args)`` as `dasr NAME` with its ``arguments`` (and an ``options(parser)``
    function that adds more, e.g. the train flags generated from :class:`dasr.config.TrainConfig`)."""

    def register(run: Callable[[argparse.Namespace], None]) -> Callable[[argparse.Namespace], None]:
        def fill(parser: argparse.ArgumentParser) -> None:
            add_arguments(parser, arguments)
            if options is not None:
                options(parser)
            parser.set_defaults(run=run)

        COMMANDS[name] = Command(help, fill)
        return run

    return register


def lab_command(name: str, help: str, module: str) -> None:
    """Register `dasr NAME` as the lab's: ``lab.MODULE.add_parser(parser)`` fills its parser when it is used."""

    def fill(parser: argparse.ArgumentParser) -> None:
        _import_lab(module).add_parser(parser)

    COMMANDS[name] = Command(help, fill)


def _import_lab(module: str) -> Any:
    """``lab.MODULE`` from the checkout this package runs from (or the current directory).

    The lab is not installed with the package: it lives beside it in the repository.
    """
    import os

    for root in (Path(__file__).resolve().parent.parent, Path.cwd()):
        if (root / "lab" / "__init__.py").is_file():
            if str(root) not in sys.path:
                sys.path.insert(0, str(root))
            # the lab's own worker processes (`python -c "from lab..."`) find it too
            os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, (str(root), os.environ.get("PYTHONPATH"))))
            return importlib.import_module(f"lab.{module}")
    raise DasrError(
        "this command runs the lab (benchmarks, simulator), which is not installed with the package: "
        "run it from a checkout of the dasr repository (git clone, then `make venv`)"
    )


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose options go anywhere among the positionals (``dasr transcribe EXP --lm D a.wav``),
    and whose parser is filled on first use (so a lab command imports the lab only when it runs)."""

    def __init__(self, *args: Any, fill: Callable[[argparse.ArgumentParser], None] | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self._fill, self._intermixing = fill, False

    def _filled(self) -> None:
        if self._fill is not None:
            fill, self._fill = self._fill, None
            fill(self)

    def parse_known_args(self, args=None, namespace=None):
        self._filled()
        if self._intermixing or self._subparsers is not None:  # argparse intermixes only parsers without subcommands
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return super().parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def format_help(self) -> str:
        self._filled()
        return super().format_help()


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


MANIFEST_OUT = arg("--out", required=True, help="manifest FILE.jsonl to write (rejected.jsonl goes beside it)")
STRICT = arg("--strict", action="store_true", help="fail if any entry is rejected")
CHECKPOINT = arg("--checkpoint", default="best", help="model file EXP/<name>.pt (best, final, averaged)")


@command(
    "corpus synth",
    "synthesise the demo corpus into a data dir",
    arg("--out", required=True, help="data dir to create"),
    arg("--hours", type=float, default=1.0, help="total audio over train/dev/test (default 1.0)"),
    arg("--seed", type=int, default=0),
    arg("--jobs", type=int, default=None, help="parallel synthesis processes (default: all cores)"),
    arg("--text", default=None, help="sentences from this file (one per line) instead of the generator"),
    arg(
        "--engines",
        default="espeak",
        help="comma-separated synthesizers: espeak, flite, festival; optional natural ones: mbrola, rhvoice, pico, "
        "rab (festival's rab_diphone), piper (default espeak)",
    ),
    arg(
        "--fetch",
        action="store_true",
        help="fetch missing optional engines' Debian packages (contrib/non-free) into --deb-cache, never installing them",
    ),
    arg("--deb-cache", help="private apt cache of the optional engines (default OUT/deb-cache)"),
    arg("--augment", action="store_true", help="speaker and channel variety: pitch, tempo, room, noise, telephone"),
    arg("--train-text", default=None, help="more sentences (one per line) spoken in train only"),
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
        fetch=args.fetch,
        deb_cache=args.deb_cache,
    )
    print("\n".join(f"{k}: {v}" for k, v in summary.items()))


@command(
    "corpus prepare",
    "real speech from Debian packages: uqm (train/dev/test), klettres (test only)",
    arg("corpus", choices=["uqm", "klettres"]),
    arg("--out", required=True, help="data dir to create"),
    arg("--source", help="dir with the packages' .deb files or data (default: installed, else fetched)"),
    arg("--deb-cache", help="private apt cache to fetch into (default OUT/deb-cache)"),
    arg("--jobs", type=int, default=None, help="parallel processes (default: all cores)"),
    arg("--drop-processed", action="store_true", help="uqm: reject processed (robotic, pitch-shifted) voices"),
    arg(
        "--align-with",
        metavar="EXP",
        help="uqm: a trained experiment whose CTC alignment cuts pages too long to keep whole at words "
        "(default: such pages are rejected)",
    ),
    arg(
        "--min-alignment-score",
        type=float,
        default=None,
        help="uqm --align-with: reject pieces whose units score lower (mean log-probability; default -2)",
    ),
)
def cmd_corpus_prepare(args) -> None:
    import json

    from dasr.data.klettres import prepare_klettres
    from dasr.data.uqm import MIN_ALIGNMENT_SCORE, Alignment, prepare_uqm

    if args.corpus == "uqm":
        alignment = None
        if args.align_with:
            from dasr.decode.recognizer import Recognizer

            score = MIN_ALIGNMENT_SCORE if args.min_alignment_score is None else args.min_alignment_score
            alignment = Alignment(str(Path(args.align_with).resolve()), Recognizer, score)
        summary = prepare_uqm(
            args.out, args.source, args.deb_cache, args.jobs, args.drop_processed, alignment=alignment
        )
    else:
        summary = prepare_klettres(args.out, args.source, args.deb_cache)
    print(json.dumps(summary, indent=1))


@command(
    "corpus import-kaldi",
    "Kaldi data dir (wav.scp, text, utt2spk[, segments]) -> JSONL manifest",
    arg("kaldi_dir"),
    MANIFEST_OUT,
    arg("--allow-pipes", action="store_true", help="run wav.scp entries that are shell pipes ('cmd |')"),
    STRICT,
)
def cmd_corpus_import_kaldi(args) -> None:
    from dasr.data.manifest import import_kaldi

    utts, rejections = import_kaldi(args.kaldi_dir, allow_pipes=args.allow_pipes)
    _finish_import(utts, rejections, Path(args.out), args.strict)


@command(
    "corpus import-librispeech",
    "LibriSpeech-style tree (*.trans.txt + flac) -> JSONL manifest",
    arg("root"),
    MANIFEST_OUT,
    STRICT,
)
def cmd_corpus_import_librispeech(args) -> None:
    from dasr.data.manifest import import_librispeech

    utts, rejections = import_librispeech(args.root)
    _finish_import(utts, rejections, Path(args.out), args.strict)


@command(
    "corpus export-kaldi",
    "JSONL manifest -> Kaldi data dir",
    arg("manifest"),
    arg("--out", required=True, help="Kaldi data dir to write"),
)
def cmd_corpus_export_kaldi(args) -> None:
    from dasr.data.manifest import export_kaldi, read_manifest

    utts = read_manifest(args.manifest)
    export_kaldi(utts, args.out)
    print(f"wrote Kaldi data dir {args.out} with {len(utts)} utterances")


@command(
    "corpus import-lhotse",
    "lhotse RECORDINGS SUPERVISIONS manifests, or one CUTS manifest -> JSONL manifest",
    arg("manifest", help="recordings manifest (with SUPERVISIONS), or a cuts manifest alone"),
    arg("supervisions", nargs="?", help="supervisions manifest"),
    MANIFEST_OUT,
    arg("--allow-pipes", action="store_true", help="run lhotse 'command' audio sources"),
    STRICT,
)
def cmd_corpus_import_lhotse(args) -> None:
    from dasr.data.lhotse_io import import_lhotse

    utts, rejections = import_lhotse(args.manifest, args.supervisions, allow_pipes=args.allow_pipes)
    _finish_import(utts, rejections, Path(args.out), args.strict)


@command(
    "corpus export-lhotse",
    "JSONL manifest -> lhotse recordings.jsonl.gz + supervisions.jsonl.gz",
    arg("manifest"),
    arg("--out", required=True, help="directory to write the two lhotse manifests into"),
    arg("--allow-pipes", action="store_true", help="run shell-pipe entries to measure their audio"),
)
def cmd_corpus_export_lhotse(args) -> None:
    from dasr.data.lhotse_io import export_lhotse
    from dasr.data.manifest import read_manifest

    utts = read_manifest(args.manifest)
    recordings, supervisions = export_lhotse(utts, args.out, allow_pipes=args.allow_pipes)
    print(f"wrote {len(utts)} utterances as lhotse manifests {recordings} and {supervisions}")


@command(
    "features",
    "compute fbank features and CMVN for every manifest of a data dir",
    arg("data", help="data dir holding train/dev/test.jsonl"),
    arg("--jobs", type=int, default=None, help="parallel processes (default: all cores)"),
    arg(
        "--subsampling",
        type=int,
        default=3,
        help="frame subsampling of the model, for the CTC length check (default 3)",
    ),
    STRICT,
)
def cmd_features(args) -> None:
    from dasr.data.features import compute_features
    from dasr.data.report import data_report

    summary = compute_features(args.data, jobs=args.jobs, subsampling=args.subsampling)
    if args.strict and summary["rejected"]:
        raise DasrError(
            f"--strict: {summary['rejected']} entries were rejected, see {Path(args.data) / 'rejected.jsonl'}"
        )
    print(data_report(args.data))


def _train_options(parser: argparse.ArgumentParser) -> None:
    from dasr.config import add_options

    add_options(parser)


@command("train", "train a BLSTM-CTC model (one or many workers)", options=_train_options)
def cmd_train(args) -> None:
    from dasr.config import resolve
    from dasr.train.run import train

    progress = train(resolve(args.config, vars(args)))
    print(f"trained {progress['step']} steps; models in {args.exp}")


@command(
    "lm",
    "estimate a word n-gram LM (modified Kneser-Ney) on the train text; writes DATA/lm.arpa",
    arg("--data", required=True),
    arg("--order", type=int, default=3),
    arg("--text", metavar="FILE", help="domain sentences (one per line) to add to the LM and the lexicon"),
)
def cmd_lm(args) -> None:
    from dasr.decode.lm_build import SENTENCE_MARKS, build_lm

    path, lm = build_lm(args.data, args.order, args.text)
    print(f"wrote {lm.order}-gram LM with {len(lm.vocab - SENTENCE_MARKS)} words (the decoder's lexicon) to {path}")


@command(
    "decode",
    "decode a split, write hypotheses, alignments and wer.json",
    arg("--exp", required=True),
    arg("--data", required=True),
    arg("--split", default="test"),
    arg("--lm", action="store_true", help="lexicon beam search with DATA/lm.arpa, weights tuned on dev"),
    CHECKPOINT,
    arg("--beam-size", type=int, default=300),
)
def cmd_decode(args) -> None:
    from dasr.decode.recognizer import find_experiment
    from dasr.decode.run import decode_split

    result = decode_split(args.exp, args.data, args.split, args.lm, args.checkpoint, args.beam_size)
    out = find_experiment(args.exp, args.checkpoint) / f"decode-{args.split}{'-lm' if args.lm else ''}"
    print(
        f"{args.split}: WER {100 * result['wer']:.2f} %, CER {100 * result['cer']:.2f} % "
        f"over {result['num_words']} words; details in {out}"
    )


@command(
    "transcribe",
    "print the text of audio files: FILE<TAB>text",
    arg("paths", nargs="+", metavar="PATH", help="EXP (or `dasr demo`'s OUT), then audio files"),
    arg("--onnx", metavar="DIR", help="no EXP: run `dasr export`'s DIR (with DIR/lm.arpa if there)"),
    arg("--json", action="store_true", help="one JSON object per line"),
    CHECKPOINT,
    arg("--lm", metavar="DATA", help="decode with DATA/lm.arpa, its words as the lexicon"),
    arg("--lm-weight", type=float, help="default: tuned by `dasr decode --lm` (else 1.0)"),
    arg("--word-score", type=float, help="default: tuned by `dasr decode --lm` (else 0.0)"),
)
def cmd_transcribe(args) -> None:
    import json

    from dasr.decode.recognizer import open_recognizer

    if not args.onnx and len(args.paths) < 2:
        raise DasrError("give an experiment dir and one or more audio files (or --onnx DIR and audio files)")
    model, files = (args.onnx, args.paths) if args.onnx else (args.paths[0], args.paths[1:])
    rec = open_recognizer(model, args.lm, args.checkpoint, args.lm_weight, args.word_score, onnx=bool(args.onnx))
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


@command(
    "serve",
    "HTTP service: OpenAI transcription API, microphone WebSocket, web page, metrics",
    arg("model", metavar="EXP_OR_ONNX_DIR", help="experiment dir (or `dasr demo`'s OUT) or `dasr export`'s dir"),
    arg("--lm", metavar="DATA", help="decode with DATA/lm.arpa (an export dir's own lm.arpa is the default)"),
    arg("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)"),
    arg("--port", type=int, default=8000),
    arg("--workers", type=int, default=1, help="decoding threads, one core each (default 1)"),
    arg("--max-queue", type=int, default=8, help="requests that may wait; more get 503 (default 8)"),
    arg("--timeout", dest="timeout_s", type=float, default=30.0, help="seconds per decode (default 30)"),
    arg("--max-mb", type=float, default=25.0, help="largest upload in MiB (default 25)"),
    arg("--max-stream-s", type=float, default=300.0, help="longest microphone stream (default 300 s)"),
    arg("--cors", action="append", default=[], metavar="ORIGIN", help="allow this browser origin"),
)
def cmd_serve(args) -> None:
    from dasr.serve import require_dependencies

    require_dependencies()
    from dasr.serve.app import serve
    from dasr.serve.service import ServeSettings

    options = ("host", "port", "workers", "max_queue", "timeout_s", "max_stream_s", "cors")
    settings = ServeSettings(max_bytes=int(args.max_mb * 1024 * 1024), **{k: getattr(args, k) for k in options})
    serve(args.model, args.lm, settings, args.log_level)


@command(
    "export",
    "write EXP's model as ONNX + tokens.txt for onnxruntime and sherpa-onnx",
    arg("exp", help="experiment dir (or `dasr demo`'s OUT)"),
    arg("--out", required=True, help="dir to write model.onnx, tokens.txt and the tokenizer into"),
    CHECKPOINT,
    arg("--lm", metavar="DATA", help="also copy DATA/lm.arpa, used by `dasr transcribe --onnx`"),
)
def cmd_export(args) -> None:
    from dasr.decode.export import export_onnx

    summary = export_onnx(args.exp, args.out, args.checkpoint, args.lm)
    print(
        f"wrote {', '.join(summary['files'])} to {summary['dir']} "
        f"(onnxruntime agrees with PyTorch to {summary['max_abs_diff']:.1g} in log-probability)"
    )


@command(
    "average",
    "average the last K checkpoints into EXP/averaged.pt",
    arg("--exp", required=True),
    arg("--last", type=int, default=3),
)
def cmd_average(args) -> None:
    from dasr.train.run import average_last

    path, used = average_last(args.exp, args.last)
    print(f"averaged {len(used)} checkpoints into {path}")


@command(
    "demo",
    "synthesise the demo corpus, train, decode, print the WER table",
    arg("--out", default="exp/demo"),
    arg("--data", default=None, help="data dir to use/create (default: OUT/data)"),
    arg("--quick", action="store_true", help="a few-minute smoke version"),
)
def cmd_demo(args) -> None:
    from dasr.demo import run_demo

    run_demo(args.out, quick=args.quick, data_dir=args.data)


@command(
    "recipe real",
    "train on real (The Ur-Quan Masters' actors) and synthetic speech to the dev plateau; score held-out speakers",
    arg("--out", default="exp/real"),
    arg("--corpora", default=None, help="where the prepared corpora live, shared between runs (default OUT/corpora)"),
    arg("--deb-cache", default=None, help="private apt cache of uqm and the voices (default CORPORA/deb-cache)"),
    arg("--config", default="real", help="training recipe (default real)"),
    arg("--no-real", dest="real", action="store_false", help="leave the real speakers out (synthetic only)"),
    arg("--no-synthetic", dest="synthetic", action="store_false", help="leave the synthetic voices out (real only)"),
    arg("--no-variety", dest="variety", action="store_false", help="synthesize without speaker and channel variety"),
    arg("--voices", type=int, default=21, help="natural voices to synthesize with: 7, 14 or 21 (default 21)"),
    arg("--synthetic-hours", type=float, default=4.0, help="hours of synthesis, 80 %% of it for train (default 4)"),
)
def cmd_recipe_real(args) -> None:
    from dasr.real_recipe import Parts, run_recipe

    parts = Parts(args.real, args.synthetic, args.variety, args.voices, args.synthetic_hours)
    run_recipe(args.out, parts, args.corpora, args.config, args.deb_cache)


lab_command("simulate", "cluster simulator: calibrate here, check N = 2/4, predict the paper's GPUs", "sim.run")
lab_command("bench", "benchmarks behind docs/results (Markdown + JSON + PNG; run from a checkout)", "bench")


def build_parser() -> argparse.ArgumentParser:
    """The `dasr` argument parser: one subparser per entry of :data:`COMMANDS`."""
    parser = Parser(prog="dasr", description="Fast distributed training of BLSTM-CTC speech recognizers.")
    parser.add_argument(
        "--log-level",
        default="INFO",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging level (default INFO)",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    groups = {
        name: sub.add_parser(name, help=text).add_subparsers(dest=f"{name}_command", required=True, metavar="ACTION")
        for name, text in GROUPS.items()
    }
    for name, cmd in COMMANDS.items():
        group, _, action = name.rpartition(" ")
        (groups[group] if group else sub).add_parser(action, help=cmd.help, description=cmd.help, fill=cmd.fill)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dasr` console script."""
    try:
        args = build_parser().parse_args(argv)
        logging.basicConfig(
            level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S"
        )
        args.run(args)
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
