#!/usr/bin/env python
"""Sharded scoring on CPU: 2 processes x 1 thread (`accelerate launch`, gloo) vs 1 process x 2 threads, over the same
generated webdataset tar shards, the same model folder and the same flags, interleaved (A B A B ...) after an
untimed warm-up round, median of the repeats.

    python bench/bench_sharded_scoring.py                      # Aesformer-T (random weights), 4 shards x 24 JPEGs
    python bench/bench_sharded_scoring.py --preset demo --images-per-shard 64

Two numbers per candidate: the scoring throughput the command reports itself ("all N process(es): ... images/s",
decoding + model, without start-up) and the wall time of the whole command (start-up, model load, launcher and the
merge included). Goal: 2 x 1 not slower than 1 x 2 by more than 10 % in throughput.
Writes bench/results/sharded_scoring.json.
"""

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

RATE = re.compile(r"all (\d+) process\(es\): (\d+) images in ([\d.]+) s = ([\d.]+) images/s")


def write_shards(folder, shards, per_shard, size):
    from modeling_aesformer.toy import draw_scene

    os.makedirs(folder, exist_ok=True)
    for s in range(shards):
        with tarfile.open(os.path.join(folder, f"shard-{s:04d}.tar"), "w") as archive:
            for i in range(per_shard):
                buffer = io.BytesIO()
                draw_scene(s * per_shard + i, size=(size, size)).save(buffer, format="JPEG", quality=90)
                info = tarfile.TarInfo(f"{s:02d}{i:05d}.jpg")
                info.size = buffer.tell()
                buffer.seek(0)
                archive.addfile(info, buffer)


def write_model(folder, preset):
    import torch
    from transformers import BertTokenizer

    from modeling_aesformer import AesformerConfig, AesformerImageProcessor, AesformerModel, AesformerProcessor
    from modeling_aesformer.toy import write_toy_vocab

    os.makedirs(folder, exist_ok=True)
    torch.manual_seed(0)
    config = AesformerConfig.from_preset(preset)
    side = config.vision_config.image_size
    AesformerModel(config).eval().save_pretrained(folder)
    tokenizer = BertTokenizer(vocab=str(write_toy_vocab(os.path.join(folder, "vocab.txt"), 512)))
    AesformerProcessor(AesformerImageProcessor(size={"height": side, "width": side}), tokenizer).save_pretrained(folder)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="aesformer-t")
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--images-per-shard", type=int, default=24)
    parser.add_argument("--image-size", type=int, default=256, help="side of the generated JPEGs (default 256)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--output", default=str(common.RESULTS_DIR / "sharded_scoring.json"))
    common.add_common_arguments(parser)
    args = parser.parse_args()
    common.setup_offline()

    work = tempfile.mkdtemp(prefix="aesformer-bench-shards-")
    shard_dir, model_dir = os.path.join(work, "shards"), os.path.join(work, "model")
    write_shards(shard_dir, args.shards, args.images_per_shard, args.image_size)
    write_model(model_dir, args.preset)
    score = ["-m", "aesformer_cli", "score", os.path.join(shard_dir, "shard-*.tar"), "--model", model_dir,
             "--batch-size", str(args.batch_size), "--num-workers", "0", "--device", "cpu", "--overwrite"]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    candidates = {
        "2 processes x 1 thread": (launch + score, {"OMP_NUM_THREADS": "1"}),
        "1 process x 2 threads": ([sys.executable] + score, {"OMP_NUM_THREADS": "2"}),
    }
    info, foreign = common.start_measuring(args.wait_idle)
    results = {name: {"images_per_s": [], "wall_s": []} for name in candidates}
    for round_index in range(args.warmup + args.repeats):
        for name, (command, env) in candidates.items():
            out = os.path.join(work, f"scores-{len(name)}.parquet")
            start = time.perf_counter()
            done = subprocess.run(command + ["--output", out], capture_output=True, text=True,
                                  env={**os.environ, **env}, timeout=1800)
            wall = time.perf_counter() - start
            match = RATE.search(done.stdout)
            if done.returncode != 0 or match is None:
                sys.exit(f"{name} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
            if int(match.group(2)) != args.shards * args.images_per_shard:
                sys.exit(f"{name} scored {match.group(2)} images, expected {args.shards * args.images_per_shard}")
            if round_index >= args.warmup:
                results[name]["images_per_s"].append(float(match.group(4)))
                results[name]["wall_s"].append(wall)
    others = foreign.cores()

    images = args.shards * args.images_per_shard
    print(f"\nSharded scoring, {args.preset} (random weights), {args.shards} tar shards x {args.images_per_shard} "
          f"JPEGs of {args.image_size}px, batch {args.batch_size}, fp32, CPU; median of {args.repeats} interleaved "
          f"repeats after {args.warmup} warm-up round(s); other processes used {others:.2f} cores on average\n")
    print("| candidate | images/s (scoring) | spread | wall s (whole command) | spread |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {common.median(r['images_per_s']):.2f} | {common.spread(r['images_per_s']):.0%} | "
              f"{common.median(r['wall_s']):.1f} | {common.spread(r['wall_s']):.0%} |")
    a, b = (common.median(results[n]["images_per_s"]) for n in candidates)
    ratio = a / b
    verdict = "met" if ratio >= 0.9 else "NOT met"
    print(f"\n2x1 / 1x2 throughput: {ratio:.2f} (goal >= 0.90: {verdict}); {images} images per run")
    if others > 0.15:
        print(f"WARNING: other processes used {others:.2f} cores during the run: the timings are noisy.")
    record = {"machine": info, "foreign_load_cores": round(others, 3), "settings": vars(args), "images": images,
              "results": results, "ratio_2x1_over_1x2": ratio, "goal_met": ratio >= 0.9}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
