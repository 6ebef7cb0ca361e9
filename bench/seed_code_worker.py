#!/usr/bin/env python
"""Runs the ORIGINAL AesFormer code (the seed code) for `bench_seed_code.py`, in its own environment.

Started by the benchmark as a child process with the seed-code venv's Python (it needs transformers 4.x, timm and
einops; see ../shared/parity/seed-code/README.md beside the repository). It extracts the original
`models/aesformer.py` and `models/swin.py` from a git checkout of AiArt-HDU/aesformer into a temporary folder (never
into this repository), builds the two original models (image only: `type='img'`, with comments: `type='both'`) with
the reference harness's `make_reference.py`, and then answers one command per line on stdin:

    img    -> one image-only forward of the batch, fp32, inference mode; prints the seconds
    both   -> one `train_first_stage` (with comments) of the batch; prints the seconds
    quit

so that the benchmark can interleave it with our model (A B A B ...) on the same inputs: `make_inputs(seed + 1000,
batch, text_len)` of `make_reference.py`, which the benchmark regenerates on its side.
"""

import argparse
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed-code", required=True, help="folder holding make_reference.py")
    parser.add_argument("--mirror", required=True, help="git dir of AiArt-HDU/aesformer")
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--text-len", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    spec = importlib.util.spec_from_file_location("make_reference", os.path.join(args.seed_code, "make_reference.py"))
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    folder = tempfile.mkdtemp(prefix="aesformer-seed-code-")
    try:
        info = harness.extract_original(args.mirror, args.rev, folder)
        harness.ensure_timm_layers()
        original = harness.import_original(folder)
        models = {"img": harness.build_model(original, "img", args.seed),
                  "both": harness.build_model(original, "both", args.seed)}
        pixel_values, tokens, _ = harness.make_inputs(args.seed + 1000, args.batch, args.text_len)
        calls = {"img": lambda: models["img"](pixel_values),
                 "both": lambda: models["both"].train_first_stage(pixel_values, tokens)}
        print(json.dumps({"ready": True, "commit": info["commit"], "torch": torch.__version__,
                          "threads": torch.get_num_threads()}), flush=True)
        for line in sys.stdin:
            command = line.strip()
            if command == "quit":
                break
            with torch.inference_mode():
                start = time.perf_counter()
                calls[command]()
                seconds = time.perf_counter() - start
            print(json.dumps({"seconds": seconds}), flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
