"""Stage 1 (with comments). Run: `accelerate launch training/pretrain.py --help`."""

import sys

from aesformer_training.scripts import pretrain_main

if __name__ == "__main__":
    sys.exit(pretrain_main())
