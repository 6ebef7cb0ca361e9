#!/usr/bin/env python
"""Runs Aesformer-T from ANOTHER installation of this package (e.g. a venv holding the version before a redesign)
for `bench_seed_code.py --baseline-python PY`, so that one run times the seed code, that installation ("before")
and this checkout ("after") back to back.

Started by the benchmark with that installation's Python, isolated (`python -I`: no PYTHONPATH, no script folder on
`sys.path`) and with its working directory outside the repository, so `import modeling_aesformer` finds the other
installation; the first line it prints says which file it imported, and the benchmark refuses a path inside the
checkout. Only public API that exists before and after the redesign is used: `AesformerConfig.from_preset`,
`AesformerModel(config)`, `save_pretrained`, `from_pretrained(..., dtype=torch.bfloat16)` and plain calls
`model(pixel_values)` / `model(pixel_values, input_ids=..., attention_mask=..., token_type_ids=...)` read through
`.score`.

It builds the model from `--seed` and `--preset` and saves it to `--model-dir`; the benchmark loads its own copies
from that folder, so both sides hold the same weights even where the redesign creates parameters in another order
(a seeded build on each side would then differ). It reads the inputs the benchmark wrote (`--inputs`, safetensors)
and answers one command per line on stdin:

    img fp32 | img bf16 | both fp32 | both bf16  -> {"seconds": s, "score": [...]} of one forward (timed here)
    quit
"""

import argparse
import json
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True, help="empty folder: the seeded model is saved here")
    parser.add_argument("--inputs", required=True, help="safetensors file: pixel_values, input_ids, attention_mask, "
                                                        "token_type_ids")
    parser.add_argument("--preset", default="aesformer-t")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import torch
    from safetensors.torch import load_file

    import modeling_aesformer
    from modeling_aesformer import AesformerConfig, AesformerModel

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    AesformerModel(AesformerConfig.from_preset(args.preset)).save_pretrained(args.model_dir)
    models = {"fp32": AesformerModel.from_pretrained(args.model_dir).eval(),
              "bf16": AesformerModel.from_pretrained(args.model_dir, dtype=torch.bfloat16).eval()}
    inputs = load_file(args.inputs)
    pixel_values = inputs.pop("pixel_values")
    calls = {"img": lambda model: model(pixel_values),
             "both": lambda model: model(pixel_values, **inputs)}
    try:
        from importlib.metadata import version

        package_version = version("aesformer")
    except Exception:  # noqa: BLE001 - informational only
        package_version = None
    import transformers

    print(json.dumps({"ready": True, "module": modeling_aesformer.__file__, "version": package_version,
                      "python": sys.executable, "torch": torch.__version__,
                      "transformers": transformers.__version__, "threads": torch.get_num_threads()}), flush=True)
    for line in sys.stdin:
        command = line.split()
        if command == ["quit"]:
            break
        what, precision = command
        with torch.inference_mode():
            start = time.perf_counter()
            output = calls[what](models[precision])
            seconds = time.perf_counter() - start
        print(json.dumps({"seconds": seconds, "score": output.score.float().tolist()}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
