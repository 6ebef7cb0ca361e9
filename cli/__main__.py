"""`python -m aesformer_cli ...` runs the `aesformer` command line."""

import sys

from aesformer_cli.main import main

if __name__ == "__main__":
    sys.exit(main())
