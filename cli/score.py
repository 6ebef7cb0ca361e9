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
- `--dtype {auto,fp32,bf16,fp16}`: the precision of the weights (auto = bf16 where the hardware computes it faster
  than fp32, else fp32; the choice and its reason are printed at the start). The heads, distribution and score stay
  fp32.
- Comments that are empty or whitespace-only after cleaning count as no comments (`branch` = image_only).
  `comments_truncated` is true when the processor's word or token limit cut an image's comments, false when they
  were used whole, empty when the image had no comment text.
- List and comments files must be UTF-8: other bytes stop the run with an error naming the file and the line.

Output columns: path, adapter, score, std, label, branch, trained, num_bins, score_range (JSON [first, last] bin
value: the scale of the score), distribution (JSON list), comments_truncated, error. An image with comments gets
one row, with an empty adapter (the with-comments heads answer, whatever `--adapter` says). `trained` is false on an image-only row answered by a head that no training or conversion produced (e.g. the
model's own image-only modules after stage 1: a warning then names the adapters to use), empty on rows with comments.
Without `--adapter`, images without comments are answered by the model's default adapter (config
`default_adapter`, set by `aesformer adapt` or `aesformer set-default`).
"""

import argparse
import csv
import functools
import glob
import io
import json
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .common import CommandError, command_entry
from .precision import add_dtype_argument

FIELDS = ["path", "adapter", "score", "std", "label", "branch", "trained", "num_bins", "score_range", "distribution",
          "comments_truncated", "error"]
LIST_EXTENSIONS = (".csv", ".jsonl", ".txt")
_IMAGE_KEYS = ("image", "path", "file", "file_name", "filename", "image_path")
_COMMENT_KEYS = ("comments", "comment", "text")
_GLOB_CHARS = "*?["
MAX_LISTED_FAILURES = 50


class ScoringError(CommandError, RuntimeError):
    """An input problem `aesformer score` found; the message names the flag or file to fix."""


# ------------------------------------------------------------------------------------------------------------ inputs
@functools.lru_cache(maxsize=1)
def image_extensions() -> frozenset:
    """Every file extension Pillow can open (not only save)."""
    import PIL.Image

    PIL.Image.init()
    return frozenset(ext.lower() for ext, fmt in PIL.Image.registered_extensions().items() if fmt in PIL.Image.OPEN)


def _is_image_name(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in image_extensions()


def _walk(folder: str) -> List[str]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        found += [os.path.join(root, f) for f in sorted(files) if _is_image_name(f)]
    return found


def _rows(path: str) -> Iterable[dict]:
    """Rows of a CSV (with header) or JSONL file, as dicts. Bytes that are not UTF-8, a line that is not JSON or a
    CSV that cannot be parsed raise `ScoringError` naming the file and the line."""
    from aesformer_training.text_files import TextEncodingError, read_utf8_text

    jsonl = path.lower().endswith(".jsonl")
    try:
        text = read_utf8_text(path, csv_rows=not jsonl)
    except TextEncodingError as err:
        raise ScoringError(str(err)) from None
    if jsonl:
        for number, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    row = json.loads(line)
                except ValueError as err:
                    raise ScoringError(f"{path}, line {number}: not valid JSON: {err}") from None
                if not isinstance(row, dict):
                    raise ScoringError(f"{path}, line {number}: each JSONL line must be an object")
                yield row
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            yield from reader
        except csv.Error as err:
            raise ScoringError(f"{path}, line {reader.line_num}: cannot parse the CSV: {err}") from None


def _pick(row: dict, keys: Sequence[str], where: str, required: bool = True):
    for key in keys:
        if key in row:
            return row[key]
    if required:
        raise ScoringError(f"{where}: no {keys[0]!r} column (accepted: {', '.join(keys)}); got {sorted(row)}")
    return None


def _resolve(path: str, base: str) -> str:
    path = os.path.expanduser(path)
    return os.path.normpath(path if os.path.isabs(path) else os.path.join(base, path))


def _read_list_file(path: str) -> List[Tuple[str, Optional[object]]]:
    base = os.path.dirname(path)
    if path.lower().endswith(".txt"):
        from aesformer_training.text_files import TextEncodingError, read_utf8_text

        try:
            lines = read_utf8_text(path).splitlines()
        except TextEncodingError as err:
            raise ScoringError(str(err)) from None
        return [(_resolve(line.strip(), base), None) for line in lines if line.strip() and not line.startswith("#")]
    records = []
    for row in _rows(path):
        image = _pick(row, _IMAGE_KEYS, path)
        comments = _pick(row, _COMMENT_KEYS, path, required=False)
        records.append((_resolve(str(image), base), comments if comments not in ("", None) else None))
    return records


def collect_inputs(inputs: Sequence[str]) -> Tuple[List[Tuple[str, Optional[object]]], List[Tuple[str, str]]]:
    """(records, problems): one `(path, comments or None)` per image, in order, without duplicates; `problems` are
    `(input, reason)` for inputs that name nothing."""
    records, problems, seen = [], [], set()

    def add(path, comments=None):
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            records.append((os.path.normpath(path), comments))

    for item in inputs:
        if os.path.isdir(item):
            found = _walk(item)
            if not found:
                problems.append((item, "folder holds no image file Pillow can read"))
            for path in found:
                add(path)
        elif os.path.isfile(item):
            if item.lower().endswith(LIST_EXTENSIONS):
                for path, comments in _read_list_file(item):
                    add(path, comments)
            else:
                add(item)
        elif any(c in item for c in _GLOB_CHARS):
            matches = sorted(glob.glob(item, recursive=True))
            if not matches:
                problems.append((item, "no file matches this pattern"))
            for match in matches:
                if os.path.isdir(match):
                    for path in _walk(match):
                        add(path)
                elif _is_image_name(match):
                    add(match)
        else:
            add(item)  # missing: reported as a failed image with its reason
    return records, problems


def load_comments(paths):
    """The comments of one or more `--comments` files, in any format `aesformer_training.comments` reads (the same
    reader as the dataset loaders): a `CommentTable`."""
    from aesformer_training.comments import CommentsFileError, read_comments
    from aesformer_training.text_files import TextEncodingError

    try:
        return read_comments([paths] if isinstance(paths, (str, os.PathLike)) else paths)
    except (CommentsFileError, TextEncodingError, FileNotFoundError) as err:
        raise ScoringError(f"--comments: {err}") from None


def attach_comments(records, table, log=print):
    """`records` with the comments of `table` for every image that has none from its list file. A key matches an
    image by its path (absolute, relative to the working folder or to the comments file), else its file name, else
    its stem; a key that names two images, or comments that match no image at all, stop the run (`ScoringError`)."""
    from aesformer_training.comments import AmbiguousCommentKeysError

    try:
        match = table.match([path for path, _ in records])
    except AmbiguousCommentKeysError as err:
        raise ScoringError(f"--comments: {err}") from None
    if table.entries and not match.n_matched_keys:
        keys = ", ".join(repr(entry.key) for entry in table.entries[:3])
        images = ", ".join(os.path.basename(path) for path, _ in records[:3])
        raise ScoringError(f"--comments {', '.join(table.files)}: none of its {len(table.entries):,} keys matches an "
                           f"input image (keys like {keys}; images like {images}); keys are image paths, file names "
                           "or file names without the extension")
    for note in match.notes:
        log(f"[score] {note}")
    log(f"[score] comments: {match.n_images_with_comments:,} of {len(records):,} images have comments")
    return [(path, comments if comments is not None else (texts or None))
            for (path, comments), texts in zip(records, match.comments)]


# --------------------------------------------------------------------------------------------- decoding (workers)
class ImageDataset:
    """Decodes and preprocesses one image per item (in DataLoader workers); returns the tensors, or an error
    record `{"index", "error"}` that never raises.

    `max_image_pixels` (default: the image processor's own) is checked by the image processor against the file's
    header before decoding. Pillow's process-wide `PIL.Image.MAX_IMAGE_PIXELS` is never disabled: it is raised for
    the duration of one item only when the limit asked for is above Pillow's own (and restored after)."""

    def __init__(self, records, processor, max_image_pixels: Optional[int] = None, reduced_decode: bool = False):
        self.records = records
        self.processor = processor
        image_processor = getattr(processor, "image_processor", processor)
        size = getattr(image_processor, "size", None) or {}
        # JPEG draft decode needs the size the image processor resizes to
        self.draft_size = ((int(size["width"]), int(size["height"])) if reduced_decode and "width" in size
                           and getattr(image_processor, "do_resize", True) else None)
        if max_image_pixels is None:
            max_image_pixels = getattr(image_processor, "max_image_pixels", None)
        if max_image_pixels is not None and (isinstance(max_image_pixels, bool) or int(max_image_pixels) < 1):
            raise ScoringError(f"--max-image-pixels must be a positive number of pixels, got {max_image_pixels}")
        self.max_image_pixels = None if max_image_pixels is None else int(max_image_pixels)
        self.with_text = getattr(processor, "tokenizer", None) is not None

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        import PIL.Image

        path, comments = self.records[index]
        previous_limit = PIL.Image.MAX_IMAGE_PIXELS
        limit = self.max_image_pixels
        try:
            if limit is not None and previous_limit is not None and limit > 2 * previous_limit:
                PIL.Image.MAX_IMAGE_PIXELS = limit  # Pillow refuses above 2x this in `open`: the asked limit rules
            with warnings.catch_warnings():
                # the image processor's header check is the rule; Pillow's warning below its hard limit is noise
                warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"no such file: {path}")
                pixel_kwargs = {} if limit is None else {"max_image_pixels": limit}
                truncated = None
                image = path
                if self.draft_size is not None:
                    image = open_reduced_jpeg(path, self.draft_size, limit) or path
                if self.with_text:
                    encoded = self.processor(images=[image], comments=[comments], return_tensors="pt", **pixel_kwargs)
                    if comments is not None:
                        text, cut = self.processor.clean_and_check(comments)
                        truncated = bool(cut) if text else None
                else:
                    if comments:
                        raise ValueError("the model folder has no tokenizer: comments cannot be used")
                    encoded = self.processor(images=[image], return_tensors="pt", **pixel_kwargs)
            item = {"index": index, "pixel_values": encoded["pixel_values"][0], "comments_truncated": truncated}
            if "input_ids" in encoded:
                for key in ("input_ids", "attention_mask", "token_type_ids"):
                    if key in encoded:
                        item[key] = encoded[key][0]
            return item
        except Exception as err:  # noqa: BLE001 - every failure becomes a row, never a crash
            return {"index": index, "error": _reason(err)}
        finally:
            PIL.Image.MAX_IMAGE_PIXELS = previous_limit  # workers=0 runs here, in the caller's process


def open_reduced_jpeg(path: str, size: Tuple[int, int], max_image_pixels: Optional[int] = None):
    """The JPEG at `path` decoded at the smallest of 1/2, 1/4, 1/8 of its size that still covers `size` (width,
    height) on both sides (Pillow's draft mode: the decoder's DCT scaling), as a loaded PIL image; `None` when the
    file is not a JPEG, is not at least twice `size`, is larger than `max_image_pixels`, or fails to decode — the
    caller then reads the file in full, which reports any problem with the file itself."""
    import PIL.Image

    try:
        image = PIL.Image.open(path)
    except Exception:  # noqa: BLE001 - the full read gives the error
        return None
    try:
        width, height = image.size
        if image.format != "JPEG" or width < 2 * size[0] or height < 2 * size[1] or (
                max_image_pixels is not None and width * height > max_image_pixels):
            image.close()
            return None
        image.draft(image.mode, size)
        image.load()
        return image
    except Exception:  # noqa: BLE001
        image.close()
        return None


def _reason(err: BaseException) -> str:
    text = str(err)
    if text.startswith("images[0]: "):
        text = text[len("images[0]: "):]
    if not text.startswith(type(err).__name__) and ": " not in text[:40]:
        text = f"{type(err).__name__}: {text}"
    return " ".join(text.split())  # one line


def collate(items, pad_id: int = 0):
    """(batch or None, [(index, error)]): stacks the decoded items, pads the comment tokens (all-zero mask rows for
    images without comments)."""
    import torch

    errors = [(it["index"], it["error"]) for it in items if "error" in it]
    ok = [it for it in items if "error" not in it]
    if not ok:
        return None, errors
    batch = {"indices": [it["index"] for it in ok], "comments_truncated": [it.get("comments_truncated") for it in ok],
             "pixel_values": torch.stack([it["pixel_values"] for it in ok])}
    if any("input_ids" in it for it in ok):
        length = max([it["input_ids"].shape[0] for it in ok if "input_ids" in it] + [1])
        ids = torch.full((len(ok), length), pad_id, dtype=torch.long)
        mask = torch.zeros((len(ok), length), dtype=torch.long)
        types = torch.zeros((len(ok), length), dtype=torch.long)
        for row, it in enumerate(ok):
            if "input_ids" in it:
                n = it["input_ids"].shape[0]
                ids[row, :n] = it["input_ids"]
                mask[row, :n] = it["attention_mask"]
                if "token_type_ids" in it:
                    types[row, :n] = it["token_type_ids"]
        batch.update(input_ids=ids, attention_mask=mask, token_type_ids=types)
    return batch, errors


# ----------------------------------------------------------------------------------------------------------- output
class ResultWriter:
    """Appends rows to a CSV or JSONL file and flushes after every batch (one `write` per batch).

    Appending to a CSV written by an earlier version (fewer columns) keeps that file's header: the new columns are
    left out of its rows rather than making the file ragged."""

    def __init__(self, path: str):
        self.path = path
        self.jsonl = path.lower().endswith((".jsonl", ".json"))
        self.fields = list(FIELDS)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        new = not os.path.exists(path) or os.path.getsize(path) == 0
        if not new and not self.jsonl:
            with open(path, encoding="utf-8", newline="") as f:
                header = next(csv.reader(f), [])
            if not header or "path" not in header or not set(header) <= set(FIELDS):
                raise ScoringError(f"{path} is not an `aesformer score` CSV (header {header}): cannot append to it")
            self.fields = header
        self.file = open(path, "a", encoding="utf-8", newline="")
        if new and not self.jsonl:
            self.file.write(",".join(self.fields) + "\r\n")
            self.file.flush()

    def write(self, rows: List[dict]) -> None:
        if not rows:
            return
        buffer = io.StringIO()
        if self.jsonl:
            for row in rows:
                buffer.write(json.dumps({k: row.get(k) for k in FIELDS}, ensure_ascii=False) + "\n")
        else:
            writer = csv.DictWriter(buffer, fieldnames=self.fields)
            for row in rows:
                flat = dict(row)
                for key in ("distribution", "score_range"):
                    if isinstance(flat.get(key), list):
                        flat[key] = json.dumps(flat[key])
                for key in ("comments_truncated", "trained"):
                    if isinstance(flat.get(key), bool):
                        flat[key] = "true" if flat[key] else "false"
                writer.writerow({k: ("" if flat.get(k) is None else flat[k]) for k in self.fields})
        self.file.write(buffer.getvalue())  # one write per batch
        self.file.flush()

    def close(self):
        self.file.close()


def read_existing(path: str) -> Tuple[Dict[str, set], Dict[str, str]]:
    """(absolute path -> adapters with a score row, absolute path -> error) from an earlier run's output.
    A last line cut off by an interrupted write is removed from the file first."""
    done, failed = {}, {}
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return done, failed
    with open(path, "rb+") as f:
        data = f.read()
        if not data.endswith(b"\n"):
            cut = data.rfind(b"\n") + 1
            f.seek(cut)
            f.truncate()
            data = data[:cut]
    text = data.decode("utf-8")
    if path.lower().endswith((".jsonl", ".json")):
        rows = [json.loads(line) for line in text.splitlines() if line.strip()]
    else:
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    for row in rows:
        key = os.path.abspath(row.get("path") or "")
        if row.get("error"):
            failed[key] = row["error"]
        else:
            done.setdefault(key, set()).add(row.get("adapter") or "")
    return done, failed


# -------------------------------------------------------------------------------------------------------- the model
def load_scoring_model(model_ref: str, adapters: Optional[List[str]], log=print, dtype=None):
    """`loading.load_model` as scoring wants it: every saved adapter (so that `--adapter` names are checked against
    all of them), none when only 'base' is asked for; a folder without tokenizer scores images only."""
    from modeling_aesformer.pipeline_aesformer import ALL_ADAPTERS

    from .loading import load_model

    wanted = [a for a in (adapters or []) if a != "base"]
    return load_model(model_ref, ALL_ADAPTERS if wanted or not adapters else adapters, dtype=dtype,
                      images_only_ok=True, peft_required=bool(wanted), log=log, prefix="[score] ")


# ------------------------------------------------------------------------------------------------------------- run
def score_batch(model, batch, errors, names, device, threshold, config):
    """One collated batch through the model: `({index: [result per adapter] or error text}, {index: comments
    truncated})` (the rows `format_results` gives; `errors` are the items that could not be decoded)."""
    import torch

    from modeling_aesformer.pipeline_aesformer import format_results, summarize_outputs

    results, truncated = {}, {}
    if batch is not None:
        indices = batch.pop("indices")
        truncated = dict(zip(indices, batch.pop("comments_truncated")))
        inputs = {k: v.to(device) for k, v in batch.items()}
        with torch.inference_mode():
            outputs = model(**inputs, adapters=list(names))
        summary = {k: v.cpu() for k, v in summarize_outputs(outputs, names).items()}
        for row, index in enumerate(indices):
            results[index] = format_results(summary, row, names, threshold, return_distribution=True, config=config)
    for index, reason in errors:
        results[index] = reason
    return results, truncated


def score_images(args, log=print) -> int:
    import torch
    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from modeling_aesformer.adapter_weights_aesformer import base_model, image_only_answer
    from modeling_aesformer.pipeline_aesformer import ALL_ADAPTERS, resolve_adapters, untrained_answer_message
    from .precision import chosen_dtype

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
    adapter_arg = args.adapter
    if adapter_arg and ALL_ADAPTERS in adapter_arg:
        if len(adapter_arg) > 1:
            raise ScoringError("--adapter all cannot be combined with other names")
        adapter_arg = ALL_ADAPTERS
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ScoringError(f"--device {args.device}: CUDA is not available here (torch {torch.__version__}); "
                           "use --device cpu")
    dtype = chosen_dtype(args, device, log, prefix="[score] ")
    model, processor, _ = load_scoring_model(args.model, None if adapter_arg == ALL_ADAPTERS else adapter_arg, log,
                                             dtype)
    names, _ = resolve_adapters(model, adapter_arg)
    if args.overwrite and not args.resume and os.path.exists(args.output):
        os.remove(args.output)  # only now: a run stopped by a bad input or model leaves the old file alone
    config = base_model(model).config
    labels = [image_only_answer(config, name)[0] for name in names]  # the adapter column of the rows
    warning = untrained_answer_message(model, names)
    if warning:
        log(f"[score] warning: {warning}")
    model.to(device)

    done, failed_before = read_existing(args.output) if args.resume else ({}, {})
    todo, skipped = [], 0
    for path, comments in records:
        key = os.path.abspath(path)
        # an image with comments has one row, without adapter (""): the with-comments heads answer for all
        if key in failed_before or (key in done and (set(labels) <= done[key] or "" in done[key])):
            skipped += 1
        else:
            todo.append((path, comments))

    writer = ResultWriter(args.output)
    failures = [(item, reason) for item, reason in problems]
    writer.write([{"path": item, "error": reason} for item, reason in problems if not args.resume
                  or os.path.abspath(item) not in failed_before])
    tokenizer = getattr(processor, "tokenizer", None)
    pad_id = tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0
    dataset = ImageDataset(todo, processor, args.max_image_pixels,
                           reduced_decode=not getattr(args, "full_decode", False))
    loader = DataLoader(
        dataset, batch_size=args.batch_size, num_workers=args.num_workers,
        collate_fn=functools.partial(collate, pad_id=pad_id), pin_memory=device.type == "cuda",
        prefetch_factor=4 if args.num_workers > 0 else None,
    )
    log(f"[score] {len(records)} images ({skipped} already in {args.output}), adapters {names}, "
        f"batch {args.batch_size}, {args.num_workers} workers, {device}")
    start, scored = time.perf_counter(), 0
    progress = tqdm(total=len(todo), unit="img", desc="scoring", dynamic_ncols=True, file=sys.stderr,
                    mininterval=0.5)
    try:
        for batch, errors in loader:
            rows = []
            results, truncated = score_batch(model, batch, errors, names, device, args.threshold, config)
            for index in sorted(results):
                path = todo[index][0]
                value = results[index]
                if isinstance(value, str):
                    rows.append({"path": path, "error": value})
                    failures.append((path, value))
                    continue
                have = done.get(os.path.abspath(path), set())
                if value and value[0]["branch"] == "with_comments":
                    value = value[:1]  # the with-comments heads answered: one row, whatever the adapters asked
                for result in value:
                    if (result["adapter"] or "") in have:
                        continue  # written by an earlier, interrupted run
                    dist = [round(p, 6) for p in result["distribution"]]
                    rows.append({**result, "path": path, "distribution": dist,
                                 "comments_truncated": truncated.get(index), "error": None})
                scored += 1
            writer.write(rows)
            progress.update(len(results))
            progress.set_postfix(failed=len(failures), refresh=False)
    finally:
        progress.close()
        writer.close()
    elapsed = time.perf_counter() - start
    rate = len(todo) / elapsed if elapsed > 0 else float("nan")
    log(f"[score] scored {scored} images in {elapsed:.1f} s ({rate:.1f} images/s) -> {args.output}")
    requested = {os.path.abspath(path) for path, _ in records}
    all_failures = failures + [(p, r) for p, r in failed_before.items() if p in requested]
    if all_failures:
        log(f"[score] {len(all_failures)} input(s) could not be scored"
            + (f" ({len(all_failures) - len(failures)} in an earlier run)" if len(all_failures) > len(failures)
               else "") + ":")
        for path, reason in all_failures[:MAX_LISTED_FAILURES]:
            log(f"  {path}: {reason}")
        if len(all_failures) > MAX_LISTED_FAILURES:
            log(f"  ... and {len(all_failures) - MAX_LISTED_FAILURES} more (see the error column of {args.output})")
        return 1
    return 0


# ---------------------------------------------------------------------------------------------------------- the CLI
def _default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Register `score` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "score", help="score images (files, folders, globs, list files) into a CSV/JSONL file",
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
    parser.add_argument("--output", default="scores.csv", help="scores.csv or scores.jsonl (default scores.csv)")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run: skip what is written")
    parser.add_argument("--overwrite", action="store_true", help="start the output file over")
    parser.add_argument("--max-image-pixels", type=int, default=None, metavar="N",
                        help="refuse images whose header declares more than N pixels, before decoding them "
                        "(decompression-bomb guard; default: the image processor's max_image_pixels, 178956970)")
    parser.add_argument("--threshold", type=float, default=None,
                        help="high/low threshold (default: the answering head's own)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, ... (default: cuda if available)")
    add_dtype_argument(parser)
    parser.add_argument("--full-decode", action="store_true",
                        help="decode every JPEG at full size (default: a JPEG at least twice the model's input size is "
                        "decoded at 1/2, 1/4 or 1/8 of its size by Pillow's draft mode, never below the input size)")
    from .sharded_scoring import add_arguments as add_sharded_arguments

    add_sharded_arguments(parser)
    parser.set_defaults(func=run)
    return parser


@command_entry
def run(args) -> int:
    """Entry point of `aesformer score`: 0 when every image was scored, 1 when any failed (2 for usage errors)."""
    from . import sharded_scoring

    if sharded_scoring.wants_sharded_run(args):  # shards, .parquet output, --merge or several processes
        return sharded_scoring.run(args)
    if not args.inputs or not args.model:
        raise ScoringError("aesformer score needs INPUTs and --model DIR")
    return score_images(args)


__all__ = ["add_subparser", "collect_inputs", "load_comments", "read_existing", "run", "score_images"]
