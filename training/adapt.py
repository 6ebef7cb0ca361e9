"""Stage 2 (a dataset adapter on the frozen backbone). Run: `accelerate launch training/adapt.py --help`.

The same stage as `aesformer adapt` (same flags, same output); it imports only the training layer."""

import sys

from aesformer_training.arguments import launch

if __name__ == "__main__":
    sys.exit(launch("adapt"))
