"""Scoring many images: the one path from an image (a file, its bytes, or a PIL image) and its comments to a result
row, used by `aesformer score` (files), sharded scoring, the web page and Python users.

    >>> from modeling_aesformer.scoring import score_files
    >>> for row in score_files(model, processor, ["a.jpg", ("b.jpg", "lovely light")], batch_size=16):
    ...     print(row["path"], row["score"], row["label"], row["error"])

The steps, each in one place:
1. decoding (`encode_image`): the image processor checks the pixel limit against the header, then decodes; a JPEG
   at least twice the model's input size on both sides is decoded at 1/2, 1/4 or 1/8 of its size first
   (`open_jpeg_draft`, Pillow's draft mode), as the processor shrinks it anyway. `ImageEncodingDataset` runs it in
   DataLoader workers and turns every failure into an error item, never an exception.
2. one collate (`collate_encodings`): the processor's padding (`aesformer_processing.pad_encodings`).
3. one batch step (`score_collated`): the model call (`AesformerModel.forward_adapters`), then the pipeline's own post-processing
   (`summarize_outputs`, `format_results`) into rows.
4. one row format (`FIELDS`): path, adapter, score, std, label, branch, trained, num_bins, score_range,
   distribution, comments_truncated, error, threshold, warnings. An image with comments gets one row (the
   with-comments heads answer, whatever adapters were asked for); an image without, one row per adapter; an image
   that cannot be read, one row with the reason in `error`.
5. result files (`ScoreFileWriter`, `read_score_file`): CSV or JSONL, appended and flushed per batch, and read back
   to resume an interrupted run; each file's size and modification time beside it (`<output>.sources.jsonl`), so
   a resume scores a changed file again (`drop_changed_files`).

Not a shipped file: it may import the package's own layers (the processing layer) and, inside functions, torch's
DataLoader and tqdm.
"""

import csv
import functools
import io
import json
import os
import warnings
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

from aesformer_processing.processing_aesformer import pad_encodings

FIELDS = ["path", "adapter", "score", "std", "label", "branch", "trained", "num_bins", "score_range", "distribution",
          "comments_truncated", "error", "threshold", "warnings"]
DISTRIBUTION_DIGITS = 6  # what a result file keeps of each probability
MAX_LISTED_FAILURES = 50  # failures named in a report (the result file holds them all)
TEXT_KEYS = ("input_ids", "attention_mask", "token_type_ids")


class ScoringError(ValueError):
    """An input problem found before scoring (a bad option, an unreadable result file, ...); the message names the
    option or file to fix."""


# -------------------------------------------------------------------------------------------------------- decoding
@functools.lru_cache(maxsize=1)
def image_extensions() -> frozenset:
    """Every file extension Pillow can open (not only save)."""
    import PIL.Image

    PIL.Image.init()
    return frozenset(ext.lower() for ext, fmt in PIL.Image.registered_extensions().items() if fmt in PIL.Image.OPEN)


def error_text(err: BaseException) -> str:
    """One line naming the exception class (the processor's `images[0]: ` prefix dropped)."""
    text = str(err)
    if text.startswith("images[0]: "):
        text = text[len("images[0]: "):]
    if not text.startswith(type(err).__name__) and ": " not in text[:40]:
        text = f"{type(err).__name__}: {text}"
    return " ".join(text.split())


def open_jpeg_draft(path: str, size: Tuple[int, int], max_image_pixels: Optional[int] = None):
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


def draft_size(processor) -> Optional[Tuple[int, int]]:
    """(width, height) the image processor resizes to, or None when it does not resize to a fixed size (then no
    reduced decode)."""
    image_processor = getattr(processor, "image_processor", processor)
    size = getattr(image_processor, "size", None) or {}
    if "width" not in size or not getattr(image_processor, "do_resize", True):
        return None
    return int(size["width"]), int(size["height"])


def pixel_limit(processor, max_image_pixels: Optional[int] = None) -> Optional[int]:
    """The pixel limit to check against each image's header: `max_image_pixels`, else the image processor's own."""
    if max_image_pixels is None:
        max_image_pixels = getattr(getattr(processor, "image_processor", processor), "max_image_pixels", None)
    if max_image_pixels is not None and (isinstance(max_image_pixels, bool) or int(max_image_pixels) < 1):
        raise ScoringError(f"--max-image-pixels must be a positive number of pixels, got {max_image_pixels}")
    return None if max_image_pixels is None else int(max_image_pixels)


def encode_image(processor, image, comments=None, max_image_pixels: Optional[int] = None,
                 reduce_to: Optional[Tuple[int, int]] = None) -> dict:
    """One image (a path, its encoded bytes, or a PIL image) and its comments through the processor:
    `{"pixel_values", "comments_truncated", and input_ids/attention_mask/token_type_ids with comments}`. Raises on
    any failure. The pixel limit is checked against the header before decoding; Pillow's process-wide limit is only
    raised (for this call, then restored) when the limit asked for is above it. `reduce_to` (width, height) turns on
    the reduced JPEG decode of a file (`open_jpeg_draft`)."""
    import PIL.Image

    with_text = getattr(processor, "tokenizer", None) is not None
    previous_limit = PIL.Image.MAX_IMAGE_PIXELS
    try:
        if max_image_pixels is not None and previous_limit is not None and max_image_pixels > 2 * previous_limit:
            PIL.Image.MAX_IMAGE_PIXELS = max_image_pixels  # Pillow refuses above 2x this in `open`
        with warnings.catch_warnings():
            # the image processor's header check is the rule; Pillow's warning below its hard limit is noise
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)
            if isinstance(image, (bytes, bytearray)):
                try:
                    image = PIL.Image.open(io.BytesIO(image))  # lazy: the processor checks the header first
                except PIL.Image.UnidentifiedImageError:
                    raise ValueError("UnidentifiedImageError: cannot identify the image data") from None
            elif isinstance(image, (str, os.PathLike)):
                image = os.fspath(image)
                if not os.path.isfile(image):
                    raise FileNotFoundError(f"no such file: {image}")
                if reduce_to is not None:
                    image = open_jpeg_draft(image, reduce_to, max_image_pixels) or image
            kwargs = {} if max_image_pixels is None else {"max_image_pixels": max_image_pixels}
            note = _small_image_note(processor, image, max_image_pixels)
            truncated = None
            if with_text:
                encoded = processor(images=[image], comments=[comments], return_tensors="pt", **kwargs)
                if comments is not None:
                    text, cut = processor.clean_and_check(comments)
                    truncated = bool(cut) if text else None
            else:
                if comments:
                    raise ValueError("the model folder has no tokenizer: comments cannot be used")
                encoded = processor(images=[image], return_tensors="pt", **kwargs)
        item = {"pixel_values": encoded["pixel_values"][0], "comments_truncated": truncated, "warnings": note}
        for key in TEXT_KEYS:
            if key in encoded:
                item[key] = encoded[key][0]
        return item
    finally:
        PIL.Image.MAX_IMAGE_PIXELS = previous_limit  # workers=0 runs here, in the caller's process


def _small_image_note(processor, image, max_image_pixels) -> Optional[str]:
    """The pipeline's small-image note (`small_image_warning`) for an image, from its header; None when the
    header cannot be read (the processor then reports the file)."""
    import PIL.Image

    from .pipeline_aesformer import small_image_warning

    input_size = getattr(getattr(processor, "image_processor", processor), "size", None)
    if isinstance(image, PIL.Image.Image):
        return small_image_warning(*image.size, input_size)
    try:
        with PIL.Image.open(image) as opened:
            return small_image_warning(*opened.size, input_size)
    except Exception:  # noqa: BLE001 - the processor's own read names the problem
        return None


class ImageEncodingDataset:
    """`records` = `[(image, comments or None)]` (image: a path, bytes or a PIL image), encoded one per item (in
    DataLoader workers): `{"index", "pixel_values", ...}`, or `{"index", "error"}` for an item that cannot be read
    (never an exception). `reduced_decode`: decode large JPEG files at a reduced size (`open_jpeg_draft`)."""

    def __init__(self, records: Sequence[Tuple[object, object]], processor, max_image_pixels: Optional[int] = None,
                 reduced_decode: bool = False):
        self.records = records
        self.processor = processor
        self.max_image_pixels = pixel_limit(processor, max_image_pixels)
        self.reduce_to = draft_size(processor) if reduced_decode else None

    def __len__(self):
        return len(self.records)

    def __getitem__(self, index):
        image, comments = self.records[index]
        try:
            return {"index": index, **encode_image(self.processor, image, comments, self.max_image_pixels,
                                                   self.reduce_to)}
        except Exception as err:  # noqa: BLE001 - every failure becomes a row, never a crash
            return {"index": index, "error": error_text(err)}


# ------------------------------------------------------------------------------------------------------- the batch
def pad_token_id(processor) -> int:
    tokenizer = getattr(processor, "tokenizer", None)
    return tokenizer.pad_token_id if tokenizer is not None and tokenizer.pad_token_id is not None else 0


def collate_encodings(items: Sequence[dict], pad_token_id: int = 0) -> dict:
    """One batch of encoded items (from `ImageEncodingDataset`, or any stream of the same items):
    `{"inputs": padded tensors or None, "indices", "comments_truncated", "errors": [(index, text)],
    "meta": {index: item["meta"]}, "markers": [items without "index"]}`. Items without an index (e.g. the sharded
    stream's end-of-shard markers) are passed through in order."""
    markers = [it for it in items if "index" not in it]
    items = [it for it in items if "index" in it]
    ok = [it for it in items if "error" not in it]
    return {
        "inputs": pad_encodings(ok, pad_token_id) if ok else None,
        "indices": [it["index"] for it in ok],
        "comments_truncated": [it.get("comments_truncated") for it in ok],
        "warnings": [it.get("warnings") for it in ok],
        "errors": [(it["index"], it["error"]) for it in items if "error" in it],
        "meta": {it["index"]: it["meta"] for it in items if "meta" in it},
        "markers": markers,
    }


def result_rows(results: List[dict], comments_truncated=None, note: Optional[str] = None) -> List[dict]:
    """The rows of one scored image from its `format_results` dicts: one per adapter, or one for an image answered
    by the with-comments heads (they answer whatever adapters were asked for). `note`: the image's warning text,
    or None (the `warnings` column: a list of notes, as the pipeline's)."""
    if results and results[0]["branch"] == "with_comments":
        results = results[:1]
    return [{**result, "comments_truncated": comments_truncated, "error": None, "warnings": [note] if note else []}
            for result in results]


def _answered_parts(model, inputs: dict, names: Sequence[str], device, backend) -> List[Tuple[List[int], dict]]:
    """[(batch rows, their `summarize_outputs` summary)]: the whole batch through the model, or with an ONNX
    `backend` (`onnx_backend.prepare_backend`) the rows without comments through its image-only files, the rows with
    comments through its with-comments file when it has one (`runs_comments`), else through the model."""
    import torch

    from .pipeline_aesformer import summarize_outputs

    batch = inputs["pixel_values"].shape[0]
    with_comments = [False] * batch  # as the model decides: comment tokens under the attention mask
    if "input_ids" in inputs:
        with_comments = (inputs["attention_mask"].bool().any(-1).tolist() if "attention_mask" in inputs
                         else [True] * batch)
    image_only_rows = [i for i in range(batch) if backend is not None and not with_comments[i]]
    comment_rows = [i for i in range(batch) if with_comments[i] and getattr(backend, "runs_comments", False)]
    torch_rows = [i for i in range(batch) if i not in set(image_only_rows + comment_rows)]
    parts = []
    if image_only_rows:
        outputs = backend.outputs(inputs["pixel_values"][image_only_rows])
        parts.append((image_only_rows, summarize_outputs(outputs, names)))
    if comment_rows:
        text = [inputs[key][comment_rows] if key in inputs else None for key in TEXT_KEYS]
        outputs = backend.comment_outputs(inputs["pixel_values"][comment_rows], *text)
        parts.append((comment_rows, summarize_outputs(outputs, names)))
    if torch_rows:
        device = device if device is not None else next(model.parameters()).device
        take = (lambda v: v) if len(torch_rows) == batch else (lambda v: v[torch_rows])
        inputs = {k: take(v).to(device) for k, v in inputs.items()}  # the model casts the pixels it gets
        with torch.inference_mode():
            outputs = model.forward_adapters(**inputs, adapters=list(names))
        parts.append((torch_rows, {k: v.cpu() for k, v in summarize_outputs(outputs, names).items()}))
    return parts


def score_collated(model, collated: dict, names: Sequence[str], device=None, threshold=None,
                   backend=None) -> Dict[object, list]:
    """One collated batch through the model: `{index: [row, ...]}` in the row format (`result_rows`; an item that
    could not be decoded gets one row with its `error`). `backend`: None (torch), or an ONNX runtime
    (`onnx_backend.prepare_backend`) for the rows without comments, and those with comments where it runs them."""
    from .adapter_weights_aesformer import base_model
    from .pipeline_aesformer import format_results

    rows = {}
    if collated["inputs"] is not None:
        config = base_model(model).config  # which head answered, trained or not
        notes = collated.get("warnings") or [None] * len(collated["indices"])
        for batch_rows, summary in _answered_parts(model, collated["inputs"], names, device, backend):
            for part_row, row in enumerate(batch_rows):
                index, truncated = collated["indices"][row], collated["comments_truncated"][row]
                results = format_results(summary, part_row, names, threshold, return_distribution=True,
                                         config=config)
                rows[index] = result_rows(results, truncated, notes[row])
        rows = {index: rows[index] for index in collated["indices"]}  # batch order, whichever part answered
    for index, reason in collated["errors"]:
        rows[index] = [{"error": reason}]
    return rows


# ------------------------------------------------------------------------------------------------ the Python entry
def _records(items: Iterable, comments: Optional[Sequence]) -> List[Tuple[object, object]]:
    records = []
    for position, item in enumerate(items):
        if isinstance(item, tuple):
            if len(item) != 2:
                raise ScoringError(f"items[{position}]: a tuple must be (image, comments), got {len(item)} values")
            records.append(item)
        else:
            records.append((item, None))
    if comments is not None:
        comments = list(comments)
        if len(comments) != len(records):
            raise ScoringError(f"comments has {len(comments)} entries for {len(records)} items: give one per item "
                               "(None for an image without comments)")
        records = [(image, text if given is None else given) for (image, given), text in zip(records, comments)]
    return records


def may_have_comments(processor, records: Sequence[Tuple[object, object]]) -> bool:
    """Whether some of `records` (`[(image, comments or None)]`) can reach the with-comments branch: the processor
    has a tokenizer and some comments are given (an ONNX backend then prepares that branch's file too)."""
    return getattr(processor, "tokenizer", None) is not None and any(bool(text) for _, text in records)


def iter_scored_batches(model, processor, records: Sequence[Tuple[object, object]], names: Sequence[str],
                        batch_size: int = 16, num_workers: int = 0, device=None, threshold=None,
                        max_image_pixels: Optional[int] = None, reduced_decode: bool = True, backend=None
                        ) -> Iterator[Dict[int, list]]:
    """The batches of `records` (`[(image, comments or None)]`) scored with the adapters `names`, one
    `{record index: [row, ...]}` per batch, in order; decoding runs in `num_workers` DataLoader workers.
    `backend`: as `score_collated` takes it."""
    from torch.utils.data import DataLoader

    if batch_size < 1 or num_workers < 0:
        raise ScoringError("--batch-size must be >= 1 and --num-workers >= 0")
    dataset = ImageEncodingDataset(records, processor, max_image_pixels, reduced_decode=reduced_decode)
    pin = device is not None and str(device).startswith("cuda")
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                        collate_fn=functools.partial(collate_encodings, pad_token_id=pad_token_id(processor)),
                        pin_memory=pin, prefetch_factor=4 if num_workers > 0 else None)
    for collated in loader:
        yield score_collated(model, collated, names, device, threshold, backend)


def score_files(model, processor, items: Iterable, comments: Optional[Sequence] = None, adapter=None,
                batch_size: int = 16, num_workers: int = 0, device=None, dtype=None, threshold=None,
                max_image_pixels: Optional[int] = None, reduced_decode: bool = True,
                backend: Optional[str] = None, model_dir=None) -> Iterator[dict]:
    """Score many images; yields result rows (`FIELDS`, plus `index`: the position of the item) in input order.

    Args:
        model, processor: an `AesformerModel` (or a PeftModel with dataset adapters) and its processor (an
            `AesformerImageProcessor` alone scores images without comments).
        items: images — paths, encoded bytes or PIL images — or `(image, comments)` tuples.
        comments: one entry per item (a string, a list of strings or None), instead of tuples.
        adapter: None (the model's default adapter), a name, a list of names, or "all".
        batch_size, num_workers: images per forward pass; DataLoader worker processes that decode.
        device: where the model runs (default: where it is); dtype: a torch dtype the model is converted to first
            (in place, as `model.to` does), or None to keep it; or "int8" with `backend="onnxruntime"` (the
            image-only branch quantized, `onnx_backend.int8_file_for`; the model itself stays as it is).
        threshold: the high/low threshold (default: the answering head's own).
        max_image_pixels: refuse images whose header declares more pixels (default: the image processor's).
        reduced_decode: decode JPEG files at least twice the input size at a reduced size (faster; scores move by
            a few hundredths at most).
        backend: "torch" (default) or an ONNX runtime for every image, "onnxruntime" (fp32, or int8 with
            `dtype="int8"`: the image-only branch quantized, images with comments in fp32) or "openvino" (fp32, or
            bf16 with `dtype=torch.bfloat16`); see `onnx_backend`. The model's branches are exported to ONNX first
            (`model_dir`'s own `onnx/` files when it has them, else once into the user's cache; the with-comments
            branch only when some item has comments).

    An image that cannot be read gets one row with its reason in `error` (and no numbers); nothing raises for it.
    """
    from .pipeline_aesformer import resolve_adapters

    names, _ = resolve_adapters(model, adapter)
    records = _records(items, comments)
    runtime = None
    if backend not in (None, "torch"):
        import torch

        from .onnx_backend import prepare_backend

        runtime_dtype = "int8" if dtype == "int8" else "bf16" if dtype == torch.bfloat16 else "fp32"
        runtime = prepare_backend(model, names, backend, runtime_dtype, model_dir,
                                  with_comments=may_have_comments(processor, records))
    elif dtype == "int8":
        from .onnx_backend import check_backend

        check_backend("torch", "int8")  # the error that names the backend to use
    if dtype is not None and dtype != "int8":
        model.to(dtype=dtype)
    if device is not None:
        model.to(device)
    paths = [os.fspath(image) if isinstance(image, (str, os.PathLike)) else None for image, _ in records]
    for scored in iter_scored_batches(model, processor, records, names, batch_size, num_workers, device, threshold,
                                      max_image_pixels, reduced_decode, runtime):
        for index in sorted(scored):
            for row in scored[index]:
                yield {**{key: None for key in FIELDS}, **row, "path": paths[index], "index": index}


# ------------------------------------------------------------------------------------------------------ result files
def file_row(row: dict) -> dict:
    """A row as a result file holds it: the `FIELDS`, the distribution rounded to `DISTRIBUTION_DIGITS`."""
    out = {key: row.get(key) for key in FIELDS}
    if isinstance(out["distribution"], list):
        out["distribution"] = [round(p, DISTRIBUTION_DIGITS) for p in out["distribution"]]
    return out


class ScoreFileWriter:
    """Appends rows to a CSV or JSONL result file and flushes after every batch (one `write` per batch).

    Appending to a CSV written by an earlier version (fewer columns) keeps that file's header: the new columns are
    left out of its rows rather than making the file ragged.

    Each file a row names gets its size and modification time in `<path>.sources.jsonl` (written before its rows:
    every row has its record), which `drop_changed_files` checks on resume."""

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
        self.sources = open(sources_path(path), "w" if new else "a", encoding="utf-8")
        self.recorded = set()
        if new and not self.jsonl:
            self.file.write(",".join(self.fields) + "\r\n")
            self.file.flush()

    def write(self, rows: List[dict]) -> None:
        if not rows:
            return
        records = []
        for row in rows:
            path = row.get("path")
            if path and os.path.abspath(path) not in self.recorded:
                self.recorded.add(os.path.abspath(path))
                records.append(json.dumps({"path": os.path.abspath(path), "stat": file_stat(path)}) + "\n")
        if records:
            self.sources.write("".join(records))
            self.sources.flush()
        buffer = io.StringIO()
        if self.jsonl:
            for row in rows:
                buffer.write(json.dumps(file_row(row), ensure_ascii=False) + "\n")
        else:
            writer = csv.DictWriter(buffer, fieldnames=self.fields)
            for row in rows:
                flat = file_row(row)
                for key in ("distribution", "score_range", "warnings"):
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
        self.sources.close()


def sources_path(path: str) -> str:
    """Where a result file's files are recorded (size, modification time) for `--resume`."""
    return f"{path}.sources.jsonl"


def file_stat(path: str) -> Optional[List[int]]:
    """[size, modification time in ns] of a file (None when it cannot be read): what `--resume` compares to decide
    that an input is still the one that was scored."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return [stat.st_size, stat.st_mtime_ns]


def drop_changed_files(path: str) -> dict:
    """Before a resume: the files of result file `path` whose size or modification time changed since they were
    scored (per `<path>.sources.jsonl`) lose their rows (the file rewritten under a temporary name, then renamed), so
    they are scored again. Returns `{"changed": [paths], "rows_removed": n, "unchecked": n}`; `unchecked` counts the
    files of a result file written before the sources were recorded (kept as they are)."""
    summary = {"changed": [], "rows_removed": 0, "unchecked": 0}
    if not os.path.exists(path) or os.path.getsize(path) == 0:
        return summary
    read_score_file(path)  # cuts off a half-written last line
    recorded = {}
    if os.path.exists(sources_path(path)):
        with open(sources_path(path), encoding="utf-8") as f:
            for line in f:
                try:
                    item = json.loads(line)
                except ValueError:  # a line cut off by a kill: its rows were not written yet
                    continue
                recorded[item["path"]] = item["stat"]
    with open(path, encoding="utf-8", newline="") as f:
        text = f.read()
    jsonl = path.lower().endswith((".jsonl", ".json"))
    if jsonl:
        lines = [line for line in text.splitlines(keepends=True) if line.strip()]
        keyed = [(json.loads(line).get("path") or "", line) for line in lines]
        header = ""
    else:
        rows = list(csv.reader(io.StringIO(text, newline="")))
        header, body = rows[0], rows[1:]
        column = header.index("path")
        keyed = []
        for row in body:
            buffer = io.StringIO()
            csv.writer(buffer).writerow(row)
            keyed.append((row[column] if column < len(row) else "", buffer.getvalue()))
        buffer = io.StringIO()
        csv.writer(buffer).writerow(header)
        header = buffer.getvalue()
    changed = set()
    for name in dict.fromkeys(key for key, _ in keyed if key):
        absolute = os.path.abspath(name)
        if absolute not in recorded:
            summary["unchecked"] += 1
        elif recorded[absolute] != file_stat(name):
            changed.add(name)
    if not changed:
        return summary
    kept = [line for key, line in keyed if key not in changed]
    summary["changed"] = sorted(changed)
    summary["rows_removed"] = len(keyed) - len(kept)
    tmp = f"{path}.resume-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8", newline="") as f:
        f.write(header + "".join(kept))
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return summary


def read_score_file(path: str) -> Tuple[Dict[str, set], Dict[str, str]]:
    """(absolute path -> adapters with a score row, absolute path -> error) from an earlier run's result file.
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


def records_to_score(records: Sequence[Tuple[str, object]], done: Dict[str, set], failed: Dict[str, str],
                     adapters: Sequence[str]) -> Tuple[List[Tuple[str, object]], int]:
    """(records still to score, number skipped) after an earlier run's result file (`read_score_file`): an image is
    done when it failed, when it has a row for every adapter of `adapters` (the names the adapter column holds), or
    a row without adapter (an image with comments: the with-comments heads answered for all)."""
    todo, skipped = [], 0
    for path, comments in records:
        key = os.path.abspath(path)
        if key in failed or (key in done and (set(adapters) <= done[key] or "" in done[key])):
            skipped += 1
        else:
            todo.append((path, comments))
    return todo, skipped


__all__ = ["FIELDS", "ImageEncodingDataset", "ScoreFileWriter", "ScoringError", "collate_encodings",
           "drop_changed_files", "encode_image", "error_text", "file_row", "file_stat", "iter_scored_batches",
           "may_have_comments", "open_jpeg_draft", "read_score_file", "records_to_score", "result_rows",
           "score_collated", "score_files", "sources_path"]
