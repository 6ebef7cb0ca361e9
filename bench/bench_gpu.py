#!/usr/bin/env python
"""GPU benchmark, for a machine with a CUDA device (under 3 minutes on one H100/H200). Exits cleanly with a message
when there is no CUDA device.

1. Correctness first: Aesformer-T (random weights, seed 0) in strict fp32 (TF32 off) is the reference; fp32 with
   TF32, bf16 autocast and fp16 autocast must agree within the tolerances below, image-only and with 64-token
   comments. A precision that fails is reported and left out of the speed table.
2. Images/s at batch 64, 128 and 256 for each precision that passed (eager, image-only; with comments at the
   largest batch), then the opt-in compiled path (`model.compile_for_inference()`) at the largest batch in bf16.

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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--preset", default="aesformer-t")
    parser.add_argument("--batches", default="64,128,256")
    parser.add_argument("--check-batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--budget", type=float, default=170.0, help="seconds; later parts are skipped past it")
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
            reference = model(**data)
            embeds = "vl_image_embeds" if comments else "vision_embeds"
            for precision in precisions:
                set_tf32(precision == "tf32")
                with precision_context(precision, device.type):
                    out = model(**data)
                set_tf32(False)
                dist = float((out.distribution.float() - reference.distribution).abs().max())
                score = float((out.score.float() - reference.score).abs().max())
                rel = relative(out[embeds], reference[embeds])
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

    rows = []
    for batch in batches:
        data = inputs(batch)
        for precision in passed:
            if over_budget():
                break
            seconds = timed(lambda: model(**data), precision)
            rows.append({"path": "eager", "branch": "image-only", "precision": precision, "batch": batch,
                         "ms/batch": seconds * 1e3, "images/s": batch / seconds})
        del data
    if not over_budget():
        batch = batches[-1]
        data = inputs(batch, comments=True)
        for precision in passed:
            if over_budget():
                break
            seconds = timed(lambda: model(**data), precision)
            rows.append({"path": "eager", "branch": "with comments", "precision": precision, "batch": batch,
                         "ms/batch": seconds * 1e3, "images/s": batch / seconds})
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
    if device.type == "cuda":
        info["max_memory_allocated_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    print()
    print(common.table(rows, ["path", "branch", "precision", "batch", "ms/batch", "images/s"],
                       title=f"{args.preset} on {info.get('gpu', device)}"))
    skipped = over_budget()
    if skipped:
        print(f"(stopped early: over the {args.budget:.0f} s budget)")
    print(f"# {time.perf_counter() - started:.0f} s in all")
    path = common.save_results("gpu", {"machine": info, "checks": checks, "passed": passed, "rows": rows,
                                       "tolerances": TOLERANCES, "compile_seconds": compile_seconds,
                                       "stopped_early": skipped, "preset": args.preset}, args.output)
    print(f"# wrote {path}")
    return 0 if len(passed) == len(precisions) + 1 else 1


if __name__ == "__main__":
    sys.exit(main())
