"""Stage 2 (a dataset adapter on the frozen backbone). Run: `accelerate launch training/adapt.py --help`."""

import sys

from aesformer_training.cli_utils import run_command
from aesformer_training.scripts import adapt_main

if __name__ == "__main__":
    sys.exit(run_command(adapt_main))
