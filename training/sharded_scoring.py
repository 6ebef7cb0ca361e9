"""Scoring over shards, in one process or many (accelerate / torch.distributed): the driver behind

    accelerate launch --num_processes 8 -m aesformer_cli score 'shards/*.tar' data.parquet \\
        --model MODEL_DIR --output scores.parquet

(`aesformer score` uses it whenever an input is a tar or Parquet shard, the output is `.parquet`, `--merge` is given,
or the command runs under a launcher with several processes). Decoding, the collate, the batch step and the row
format are the scoring module's (`modeling_aesformer.scoring`); the shard readers are `shards.py`. `run` takes the
command's options as attributes (`ShardedScoringOptions` lists them) and a `load_scorer(device, log)` callable that
returns `(model, processor, adapter names)`.

How the work is shared and made safe to interrupt (`<output>.parts/` must be on a file system every process sees):
1. The main process lists the shards (`shards.plan_shards`), checks every Parquet schema and the output, writes
   `manifest.json` (the shards, in order, and the settings that shape the rows) and hands each process its shards:
   the unfinished ones, round-robin over the processes.
2. Each process scores its shards (decoding in DataLoader workers) and writes one part per shard,
   `<shard>.parquet`, first under a temporary name, renamed when the shard's last row is written, then an atomic
   completion marker `<shard>.done.json` (counts, errors by reason, seconds). A shard counts as done only when both
   exist, so a process killed at any moment (SIGKILL included) leaves at most unfinished shards, which `--resume`
   scores again from the start: nothing lost, nothing scored twice.
3. When every process is done, the main process merges the parts in manifest order into `--output` (written under a
   temporary name, then renamed) and reports images/s per process and in total, errors by reason and the shards
   done. `aesformer score --merge --output FILE` redoes only the merge (after a crash during it, for instance).
"""

import contextlib
import csv
import io
import json
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from modeling_aesformer.scoring import (MAX_LISTED_FAILURES, ScoringError, collate_encodings, file_row,
                                        pad_token_id, score_collated)

OUTPUT_FIELDS = ["key", "shard", "path", "adapter", "score", "std", "label", "branch", "trained", "num_bins",
                 "score_range", "distribution", "comments_truncated", "error", "threshold", "warnings"]
OUTPUT_FORMATS = (".parquet", ".csv", ".jsonl", ".json")
MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
# Processes that finish early wait for the others at the end; torch.distributed's default timeout (30 min) is shorter
# than the imbalance of a long run.
PROCESS_GROUP_TIMEOUT_HOURS = 48


@dataclass
class ShardedScoringOptions:
    """What a sharded run needs (the flags of `aesformer score`; an `argparse.Namespace` with these attributes
    serves as well). `model` names the model in the manifest (a resumed run must name the same); the model itself
    and its adapters come from `run`'s `load_scorer`."""

    inputs: Sequence[str]
    output: str
    model: Optional[str] = None
    batch_size: int = 16
    num_workers: int = 0
    device: Optional[str] = None
    threshold: Optional[float] = None
    max_image_pixels: Optional[int] = None
    comments: Optional[List[str]] = None
    shard_comments: Optional[str] = None
    key_column: Optional[str] = None
    image_column: Optional[str] = None
    files_per_shard: int = 1000
    resume: bool = False
    overwrite: bool = False
    merge: bool = False


def world_size() -> int:
    """The number of processes a launcher started (`WORLD_SIZE`), 1 without one."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


# ------------------------------------------------------------------------------------------------------ file helpers
def parts_folder(output: str) -> str:
    return output + ".parts"


def _write_atomically(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path: str) -> Optional[dict]:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _part_path(parts: str, shard_id: str) -> str:
    return os.path.join(parts, f"{shard_id}.parquet")


def _marker_path(parts: str, shard_id: str) -> str:
    return os.path.join(parts, f"{shard_id}.done.json")


def shard_marker(parts: str, shard_id: str) -> Optional[dict]:
    """The completion marker of a finished shard (None when the shard is unfinished)."""
    if not os.path.isfile(_part_path(parts, shard_id)):
        return None
    return _read_json(_marker_path(parts, shard_id))


def _output_schema():
    import pyarrow as pa

    return pa.schema([
        ("key", pa.string()), ("shard", pa.string()), ("path", pa.string()), ("adapter", pa.string()),
        ("score", pa.float64()), ("std", pa.float64()), ("label", pa.string()), ("branch", pa.string()),
        ("trained", pa.bool_()), ("num_bins", pa.int64()), ("score_range", pa.list_(pa.float64())),
        ("distribution", pa.list_(pa.float64())), ("comments_truncated", pa.bool_()), ("error", pa.string()),
        ("threshold", pa.float64()), ("warnings", pa.list_(pa.string())),
    ])


class PartWriter:
    """The rows of one shard, streamed to `<shard>.parquet` under a temporary name in row groups of up to
    `ROWS_PER_GROUP` rows; `finish` renames it and writes the completion marker (in that order, each atomically).
    Rows still buffered when a process is killed are not lost: the shard has no marker, so it is scored again."""

    ROWS_PER_GROUP = 4096

    def __init__(self, parts: str, shard_id: str, source: str, rank: int, fingerprint: Optional[dict] = None):
        self.parts, self.shard_id, self.source, self.rank = parts, shard_id, source, rank
        self.fingerprint = fingerprint
        self.tmp = f"{_part_path(parts, shard_id)}.tmp-{os.getpid()}"
        self.writer = None
        self.buffer: List[dict] = []
        self.rows = self.images = self.lost_rows = 0
        self.errors: Counter = Counter()
        self.failures: List[Tuple[str, str]] = []
        self.started = time.perf_counter()

    def write(self, rows: List[dict]) -> None:
        self.buffer += rows
        self.rows += len(rows)
        if len(self.buffer) >= self.ROWS_PER_GROUP:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, _output_schema())
        self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=_output_schema()))
        self.buffer = []

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()

    def finish(self) -> dict:
        self._flush()  # an empty shard still gets its (empty) part
        self.writer.close()
        with open(self.tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(self.tmp, _part_path(self.parts, self.shard_id))
        marker = {"shard": self.source, "rows": self.rows, "images": self.images, "errors": dict(self.errors),
                  "lost_rows": self.lost_rows,
                  "failures": self.failures[:MAX_LISTED_FAILURES], "rank": self.rank,
                  "seconds": round(time.perf_counter() - self.started, 3), "fingerprint": self.fingerprint}
        _write_atomically(_marker_path(self.parts, self.shard_id), json.dumps(marker).encode("utf-8"))
        return marker


# ------------------------------------------------------------------------------------------------------------ plan
def _settings(args, names: List[str]) -> dict:
    """What shapes the rows: a rerun with other values would mix two kinds of rows in one output."""
    model = os.path.abspath(args.model) if os.path.isdir(args.model) else args.model
    return {"model": model, "adapters": list(names), "threshold": args.threshold,
            "max_image_pixels": args.max_image_pixels,
            "comments": [os.path.abspath(c) for c in args.comments] if args.comments else None,
            "shard_comments": args.shard_comments, "key_column": args.key_column, "image_column": args.image_column,
            "files_per_shard": args.files_per_shard}


_SETTING_FLAGS = {"model": "--model", "adapters": "--adapter", "threshold": "--threshold",
                  "max_image_pixels": "--max-image-pixels", "comments": "--comments",
                  "shard_comments": "--shard-comments", "key_column": "--key-column",
                  "image_column": "--image-column", "files_per_shard": "--files-per-shard"}


def prepare_run(args, names: List[str]) -> dict:
    """Main process only: list and check the shards, check the output, write the manifest; returns the plan
    `{"todo": [Shard], "layouts": {...}, "done_before": n, "total": n}`. Raises `ScoringError` before anything is
    written when the run cannot succeed."""
    from .shards import parquet_layout, plan_shards, shard_fingerprint

    output, parts = args.output, parts_folder(args.output)
    if not output.lower().endswith(OUTPUT_FORMATS):
        raise ScoringError(f"--output {output}: use a .parquet, .csv or .jsonl file name")
    shards, problems = plan_shards(args.inputs, args.files_per_shard)
    if not shards and not problems:
        raise ScoringError("no input: pass image files, folders, globs, lists, tar or Parquet shards")
    layouts = {s.shard_id: parquet_layout(s.source, args.image_column, args.key_column)
               for s in shards if s.kind == "parquet"}
    ids = [s.shard_id for s in shards]
    if len(set(ids)) != len(ids):
        raise ScoringError("two inputs give the same shard id; pass each shard once")

    manifest_path = os.path.join(parts, MANIFEST)
    has_parts = os.path.isdir(parts) and bool(os.listdir(parts))
    has_output = os.path.exists(output) and os.path.getsize(output) > 0
    if (has_parts or has_output) and not (args.resume or args.overwrite):
        raise ScoringError(f"{output if has_output else parts} exists: pass --resume to continue (finished shards "
                           "are kept) or --overwrite to start over")
    if has_parts and not os.path.isfile(manifest_path):
        raise ScoringError(f"{parts} exists but holds no {MANIFEST}: not an `aesformer score` parts folder; "
                           "remove it or choose another --output")
    settings = _settings(args, names)
    if args.resume and os.path.isfile(manifest_path):
        earlier = (_read_json(manifest_path) or {}).get("settings", {})
        changed = [k for k in settings if earlier.get(k) != settings[k]]
        if changed:
            raise ScoringError("--resume: the unfinished run used other settings: " + "; ".join(
                f"{_SETTING_FLAGS[k]} was {earlier.get(k)!r}, now {settings[k]!r}" for k in changed)
                + ". Pass the same flags, or --overwrite to start over")
    if args.overwrite and not args.resume:
        if os.path.exists(output):
            os.remove(output)
        if os.path.isdir(parts):
            shutil.rmtree(parts)
    os.makedirs(parts, exist_ok=True)
    for name in os.listdir(parts):  # temporary files of processes that were killed
        if ".tmp-" in name:
            os.remove(os.path.join(parts, name))
    manifest = {"version": MANIFEST_VERSION, "settings": settings, "problems": problems,
                "shards": [{"id": s.shard_id, "kind": s.kind, "source": s.source, "files": len(s.files)}
                           for s in shards]}
    _write_atomically(manifest_path, json.dumps(manifest, indent=1).encode("utf-8"))
    fingerprints = {s.shard_id: shard_fingerprint(s) for s in shards}
    changed = []  # finished shards whose file changed since: their part and marker go, the shard is scored again
    for s in shards:
        marker = shard_marker(parts, s.shard_id)
        if marker is not None and marker.get("fingerprint") != fingerprints[s.shard_id]:
            changed.append({"shard": s.describe(), "rows": marker.get("rows", 0),
                            "was": marker.get("fingerprint"), "now": fingerprints[s.shard_id]})
            os.remove(_marker_path(parts, s.shard_id))  # the marker first: a part without one is unfinished
            os.remove(_part_path(parts, s.shard_id))
    todo = [s for s in shards if shard_marker(parts, s.shard_id) is None]
    return {"todo": todo, "layouts": layouts, "done_before": len(shards) - len(todo), "total": len(shards),
            "fingerprints": fingerprints, "changed": changed}


# ------------------------------------------------------------------------------------------------------- scoring
def score_shards(shards, layouts, model, processor, names, device, args, parts: str, rank: int,
                 show_progress: bool, fingerprints: Optional[dict] = None) -> dict:
    """Score this process's shards; returns `{"rank", "images", "seconds", "shards"}`."""
    import functools

    from torch.utils.data import DataLoader
    from tqdm.auto import tqdm

    from .score_inputs import load_comments
    from .shards import LOST_ROW_GROUP, ShardStream, error_kind

    lookup = load_comments(args.comments).lookup() if args.comments else None
    dataset = ShardStream(shards, processor, args.max_image_pixels, args.shard_comments, layouts, lookup)
    workers = args.num_workers if shards else 0
    loader = DataLoader(dataset, batch_size=args.batch_size, num_workers=workers,
                        collate_fn=functools.partial(collate_encodings, pad_token_id=pad_token_id(processor)),
                        pin_memory=device.type == "cuda", prefetch_factor=4 if workers > 0 else None)
    sources = {s.shard_id: s.describe() for s in shards}
    writers: Dict[str, PartWriter] = {}
    ended: Dict[str, int] = {}
    images, start = 0, time.perf_counter()
    progress = tqdm(unit="img", desc=f"scoring (process {rank})", dynamic_ncols=True, file=sys.stderr,
                    mininterval=0.5, disable=not show_progress)
    try:
        for collated in (loader if shards else []):
            scored = score_collated(model, collated, names, device, args.threshold)
            rows_by_shard: Dict[str, List[dict]] = {}
            for index in sorted(scored):
                meta = collated["meta"][index]
                shard_id = meta["shard_id"]
                if shard_id not in writers:
                    writers[shard_id] = PartWriter(parts, shard_id, sources[shard_id], rank,
                                                   (fingerprints or {}).get(shard_id))
                writer = writers[shard_id]
                writer.images += 1
                base = {"key": meta["key"], "shard": meta["shard"], "path": meta["path"]}
                for row in scored[index]:
                    if row.get("error"):
                        kind = error_kind(row["error"])
                        writer.errors[kind] += 1
                        writer.lost_rows += kind == LOST_ROW_GROUP
                        writer.failures.append((meta["path"] or f"{meta['shard']}:{meta['key']}", row["error"]))
                    rows_by_shard.setdefault(shard_id, []).append({**file_row(row), **base})
            for shard_id, rows in rows_by_shard.items():
                writers[shard_id].write(rows)
            images += len(scored)
            progress.update(len(scored))
            for end in collated["markers"]:
                shard_id = end["shard_end"]
                ended[shard_id] = ended.get(shard_id, 0) + 1
                if ended[shard_id] < end["readers"]:
                    continue
                writer = writers.pop(shard_id, None) or PartWriter(parts, shard_id, sources[shard_id], rank,
                                                                    (fingerprints or {}).get(shard_id))
                writer.finish()
    finally:
        progress.close()
        for writer in writers.values():  # unfinished shards: their temporary parts are removed by the next run
            writer.close()
    return {"rank": rank, "images": images, "seconds": time.perf_counter() - start, "shards": len(shards)}


# ---------------------------------------------------------------------------------------------------------- merge
def _count(n: int, noun: str, plural: str = "") -> str:
    """`1 shard`, `2 shards`, `0 shards`."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


def _flat_row(row: dict) -> dict:
    flat = {}
    for key in OUTPUT_FIELDS:
        value = row.get(key)
        if key in ("distribution", "score_range", "warnings") and value is not None:
            value = json.dumps(value)
        elif isinstance(value, bool):
            value = "true" if value else "false"
        flat[key] = "" if value is None else value
    return flat


def merge_parts(output: str) -> dict:
    """Merge the finished parts of `output`'s sharded run into `output` (written under a temporary name, then
    renamed). Raises `ScoringError` naming the unfinished shards when any is missing. Returns the summary:
    `{"rows", "images", "errors": Counter, "failures", "shards"}`."""
    import pyarrow.parquet as pq

    parts = parts_folder(output)
    manifest = _read_json(os.path.join(parts, MANIFEST))
    if manifest is None:
        raise ScoringError(f"no sharded run to merge: {os.path.join(parts, MANIFEST)} is missing")
    shards = manifest["shards"]
    markers = {s["id"]: shard_marker(parts, s["id"]) for s in shards}
    missing = [s for s in shards if markers[s["id"]] is None]
    if missing:
        names = ", ".join(s["source"] or s["id"] for s in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ScoringError(f"{len(missing)} of {len(shards)} shards are not finished ({names}): run the same "
                           "command again with --resume to score them; the merge follows")
    errors, failures, images = Counter(), [], 0
    problems = [{"path": item, "error": reason} for item, reason in manifest.get("problems", [])]
    for item in problems:
        errors["input names nothing"] += 1
        failures.append((item["path"], item["error"]))
    for s in shards:
        marker = markers[s["id"]]
        errors.update(marker.get("errors", {}))
        failures += [tuple(f) for f in marker.get("failures", [])]
        images += marker.get("images", 0)

    import glob

    for stale in glob.glob(glob.escape(output) + ".merging-*"):  # left by a merge that was killed
        os.remove(stale)
    tmp = f"{output}.merging-{os.getpid()}"
    rows = 0
    first_shard: Dict[str, str] = {}  # key -> the shard it came from first: a key in two shards is counted
    duplicates: Dict[str, List[str]] = {}

    def note_keys(batch, shard_id):
        for key in batch.column("key").to_pylist():
            if not key:
                continue
            seen = first_shard.setdefault(key, shard_id)
            if seen != shard_id:
                duplicates.setdefault(key, [seen])
                if shard_id not in duplicates[key]:
                    duplicates[key].append(shard_id)
    lower = output.lower()
    if os.path.dirname(output):
        os.makedirs(os.path.dirname(output), exist_ok=True)
    try:
        if lower.endswith(".parquet"):
            import pyarrow as pa

            with pq.ParquetWriter(tmp, _output_schema()) as writer:
                if problems:
                    writer.write_table(pa.Table.from_pylist(problems, schema=_output_schema()))
                    rows += len(problems)
                for s in shards:
                    with pq.ParquetFile(_part_path(parts, s["id"])) as part:
                        for batch in part.iter_batches(batch_size=4096):
                            note_keys(batch, s["source"] or s["id"])
                            writer.write_batch(batch)
                            rows += batch.num_rows
        else:
            jsonl = lower.endswith((".jsonl", ".json"))
            with open(tmp, "w", encoding="utf-8", newline="") as f:
                table = None if jsonl else csv.DictWriter(f, fieldnames=OUTPUT_FIELDS)
                if table is not None:
                    table.writeheader()

                def emit(batch_rows):
                    buffer = io.StringIO()
                    for row in batch_rows:
                        if jsonl:
                            buffer.write(json.dumps({k: row.get(k) for k in OUTPUT_FIELDS}, ensure_ascii=False)
                                         + "\n")
                        else:
                            csv.DictWriter(buffer, fieldnames=OUTPUT_FIELDS).writerow(_flat_row(row))
                    f.write(buffer.getvalue())
                    return len(batch_rows)

                rows += emit(problems)
                for s in shards:
                    with pq.ParquetFile(_part_path(parts, s["id"])) as part:
                        for batch in part.iter_batches(batch_size=4096):
                            note_keys(batch, s["source"] or s["id"])
                            rows += emit(batch.to_pylist())
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return {"rows": rows, "images": images, "errors": errors, "failures": failures, "shards": len(shards),
            "duplicate_keys": duplicates}


def _stat_text(fingerprint: Optional[dict]) -> str:
    if not fingerprint:
        return "not recorded"
    if "size" in fingerprint:
        return f"{fingerprint['size']} bytes at {fingerprint['mtime_ns']} ns"
    return f"{fingerprint['files']} files, digest {fingerprint['stat_digest'][:10]}"


def _report_merge(summary: dict, output: str, log=print) -> int:
    log(f"[score] merged {_count(summary['rows'], 'row')} ({_count(summary['images'], 'image')}, "
        f"{_count(summary['shards'], 'shard')}) -> "
        f"{output} (parts kept in {parts_folder(output)}: --resume reuses them, delete when done)")
    duplicates = summary.get("duplicate_keys") or {}
    if duplicates:
        listed = "; ".join(f"{key!r} in {', '.join(where)}" for key, where in list(duplicates.items())[:5])
        log(f"[score] {len(duplicates)} key{'s' if len(duplicates) != 1 else ''} appear in more than one shard (every "
            f"row kept, told apart by the shard column): {listed}" + (" ..." if len(duplicates) > 5 else ""))
    errors = summary["errors"]
    if not errors:
        return 0
    count = sum(errors.values())
    log(f"[score] {count} item{'s' if count != 1 else ''} could not be scored; errors by reason: "
        + ", ".join(f"{kind} {n}" for kind, n in errors.most_common()))
    for item, reason in summary["failures"][:MAX_LISTED_FAILURES]:
        log(f"  {item}: {reason}")
    if len(summary["failures"]) > MAX_LISTED_FAILURES:
        log(f"  ... (see the error column of {output})")
    return 1


# ------------------------------------------------------------------------------------------------------------- run
def _init_distributed(args):
    from datetime import timedelta

    from accelerate import PartialState

    cpu = (args.device or "").startswith("cpu") or os.environ.get("ACCELERATE_USE_CPU", "").lower() in (
        "1", "true", "yes")
    return PartialState(cpu=cpu, timeout=timedelta(hours=PROCESS_GROUP_TIMEOUT_HOURS))


def run(args, load_scorer: Optional[Callable] = None, log=print) -> int:
    """Score `args.inputs` over shards into `args.output` (see `ShardedScoringOptions`), in this process or in every
    process of a launch. `load_scorer(device, log)` returns `(model, processor, adapter names)` (each process loads
    its own; a Hub download happens once, the main process first). 0 when every image was scored, 1 when any
    failed; usage errors raise `ScoringError` before anything is written."""
    world = world_size()
    state = _init_distributed(args) if world > 1 else None
    rank = state.process_index if state is not None else 0
    main = rank == 0
    if args.merge:
        return _report_merge(merge_parts(args.output), args.output, log) if main else 0
    if not args.inputs or not args.model:
        raise ScoringError("aesformer score needs INPUTs and --model DIR (only --merge runs without them)")
    if args.batch_size < 1 or args.num_workers < 0:
        raise ScoringError("--batch-size must be >= 1 and --num-workers >= 0")
    if args.max_image_pixels is not None and args.max_image_pixels < 1:
        raise ScoringError("--max-image-pixels must be a positive number of pixels")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import torch

    from modeling_aesformer.pipeline_aesformer import untrained_answer_message

    if state is not None and not (args.device or "").startswith("cpu"):
        device = state.device
    else:
        device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    quiet = lambda *a, **k: None  # noqa: E731 - one process reports
    # a Hub id: one download into the shared cache (the main process first), the others then read it
    downloading = state is not None and not os.path.isdir(args.model)
    with state.main_process_first() if downloading else contextlib.nullcontext():
        model, processor, names = load_scorer(device, log if main else quiet)
    asked = getattr(args, "adapter", None)  # adapters named with --adapter were asked for: no warning about them
    warning = None if asked else untrained_answer_message(model, names, how_to_name="--adapter NAME")
    if warning and main:
        log(f"[score] warning: {warning}")
    model.to(device)

    plan, error = None, None
    if main:
        try:
            plan = prepare_run(args, names)
        except ScoringError as err:
            error = str(err)
    if state is not None:
        from accelerate.utils import broadcast_object_list

        plan, error = broadcast_object_list([plan, error], from_process=0)
    if error is not None:
        if main:
            raise ScoringError(error)
        return 2
    mine = plan["todo"][rank::world]
    if main:
        log(f"[score] {_count(plan['total'], 'shard')} ({plan['done_before']} finished earlier), "
            f"{len(plan['todo'])} to score over {_count(world, 'process', 'processes')}; adapters {names}, "
            f"batch {args.batch_size}, {_count(args.num_workers, 'worker')}, {device}")
        for item in plan["changed"]:
            log(f"[score] {item['shard']} changed since it was scored (size, modification time "
                f"{_stat_text(item['was'])} -> {_stat_text(item['now'])}): scored again, its {item['rows']} earlier "
                "rows replaced in the output")
    stats = score_shards(mine, plan["layouts"], model, processor, names, device, args, parts_folder(args.output),
                         rank, show_progress=state is None or state.is_local_main_process,
                         fingerprints=plan["fingerprints"])
    if state is not None:
        from accelerate.utils import gather_object

        all_stats = gather_object([stats])
    else:
        all_stats = [stats]
    if not main:
        return 0
    for s in sorted(all_stats, key=lambda s: s["rank"]):
        rate = s["images"] / s["seconds"] if s["seconds"] > 0 else float("nan")
        log(f"[score] process {s['rank']}: {_count(s['images'], 'image')} from {_count(s['shards'], 'shard')} "
            f"in {s['seconds']:.1f} s "
            f"= {rate:.1f} images/s")
    total = sum(s["images"] for s in all_stats)
    wall = max(s["seconds"] for s in all_stats)
    log(f"[score] {_count(len(all_stats), 'process', 'processes')}: {_count(total, 'image')} in {wall:.1f} s = "
        f"{(total / wall if wall > 0 else float('nan')):.1f} images/s")
    summary = merge_parts(args.output)  # refuses (naming them) when any shard is unfinished
    log(f"[score] shards done: {summary['shards']}/{plan['total']} ({len(plan['todo'])} this run, "
        f"{plan['done_before']} finished earlier)")
    return _report_merge(summary, args.output, log)


__all__ = ["OUTPUT_FIELDS", "ShardedScoringOptions", "merge_parts", "parts_folder", "prepare_run", "run",
           "score_shards", "shard_marker", "world_size"]
