"""`aesformer score`: score many images from the shell, streaming the results to a CSV or JSONL file.

    aesformer score photos/ more/*.png list.csv --model MODEL_DIR [--comments comments.csv] [--adapter NAME|all]
                    [--batch-size 32] [--num-workers 4] [--output scores.csv|scores.jsonl] [--resume]

- INPUTS: image files, folders (searched recursively for every extension Pillow can open), glob patterns (`**`
  allowed), or list files (`.csv` / `.jsonl` with an `image` (or `path`) column and an optional `comments` column,
  or `.txt` with one path per line; relative paths are relative to the list file's folder).
- `--comments FILE` (repeatable): comments in the one format every command reads (`aesformer_training.comments`,
  docs/data-format.md): a CSV/JSONL keyed by image path, file name or stem, or a JSON object key -> comment(s).
  Images with comments are answered by the with-comments branch, the others by the image-only branch.
- Decoding and preprocessing run in DataLoader workers (`--num-workers`) while the model computes; a progress bar
  shows images/s.
- The output is appended and flushed after every batch: an interrupted run (Ctrl-C, SIGKILL, power loss) loses at
  most the batch in flight, and `--resume` skips every image (and adapter) already in the file, after cutting off a
  last line left half-written. A file that cannot be read (empty, truncated, not an image, larger than
  `--max-image-pixels`, ...) never stops the run: it gets a row with the reason in the `error` column and is listed
  at the end. Exit code 0 when every image was scored, 1 when any failed.
- Decompression bombs are refused from the image header, before decoding: `--max-image-pixels N` (default: the
  model's image processor's `max_image_pixels`, 178,956,970 = Pillow's own hard limit).
- JPEGs at least twice the model's input size on both sides are decoded at 1/2, 1/4 or 1/8 of their size (Pillow's
  JPEG draft mode: the DCT scaling averages 8x8 blocks, still at least the input size), then resized as usual: a
  12-megapixel photo decodes ~4x faster and its score moves by a few hundredths at most. `--full-decode` turns it off.
- `--dtype {auto,fp32,bf16,fp16,int8}`: the precision of the weights (auto = bf16 where the hardware computes it
  faster than fp32, else fp32; the choice and its reason are printed at the start). The heads, distribution and score
  stay fp32. int8 (with `--backend onnxruntime`): the image-only branch quantized dynamically, its first batch checked
  against fp32 (the run stops if a score moves by more than 0.05); images with comments in fp32.
- `--backend {torch,onnxruntime,openvino,auto}`: what runs the model, both branches: an ONNX runtime uses the model
  folder's `onnx/` (`aesformer export --onnx`), else exports it once into the user's cache (the with-comments branch
  only when some image has comments); auto = the fastest path measured on this machine (docs/backends.md).
- Comments that are empty or whitespace-only after cleaning count as no comments (`branch` = image_only).
  `comments_truncated` is true when the processor's word or token limit cut an image's comments, false when they
  were used whole, empty when the image had no comment text.
- List and comments files must be UTF-8: other bytes stop the run with an error naming the file and the line.

Output columns: path, adapter, score, std, label, branch, trained, num_bins, score_range (JSON [first, last] bin
value: the scale of the score), distribution (JSON list), comments_truncated, error. An image with comments gets
one row, with an empty adapter (the with-comments heads answer, whatever `--adapter` says). `trained` is false on an
image-only row answered by a head that no training or conversion produced (e.g. the model's own image-only modules
after stage 1: a warning then names the adapters to use), empty on rows with comments.
Without `--adapter`, images without comments are answered by the model's default adapter (config
`default_adapter`, set by `aesformer adapt` or `aesformer set-default`).
"""

import argparse
import os
import sys
import time
from typing import List, Optional

from .common import command_entry
from .precision import add_backend_argument, add_dtype_argument

# the score file's columns (`modeling_aesformer.scoring.FIELDS`), listed in --help without importing torch
FIELDS = ["path", "adapter", "score", "std", "label", "branch", "trained", "num_bins", "score_range", "distribution",
          "comments_truncated", "error", "threshold", "warnings"]


# -------------------------------------------------------------------------------------------------------- the model
def load_scoring_model(model_ref: str, adapters: Optional[List[str]], log=print, dtype=None):
    """`loading.load_model` as scoring wants it: every saved adapter (so that `--adapter` names are checked against
    all of them), none when only 'base' is asked for; a folder without tokenizer scores images only."""
    from modeling_aesformer.adapter_weights_aesformer import BASE_ADAPTER
    from modeling_aesformer.loading import load_model
    from modeling_aesformer.pipeline_aesformer import ALL_ADAPTERS

    wanted = [a for a in (adapters or []) if a != BASE_ADAPTER]
    return load_model(model_ref, ALL_ADAPTERS if wanted or not adapters else adapters, dtype=dtype,
                      images_only_ok=True, peft_required=bool(wanted), log=log, prefix="[score] ")


def model_config(model_ref: str):
    """The model's config (its shapes drive the precision probe), or None when it cannot be read here (loading the
    model then reports why)."""
    try:
        from modeling_aesformer import AesformerConfig

        return AesformerConfig.from_pretrained(model_ref)
    except Exception:  # noqa: BLE001 - load_scoring_model gives the error that names the flag
        return None


# ------------------------------------------------------------------------------------------------------------- run
def adapter_choice(adapters: Optional[List[str]]):
    """`--adapter` values as `resolve_adapters` takes them: None, the names, or "all" alone."""
    from modeling_aesformer.pipeline_aesformer import ALL_ADAPTERS
    from modeling_aesformer.scoring import ScoringError

    if adapters and ALL_ADAPTERS in adapters:
        if len(adapters) > 1:
            raise ScoringError("--adapter all cannot be combined with other names")
        return ALL_ADAPTERS
    return adapters


def score_images(args, log=print) -> int:
    """`aesformer score` over files: the scoring module (`modeling_aesformer.scoring`) with a progress bar, the
    result file appended per batch, resumption and the end-of-run report."""
    import torch
    from tqdm.auto import tqdm

    from aesformer_training.score_inputs import attach_comments, collect_inputs, load_comments
    from modeling_aesformer.adapter_weights_aesformer import base_model, image_only_answer
    from modeling_aesformer.pipeline_aesformer import ALL_ADAPTERS, resolve_adapters, untrained_answer_message
    from modeling_aesformer.scoring import (MAX_LISTED_FAILURES, ScoreFileWriter, ScoringError,
                                            iter_scored_batches, may_have_comments, read_score_file,
                                            records_to_score)

    from .precision import chosen_precision

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.batch_size < 1 or args.num_workers < 0:
        raise ScoringError("--batch-size must be >= 1 and --num-workers >= 0")
    if args.max_image_pixels is not None and args.max_image_pixels < 1:
        raise ScoringError("--max-image-pixels must be a positive number of pixels")
    if os.path.exists(args.output) and os.path.getsize(args.output) > 0 and not (args.resume or args.overwrite):
        raise ScoringError(f"--output {args.output} exists: pass --resume to continue it or --overwrite to start over")

    records, problems = collect_inputs(args.inputs)
    if not records:  # nothing to score: stop before the output file is touched
        listed = "; ".join(f"{item}: {reason}" for item, reason in problems[:MAX_LISTED_FAILURES])
        raise ScoringError(f"nothing to score: no INPUT names an image ({listed or 'no input'})")
    if args.comments:
        records = attach_comments(records, load_comments(args.comments), log)
    adapter_arg = adapter_choice(args.adapter)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ScoringError(f"--device {args.device}: CUDA is not available here (torch {torch.__version__}); "
                           "use --device cpu")
    chosen = chosen_precision(args, device, model_config(args.model), log, prefix="[score] ")
    dtype = chosen.torch_dtype
    on_runtime = chosen.backend != "torch"  # the ONNX export wants the fp32 weights: the cast comes after it
    model, processor, model_dir = load_scoring_model(args.model, None if adapter_arg == ALL_ADAPTERS else adapter_arg,
                                                     log, None if on_runtime else dtype)
    names, _ = resolve_adapters(model, adapter_arg)
    runtime = None
    if on_runtime:
        from modeling_aesformer.onnx_backend import prepare_backend

        runtime = prepare_backend(model, names, chosen.backend, chosen.dtype, model_dir, log, "[score] ",
                                  with_comments=may_have_comments(processor, records))
        model.to(dtype=dtype)  # the rows the runtime does not run
    if args.overwrite and not args.resume and os.path.exists(args.output):
        os.remove(args.output)  # only now: a run stopped by a bad input or model leaves the old file alone
    labels = [image_only_answer(base_model(model).config, name)[0] for name in names]  # the adapter column
    # only the default answer is warned about: adapters named with --adapter (or "all") were asked for
    warning = untrained_answer_message(model, names, how_to_name="--adapter NAME") if adapter_arg is None else None
    if warning:
        log(f"[score] warning: {warning}")
    model.to(device)

    if args.resume:  # a file changed since it was scored loses its rows: scored again
        from modeling_aesformer.scoring import drop_changed_files

        changed = drop_changed_files(args.output)
        if changed["changed"]:
            log(f"[score] {len(changed['changed'])} file(s) changed since they were scored (size or modification "
                f"time): scored again, their {changed['rows_removed']} earlier row(s) replaced: "
                + ", ".join(changed["changed"][:MAX_LISTED_FAILURES]))
        if changed["unchecked"]:
            log(f"[score] note: {changed['unchecked']} file(s) in {args.output} were scored by an earlier version, "
                "which recorded no size or modification time: kept unchecked")
    done, failed_before = read_score_file(args.output) if args.resume else ({}, {})
    todo, skipped = records_to_score(records, done, failed_before, labels)

    writer = ScoreFileWriter(args.output)
    failures = list(problems)
    writer.write([{"path": item, "error": reason} for item, reason in problems if not args.resume
                  or os.path.abspath(item) not in failed_before])
    log(f"[score] {count(len(records), 'image')} ({skipped} already in {args.output}), adapters {names}, "
        f"batch {args.batch_size}, {count(args.num_workers, 'worker')}, {device}"
        + (f", {'every image' if runtime.runs_comments else 'images without comments'} on {chosen.backend}"
           if on_runtime else ""))
    log("[score] decode: " + ("full" if getattr(args, "full_decode", False) else
                              "reduced for large JPEGs (draft mode; --full-decode decodes them in full, as `aesformer "
                              "eval` does)"))
    start, scored, small = time.perf_counter(), 0, 0
    progress = tqdm(total=len(todo), unit="img", desc="scoring", dynamic_ncols=True, file=sys.stderr,
                    mininterval=0.5)
    try:
        for batch in iter_scored_batches(model, processor, todo, names, args.batch_size, args.num_workers, device,
                                         args.threshold, args.max_image_pixels,
                                         reduced_decode=not getattr(args, "full_decode", False),
                                         backend=runtime):
            rows = []
            for index in sorted(batch):
                path = todo[index][0]
                have = done.get(os.path.abspath(path), set())
                for row in batch[index]:
                    if row.get("error"):
                        failures.append((path, row["error"]))
                    elif (row["adapter"] or "") in have:
                        continue  # written by an earlier, interrupted run
                    rows.append({**row, "path": path})
                scored += not batch[index][0].get("error")
                small += bool(batch[index][0].get("warnings"))
            writer.write(rows)
            progress.update(len(batch))
            progress.set_postfix(failed=len(failures), refresh=False)
    finally:
        progress.close()
        writer.close()
    elapsed = time.perf_counter() - start
    rate = len(todo) / elapsed if elapsed > 0 else float("nan")
    log(f"[score] scored {count(scored, 'image')} in {elapsed:.1f} s ({rate:.1f} images/s) -> {args.output}")
    if small:
        log(f"[score] {count(small, 'image')} smaller than the model's input side, upscaled: the warnings column "
            "says which")
    requested = {os.path.abspath(path) for path, _ in records}
    all_failures = failures + [(p, r) for p, r in failed_before.items() if p in requested]
    if all_failures:
        log(f"[score] {count(len(all_failures), 'input')} could not be scored"
            + (f" ({len(all_failures) - len(failures)} in an earlier run)" if len(all_failures) > len(failures)
               else "") + ":")
        for path, reason in all_failures[:MAX_LISTED_FAILURES]:
            log(f"  {path}: {reason}")
        if len(all_failures) > MAX_LISTED_FAILURES:
            log(f"  ... and {len(all_failures) - MAX_LISTED_FAILURES} more (see the error column of {args.output})")
        return 1
    return 0


# ------------------------------------------------------------------------------------------------------ sharded
def add_sharded_arguments(parser) -> None:
    """The flags of sharded scoring (`aesformer_training.sharded_scoring`), added to `aesformer score`'s parser."""
    group = parser.add_argument_group(
        "sharded inputs and several processes",
        "Tar (webdataset) and Parquet shards, .parquet output, and `accelerate launch -m aesformer_cli "
        "score ...` (the work is split by shard; parts and completion markers go to OUTPUT.parts/).")
    group.add_argument("--shard-comments", choices=("txt", "json"), default=None,
                       help="read each tar sample's comments from its .txt member (txt) or from the 'comments' field "
                       "of its .json member (json); default: no comments from shards (a .txt is usually a caption)")
    group.add_argument("--key-column", default=None, metavar="NAME",
                       help="Parquet column holding each row's id (default: the first of key, id, __key__; else the "
                       "row number)")
    group.add_argument("--image-column", default=None, metavar="NAME",
                       help="Parquet column holding the image: bytes, a datasets Image struct, or a path (default: "
                       "found from the schema)")
    group.add_argument("--files-per-shard", type=int, default=1000, metavar="N",
                       help="image files (folders, globs, lists) per unit of work (default 1000)")
    group.add_argument("--merge", action="store_true",
                       help="only merge the finished parts in OUTPUT.parts/ into --output (after a crash)")


def wants_sharded_run(args) -> bool:
    """Shards among the inputs, a .parquet output, --merge, or several processes (`WORLD_SIZE` > 1)."""
    if getattr(args, "merge", False) or args.output.lower().endswith(".parquet"):
        return True
    try:
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            return True
    except ValueError:
        pass
    from aesformer_training.shards import SHARD_EXTENSIONS, is_shard_file, shard_files_in_folder

    for item in args.inputs:
        if is_shard_file(item) or (os.path.isdir(item) and shard_files_in_folder(item)):
            return True
        if any(c in item for c in "*?[") and item.lower().endswith(SHARD_EXTENSIONS):
            return True
    return False


def run_sharded(args, log=print) -> int:
    """`aesformer score` over shards, in this process or every process of a launch
    (`aesformer_training.sharded_scoring.run`)."""
    from aesformer_training import sharded_scoring

    from modeling_aesformer.scoring import ScoringError

    if getattr(args, "backend", "torch") not in ("torch", "auto"):
        raise ScoringError(f"--backend {args.backend} scores image files only, not shards or several processes: "
                           "use --backend torch")
    if getattr(args, "dtype", None) == "int8":
        raise ScoringError("--dtype int8 scores image files only (on ONNX Runtime), not shards or several "
                           "processes: use --dtype auto, fp32 or bf16")

    def load_scorer(device, process_log):
        from modeling_aesformer.pipeline_aesformer import ALL_ADAPTERS, resolve_adapters

        from .precision import chosen_dtype

        adapter_arg = adapter_choice(args.adapter)
        dtype = chosen_dtype(args, device, process_log, prefix="[score] ")
        model, processor, _ = load_scoring_model(args.model, None if adapter_arg == ALL_ADAPTERS else adapter_arg,
                                                 process_log, dtype)
        return model, processor, resolve_adapters(model, adapter_arg)[0]

    return sharded_scoring.run(args, load_scorer, log)


# ---------------------------------------------------------------------------------------------------------- the CLI
def count(n: int, noun: str) -> str:
    """`1 image`, `2 images`, `0 images`."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Register `score` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "score", help="score images (files, folders, globs, list files, shards) into a CSV, JSONL or Parquet file",
        description="Score images with an Aesformer model. Decoding runs in DataLoader workers; results are "
        "appended to the output after every batch, so an interrupted run continues with --resume. Unreadable files "
        "get a row with the reason in the error column and never stop the run. Columns: " + ", ".join(FIELDS) + ".",
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="image files, folders (recursive), glob patterns, .csv/.jsonl/.txt lists of images, "
                        "webdataset .tar shards, or Parquet files")
    parser.add_argument("--model", default=None, metavar="DIR", help="model folder (or Hub id); required")
    parser.add_argument("--comments", action="append", default=None, metavar="FILE",
                        help="comments file (CSV/JSONL keyed by image path, file name or stem; a JSON object key -> "
                        "comment(s); see docs/data-format.md); repeat for several")
    parser.add_argument("--adapter", action="append", default=None, metavar="NAME|all",
                        help="dataset adapter to answer with (repeat for several; 'all' = base + every adapter; "
                        "default: the model's default adapter, see `aesformer set-default`)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default 16)")
    parser.add_argument("--num-workers", type=int, default=_default_workers(),
                        help="decoding worker processes (default: %(default)s)")
    parser.add_argument("--output", default="scores.csv",
                        help="the result file: .csv, .jsonl or .parquet (default scores.csv)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run: skip what is written")
    parser.add_argument("--overwrite", action="store_true", help="start the output file over")
    parser.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                        help="refuse images whose header declares more than N pixels, before decoding them "
                        "(decompression-bomb guard; default: the image processor's max_image_pixels, 178956970)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="high/low threshold (default: the answering head's own)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    add_dtype_argument(parser, int8=True)
    add_backend_argument(parser)
    parser.add_argument("--full-decode", action="store_true",
                        help="decode every JPEG at full size (default: a JPEG at least twice the model's input size is "
                        "decoded at 1/2, 1/4 or 1/8 of its size by Pillow's draft mode, never below the input size)")
    add_sharded_arguments(parser)
    parser.set_defaults(func=run)
    return parser


@command_entry
def run(args) -> int:
    """Entry point of `aesformer score`: 0 when every image was scored, 1 when any failed (2 for usage errors)."""
    if wants_sharded_run(args):  # shards, .parquet output, --merge or several processes
        return run_sharded(args)
    if not args.inputs or not args.model:
        from modeling_aesformer.scoring import ScoringError

        raise ScoringError("aesformer score needs INPUTs and --model DIR")
    return score_images(args)


__all__ = ["FIELDS", "add_subparser", "adapter_choice", "load_scoring_model", "run", "run_sharded", "score_images",
           "wants_sharded_run"]
