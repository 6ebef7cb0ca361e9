#!/usr/bin/env python
"""GPU benchmark, for a machine with a CUDA device (about 4 minutes on one H100/H200: one short, prepared run). Exits cleanly with a message
when there is no CUDA device.

1. Correctness first: Aesformer-T (random weights, seed 0) in strict fp32 (TF32 off) is the reference; fp32 with
   TF32, bf16 autocast and fp16 autocast must agree within the tolerances below, image-only and with 64-token
   comments. A precision that fails is reported and left out of the speed table.
2. Images/s and peak GPU memory at batch 1, 8, 32, 64, 128 and 256 for each precision that passed, both branches
   (eager; image-only, and with 64-token comments), then the opt-in compiled path (`model.compile_for_inference()`)
   at the largest batch in bf16.
3. End to end: `modeling_aesformer.scoring.score_files` on `--e2e-images` JPEGs (640x480, written first) with
   `--workers` decoding workers, batch 128, in the fastest precision that passed: images/s from files to rows.

Tolerances (max over the batch, against strict fp32):
   precision   |Δ distribution|   |Δ score|   relative |Δ vision/vl embeds|
   tf32        2e-3               1e-2        1e-2
   bf16        1e-2               5e-2        5e-2
   fp16        2e-3               1e-2        1e-2

    python bench/bench_gpu.py                     # needs CUDA; writes bench/results/gpu.json
    python bench/bench_gpu.py --device cpu --preset tiny --batches 2,4 --no-compile   # smoke test of the script
"""

import argparse
import contextlib
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

TOLERANCES = {  # precision -> (distribution, score, relative embeds)
    "tf32": (2e-3, 1e-2, 1e-2),
    "bf16": (1e-2, 5e-2, 5e-2),
    "fp16": (2e-3, 1e-2, 1e-2),
}


def precision_context(precision: str, device_type: str):
    import torch

    if precision == "bf16":
        return torch.autocast(device_type, dtype=torch.bfloat16)
    if precision == "fp16":
        return torch.autocast(device_type, dtype=torch.float16)
    return contextlib.nullcontext()


def set_tf32(enabled: bool) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.allow_tf32 = enabled


def relative(a, b) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


def score_end_to_end(model, device, args, precision: str) -> dict:
    """`score_files` over `args.e2e_images` JPEGs (640x480, smooth noise) with `args.workers` decoding workers,
    batch 128, the model in `precision`: images/s from files to rows (decoding overlapped with the model)."""
    import tempfile

    import numpy as np
    import PIL.Image
    import torch

    from modeling_aesformer import AesformerImageProcessor
    from modeling_aesformer.scoring import score_files

    size = model.config.vision_config.image_size
    with tempfile.TemporaryDirectory(prefix="aesformer-gpu-e2e-") as folder:
        rng = np.random.default_rng(0)
        paths = []
        for i in range(args.e2e_images):
            small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
            path = os.path.join(folder, f"{i}.jpg")
            PIL.Image.fromarray(small).resize((640, 480), PIL.Image.BICUBIC).save(path, quality=90)
            paths.append(path)
        processor = AesformerImageProcessor(size={"height": size, "width": size})
        dtype = torch.bfloat16 if precision == "bf16" else (torch.float16 if precision == "fp16" else None)
        list(score_files(model, processor, paths[:128], batch_size=128, num_workers=args.workers, device=device,
                         dtype=dtype))  # warm-up: workers, kernels
        start = time.perf_counter()
        rows = list(score_files(model, processor, paths, batch_size=128, num_workers=args.workers, device=device))
        seconds = time.perf_counter() - start
    failed = sum(1 for row in rows if row.get("error"))
    return {"images": len(paths), "workers": args.workers, "batch": 128, "precision": precision,
            "seconds": seconds, "images/s": len(paths) / seconds, "failed": failed}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="aesformer-t")
    parser.add_argument("--batches", default="1,8,32,64,128,256")
    parser.add_argument("--e2e-images", type=int, default=1024, help="JPEGs scored end to end (0: skip)")
    parser.add_argument("--workers", type=int, default=min(8, max(1, (os.cpu_count() or 2) - 1)),
                        help="decoding workers of the end-to-end run")
    parser.add_argument("--check-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--budget", type=float, default=240.0, help="seconds; later parts are skipped past it")
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/gpu.json)")
    args = parser.parse_args(argv)

    common.setup_offline()
    import torch

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_gpu: no CUDA device on this machine; nothing to measure (run it on a GPU machine).")
        return 0
    started = time.perf_counter()

    def over_budget() -> bool:
        return time.perf_counter() - started > args.budget

    from modeling_aesformer import AesformerConfig, AesformerModel

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    info = common.machine_info()
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    cuda=torch.version.cuda, bf16_supported=torch.cuda.is_bf16_supported())
    print(f"# {info.get('gpu', device)}; torch {info['torch']}")
    torch.manual_seed(0)
    model = AesformerModel(AesformerConfig.from_preset(args.preset)).eval().to(device)
    size = model.config.vision_config.image_size
    vocab = model.config.text_config.vocab_size
    batches = [int(b) for b in args.batches.split(",")]

    def inputs(batch, seed=1, comments=False):
        g = torch.Generator().manual_seed(seed)
        data = {"pixel_values": torch.randn(batch, 3, size, size, generator=g)}
        if comments:
            ids = torch.randint(min(1000, vocab - 3), min(28000, vocab), (batch, 64), generator=g)
            ids[:, 0], ids[:, -1] = min(101, vocab - 2), min(102, vocab - 1)
            data.update(input_ids=ids, attention_mask=torch.ones_like(ids), token_type_ids=torch.zeros_like(ids))
        return {k: v.to(device) for k, v in data.items()}

    # ---- 1. correctness
    precisions = ["tf32", "bf16", "fp16"] if device.type == "cuda" else ["bf16"]
    checks, passed = [], ["fp32"]
    with torch.inference_mode():
        for comments in (False, True):
            data = inputs(args.check_batch, comments=comments)
            set_tf32(False)
            heads = model.forward_heads(**data)  # the embeddings are the heads' inputs
            reference = heads.output
            embeds = "vl_image" if comments else "vision"
            for precision in precisions:
                set_tf32(precision == "tf32")
                with precision_context(precision, device.type):
                    other = model.forward_heads(**data)
                out = other.output
                set_tf32(False)
                dist = float((out.distribution.float() - reference.distribution).abs().max())
                score = float((out.score.float() - reference.score).abs().max())
                rel = relative(other.embeds[embeds], heads.embeds[embeds])
                tol = TOLERANCES[precision]
                ok = dist <= tol[0] and score <= tol[1] and rel <= tol[2]
                checks.append({"precision": precision, "branch": "with comments" if comments else "image-only",
                               "max abs Δ distribution": dist, "max abs Δ score": score, "rel. Δ embeds": rel,
                               "tolerance": "/".join(f"{t:g}" for t in tol), "ok": "yes" if ok else "FAIL"})
    for precision in precisions:
        if all(c["ok"] == "yes" for c in checks if c["precision"] == precision):
            passed.append(precision)
    print(common.table(checks, ["precision", "branch", "max abs Δ distribution", "max abs Δ score", "rel. Δ embeds",
                                "tolerance", "ok"], title="Agreement with strict fp32 (batch %d)" % args.check_batch))

    # ---- 2. speed
    def timed(fn, precision):
        set_tf32(precision == "tf32")
        try:
            with torch.inference_mode(), precision_context(precision, device.type):
                times = common.interleaved({"x": fn}, repeats=args.repeats, warmup=args.warmup, sync=sync)["x"]
        finally:
            set_tf32(False)
        return common.median(times)

    def peak_gb():
        return round(torch.cuda.max_memory_allocated(device) / 2**30, 2) if device.type == "cuda" else None

    rows = []
    for comments in (False, True):
        for batch in batches:
            data = inputs(batch, comments=comments)
            for precision in passed:
                if over_budget():
                    break
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                seconds = timed(lambda: model(**data), precision)
                rows.append({"path": "eager", "branch": "with comments" if comments else "image-only",
                             "precision": precision, "batch": batch, "ms/batch": seconds * 1e3,
                             "images/s": batch / seconds, "peak GiB": peak_gb()})
            del data
    compile_seconds = None
    if not args.no_compile and not over_budget():
        precision = "bf16" if "bf16" in passed else "fp32"
        batch = batches[-1]
        data = inputs(batch)
        try:
            model.compile_for_inference()
            start = time.perf_counter()
            with torch.inference_mode(), precision_context(precision, device.type):
                model(**data)
                sync()
            compile_seconds = time.perf_counter() - start
            seconds = timed(lambda: model(**data), precision)
            rows.append({"path": f"compiled ({compile_seconds:.0f} s to compile)", "branch": "image-only",
                         "precision": precision, "batch": batch, "ms/batch": seconds * 1e3,
                         "images/s": batch / seconds})
        except Exception as err:  # noqa: BLE001 - report it, keep the eager results
            print(f"compile_for_inference failed: {type(err).__name__}: {str(err)[:500]}", file=sys.stderr)
            rows.append({"path": f"compiled: FAILED ({type(err).__name__})", "branch": "image-only",
                         "precision": precision, "batch": batch})
    end_to_end = None
    if args.e2e_images and not over_budget():
        end_to_end = score_end_to_end(model, device, args, "bf16" if "bf16" in passed else "fp32")
    print()
    print(common.table(rows, ["path", "branch", "precision", "batch", "ms/batch", "images/s", "peak GiB"],
                       title=f"{args.preset} on {info.get('gpu', device)}"))
    if end_to_end:
        print()
        print(common.table([end_to_end], list(end_to_end), title="End to end: JPEG files to result rows"))
    skipped = over_budget()
    if skipped:
        print(f"(stopped early: over the {args.budget:.0f} s budget)")
    print(f"# {time.perf_counter() - started:.0f} s in all")
    path = common.save_results("gpu", {"machine": info, "checks": checks, "passed": passed, "rows": rows,
                                       "tolerances": TOLERANCES, "compile_seconds": compile_seconds,
                                       "stopped_early": skipped, "preset": args.preset,
                                       "end_to_end": end_to_end}, args.output)
    print(f"# wrote {path}")
    return 0 if len(passed) == len(precisions) + 1 else 1


if __name__ == "__main__":
    sys.exit(main())
