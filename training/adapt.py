"""Stage 2 (a dataset adapter on the frozen backbone). Run: `accelerate launch training/adapt.py --help`."""

import sys

from aesformer_cli.common import run_command
from aesformer_cli.train import adapt_main

if __name__ == "__main__":
    sys.exit(run_command(adapt_main))
