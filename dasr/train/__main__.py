"""Worker entry for a plain torchrun launch (the options are those of `dasr train`):

    torchrun --nnodes 2 --nproc-per-node 4 --rdzv-backend c10d --rdzv-endpoint HOST:29400 \\
        -m dasr.train --data DATA --exp EXP --strategy adpsgd
"""

import argparse
import sys

from dasr.config import add_options, resolve
from dasr.errors import DasrError
from dasr.train.worker import run_worker


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m dasr.train", description="one `dasr train` worker under torchrun")
    add_options(parser)
    args = parser.parse_args()
    try:
        run_worker(resolve(args.config, vars(args)), prepare=True)
    except DasrError as e:
        print(f"dasr: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
