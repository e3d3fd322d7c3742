"""Worker entry for a plain torchrun launch (the options are those of `dasr train`):

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        -m dasr.train --data DATA --exp EXP --strategy adpsgd
"""

import sys

from dasr.cli import build_parser, train_config
from dasr.errors import DasrError
from dasr.train.worker import run_worker


def main() -> int:
    args = build_parser().parse_args(["train", *sys.argv[1:]])
    try:
        run_worker(train_config(args), prepare=True)
    except DasrError as e:
        print(f"dasr: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
