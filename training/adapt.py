"""Stage 2 (a dataset adapter on the frozen backbone). Run: `accelerate launch training/adapt.py --help`."""

import sys

from aesformer_training.scripts import adapt_main

if __name__ == "__main__":
    sys.exit(adapt_main())
