"""Stage 1 (with comments). Run: `accelerate launch training/pretrain.py --help`."""

import sys

from aesformer_cli.common import run_command
from aesformer_cli.train import pretrain_main

if __name__ == "__main__":
    sys.exit(run_command(pretrain_main))
