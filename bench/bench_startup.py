#!/usr/bin/env python
"""Start-up, loading and end-to-end scoring on CPU, Aesformer-T (random weights, saved to a temporary folder):

- `import modeling_aesformer` time in a fresh process (median of several processes);
- `AesformerModel.from_pretrained(folder)` time in a fresh process (the import done first, not counted);
- peak RSS of a fresh process that loads the model and scores one image (batch 1, image-only and with comments);
- `aesformer score FOLDER` end to end on 200 generated JPEGs (640x480, decoding and preprocessing included), as a
  fresh process: wall time from process start and the tool's own images/s, with the default DataLoader workers
  and with none; plus the model alone at the same batch for comparison.

    python bench/bench_startup.py            # ~2 min on 2 cores

Writes bench/results/startup.json.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

IMPORT_SNIPPET = """
import time
start = time.perf_counter()
import modeling_aesformer
print(time.perf_counter() - start)
"""

LOAD_SNIPPET = """
import sys, time
import modeling_aesformer
from modeling_aesformer import AesformerModel
start = time.perf_counter()
model = AesformerModel.from_pretrained(sys.argv[1])
print(time.perf_counter() - start)
"""

# Peak RSS = VmHWM of the fresh process (not ru_maxrss, which Linux carries over from the parent across exec).
RSS_SNIPPET = """
import json, sys
import torch
import modeling_aesformer
from modeling_aesformer import AesformerModel

def status(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) / 1024 for l in f if l.startswith(field + ":"))

after_import = status("VmRSS")
model = AesformerModel.from_pretrained(sys.argv[1]).eval()
after_load = status("VmRSS")
pixels = torch.randn(1, 3, 224, 224)
ids = torch.randint(1000, 28000, (1, 64)); ids[:, 0], ids[:, -1] = 101, 102
with torch.inference_mode():
    model(pixels)
    image_only_peak = status("VmHWM")
    model(pixels, input_ids=ids, attention_mask=torch.ones_like(ids))
print(json.dumps({"rss_after_import_mb": after_import, "rss_after_load_mb": after_load,
                  "peak_rss_image_only_mb": image_only_peak, "peak_rss_mb": status("VmHWM")}))
"""

# `aesformer score` through the installed CLI when it is wired in, else through its own parser
# (aesformer_cli.score.add_subparser), exactly as `aesformer score ...` would parse the arguments.
SCORE_SNIPPET = """
import argparse, sys
from aesformer_cli import main as cli, score as scoring

def score_parser():
    parser = cli.build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) and "score" in action.choices:
            return parser, "aesformer CLI"
    parser = argparse.ArgumentParser(prog="aesformer")
    scoring.add_subparser(parser.add_subparsers(dest="command", required=True))
    return parser, "scoring.add_subparser"

parser, source = score_parser()
print("[bench] score parser from", source, flush=True)
args = parser.parse_args(["score"] + sys.argv[1:])
sys.exit(args.func(args))
"""


def run_python(code: str, *argv: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, env=env)


def last_line(done: subprocess.CompletedProcess) -> str:
    if done.returncode != 0:
        raise RuntimeError(f"subprocess failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout.strip().splitlines()[-1]


def make_jpegs(folder: str, count: int, size=(640, 480)) -> None:
    """`count` procedurally drawn photos-like JPEGs (a scene plus film grain, quality 90)."""
    import numpy as np
    from PIL import Image

    from modeling_aesformer.toy import draw_scene

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        scene = np.asarray(draw_scene(i, size=size), dtype=np.int16)
        grain = rng.integers(-12, 13, scene.shape, dtype=np.int16)
        Image.fromarray(np.clip(scene + grain, 0, 255).astype(np.uint8)).save(
            os.path.join(folder, f"img_{i:04d}.jpg"), quality=90)


def save_model_folder(folder: str) -> None:
    """Aesformer-T with random weights, its processor and a tokenizer with the model's vocabulary size."""
    import torch
    from transformers import BertTokenizer

    from modeling_aesformer import AesformerConfig, AesformerImageProcessor, AesformerModel, AesformerProcessor
    from modeling_aesformer.toy import write_toy_vocab

    torch.manual_seed(0)
    config = AesformerConfig.from_preset("aesformer-t")
    AesformerModel(config).save_pretrained(folder)
    vocab = write_toy_vocab(os.path.join(folder, "toy_vocab.txt"), config.text_config.vocab_size)
    tokenizer = BertTokenizer(vocab=str(vocab), do_lower_case=False)
    AesformerProcessor(AesformerImageProcessor(), tokenizer).save_pretrained(folder)
    os.remove(vocab)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--import-repeats", type=int, default=5)
    parser.add_argument("--load-repeats", type=int, default=3)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--score-batch", type=int, default=16, help="--batch-size of aesformer score (its default)")
    parser.add_argument("--skip-score", action="store_true")
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/startup.json)")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)

    common.setup_offline()
    env = dict(os.environ)
    info, foreign = common.start_measuring(args.wait_idle)
    print(f"# {info['cpu']}, {info['torch_threads']} torch threads, load {info['load_average_start']}")
    results = {"machine": info}

    # 1. import time (fresh processes; the first also warms the file cache)
    imports = [float(last_line(run_python(IMPORT_SNIPPET, env=env))) for _ in range(args.import_repeats + 1)]
    results["import_seconds"] = {"first": imports[0], "warm": imports[1:], "median_warm": common.median(imports[1:])}

    with tempfile.TemporaryDirectory(prefix="aesformer-bench-") as tmp:
        model_dir = os.path.join(tmp, "aesformer-t")
        save_model_folder(model_dir)
        size_mb = sum(os.path.getsize(os.path.join(model_dir, f)) for f in os.listdir(model_dir)) / 2**20

        # 2. from_pretrained (fresh processes)
        loads = [float(last_line(run_python(LOAD_SNIPPET, model_dir, env=env)))
                 for _ in range(args.load_repeats + 1)]
        results["from_pretrained_seconds"] = {"first": loads[0], "warm": loads[1:],
                                              "median_warm": common.median(loads[1:]), "folder_mb": size_mb}

        # 3. peak RSS at batch 1
        results["rss"] = json.loads(last_line(run_python(RSS_SNIPPET, model_dir, env=env)))

        # 4. aesformer score, end to end
        if not args.skip_score:
            images = os.path.join(tmp, "images")
            make_jpegs(images, args.images)
            runs = []
            from aesformer_cli import score as scoring

            default_workers = getattr(scoring, "_default_workers", lambda: 1)()  # the CLI's --num-workers default
            for workers in (default_workers, 0):
                out_csv = os.path.join(tmp, f"scores_{workers}.csv")
                start = time.perf_counter()
                done = run_python(SCORE_SNIPPET, images, "--model", model_dir, "--output", out_csv,
                                  "--batch-size", str(args.score_batch), "--num-workers", str(workers), env=env)
                wall = time.perf_counter() - start
                if done.returncode != 0:
                    raise RuntimeError(f"aesformer score failed ({done.returncode}):\n{done.stderr[-3000:]}")
                text = done.stdout + done.stderr
                match = re.search(r"scored (\d+) images in ([\d.]+) s \(([\d.]+) images/s\)", text)
                with open(out_csv, encoding="utf-8") as f:
                    rows = sum(1 for _ in f) - 1
                source = re.search(r"score parser from (.+)", text)
                runs.append({"num_workers": workers, "batch_size": args.score_batch, "wall_seconds": wall,
                             "images_per_s_end_to_end": args.images / wall,
                             "scoring_seconds": float(match.group(2)) if match else None,
                             "images_per_s_scoring": float(match.group(3)) if match else None,
                             "rows_written": rows, "cli": source.group(1).strip() if source else None})
            results["score"] = runs

            # the model alone at the same batch, this process (for the share spent outside the model)
            import torch

            from modeling_aesformer import AesformerModel

            model = AesformerModel.from_pretrained(model_dir).eval()
            pixels = torch.randn(args.score_batch, 3, 224, 224)
            with torch.inference_mode():
                times = common.interleaved({"model": lambda: model(pixels)}, repeats=3, warmup=1)
            results["model_only_images_per_s"] = args.score_batch / common.median(times["model"])
    results["load_average_end"] = common.load_average()

    imp, load, rss = results["import_seconds"], results["from_pretrained_seconds"], results["rss"]
    rows = [
        {"measure": "import modeling_aesformer (fresh process)", "value": f"{imp['median_warm']:.2f} s",
         "note": f"first (cold cache) {imp['first']:.2f} s"},
        {"measure": "AesformerModel.from_pretrained (fresh process)", "value": f"{load['median_warm']:.2f} s",
         "note": f"{load['folder_mb']:.0f} MB folder; first {load['first']:.2f} s"},
        {"measure": "peak RSS, batch 1 (load + image-only + with comments)", "value": f"{rss['peak_rss_mb']:.0f} MB",
         "note": f"after import {rss['rss_after_import_mb']:.0f} MB, after load {rss['rss_after_load_mb']:.0f} MB, "
                 f"image-only peak {rss['peak_rss_image_only_mb']:.0f} MB"},
    ]
    for run in results.get("score", []):
        rows.append({"measure": f"aesformer score, {args.images} JPEGs, batch {run['batch_size']}, "
                                f"{run['num_workers']} workers",
                     "value": f"{run['images_per_s_scoring']:.2f} img/s",
                     "note": f"{run['images_per_s_end_to_end']:.2f} img/s counting process start and model load "
                             f"({run['wall_seconds']:.1f} s); {run['rows_written']} rows; via {run['cli']}"})
    if "model_only_images_per_s" in results:
        rows.append({"measure": f"model alone, batch {args.score_batch}",
                     "value": f"{results['model_only_images_per_s']:.2f} img/s", "note": "no decoding"})
    goals = [
        common.goal_row("import modeling_aesformer", imp["median_warm"], 3.0, "s", higher_is_better=False),
        common.goal_row("Aesformer-T from_pretrained", load["median_warm"], 2.0, "s", higher_is_better=False),
        common.goal_row("peak RSS at batch 1", rss["peak_rss_mb"] / 1024, 1.5, "GB", higher_is_better=False),
    ]
    results["goals"] = goals
    print()
    print(common.table(rows, ["measure", "value", "note"], title="Start-up, loading, end-to-end scoring (CPU)"))
    print()
    print(common.table(goals, ["goal", "target", "measured", "met"], title="Goals"))
    print()
    others = common.report_foreign(foreign)
    path = common.save_results("startup", results, args.output, foreign_cores=others)
    print(f"# wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
