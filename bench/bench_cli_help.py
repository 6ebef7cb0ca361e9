#!/usr/bin/env python
"""How fast the command line answers `--help`: `aesformer --help` and `aesformer <command> --help`, each a fresh
process through the installed console script (`aesformer_cli` imports the model and training packages, hence torch
and transformers, only once a command runs), against the same parser after `import modeling_aesformer` (what a
command line that imported the model package at the top would cost), measured alternately on the same commands.
Target: under 0.5 s.

    python bench/bench_cli_help.py [--repeats 5] [--wait-idle 60]

Writes bench/results/cli_help.json.
"""

import argparse
import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

PACKAGE_FIRST = "import sys, modeling_aesformer; from aesformer_cli.main import main; sys.exit(main(sys.argv[1:]))"

COMMANDS = ["", "score", "explain", "export", "push", "set-default", "demo", "make-dataset", "convert-original",
            "pretrain", "adapt", "eval"]
COMPARED = ("", "score")  # also timed with the package imported first (seconds each: a few commands suffice)
TARGET_S = 0.5


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    common.setup_offline()
    script = shutil.which("aesformer") or os.path.join(os.path.dirname(sys.executable), "aesformer")
    if not os.path.isfile(script):
        print("the `aesformer` console script is not installed (pip install -e .)", file=sys.stderr)
        return 1
    info, foreign = common.start_measuring(args.wait_idle)

    def run(command_line):
        def call():
            done = subprocess.run(command_line, capture_output=True, text=True)
            if done.returncode != 0 or "usage:" not in done.stdout:
                raise RuntimeError(f"{command_line} failed ({done.returncode}): {done.stderr[-2000:]}")
        return call

    rows, results = [], {}
    for command in COMMANDS:
        words = [command, "--help"] if command else ["--help"]
        candidates = {"console script": run([script, *words])}
        if command in COMPARED:
            candidates["package first"] = run([sys.executable, "-c", PACKAGE_FIRST, *words])
        times = common.interleaved(candidates, repeats=args.repeats, warmup=1)
        fast = common.median(times["console script"])
        slow = common.median(times["package first"]) if "package first" in times else float("nan")
        name = f"aesformer {' '.join(words)}"
        results[name] = times
        rows.append({"command": name, "console script (s)": fast, "package imported first (s)": slow,
                     "ratio": slow / fast, "< 0.5 s": "yes" if fast < TARGET_S else "NO"})
    print(common.table(rows, ["command", "console script (s)", "package imported first (s)", "ratio", "< 0.5 s"],
                       title=f"--help wall time, median of {args.repeats} fresh processes each, alternating"))
    cores = common.report_foreign(foreign)
    out = common.save_results("cli_help", {"machine": info, "target_s": TARGET_S, "rows": rows,
                                           "times": results}, foreign_cores=cores)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
