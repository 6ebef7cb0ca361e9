"""Stage 1 (with comments). Run: `accelerate launch training/pretrain.py --help`.

The same stage as `aesformer pretrain` (same flags, same output); it imports only the training layer."""

import sys

from aesformer_training.arguments import launch

if __name__ == "__main__":
    sys.exit(launch("pretrain"))
