"""Stage 1 (with comments). Run: `accelerate launch training/pretrain.py --help`."""

import sys

from aesformer_training.cli_utils import run_command
from aesformer_training.scripts import pretrain_main

if __name__ == "__main__":
    sys.exit(run_command(pretrain_main))
