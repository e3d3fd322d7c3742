"""The benchmarks behind every number in docs/results: `dasr bench NAME` runs ``lab.bench.<name>.run_cli``.

Each benchmark module declares what it needs beyond the common ``--data/--quick/--out``: a tuple
``ARGUMENTS`` of :func:`dasr.cli.arg` declarations. Its name and its one-line help are written
here, once.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
from pathlib import Path
from types import ModuleType

from dasr.cli import add_arguments, arg

#: `dasr bench NAME` -> its help; the module is lab.bench.NAME (with _ for -)
BENCHMARKS = {
    "data": "synthesis, features, loader speed",
    "train": "trainer overhead, decoding speed, paper-size model",
    "strategies": "samples/s and compute/communication per strategy at N = 1, 2, 4",
    "stragglers": "time to a target dev WER with one worker 1x/2x/4x slower",
    "consensus": "gossip rounds to shrink the replica spread 10x per graph at N = 4, 8, 16 (exact)",
    "large-batch": "dev WER at m x B (m = 1..16) trained to the plateau, sync and adpsgd, seeds, recipe rivals",
    "accuracy": "test WER of every strategy at equal epochs",
    "elastic": "elastic adpsgd through a worker killed every T s: throughput, rejoin time, claims, dev WER vs sync/localsgd",
    "node-loss": "elastic adpsgd in the network test bed while a node is cut off: the store's host (etcd vs TCPStore), a workers' node",
    "reliability": "killed workers, torn checkpoints, fuzzed inputs, long adpsgd soak",
    "network": "every strategy on K nodes in network namespaces over tbf rate-limited links (needs root)",
    "export": "the ONNX export in onnxruntime and sherpa-onnx against PyTorch: texts, WER, speed",
    "real-speech": "WER/CER per test set of real people: models trained on real and/or synthetic speech (--recipes)",
    "speedups": "the real recipe's step time: bare loop, trainer fp32, trainer bf16; bf16's accuracy; sorted batches",
    "serve": "`dasr serve` at 1/4/16 concurrent clients, ONNX and PyTorch: latency, requests/s, RTF, 10k-request soak",
}

COMMON = (
    arg("--data", default=None, help="data dir with features (default: synthesise a small one)"),
    arg("--quick", action="store_true", help="a smoke-sized run"),
    arg("--out", default="docs/results", help="directory for BENCH.md, .json, .png (default docs/results)"),
)


def module(name: str) -> ModuleType:
    """The module of benchmark ``name``."""
    return importlib.import_module(f"lab.bench.{name.replace('-', '_')}")


def add_parser(parser: argparse.ArgumentParser) -> None:
    """One subcommand per benchmark under ``parser`` (`dasr bench`), with its own options."""
    benches = parser.add_subparsers(dest="bench", required=True, metavar="BENCH")
    for name, text in BENCHMARKS.items():
        bench = benches.add_parser(name, help=text, description=text)
        add_arguments(bench, (*COMMON, *getattr(module(name), "ARGUMENTS", ())))
        bench.set_defaults(run=run)


def run(args: argparse.Namespace) -> None:
    """Run the benchmark ``args.bench`` and say which report files it wrote."""
    command = shlex.join(["dasr", *sys.argv[1:]])
    module(args.bench).run_cli(args, command)
    written = [ext for ext in (".md", ".json", ".png") if (Path(args.out) / f"{args.bench}{ext}").exists()]
    print(f"wrote {args.out}/{args.bench}{', '.join(written)}")
