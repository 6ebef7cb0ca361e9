"""Efficiency of each CPU path of Aesformer-T: eager torch fp32 / bf16 and both branches on the ONNX runtimes
(`modeling_aesformer.onnx_backend`: ONNX Runtime fp32, OpenVINO f32 / bf16), timed side by side
(round-robin) in one run, each as images/s, as a ratio to eager fp32, and as achieved GFLOP/s over this machine's
own GEMM rate of its precision (a 2048^3 matmul, fp32 and bf16, measured in the same run) — so that runs on
different hosts compare. Also what `--dtype auto --backend auto` picks here (the probe, not cached) and what it cost.

    python bench/bench_backends.py [--batch 8] [--repeats 3] [--threads 2] [--preset aesformer-t] [--wait-idle 600]

FLOPs per image (Aesformer-T at 224 px, counted by torch's FlopCounterMode as in the seed-code bench): 14.41 GFLOP
without comments, 22.77 with 64 comment tokens; other presets are counted here. Random weights (speed and
agreement of the runtimes with torch do not depend on training). JSON: bench/results/backends.json.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import common  # noqa: E402

TOKENS = 64


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="aesformer-t")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported; default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch and runtime threads (default: torch's)")
    parser.add_argument("--no-comments", action="store_true",
                        help="skip the with-comments branch (eager and its ONNX file)")
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/backends.json)")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    common.setup_offline()
    common.set_threads(args.threads)

    import numpy as np
    import torch

    from modeling_aesformer import AesformerConfig, AesformerModel
    from modeling_aesformer import onnx_backend, precision

    torch.manual_seed(0)
    config = AesformerConfig.from_preset(args.preset)
    model = AesformerModel(config).eval()
    size = config.vision_config.image_size
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(args.batch, 3, size, size, generator=g)
    ids = torch.randint(5, config.text_config.vocab_size, (args.batch, TOKENS), generator=g)
    bf16_model = AesformerModel(config).eval()
    bf16_model.load_state_dict(model.state_dict())
    bf16_model.to(torch.bfloat16)

    flops = {"image only": common.count_flops(lambda: model(pixels[:1])),
             "with comments": common.count_flops(lambda: model(pixels[:1], input_ids=ids[:1]))}

    runtimes = onnx_backend.installed_runtimes()
    folder = Path(tempfile.mkdtemp(prefix="aesformer-bench-onnx-"))
    exported = None
    if runtimes:
        start = time.perf_counter()
        exported = onnx_backend.export_image_only(model, folder / "model.onnx", "base")
        export_s = time.perf_counter() - start
        print(f"exported the image-only branch in {export_s:.0f} s", flush=True)
        if not args.no_comments:
            start = time.perf_counter()
            exported_comments = onnx_backend.export_with_comments(model, folder / onnx_backend.WITH_COMMENTS_FILE)
            print(f"exported the with-comments branch in {time.perf_counter() - start:.0f} s", flush=True)

    # the probe first, before any runtime's threads exist (not cached: a fresh measurement)
    start = time.perf_counter()
    measured = precision.measured_paths(config, cache_dir=folder / "cache")[0]
    probe_s = time.perf_counter() - start
    chosen = precision.choose_path(measured)

    info, foreign = common.start_measuring(args.wait_idle)
    fp32_mm, mm_flops = common.matmul_candidate(2048)
    bf16_mm, _ = common.matmul_candidate(2048, torch.bfloat16)
    candidates = {"GEMM fp32": fp32_mm, "GEMM bf16": bf16_mm}
    paths = {}  # name -> (branch, precision of the GEMM rate it is compared with)

    def eager(m, **kwargs):
        def run():
            with torch.inference_mode():
                m(pixels, **kwargs)
        return run

    candidates["eager fp32, image only"], paths["eager fp32, image only"] = eager(model), ("image only", "fp32")
    candidates["eager bf16, image only"], paths["eager bf16, image only"] = eager(bf16_model), ("image only", "bf16")
    if not args.no_comments:
        candidates["eager fp32, with comments"] = eager(model, input_ids=ids)
        paths["eager fp32, with comments"] = ("with comments", "fp32")
        candidates["eager bf16, with comments"] = eager(bf16_model, input_ids=ids)
        paths["eager bf16, with comments"] = ("with comments", "bf16")
    answers = {}  # path name -> a call returning its outputs, on the same inputs as eager
    array = pixels.numpy()
    text = {"input_ids": ids.numpy(), "attention_mask": np.ones_like(ids.numpy()),
            "token_type_ids": np.zeros_like(ids.numpy())}
    for backend, dtype in (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")):
        if backend in runtimes:
            answer = onnx_backend.RuntimeAnswer(exported, backend, dtype)
            name = f"{backend} {dtype}, image only"
            candidates[name] = answers[name] = (lambda a=answer: a(array))
            paths[name] = ("image only", dtype)
            if not args.no_comments:
                answer = onnx_backend.RuntimeAnswer(exported_comments, backend, dtype)
                name = f"{backend} {dtype}, with comments"
                candidates[name] = answers[name] = (lambda a=answer: a(array, **text))
                paths[name] = ("with comments", dtype)
    if "onnxruntime" in runtimes:  # int8: the quantized image-only file `--dtype int8` runs (random weights here)
        import os

        os.environ["AESFORMER_CACHE"] = str(folder / "cache")  # quantized beside the export, removed with it
        answer = onnx_backend.RuntimeAnswer(onnx_backend.int8_file_for(exported, log=lambda *a: None), "onnxruntime",
                                            "int8")
        name = "onnxruntime int8, image only"
        candidates[name] = answers[name] = (lambda a=answer: a(array))
        paths[name] = ("image only", "int8")
    times = common.interleaved(candidates, repeats=args.repeats, warmup=1)
    foreign_cores = common.report_foreign(foreign)

    gemm = {"fp32": mm_flops / common.median(times["GEMM fp32"]) / 1e9,
            "bf16": mm_flops / common.median(times["GEMM bf16"]) / 1e9}
    with torch.inference_mode():
        reference = {"image only": model(pixels).score.numpy()}
        if not args.no_comments:
            reference["with comments"] = model(pixels, input_ids=ids).score.numpy()
    rows = []
    eager_fp32 = {branch: args.batch / common.median(times[f"eager fp32, {branch}"])
                  for branch in ("image only", "with comments") if f"eager fp32, {branch}" in times}
    for name, (branch, dtype) in paths.items():
        rate = args.batch / common.median(times[name])
        achieved = rate * flops[branch] / 1e9
        row = {"path": name, "img/s": rate, "x eager fp32": rate / eager_fp32[branch], "GFLOP/s": achieved,
               # no int8 GEMM rate is measured: int8 has no efficiency figure, only its speed
               "of GEMM": achieved / gemm[dtype] if dtype in gemm else None,
               "GEMM rate": f"{dtype} {gemm[dtype]:.0f}" if dtype in gemm else "",
               "spread": common.spread(times[name])}
        if name in answers:
            row["max |score - torch fp32|"] = float(np.abs(answers[name]()["score"] - reference[branch]).max())
        rows.append(row)
    columns = ["path", "img/s", "x eager fp32", "GFLOP/s", "of GEMM", "GEMM rate", "spread",
               "max |score - torch fp32|"]
    title = (f"{args.preset}, batch {args.batch}, {size} px, {torch.get_num_threads()} threads, {info['cpu']}; "
             f"GEMM fp32 {gemm['fp32']:.0f}, bf16 {gemm['bf16']:.0f} GFLOP/s; "
             f"{flops['image only'] / 1e9:.2f} / {flops['with comments'] / 1e9:.2f} GFLOP per image")
    print(common.table(rows, columns, title))
    print()
    by_name = {row["path"]: row for row in rows}
    goals = []
    if "onnxruntime fp32, image only" in by_name:
        goals.append(common.goal_row("ONNX Runtime fp32 vs eager fp32, image only",
                                     by_name["onnxruntime fp32, image only"]["x eager fp32"], 1.3, "x"))
    if "openvino bf16, image only" in by_name:
        goals.append(common.goal_row("OpenVINO bf16, fraction of the bf16 GEMM rate",
                                     by_name["openvino bf16, image only"]["of GEMM"], 0.75, ""))
    if "onnxruntime int8, image only" in by_name:
        goals.append(common.goal_row("ONNX Runtime int8 vs eager fp32, image only",
                                     by_name["onnxruntime int8, image only"]["x eager fp32"], 1.8, "x"))
    # the with-comments branch on a runtime: used by `score --backend` for the rows with comments; faster at all?
    for runtime, dtype in (("onnxruntime", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")):
        if f"{runtime} {dtype}, with comments" in by_name and f"eager {dtype}, with comments" in by_name:
            goals.append(common.goal_row(f"{runtime} {dtype} vs eager {dtype}, with comments",
                                         by_name[f"{runtime} {dtype}, with comments"]["img/s"]
                                         / by_name[f"eager {dtype}, with comments"]["img/s"], 1.0, "x"))
    for branch in ("image only", "with comments"):
        if f"eager bf16, {branch}" in by_name:
            goals.append(common.goal_row(f"eager bf16 ({branch}), fraction of the bf16 GEMM rate",
                                         by_name[f"eager bf16, {branch}"]["of GEMM"], 0.55, ""))
    print(common.table(goals, ["goal", "target", "measured", "met"]))
    print()
    print(f"auto here: {chosen[1]} on {chosen[0]} ({chosen[2]}); the probe took {probe_s:.2f} s")
    common.save_results("backends", {
        "machine": info, "preset": args.preset, "batch": args.batch, "gemm_gflops": gemm, "flops": flops,
        "rows": rows, "goals": [{k: v for k, v in g.items() if not k.startswith("_")} for g in goals],
        "probe": {"seconds": probe_s, "measured": measured, "chosen": list(chosen)},
    }, args.output, foreign_cores)
    import shutil

    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
