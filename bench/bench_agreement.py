#!/usr/bin/env python
"""bf16 against fp32, at full scale: do the scores agree?

Two models, each run in fp32 and in bf16 on the same inputs:
- the demo's trained model (`aesformer demo [--quick] --output DIR`) over its test split: the with-comments branch
  on the test images that have comments, the image-only branch (adapter "synthetic") on every test image;
- Aesformer-T on the parity reference weights (the weight rule of `../shared/parity/README.md` beside the
  repository, converted with `convert_original_checkpoint`), on generated inputs (random pixels, 64-token comments).

bf16 variants: "bf16" = `from_pretrained(..., dtype=torch.bfloat16)` (what `--dtype bf16` loads: the score heads and
their scale stay fp32; softmax, distribution and score are fp32 in any case), and "bf16, heads too" = the whole
model cast with `.to(torch.bfloat16)` — to see whether keeping the heads in fp32 measurably matters.

Per branch: SRCC between the fp32 and bf16 scores, max and mean |Δscore|, label flips (high/low at the head's
threshold) and how many of them lie where the fp32 score is within 0.05 of the threshold. Goals:
SRCC >= 0.995, max |Δ| <= 0.05, flips only within 0.05 of the threshold.

    python bench/bench_agreement.py --demo-dir aesformer-demo [--no-parity] [--parity-images 32]
"""

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import zlib
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

PARITY_DIR = Path(os.environ.get("AESFORMER_PARITY_DIR", common.REPO_ROOT.parent / "shared" / "parity"))


def agreement(reference, candidate, threshold, near=0.05) -> dict:
    import numpy as np
    from scipy.stats import spearmanr

    a, b = np.asarray(reference, dtype=np.float64), np.asarray(candidate, dtype=np.float64)
    delta = np.abs(a - b)
    flips = (a > threshold) != (b > threshold)
    close = np.abs(a - threshold) <= near
    return {"n": int(a.size), "fp32 score std": float(a.std()), "srcc": float(spearmanr(a, b)[0]),
            "max |Δ|": float(delta.max()), "mean |Δ|": float(delta.mean()), "flips": int(flips.sum()),
            "flips near threshold": int((flips & close).sum()), "near threshold": int(close.sum()),
            "_ok": bool(spearmanr(a, b)[0] >= 0.995 and delta.max() <= 0.05 and not (flips & ~close).any())}


def cast_all(model):
    import torch

    return model.to(torch.bfloat16)


# ------------------------------------------------------------------------------------------------------- the demo
def demo_scores(model_dir: Path, data_dir: Path, variants, batch_size: int) -> dict:
    """{branch: {variant: scores}} and the thresholds, over the demo's test split."""
    import torch
    from transformers import AutoProcessor

    from aesformer_training.collator import AestheticCollator
    from aesformer_training.loaders import load_generic
    from aesformer_training.prediction import IndexedRows, predict, rows_with_comments
    from modeling_aesformer import AesformerModel
    from modeling_aesformer.adapters import load_adapters

    data, _ = load_generic(data_dir)
    rows = data["test"]
    processor = AutoProcessor.from_pretrained(model_dir)
    plans = {"with comments": (rows_with_comments(rows), True, None), "image only": (rows, False, "synthetic")}
    scores, thresholds = {branch: {} for branch in plans}, {}
    for variant, load in variants.items():
        model = load_adapters(load(model_dir), model_dir).eval()
        for branch, (subset, comments, adapter) in plans.items():
            loader = torch.utils.data.DataLoader(IndexedRows(subset), batch_size=batch_size,
                                                 collate_fn=AestheticCollator(processor, include_comments=comments))
            with torch.inference_mode():
                pred = predict(model, loader, adapter=adapter)
            scores[branch][variant] = pred["score"].tolist()
            thresholds[branch] = pred["threshold"].numpy()  # each row's own
        del model
    return scores, thresholds


# ------------------------------------------------------------------------------------------------- parity weights
def parity_state_dict(reference: dict) -> dict:
    """The parity README's weight rule (sorted keys; aliases share the canonical tensor; buffers as zeros)."""
    import torch

    seed, state = reference["seed"], {}
    for entry in reference["manifest"]:
        key, shape = entry["key"], entry["shape"]
        if entry["kind"] != "param" or entry["alias_of"] is not None:
            continue
        g = torch.Generator().manual_seed((zlib.crc32(key.encode("utf-8")) + seed) % 2**31)
        if key == "temp":
            value = torch.tensor(0.07)
        elif key.endswith("weight") and len(shape) == 1:
            value = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            value = 0.02 * torch.randn(shape, generator=g)
        if not math.isclose(value.sum(dtype=torch.float64).item(), entry["sum"], rel_tol=1e-9, abs_tol=1e-9):
            raise RuntimeError(f"{key}: regenerated tensor differs from the manifest")
        state[key] = value
    for entry in reference["manifest"]:
        if entry["alias_of"] is not None:
            state[entry["key"]] = state[entry["alias_of"]]
        elif entry["kind"] != "param":
            state[entry["key"]] = torch.zeros(entry["shape"], dtype=getattr(torch, entry["dtype"]))
    return state


def spread_heads(model, factor: float):
    """Multiplies the score heads' output weights by `factor` (a power of 2: exact in bf16 too). The parity weights
    are random (0.02·N(0,1)): their scores all sit within ~0.01 of each other, and a rank correlation between two
    such lists measures noise. Scaled heads spread the scores like a trained model's (std ~0.5) and amplify any
    difference the bf16 features make by the same factor: a harder test, on the same model for fp32 and bf16."""
    import torch

    with torch.no_grad():
        for head in (model.vision_head, model.vl_image_head, model.vl_text_head):
            head.out_proj.weight.mul_(factor)
    return model


def parity_scores(variants, images: int, batch_size: int, comment_tokens: int, spreads=(1.0,), keep=None) -> dict:
    import torch

    from modeling_aesformer.convert_original import convert_original_checkpoint

    reference = json.loads((PARITY_DIR / "seed-0" / "reference.json").read_text(encoding="utf-8"))
    folder = Path(tempfile.mkdtemp(prefix="aesformer-parity-"))
    try:
        convert_original_checkpoint(parity_state_dict(reference), folder / "aesformer-t")
        g = torch.Generator().manual_seed(7)
        pixels = torch.randn(images, 3, 224, 224, generator=g)
        ids = torch.randint(1000, 28001, (images, comment_tokens), generator=g)
        ids[:, 0], ids[:, -1] = 101, 102
        scores, thresholds = {}, {}
        for variant, load in variants.items():
            model = load(folder / "aesformer-t").eval()
            for spread, branch in ((s, b) for s in spreads for b in ("with comments", "image only")):
                if spread != 1:
                    spread_heads(model, spread)
                out = []
                for start in range(0, images, batch_size):
                    kwargs = {} if branch == "image only" else {"input_ids": ids[start:start + batch_size]}
                    with torch.inference_mode():
                        result = model(pixels[start:start + batch_size], **kwargs)
                    out += result.score.tolist()
                if spread != 1:
                    spread_heads(model, 1 / spread)
                name = branch if spread == 1 else f"{branch}, heads x{spread:g}"
                thresholds[name] = float(result.threshold[0])
                scores.setdefault(name, {})[variant] = out
            del model
        if keep:  # the fp32 model with the last spread, as a folder `aesformer score` can load
            from modeling_aesformer import AesformerImageProcessor, AesformerModel

            spread_heads(AesformerModel.from_pretrained(folder / "aesformer-t"), spreads[-1]).save_pretrained(keep)
            AesformerImageProcessor().save_pretrained(keep)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return scores, thresholds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo-dir", default=None, help="output folder of `aesformer demo` (omit to skip)")
    parser.add_argument("--no-parity", action="store_true", help="skip the parity-weights model")
    parser.add_argument("--parity-images", type=int, default=32, help="generated inputs for the parity model")
    parser.add_argument("--comment-tokens", type=int, default=64)
    parser.add_argument("--spread", type=float, default=64.0,
                        help="also run the parity model with its heads' output weights x SPREAD (default 64; 1 = "
                        "off): random weights give near-constant scores otherwise")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--save-parity-model", default=None, metavar="DIR",
                        help="keep the converted parity model (heads x SPREAD) there, e.g. for bench_decode.py "
                        "--agreement-model")
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/agreement.json)")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)

    common.setup_offline()
    import torch

    from modeling_aesformer import AesformerModel

    info, foreign = common.start_measuring(args.wait_idle)
    variants = {
        "fp32": lambda path: AesformerModel.from_pretrained(path),
        "bf16": lambda path: AesformerModel.from_pretrained(path, dtype=torch.bfloat16),
        "bf16, heads too": lambda path: cast_all(AesformerModel.from_pretrained(path)),
    }
    suites = {}
    if args.demo_dir:
        demo = Path(args.demo_dir)
        suites["demo model, test split"] = demo_scores(demo / "stage1" / "model", demo / "data" / "synthetic",
                                                       variants, args.batch_size)
    if not args.no_parity:
        spreads = (1.0,) if args.spread == 1 else (1.0, args.spread)
        suites["Aesformer-T, parity weights"] = parity_scores(variants, args.parity_images, args.batch_size,
                                                              args.comment_tokens, spreads, args.save_parity_model)
    rows = []
    for suite, (scores, thresholds) in suites.items():
        for branch, by_variant in scores.items():
            for variant in ("bf16", "bf16, heads too"):
                row = {"model": suite, "branch": branch, "variant": variant}
                row.update(agreement(by_variant["fp32"], by_variant[variant], thresholds[branch]))
                row["goals met"] = "yes" if row.pop("_ok") else "NO"
                rows.append(row)
    print(common.table(rows, ["model", "branch", "variant", "n", "fp32 score std", "srcc", "max |Δ|", "mean |Δ|",
                              "flips", "flips near threshold", "near threshold", "goals met"],
                       title="bf16 vs fp32 scores (goals: SRCC >= 0.995, max |Δ| <= 0.05, flips only within 0.05 "
                             "of the threshold)"))
    others = common.report_foreign(foreign)
    path = common.save_results("agreement", {"machine": info, "rows": rows, "demo_dir": args.demo_dir,
                                              "scores": {k: v[0] for k, v in suites.items()}},
                               args.output, foreign_cores=others)
    print(f"# wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
