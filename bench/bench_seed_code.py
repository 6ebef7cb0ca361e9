#!/usr/bin/env python
"""Aesformer-T against the ORIGINAL AesFormer code (the seed code), in one run, alternating, on the same inputs:
image only and with 64-token comments, batch 8, CPU; ours in fp32 and in bf16 (`from_pretrained(..., dtype=
torch.bfloat16)`: the score heads, softmax and score stay fp32), the seed code in fp32 (as released). Also the
LAION-style CLIP ViT-L/14 predictor in fp32 and bf16, for the "vs CLIP in the same precision" ratio.

The seed code runs in a child process with its own environment (transformers 4.x, timm, einops), started once and
asked for one timed forward at a time, so every round times seed / ours / ours-bf16 / ... back to back:

    export PARITY_HOME=...; bash ../shared/parity/seed-code/setup_venv.sh     # once (from the repository root)
    # a git checkout (or bare mirror) of AiArt-HDU/aesformer, fetched anywhere
    python bench/bench_seed_code.py --seed-python $PARITY_HOME/venv/bin/python --mirror /path/to/aesformer.git

Before/after a change of this package: `--baseline-python PY` names the Python of ANOTHER installation of it (e.g. a
venv with the version before the change installed, not editable). A second child process (`installed_model_worker.py`,
run isolated, outside the repository) builds Aesformer-T there from a fixed seed and saves it; this process loads the
same weights from that folder, so both hold identical weights. Every round then times the seed code, "before" and
"after" (this checkout) back to back, before/after adjacent and their order swapped every round, in fp32 and bf16.
It refuses an "after" that is not this checkout (an installed copy differing from it). The first round checks that
before and after give the same fp32 scores (max |Δ| <= --score-tolerance; the exit status is 1 otherwise) and prints
the bf16 difference; the table adds the after/before speed ratio (before seconds / after seconds per round, median
over the rounds: > 1 = after is faster).

Options: --seed-code DIR (the folder of make_reference.py; default ../shared/parity/seed-code beside the repository,
or $AESFORMER_SEED_CODE), --repeats, --warmup, --no-clip. The original code is extracted into a temporary folder at
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
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402
from bench_inference import ClipAestheticPredictor, build_aesformer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_SEED_CODE = os.environ.get("AESFORMER_SEED_CODE",
                                   os.path.normpath(common.REPO_ROOT.parent / "shared" / "parity" / "seed-code"))
DEFAULT_SEED_PYTHON = os.path.join(os.environ.get("PARITY_HOME", ""), "venv", "bin", "python")
PRESET = "aesformer-t"
CASES = [("img", "image only"), ("both", "with comments")]
PRECISIONS = ("fp32", "bf16")


class Worker:
    """A child process answering one JSON line per command line; its first line says it is ready."""

    def __init__(self, command, what, cwd=None):
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env,
                                        cwd=cwd)
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the {what} worker did not start ({' '.join(command)}): see its error above")
        self.info = json.loads(line)

    def ask(self, line: str) -> dict:
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self):
        if self.process.poll() is None:
            self.process.stdin.write("quit\n")
            self.process.stdin.flush()
            self.process.wait(timeout=60)


class SeedCode(Worker):
    """The seed-code child process: `time("img")` / `time("both")` -> seconds of one forward (timed in the child)."""

    def __init__(self, python, seed_code, mirror, seed, batch, text_len, threads=None):
        command = [python, os.path.join(HERE, "seed_code_worker.py"), "--seed-code", seed_code, "--mirror", mirror,
                   "--seed", str(seed), "--batch", str(batch), "--text-len", str(text_len)]
        if threads:
            command += ["--threads", str(threads)]
        super().__init__(command, "seed-code")

    def time(self, what: str) -> float:
        return self.ask(what)["seconds"]


class InstalledModel(Worker):
    """Aesformer-T from another installation (`installed_model_worker.py`): `run("img", "bf16")` -> (seconds,
    scores). Run isolated (`-I`) with its working directory in `folder`, outside the repository, so that it imports
    that installation and not this checkout; it saves its seeded model to `folder/model`."""

    def __init__(self, python, folder, inputs, seed, threads=None):
        command = [python, "-I", os.path.join(HERE, "installed_model_worker.py"), "--model-dir",
                   os.path.join(folder, "model"), "--inputs", inputs, "--seed", str(seed), "--preset", PRESET]
        if threads:
            command += ["--threads", str(threads)]
        super().__init__(command, "before-model", cwd=folder)
        self.model_dir = os.path.join(folder, "model")
        module = Path(self.info["module"]).resolve()
        if module.is_relative_to(common.REPO_ROOT):
            self.close()
            raise RuntimeError(f"--baseline-python {python} imports this checkout ({module}), not another "
                               f"installation: install the version to compare against elsewhere (not editable)")

    def run(self, what: str, precision: str):
        answer = self.ask(f"{what} {precision}")
        return answer["seconds"], answer["score"]


def installed_differences(packages=(("modeling_aesformer", "modeling_aesformer"),
                                    ("aesformer_processing", "processing"))):
    """Files of the model's packages (as imported here) that differ from this checkout's: [] when "after" really is
    this checkout. An editable install imports the checkout itself; a regular install is a copy, which is stale
    as soon as the checkout changes (e.g. a venv installed before a merge)."""
    import importlib

    differences = []
    for package, folder in packages:
        installed = Path(importlib.import_module(package).__file__).resolve().parent
        source = common.REPO_ROOT / folder
        if installed.is_relative_to(common.REPO_ROOT):
            continue

        def files(root):
            return {p.relative_to(root) for p in root.rglob("*") if p.suffix in (".py", ".json")
                    and "__pycache__" not in p.parts}

        for relative in sorted(files(installed) | files(source)):
            a, b = installed / relative, source / relative
            if not (a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()):
                differences.append(f"{folder}/{relative}")
    return differences


def load_make_inputs(seed_code: str):
    spec = importlib.util.spec_from_file_location("make_reference", os.path.join(seed_code, "make_reference.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # only the standard library at import time
    return module.make_inputs


def bf16_copy(model):
    """`model` saved and reloaded with `from_pretrained(..., dtype=torch.bfloat16)`: the documented way."""
    folder = tempfile.mkdtemp(prefix="aesformer-bf16-")
    try:
        model.save_pretrained(folder)
        return load_models(folder)["bf16"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def load_models(folder) -> dict:
    import torch

    from modeling_aesformer import AesformerModel

    return {"fp32": AesformerModel.from_pretrained(folder).eval(),
            "bf16": AesformerModel.from_pretrained(folder, dtype=torch.bfloat16).eval()}


def timed_forward(model, pixel_values, tokens):
    start = time.perf_counter()
    output = model(pixel_values, **tokens)
    seconds = time.perf_counter() - start
    return seconds, output.score.float().tolist()


def name_of(who: str, case: str, precision: str) -> str:
    return {"seed": "seed code", "before": "Aesformer-T before", "after": "Aesformer-T"}[who] + f", {case}, {precision}"


def round_order(groups, round_index: int):
    """The names timed in this round: each group in turn, a before/after pair swapped every other round so that
    neither side always runs right after the seed code."""
    order = []
    for group in groups:
        order += group[::-1] if round_index % 2 else group
    return order


def max_difference(a, b) -> float:
    return max(abs(x - y) for x, y in zip(a, b))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed-python", default=DEFAULT_SEED_PYTHON,
                        help="Python of the seed-code venv (default $PARITY_HOME/venv/bin/python)")
    parser.add_argument("--seed-code", default=DEFAULT_SEED_CODE,
                        help="folder holding make_reference.py (default ../shared/parity/seed-code beside the "
                             "repository, or $AESFORMER_SEED_CODE)")
    parser.add_argument("--mirror", default=os.environ.get("AESFORMER_MIRROR"),
                        help="git dir of AiArt-HDU/aesformer (default $AESFORMER_MIRROR)")
    parser.add_argument("--baseline-python", metavar="PY", default=None,
                        help="Python of another installation of this package (e.g. the version before a change): "
                             "also time its Aesformer-T, same weights and inputs, as 'before' next to this checkout")
    parser.add_argument("--score-tolerance", type=float, default=1e-5,
                        help="largest fp32 |score difference| allowed between before and after (default 1e-5)")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds (median reported; default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--comment-tokens", type=int, default=64)
    parser.add_argument("--no-clip", action="store_true", help="skip the CLIP ViT-L/14 predictor")
    parser.add_argument("--threads", type=int, default=None, help="torch threads, all sides (default: torch's)")
    parser.add_argument("--output", default=None, help="JSON path (default bench/results/seed_code.json)")
    common.add_common_arguments(parser)
    args = parser.parse_args(argv)
    if not args.mirror or not os.path.isdir(args.mirror):
        parser.error("--mirror: a git checkout of AiArt-HDU/aesformer is needed (see the docstring)")
    if not os.path.isfile(args.seed_python):
        parser.error(f"--seed-python: no such interpreter {args.seed_python!r} (run the seed code's setup_venv.sh)")
    if not os.path.isfile(os.path.join(args.seed_code, "make_reference.py")):
        parser.error(f"--seed-code: no make_reference.py in {args.seed_code!r}")
    if args.baseline_python and not os.path.isfile(args.baseline_python):
        parser.error(f"--baseline-python: no such interpreter {args.baseline_python!r}")

    common.setup_offline()
    import torch
    from safetensors.torch import save_file

    common.set_threads(args.threads)
    stale = installed_differences() if args.baseline_python else []
    if stale:
        print(f"ERROR: this Python ({sys.executable}) imports an installed copy of the package that differs from this "
              f"checkout ({', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''}): 'after' would not be this "
              f"checkout. Reinstall it first (`pip install -e .` or `pip install --no-deps .`).", file=sys.stderr)
        return 2
    pixel_values, tokens, lengths = load_make_inputs(args.seed_code)(1000, args.batch, args.comment_tokens)
    workdir = tempfile.mkdtemp(prefix="aesformer-bench-")  # outside the repository: the before worker's cwd
    # the children's CPU time counts as this run's own (ForeignLoad), so their start belongs inside the window
    info, foreign = common.start_measuring(args.wait_idle)
    seed = before = None
    try:
        try:
            if args.baseline_python:  # first: it refuses quickly when it imports this checkout
                inputs = os.path.join(workdir, "inputs.safetensors")
                save_file({"pixel_values": pixel_values.contiguous(), **tokens}, inputs)
                # absolute but not resolved: a venv's python is a symlink whose own path selects the venv
                before = InstalledModel(os.path.abspath(args.baseline_python), workdir, inputs, 0, args.threads)
            seed = SeedCode(args.seed_python, args.seed_code, args.mirror, 0, args.batch, args.comment_tokens,
                            args.threads)
        except RuntimeError as error:
            print(f"ERROR: {error}", file=sys.stderr)
            return 2
        print(f"# {info['cpu']}, {info['logical_cpus']} logical CPUs, {info['torch_threads']} torch threads, "
              f"torch {info['torch']}, load {info['load_average_start']}; seed code {seed.info['commit'][:7]} "
              f"(torch {seed.info['torch']}, {seed.info['threads']} threads)")
        if before:
            import modeling_aesformer

            ours = load_models(before.model_dir)  # the weights the before side built: identical on both sides
            print(f"# before: {before.info['module']} (aesformer {before.info['version']}, torch "
                  f"{before.info['torch']}, transformers {before.info['transformers']}, {before.info['threads']} "
                  f"threads); after: {modeling_aesformer.__file__}")
        else:
            fp32 = build_aesformer()
            ours = {"fp32": fp32, "bf16": bf16_copy(fp32)}

        calls, groups = {}, []
        for what, case in CASES:
            calls[name_of("seed", case, "fp32")] = lambda what=what: (seed.time(what), None)
            groups.append([name_of("seed", case, "fp32")])
            inputs_of_case = tokens if what == "both" else {}
            for precision in PRECISIONS:
                calls[name_of("after", case, precision)] = (
                    lambda model=ours[precision], kw=inputs_of_case: timed_forward(model, pixel_values, kw))
                if before:
                    calls[name_of("before", case, precision)] = (
                        lambda what=what, precision=precision: before.run(what, precision))
                    groups.append([name_of("before", case, precision), name_of("after", case, precision)])
                else:
                    groups.append([name_of("after", case, precision)])
        if not args.no_clip:
            clip32 = ClipAestheticPredictor()
            clip16 = ClipAestheticPredictor()
            clip16.tower.to(torch.bfloat16)
            clip16.head.to(torch.bfloat16)
            pixels16 = pixel_values.to(torch.bfloat16)
            for name, call in (("CLIP ViT-L/14 + linear, fp32", lambda: clip32(pixel_values)),
                               ("CLIP ViT-L/14 + linear, bf16", lambda: clip16(pixels16))):
                calls[name] = (lambda call=call: (timed_call(call), None))
                groups.append([name])

        # Interleaved rounds: the children time their forwards in their own process, ours here, back to back.
        times = {name: [] for name in calls}
        score_check = None
        with torch.inference_mode():
            for round_index in range(args.warmup + args.repeats):
                scores = {}
                for name in round_order(groups, round_index):
                    seconds, scores[name] = calls[name]()
                    if round_index >= args.warmup:
                        times[name].append(seconds)
                if before and round_index == 0:
                    score_check = check_scores(scores, args.score_tolerance)
                print(f"# round {round_index + 1}/{args.warmup + args.repeats} done, load {common.load_average()}",
                      flush=True)
    finally:
        for worker in (seed, before):
            if worker is not None:
                worker.close()
        shutil.rmtree(workdir, ignore_errors=True)

    names = [name for group in groups for name in group]
    rows = []
    for name in names:
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
        for precision in PRECISIONS:
            goals.append(common.goal_row(f"image only vs CLIP-L/14 predictor, both {precision}",
                                         ips[f"Aesformer-T, image only, {precision}"]
                                         / ips[f"CLIP ViT-L/14 + linear, {precision}"], 5.0, "×"))

    print()
    print(common.table(rows, ["candidate", "batch", "ms/batch", "images/s", "spread", "× seed code fp32"],
                       title=f"Aesformer-T vs the seed code, CPU, batch {args.batch}, comments of up to "
                             f"{args.comment_tokens} tokens (lengths {lengths}), median of {args.repeats} "
                             f"interleaved rounds"))
    before_after = []
    if before:
        before_after = before_after_rows(times)
        print()
        print(common.table(before_after, ["case", "before ms/batch", "after ms/batch", "after/before speed",
                                          "lowest round", "highest round"],
                           title=f"Before (--baseline-python) and after (this checkout): speed ratio = before "
                                 f"seconds / after seconds in each round, median of {args.repeats} rounds "
                                 f"(> 1: after is faster)"))
    print()
    print(common.table(goals, ["goal", "target", "measured", "met"], title="Goals"))
    print()
    others = common.report_foreign(foreign)
    payload = {"machine": info, "seed_code": seed.info, "repeats": args.repeats, "warmup": args.warmup,
               "batch": args.batch, "comment_tokens": args.comment_tokens, "comment_lengths": lengths,
               "rows": rows, "goals": goals, "raw_seconds": times}
    if before:
        # no machine paths in the results file: the other installation by its versions only
        described = {key: value for key, value in before.info.items() if key not in ("ready", "module", "python")}
        payload.update({"before": described, "before_after": before_after, "score_check": score_check})
    path = common.save_results("seed_code", payload, args.output, foreign_cores=others)
    print(f"# wrote {path}")
    if score_check is not None and not score_check["fp32_ok"]:
        print(f"ERROR: before and after give different fp32 scores (max |Δ| {score_check['fp32 max |Δ|']:.3g} > "
              f"{args.score_tolerance:g}): the two sides do not run the same model", file=sys.stderr)
        return 1
    return 0


def timed_call(call) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def check_scores(scores: dict, tolerance: float) -> dict:
    """Before vs after scores of the first round: fp32 must agree within `tolerance`; bf16 is printed only (its
    rounding may legitimately change with the code)."""
    check = {}
    for precision in PRECISIONS:
        check[f"{precision} max |Δ|"] = max(
            max_difference(scores[name_of("before", case, precision)], scores[name_of("after", case, precision)])
            for _, case in CASES)
    check["fp32_ok"] = check["fp32 max |Δ|"] <= tolerance
    print(f"# before vs after scores, first round, both branches: fp32 max |Δ| {check['fp32 max |Δ|']:.3g} "
          f"({'ok' if check['fp32_ok'] else 'MISMATCH'}, tolerance {tolerance:g}); bf16 max |Δ| "
          f"{check['bf16 max |Δ|']:.3g} (informational)", flush=True)
    return check


def before_after_rows(times: dict) -> list:
    rows = []
    for _, case in CASES:
        for precision in PRECISIONS:
            before, after = times[name_of("before", case, precision)], times[name_of("after", case, precision)]
            ratios = [b / a for b, a in zip(before, after)]
            rows.append({"case": f"{case}, {precision}", "before ms/batch": common.median(before) * 1e3,
                         "after ms/batch": common.median(after) * 1e3, "after/before speed": common.median(ratios),
                         "lowest round": min(ratios), "highest round": max(ratios)})
    return rows


if __name__ == "__main__":
    sys.exit(main())
