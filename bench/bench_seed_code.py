#!/usr/bin/env python
"""Aesformer-T against the ORIGINAL AesFormer code (the seed code), in one run, alternating, on the same inputs:
image only and with 64-token comments, batch 8, CPU; ours in fp32 and in bf16 (`from_pretrained(..., dtype=
torch.bfloat16)`: the score heads, softmax and score stay fp32), the seed code in fp32 (as released). Also the
LAION-style CLIP ViT-L/14 predictor in fp32 and bf16, for the "vs CLIP in the same precision" ratio.

The seed code runs in a child process with its own environment (transformers 4.x, timm, einops), started once and
asked for one timed forward at a time, so every round times seed / ours / ours-bf16 / ... back to back:

    export PARITY_HOME=...; bash /work/shared/parity/seed-code/setup_venv.sh     # once: the seed-code venv
    # a git checkout (or bare mirror) of AiArt-HDU/aesformer, e.g. fetched into /work/.mirror/...
    python bench/bench_seed_code.py --seed-python $PARITY_HOME/venv/bin/python --mirror /path/to/aesformer.git

Options: --seed-code DIR (the folder of make_reference.py; default /work/shared/parity/seed-code or
$AESFORMER_SEED_CODE), --repeats, --warmup, --no-clip. The original code is extracted into a temporary folder at
run time and never copied into this repository. Random weights (speed does not depend on their values). Writes
bench/results/seed_code.json.
"""

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from bench_inference import ClipAestheticPredictor, build_aesformer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SEED_CODE = os.environ.get("AESFORMER_SEED_CODE", "/work/shared/parity/seed-code")
DEFAULT_SEED_PYTHON = os.path.join(os.environ.get("PARITY_HOME", ""), "venv", "bin", "python")


class SeedCode:
    """The seed-code child process: `time("img")` / `time("both")` -> seconds of one forward (timed in the child)."""

    def __init__(self, python, seed_code, mirror, seed, batch, text_len, threads=None):
        command = [python, os.path.join(HERE, "seed_code_worker.py"), "--seed-code", seed_code, "--mirror", mirror,
                   "--seed", str(seed), "--batch", str(batch), "--text-len", str(text_len)]
        if threads:
            command += ["--threads", str(threads)]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the seed-code worker did not start ({' '.join(command)}): see its error above")
        self.info = json.loads(line)

    def time(self, what: str) -> float:
        self.process.stdin.write(what + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())["seconds"]

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait(timeout=60)


def load_make_inputs(seed_code: str):
    spec = importlib.util.spec_from_file_location("make_reference", os.path.join(seed_code, "make_reference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # only the standard library at import time
    return module.make_inputs


def bf16_copy(model):
    """`model` saved and reloaded with `from_pretrained(..., dtype=torch.bfloat16)`: the documented way."""
    import torch

    from modeling_aesformer import AesformerModel

    folder = tempfile.mkdtemp(prefix="aesformer-bf16-")
    try:
        model.save_pretrained(folder)
        return AesformerModel.from_pretrained(folder, dtype=torch.bfloat16).eval()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed-python", default=DEFAULT_SEED_PYTHON,
                        help="Python of the seed-code venv (default $PARITY_HOME/venv/bin/python)")
    parser.add_argument("--seed-code", default=DEFAULT_SEED_CODE, help="folder holding make_reference.py")
    parser.add_argument("--mirror", default=os.environ.get("AESFORMER_MIRROR"),
                        help="git dir of AiArt-HDU/aesformer (default $AESFORMER_MIRROR)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported; default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--comment-tokens", type=int, default=64)
    parser.add_argument("--no-clip", action="store_true", help="skip the CLIP ViT-L/14 predictor")
    parser.add_argument("--threads", type=int, default=None, help="torch threads, both sides (default: torch's)")
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/seed_code.json)")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if not args.mirror or not os.path.isdir(args.mirror):
        parser.error("--mirror: a git checkout of AiArt-HDU/aesformer is needed (see the docstring)")
    if not os.path.isfile(args.seed_python):
        parser.error(f"--seed-python: no such interpreter {args.seed_python!r} (run the seed code's setup_venv.sh)")

    common.setup_offline()
    import torch

    common.set_threads(args.threads)
    seed = SeedCode(args.seed_python, args.seed_code, args.mirror, 0, args.batch, args.comment_tokens, args.threads)
    try:
        info, foreign = common.start_measuring(args.wait_idle)
        print(f"# {info['cpu']}, {info['logical_cpus']} logical CPUs, {info['torch_threads']} torch threads, "
              f"torch {info['torch']}, load {info['load_average_start']}; seed code {seed.info['commit'][:7]} "
              f"(torch {seed.info['torch']}, {seed.info['threads']} threads)")

        pixel_values, tokens, lengths = load_make_inputs(args.seed_code)(1000, args.batch, args.comment_tokens)
        fp32 = build_aesformer()
        bf16 = bf16_copy(fp32)
        plan = {
            "seed code, image only, fp32": ("img", None),
            "Aesformer-T, image only, fp32": (lambda: fp32(pixel_values), None),
            "Aesformer-T, image only, bf16": (lambda: bf16(pixel_values), None),
            "seed code, with comments, fp32": ("both", None),
            "Aesformer-T, with comments, fp32": (lambda: fp32(pixel_values, **tokens), None),
            "Aesformer-T, with comments, bf16": (lambda: bf16(pixel_values, **tokens), None),
        }
        if not args.no_clip:
            clip32 = ClipAestheticPredictor()
            clip16 = ClipAestheticPredictor()
            clip16.tower.to(torch.bfloat16)
            clip16.head.to(torch.bfloat16)
            pixels16 = pixel_values.to(torch.bfloat16)
            plan["CLIP ViT-L/14 + linear, fp32"] = (lambda: clip32(pixel_values), None)
            plan["CLIP ViT-L/14 + linear, bf16"] = (lambda: clip16(pixels16), None)

        # Interleaved rounds: the seed code's forwards are timed in its process, ours here, back to back.
        times = {name: [] for name in plan}
        with torch.inference_mode():
            for round_index in range(args.warmup + args.repeats):
                for name, (call, _) in plan.items():
                    if isinstance(call, str):
                        seconds = seed.time(call)
                    else:
                        start = time.perf_counter()
                        call()
                        seconds = time.perf_counter() - start
                    if round_index >= args.warmup:
                        times[name].append(seconds)
                print(f"# round {round_index + 1}/{args.warmup + args.repeats} done, load {common.load_average()}",
                      flush=True)
    finally:
        seed.close()

    rows = []
    for name in plan:
        seconds = common.median(times[name])
        rows.append({"candidate": name, "batch": args.batch, "ms/batch": seconds * 1e3,
                     "images/s": args.batch / seconds, "spread": common.spread(times[name])})
    ips = {r["candidate"]: r["images/s"] for r in rows}
    seed_img, seed_both = ips["seed code, image only, fp32"], ips["seed code, with comments, fp32"]
    for row in rows:
        base = seed_both if "comments" in row["candidate"] else seed_img
        row["× seed code fp32"] = row["images/s"] / base if not row["candidate"].startswith("CLIP") else None

    goals = [
        common.goal_row("image only, bf16 vs seed code fp32", ips["Aesformer-T, image only, bf16"] / seed_img, 3.5,
                        "×"),
        common.goal_row("with 64-token comments, bf16 vs seed code fp32",
                        ips["Aesformer-T, with comments, bf16"] / seed_both, 3.5, "×"),
        common.goal_row("image only, fp32 vs seed code fp32", ips["Aesformer-T, image only, fp32"] / seed_img, 0.95,
                        "×"),
        common.goal_row("with 64-token comments, fp32 vs seed code fp32",
                        ips["Aesformer-T, with comments, fp32"] / seed_both, 0.95, "×"),
    ]
    if not args.no_clip:
        for precision in ("fp32", "bf16"):
            goals.append(common.goal_row(f"image only vs CLIP-L/14 predictor, both {precision}",
                                         ips[f"Aesformer-T, image only, {precision}"]
                                         / ips[f"CLIP ViT-L/14 + linear, {precision}"], 5.0, "×"))

    print()
    print(common.table(rows, ["candidate", "batch", "ms/batch", "images/s", "spread", "× seed code fp32"],
                       title=f"Aesformer-T vs the seed code, CPU, batch {args.batch}, comments of up to "
                             f"{args.comment_tokens} tokens (lengths {lengths}), median of {args.repeats} "
                             f"interleaved rounds"))
    print()
    print(common.table(goals, ["goal", "target", "measured", "met"], title="Goals"))
    print()
    others = common.report_foreign(foreign)
    path = common.save_results("seed_code", {
        "machine": info, "seed_code": seed.info, "repeats": args.repeats, "warmup": args.warmup,
        "batch": args.batch, "comment_tokens": args.comment_tokens, "comment_lengths": lengths,
        "rows": rows, "goals": goals, "raw_seconds": times,
    }, args.output, foreign_cores=others)
    print(f"# wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
