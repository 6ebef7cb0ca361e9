#!/usr/bin/env python
"""`aesformer score` on camera-size JPEGs: does decoding keep up with the model?

Generates a folder of 12-megapixel JPEGs (4000x3000, a smooth scene plus sensor-like noise, ~3-4 MB each; kept in
a temporary folder, or `--folder` to reuse one), saves an Aesformer-T (random weights) with its image processor, and
measures in one run, interleaved:
- decode + preprocess alone, per image, one process: full decode vs reduced (Pillow's JPEG draft mode);
- the model alone (batches of preprocessed tensors), images/s, at the precision asked for (`--dtype`);
- `aesformer score FOLDER` end to end (a fresh process; its own final line "scored N images in T s (R images/s)"):
  the default (reduced decode) and `--full-decode`, at the same precision.
Goal: `aesformer score` >= 0.6x the model-only images/s at the same precision.

With `--agreement-model DIR` (e.g. the demo's trained model, `DIR/stage1/model` of `aesformer demo`), it also
scores the folder with that model twice — reduced decode + bf16 and full decode + fp32 — and reports the largest
score difference (goal: <= 0.1).

    python bench/bench_decode.py [--images 48] [--dtype bf16] [--repeats 2] [--agreement-model DIR]
"""

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

FINAL_LINE = re.compile(r"scored (\d+) images in ([\d.]+) s \(([\d.]+) images/s\)")


def make_jpegs(folder: Path, count: int, size=(4000, 3000)) -> list:
    import numpy as np
    import PIL.Image

    from modeling_aesformer.toy import draw_scene

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        path = folder / f"photo-{i:03d}.jpg"
        if not path.exists():
            rng = np.random.default_rng(i)
            scene = draw_scene(i, size=(400, 300)).resize(size, PIL.Image.BICUBIC)
            noisy = np.asarray(scene, dtype=np.int16) + rng.integers(-12, 13, (size[1], size[0], 3), dtype=np.int16)
            PIL.Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(path, quality=92)
        paths.append(path)
    return paths


def score_command(folder, model_dir, output, dtype, extra=()):
    aesformer = Path(sys.executable).with_name("aesformer")
    return [str(aesformer), "score", str(folder), "--model", str(model_dir), "--output", str(output), "--overwrite",
            "--dtype", dtype, *extra]


def run_score(command) -> dict:
    result = subprocess.run(command, capture_output=True, text=True)
    match = FINAL_LINE.search(result.stdout)
    if result.returncode != 0 or not match:
        raise RuntimeError(f"{' '.join(command)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    precision = next((line for line in result.stdout.splitlines() if "precision:" in line), "")
    return {"images": int(match.group(1)), "seconds": float(match.group(2)), "images/s": float(match.group(3)),
            "precision line": precision.strip()}


def read_scores(path) -> dict:
    with open(path, encoding="utf-8", newline="") as f:
        return {row["path"]: float(row["score"]) for row in csv.DictReader(f) if row["score"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=48, help="12-megapixel JPEGs to generate (default 48)")
    parser.add_argument("--folder", default=None, help="where the JPEGs are (generated when missing; kept)")
    parser.add_argument("--dtype", default="bf16", choices=("fp32", "bf16"), help="precision of both sides")
    parser.add_argument("--batch-size", type=int, default=16, help="batch of the model-only timing and of score")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds (median reported; default 2)")
    parser.add_argument("--agreement-model", default=None, metavar="DIR",
                        help="a trained model folder: reduced+bf16 vs full+fp32 score differences on the folder")
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/decode.json)")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)

    common.setup_offline()
    import torch

    from modeling_aesformer import AesformerImageProcessor, AesformerModel
    from modeling_aesformer.scoring import ImageEncodingDataset
    from bench_inference import build_aesformer

    info, foreign = common.start_measuring(args.wait_idle)
    print(f"# {info['cpu']}, {info['logical_cpus']} logical CPUs, load {info['load_average_start']}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="aesformer-bench-decode-"))
    folder = Path(args.folder) if args.folder else work / "photos"
    try:
        start = time.perf_counter()
        paths = make_jpegs(folder, args.images)
        megabytes = sum(p.stat().st_size for p in paths) / len(paths) / 1e6
        print(f"# {len(paths)} JPEGs of 4000x3000 ({megabytes:.1f} MB each) ready in {time.perf_counter() - start:.0f} s",
              flush=True)
        model_dir = work / "aesformer-t"
        processor = AesformerImageProcessor()
        build_aesformer().save_pretrained(model_dir)
        processor.save_pretrained(model_dir)
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
        model = AesformerModel.from_pretrained(model_dir, dtype=dtype).eval()
        pixels = torch.randn(args.batch_size, 3, 224, 224, generator=torch.Generator().manual_seed(0))
        records = [(str(p), None) for p in paths[:4]]
        reduced = ImageEncodingDataset(records, processor, reduced_decode=True)
        full = ImageEncodingDataset(records, processor)

        def decode_all(dataset):
            for index in range(len(dataset)):
                assert "error" not in dataset[index]

        with torch.inference_mode():
            model(pixels)  # warm-up (oneDNN primitive creation)
        times = {"decode, full (4 images)": [], "decode, reduced (4 images)": [], "model only": [],
                 "score, reduced decode": [], "score, --full-decode": []}
        runs = {"score, reduced decode": [], "score, --full-decode": []}
        for round_index in range(args.repeats):
            for name, fn in (("decode, full (4 images)", lambda: decode_all(full)),
                             ("decode, reduced (4 images)", lambda: decode_all(reduced))):
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
            t = time.perf_counter()
            with torch.inference_mode():
                model(pixels)
            times["model only"].append(time.perf_counter() - t)
            for name, extra in (("score, reduced decode", ()), ("score, --full-decode", ("--full-decode",))):
                result = run_score(score_command(folder, model_dir, work / "scores.csv", args.dtype,
                                                 ("--batch-size", str(args.batch_size), *extra)))
                runs[name].append(result)
                times[name].append(result["seconds"])
            print(f"# round {round_index + 1}/{args.repeats} done, load {common.load_average()}", flush=True)

        model_ips = args.batch_size / common.median(times["model only"])
        rows = [
            {"what": "decode + preprocess, full", "ms/image": 1e3 * common.median(times["decode, full (4 images)"]) / 4},
            {"what": "decode + preprocess, reduced (draft)",
             "ms/image": 1e3 * common.median(times["decode, reduced (4 images)"]) / 4},
            {"what": f"model only, {args.dtype}, batch {args.batch_size}", "images/s": model_ips,
             "spread": common.spread(times["model only"])},
        ]
        for name in ("score, reduced decode", "score, --full-decode"):
            ips = common.median([r["images/s"] for r in runs[name]])
            rows.append({"what": f"aesformer {name} ({args.dtype})", "images/s": ips,
                         "× model only": ips / model_ips, "spread": common.spread(times[name])})
        goals = [common.goal_row("aesformer score (default) vs model only, same precision",
                                 rows[3]["× model only"], 0.6, "×")]

        agreement = None
        if args.agreement_model:
            fast, slow = work / "fast.csv", work / "slow.csv"
            run_score(score_command(folder, args.agreement_model, fast, "bf16"))
            run_score(score_command(folder, args.agreement_model, slow, "fp32", ("--full-decode",)))
            a, b = read_scores(slow), read_scores(fast)
            deltas = [abs(a[k] - b[k]) for k in a]
            agreement = {"model": args.agreement_model, "n": len(deltas), "max |Δ|": max(deltas),
                         "mean |Δ|": sum(deltas) / len(deltas)}
            goals.append(common.goal_row("reduced decode + bf16 vs full decode + fp32, max |Δscore|",
                                         agreement["max |Δ|"], 0.1, "", higher_is_better=False))

        print()
        print(common.table(rows, ["what", "ms/image", "images/s", "× model only", "spread"],
                           title=f"12-megapixel JPEGs ({len(paths)}), Aesformer-T, median of {args.repeats} rounds; "
                                 f"{runs['score, reduced decode'][0]['precision line']}"))
        if agreement:
            print()
            print(f"reduced decode + bf16 vs full decode + fp32 on {agreement['model']}: max |Δscore| "
                  f"{agreement['max |Δ|']:.4f}, mean {agreement['mean |Δ|']:.4f} over {agreement['n']} images")
        print()
        print(common.table(goals, ["goal", "target", "measured", "met"], title="Goals"))
        others = common.report_foreign(foreign)
        path = common.save_results("decode", {"machine": info, "images": len(paths), "jpeg_mb": megabytes,
                                              "dtype": args.dtype, "rows": rows, "goals": goals, "runs": runs,
                                              "raw_seconds": times, "agreement": agreement},
                                   args.output, foreign_cores=others)
        print(f"# wrote {path}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
