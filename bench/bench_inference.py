#!/usr/bin/env python
"""Inference speed on CPU, fp32: Aesformer-T image-only and with 64-token comments at batch 1 and 8, a LAION-style
predictor (CLIP ViT-L/14 vision tower, random weights, + a linear head) at batch 8, this machine's fp32 matmul
peak, FLOPs per image and the achieved fraction of the peak — all in one run, interleaved (A B C A B C ...), after
a warm-up round, median of the repeats.

    python bench/bench_inference.py                 # ~1.5 min on 2 cores
    python bench/bench_inference.py --compile       # + the opt-in torch.compile path (adds ~1-2 min of compiling)

Random weights: speed does not depend on the values; nothing is downloaded. Writes bench/results/inference.json.
"""

import argparse
import copy
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

CLIP_L14 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                image_size=224, patch_size=14, projection_dim=768, hidden_act="quick_gelu")


def build_aesformer(seed: int = 0):
    import torch

    from modeling_aesformer import AesformerConfig, AesformerModel

    torch.manual_seed(seed)
    return AesformerModel(AesformerConfig.from_preset("aesformer-t")).eval()


class ClipAestheticPredictor:
    """LAION-aesthetic-predictor shape: CLIP ViT-L/14 image embedding, L2-normalised, then a linear layer."""

    def __init__(self, seed: int = 0):
        import torch
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        torch.manual_seed(seed)
        self.tower = CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_L14)).eval()
        self.head = torch.nn.Linear(CLIP_L14["projection_dim"], 1).eval()

    def __call__(self, pixel_values):
        import torch.nn.functional as F

        embeds = self.tower(pixel_values=pixel_values).image_embeds
        return self.head(F.normalize(embeds, dim=-1)).squeeze(-1)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.tower.parameters()) + sum(p.numel() for p in self.head.parameters())


def load_baseline(revision: str, like):
    """Aesformer-T built from the model file of git `revision` (e.g. a commit before an optimisation), holding the
    same weights as `like`: a side-by-side before/after in one run."""
    import atexit
    import importlib.util
    import shutil
    import subprocess
    import tempfile

    source = subprocess.run(["git", "show", f"{revision}:modeling_aesformer/modeling_aesformer.py"],
                            cwd=common.REPO_ROOT, capture_output=True, text=True, check=True).stdout
    source = source.replace("from .configuration_aesformer import",
                            "from modeling_aesformer.configuration_aesformer import")
    folder = tempfile.mkdtemp(prefix="aesformer-baseline-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    path = os.path.join(folder, "baseline_modeling_aesformer.py")
    with open(path, "w", encoding="utf-8") as f:
        f.write(source)
    spec = importlib.util.spec_from_file_location("baseline_modeling_aesformer", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    baseline = module.AesformerModel(like.config).eval()
    baseline.load_state_dict(like.state_dict())
    return baseline


def comment_inputs(batch: int, length: int, vocab_size: int, seed: int = 0):
    """`batch` comments of exactly `length` tokens ([CLS] body [SEP]), all real (no padding)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, min(28000, vocab_size), (batch, length), generator=g)
    input_ids[:, 0], input_ids[:, -1] = 101, 102
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids),
            "token_type_ids": torch.zeros_like(input_ids)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds (median reported; default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--comment-tokens", type=int, default=64, help="tokens per comment (default 64)")
    parser.add_argument("--compile", action="store_true",
                        help="also time the opt-in compiled path (model.compile_for_inference())")
    parser.add_argument("--no-clip", action="store_true", help="skip the CLIP ViT-L/14 predictor")
    parser.add_argument("--baseline", metavar="GIT_REV", default=None,
                        help="also time the model file of this git revision (same weights), e.g. 2532a45")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/inference.json)")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)

    common.setup_offline()
    import torch

    common.set_threads(args.threads)
    info, foreign = common.start_measuring(args.wait_idle)
    print(f"# {info['cpu']}, {info['logical_cpus']} logical CPUs, {info['torch_threads']} torch threads, "
          f"torch {info['torch']}, load {info['load_average_start']}")

    model = build_aesformer()
    vocab = model.config.text_config.vocab_size
    g = torch.Generator().manual_seed(1)
    pixels = {b: torch.randn(b, 3, 224, 224, generator=g) for b in (1, 8)}
    comments = {b: comment_inputs(b, args.comment_tokens, vocab) for b in (1, 8)}
    peak_fn, peak_flops = common.matmul_candidate(2048)

    # What each candidate computes, and its batch.
    plan = {
        "matmul 2048^3 (fp32 peak)": (peak_fn, None),
        "Aesformer-T image-only b1": (lambda: model(pixels[1]), 1),
        "Aesformer-T image-only b8": (lambda: model(pixels[8]), 8),
        f"Aesformer-T + {args.comment_tokens}-token comments b1": (lambda: model(pixels[1], **comments[1]), 1),
        f"Aesformer-T + {args.comment_tokens}-token comments b8": (lambda: model(pixels[8], **comments[8]), 8),
    }
    if args.baseline:
        baseline = load_baseline(args.baseline, model)
        for b in (1, 8):
            plan[f"baseline {args.baseline}: image-only b{b}"] = (lambda b=b: baseline(pixels[b]), b)
            plan[f"baseline {args.baseline}: + {args.comment_tokens}-token comments b{b}"] = (
                lambda b=b: baseline(pixels[b], **comments[b]), b)
    clip = None
    if not args.no_clip:
        clip = ClipAestheticPredictor()
        plan["CLIP ViT-L/14 + linear (LAION-style) b8"] = (lambda: clip(pixels[8]), 8)

    compile_seconds = None
    if args.compile:
        compiled = copy.deepcopy(model)
        compiled.compile_for_inference()
        start = time.perf_counter()
        with torch.inference_mode():
            compiled(pixels[8])  # compiles (once per input shape)
        compile_seconds = time.perf_counter() - start
        print(f"# compile_for_inference: first call (compiling) took {compile_seconds:.0f} s (inductor caches on disk: "
              f"set TORCHINDUCTOR_CACHE_DIR to an empty folder for a cold compile)")
        plan["Aesformer-T image-only b8, compiled"] = (lambda: compiled(pixels[8]), 8)

    # FLOPs per image, counted at batch 1 (matmuls, convolutions, attention).
    flops = {}
    with torch.inference_mode():
        flops["image_only"] = common.count_flops(lambda: model(pixels[1]))
        flops["with_comments"] = common.count_flops(lambda: model(pixels[1], **comments[1]))
        if clip is not None:
            flops["clip"] = common.count_flops(lambda: clip(pixels[1]))

    with torch.inference_mode():
        times = common.interleaved({k: fn for k, (fn, _) in plan.items()}, repeats=args.repeats,
                                   warmup=args.warmup)
    load_end = common.load_average()

    peak = peak_flops / common.median(times["matmul 2048^3 (fp32 peak)"])
    rows = []
    for name, (_, batch) in plan.items():
        seconds = common.median(times[name])
        row = {"candidate": name, "batch": batch, "ms/batch": seconds * 1e3, "spread": common.spread(times[name])}
        if batch is None:
            row.update({"GFLOP/s": peak / 1e9, "% of peak": 100.0})
        else:
            kind = "clip" if name.startswith("CLIP") else ("with_comments" if "comments" in name else "image_only")
            # (a baseline revision computes the same FLOPs as the current model)
            per_image = flops.get(kind)
            ips = batch / seconds
            row.update({"images/s": ips, "GFLOP/img": per_image / 1e9,
                        "GFLOP/s": per_image * ips / 1e9, "% of peak": 100.0 * per_image * ips / peak})
        rows.append(row)
    by_name = {r["candidate"]: r for r in rows}

    img8 = by_name["Aesformer-T image-only b8"]["images/s"]
    cmt8 = by_name[f"Aesformer-T + {args.comment_tokens}-token comments b8"]["images/s"]
    goals = [
        common.goal_row("image-only, batch 8, default path", img8, 8.8, "img/s"),
        common.goal_row("with 64-token comments, batch 8", cmt8, 6.2, "img/s"),
    ]
    if clip is not None:
        clip8 = by_name["CLIP ViT-L/14 + linear (LAION-style) b8"]["images/s"]
        goals.append(common.goal_row("image-only vs CLIP-L/14 predictor (batch 8)", img8 / clip8, 5.0, "×"))
    if args.compile:
        goals.append(common.goal_row("image-only, batch 8, compile_for_inference",
                                     by_name["Aesformer-T image-only b8, compiled"]["images/s"], 10.5, "img/s"))
    print()
    print(common.table(rows, ["candidate", "batch", "ms/batch", "images/s", "spread", "GFLOP/img", "GFLOP/s",
                              "% of peak"], title="Inference, fp32, CPU (median of interleaved repeats)"))
    print()
    print(common.table(goals, ["goal", "target", "measured", "met"], title="Goals"))
    print()
    print("vs the original code: bench/bench_seed_code.py runs it in the same run, alternating, on the same "
          "inputs (a figure from another run never enters a ratio)")

    others = common.report_foreign(foreign)
    path = common.save_results("inference", {
        "machine": info, "load_average_end": load_end, "repeats": args.repeats, "warmup": args.warmup,
        "comment_tokens": args.comment_tokens, "matmul_peak_gflops": peak / 1e9,
        "flops_per_image": flops, "rows": rows, "goals": goals,
        "compile_seconds": compile_seconds, "raw_seconds": times, "baseline_revision": args.baseline,
        "parameters": {"aesformer_t": sum(p.numel() for p in model.parameters()),
                       "clip_predictor": clip.num_parameters() if clip is not None else None},
    }, args.output, foreign_cores=others)
    print(f"# wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
