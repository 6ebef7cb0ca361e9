"""Sharded inputs of scoring (`aesformer score`, `sharded_scoring.py`): webdataset tar shards, Parquet files and
file lists, read as streams.

A *shard* is the unit of work and of resumption: one tar file, one Parquet file, or a chunk of `--files-per-shard`
image files taken from the ordinary inputs (folders, globs, list files). Readers yield one *sample* at a time and
never hold a whole shard in memory:

- tar (webdataset layout): members are grouped by key, the member path up to the first dot of its file name
  (`a/b/000123.jpg` and `a/b/000123.txt` are sample `a/b/000123`). The image is the first member with an image
  extension (jpg, jpeg, png, webp first, then anything else Pillow opens). In web-scale shards `key.txt` is usually
  an alt-text caption, so comments come from a member only when asked: `comments_from="txt"` (the text of `key.txt`)
  or `"json"` (the `comments` field of `key.json`, a string or a list of strings).
- Parquet: the image is a binary column (encoded bytes), a `datasets` Image struct (`{bytes, path}`) or a string
  column of paths (relative to the Parquet file's folder); the key comes from `key_column` or the first of `key`,
  `id`, `__key__` (else the row number); comments from a `comments` column when there is one (caption columns such
  as `text` or `caption` are never read as comments).

Decoding is the scoring module's (`modeling_aesformer.scoring.encode_image`): a shard member is read as a file
is. This module needs torch (the DataLoader side) and, for Parquet, pyarrow.
"""

import glob
import hashlib
import json
import os
import tarfile
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Tuple

import torch

from modeling_aesformer.scoring import (ScoringError, encode_image, error_text, file_stat, image_extensions,
                                       pixel_limit)

from .score_inputs import collect_inputs

TAR_EXTENSIONS = (".tar", ".tar.gz", ".tgz")
PARQUET_EXTENSIONS = (".parquet",)
SHARD_EXTENSIONS = TAR_EXTENSIONS + PARQUET_EXTENSIONS
SHARD_COMMENT_MEMBERS = ("txt", "json")
PREFERRED_IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")
KEY_COLUMNS = ("key", "id", "__key__")
IMAGE_COLUMNS = ("image", "jpg", "jpeg", "png", "webp", "img", "image_bytes", "bytes", "path", "image_path",
                 "file_name", "filepath")
COMMENTS_COLUMN = "comments"
LOST_ROW_GROUP = "lost Parquet row group"  # the error reason of each row of a row group that cannot be read
_GLOB_CHARS = "*?["
# An archive member is read whole into memory: one larger than an image of the pixel limit stored raw (8-bit RGB,
# 3 bytes a pixel: 537 MB at the default 178,956,970 pixels) is refused by the size in its header, unread.
MEMBER_BYTES_PER_PIXEL = 3


def member_limit(max_image_pixels: Optional[int]) -> int:
    """The largest archive member read (bytes): `MEMBER_BYTES_PER_PIXEL` x the pixel limit (the processor's
    default when the limit is off)."""
    from aesformer_processing.processing_aesformer import DEFAULT_MAX_IMAGE_PIXELS

    return MEMBER_BYTES_PER_PIXEL * int(max_image_pixels or DEFAULT_MAX_IMAGE_PIXELS)


@dataclass
class Shard:
    """One unit of work. `shard_id` names its part file and completion marker (stable across runs: derived from the
    shard's path, or from the paths of a chunk of files). `source` is the tar/Parquet path (also written to the
    output's `shard` column); `files` holds `(path, comments)` records for a chunk of ordinary image files."""

    shard_id: str
    kind: str  # "tar" | "parquet" | "files"
    source: Optional[str] = None
    files: List[Tuple[str, object]] = field(default_factory=list)

    def describe(self) -> str:
        return self.source if self.source is not None else f"{len(self.files)} files ({self.shard_id})"


def shard_fingerprint(shard: "Shard") -> dict:
    """What says a shard is still the one that was scored: the size and modification time (ns) of its tar/Parquet
    file, or a digest of those of every file of a chunk. Recorded in the shard's completion marker; a shard whose
    fingerprint differs on `--resume` is scored again."""
    if shard.source is not None:
        size_mtime = file_stat(shard.source)
        return {"size": size_mtime and size_mtime[0], "mtime_ns": size_mtime and size_mtime[1]}
    lines = "\n".join(f"{os.path.abspath(path)}\t{file_stat(path)}" for path, _ in shard.files)
    return {"files": len(shard.files), "stat_digest": hashlib.sha1(lines.encode("utf-8")).hexdigest()}


def is_shard_file(path: str) -> bool:
    return path.lower().endswith(SHARD_EXTENSIONS)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]


def _file_shard_id(path: str) -> str:
    name = os.path.basename(path)
    for ext in SHARD_EXTENSIONS:
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)[:60]
    return f"{safe}-{_digest(os.path.abspath(path))}"


def shard_files_in_folder(folder: str) -> List[str]:
    """Tar/Parquet files directly in `folder` (a folder of shards is flat in the webdataset layout)."""
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return []
    return [os.path.join(folder, n) for n in names if is_shard_file(n) and os.path.isfile(os.path.join(folder, n))]


def plan_shards(inputs: Sequence[str], files_per_shard: int = 1000
                ) -> Tuple[List[Shard], List[Tuple[str, str]]]:
    """(shards, problems) for the command line's inputs. Tar/Parquet files (given directly, matched by a glob, or
    lying directly in a given folder) are one shard each; every other input goes through `aesformer score`'s own
    `collect_inputs` and its images are cut into chunks of `files_per_shard`. `problems` are `(input, reason)`."""
    if files_per_shard < 1:
        raise ScoringError("--files-per-shard must be >= 1")
    shard_paths, other_inputs, problems = [], [], []
    for item in inputs:
        if os.path.isfile(item) and is_shard_file(item):
            shard_paths.append(item)
        elif is_shard_file(item) and not os.path.exists(item) and not any(c in item for c in _GLOB_CHARS):
            problems.append((item, "no such shard file"))
        elif os.path.isdir(item) and shard_files_in_folder(item):
            shard_paths += shard_files_in_folder(item)
        elif any(c in item for c in _GLOB_CHARS) and not os.path.exists(item):
            matches = sorted(glob.glob(item, recursive=True))
            shards = [m for m in matches if os.path.isfile(m) and is_shard_file(m)]
            shard_paths += shards
            if not shards or len(shards) < len(matches):
                other_inputs.append(item)  # its images (and folders), or "no file matches this pattern"
        else:
            other_inputs.append(item)
    shards, seen = [], set()
    for path in shard_paths:
        key = os.path.abspath(path)
        if key not in seen:
            seen.add(key)
            path = os.path.normpath(path)
            kind = "parquet" if path.lower().endswith(PARQUET_EXTENSIONS) else "tar"
            shards.append(Shard(_file_shard_id(path), kind, source=path))
    if other_inputs:
        records, more_problems = collect_inputs(other_inputs)
        problems += more_problems
        for start in range(0, len(records), files_per_shard):
            chunk = records[start: start + files_per_shard]
            digest = _digest("\n".join(os.path.abspath(p) for p, _ in chunk))
            shards.append(Shard(f"files-{start // files_per_shard:06d}-{digest}", "files", files=chunk))
    return shards, problems


# ------------------------------------------------------------------------------------------------------------- tar
def _split_member_name(name: str) -> Tuple[str, str]:
    """webdataset naming: ("dir/000123", "jpg") for "dir/000123.jpg"; the extension is everything after the first
    dot of the file name (lower-cased), so "000123.seg.png" has the extension "seg.png"."""
    folder, base = os.path.split(name)
    stem, dot, ext = base.partition(".")
    return (os.path.join(folder, stem) if folder else stem), (ext.lower() if dot else "")


def _openable_extensions() -> frozenset:
    return frozenset(e.lstrip(".") for e in image_extensions())


def _pick_image_member(members: dict, openable: frozenset) -> Optional[str]:
    for ext in PREFERRED_IMAGE_EXTENSIONS:
        if ext in members:
            return ext
    for ext in members:
        if ext.rsplit(".", 1)[-1] in openable:
            return ext
    return None


def _member_comments(key: str, members: dict, comments_from: Optional[str]):
    """The sample's comments from its `.txt` / `.json` member (None when absent); raises ValueError naming the
    member when it cannot be read."""
    if comments_from is None or comments_from not in members:
        return None
    data = members[comments_from]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{key}.{comments_from} is not UTF-8 text ({err})") from None
    if comments_from == "txt":
        return text if text.strip() else None
    try:
        value = json.loads(text)
    except ValueError as err:
        raise ValueError(f"{key}.json is not valid JSON: {err}") from None
    comments = value.get("comments") if isinstance(value, dict) else None
    if isinstance(comments, list):
        comments = [str(c) for c in comments if str(c).strip()]
    elif comments is not None:
        comments = str(comments)
    return comments or None


def iter_tar_samples(path: str, comments_from: Optional[str] = None,
                     max_member_bytes: Optional[int] = None) -> Iterator[dict]:
    """Samples of one webdataset tar shard, streamed member by member (mode `r|*`: plain or compressed).
    Each sample is `{"key", "image": bytes or None, "name", "comments", "error"}`; a sample without an image member,
    or with a comments member that cannot be read, has an `error`; so has one whose member is larger than
    `max_member_bytes` (default `member_limit(None)`), refused by the size in its header before any of it is read
    (the stream skips it block by block: memory stays bounded, gzip included), or cut off (truncated). A shard that
    is cut off or corrupt between members ends with a sample whose key is empty and whose error says after which
    member it broke."""
    if comments_from is not None and comments_from not in SHARD_COMMENT_MEMBERS:
        raise ScoringError(f"--shard-comments must be one of {SHARD_COMMENT_MEMBERS}, got {comments_from!r}")
    wanted = {comments_from} if comments_from else set()
    openable = _openable_extensions()
    limit = max_member_bytes or member_limit(None)

    def finish(key, members, names, refused=None):
        sample = {"key": key, "image": None, "name": None, "comments": None, "error": None}
        if refused:
            sample["error"] = f"{path}: {refused}"
            return sample
        ext = _pick_image_member(members, openable)
        if ext is None:
            sample["error"] = f"no image member for key {key!r} in {path} (members: {', '.join(sorted(names))})"
            return sample
        sample["image"], sample["name"] = members[ext], f"{key}.{ext}"
        try:
            sample["comments"] = _member_comments(key, members, comments_from)
        except ValueError as err:
            sample["error"] = f"{path}: {err}"
        return sample

    key, members, names, count, refused, reading = None, {}, [], 0, None, None
    try:
        with tarfile.open(path, mode="r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                member_key, ext = _split_member_name(member.name)
                if member_key != key:
                    if key is not None:
                        yield finish(key, members, names, refused)
                    key, members, names, refused = member_key, {}, [], None
                names.append(ext or "(no extension)")
                # read only what a sample can use: the image, and the comments member when asked for
                is_image = ext.rsplit(".", 1)[-1] in openable
                if (is_image or ext in wanted) and member.size > limit:
                    refused = refused or (f"member {member.name} holds {member.size:,} bytes, more than the "
                                          f"{limit:,} read from an archive ({MEMBER_BYTES_PER_PIXEL} bytes per pixel "
                                          "of the pixel limit, --max-image-pixels): not read")
                elif is_image or ext in wanted:
                    reading = member
                    handle = archive.extractfile(member)
                    members[ext] = handle.read() if handle is not None else b""
                    reading = None
                count += 1
    except (tarfile.TarError, OSError, EOFError) as err:
        if reading is not None:  # cut off inside a member: that member is truncated, not missing
            yield finish(key, members, names, f"member {reading.name} is truncated (its header says "
                                              f"{reading.size:,} bytes): {type(err).__name__}: {err}")
        elif key is not None:
            yield finish(key, members, names, refused)
        yield {"key": "", "image": None, "name": None, "comments": None,
               "error": f"{path}: the tar shard is corrupt or cut off after {count} member(s): "
                        f"{type(err).__name__}: {err}"}
        return
    if key is not None:
        yield finish(key, members, names, refused)


# --------------------------------------------------------------------------------------------------------- parquet
@dataclass
class ParquetLayout:
    image_column: str
    image_kind: str  # "bytes" | "struct" | "path"
    key_column: Optional[str]
    comments_column: Optional[str]


def parquet_layout(path: str, image_column: Optional[str] = None, key_column: Optional[str] = None
                   ) -> ParquetLayout:
    """Which columns of a Parquet file hold the image, the key and the comments (from the schema only, nothing is
    read). Raises `ScoringError` naming the file, its columns and the flag to pass when it cannot tell."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        schema = pq.read_schema(path)
    except Exception as err:  # noqa: BLE001 - any unreadable footer: name the file
        raise ScoringError(f"{path}: not a readable Parquet file ({type(err).__name__}: {err})") from None
    names = list(schema.names)

    def kind_of(name):
        dtype = schema.field(name).type
        if pa.types.is_binary(dtype) or pa.types.is_large_binary(dtype):
            return "bytes"
        if pa.types.is_struct(dtype) and {"bytes", "path"} & {dtype.field(i).name for i in range(dtype.num_fields)}:
            return "struct"
        if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
            return "path"
        return None

    if image_column is not None:
        if image_column not in names:
            raise ScoringError(f"{path}: no column {image_column!r} (--image-column); columns: {names}")
        kind = kind_of(image_column)
        if kind is None:
            raise ScoringError(f"{path}: column {image_column!r} has type {schema.field(image_column).type}; the "
                               "image column must hold bytes, a datasets Image struct {bytes, path}, or paths")
    else:
        typed = [(n, kind_of(n)) for n in names]
        candidates = [n for n in IMAGE_COLUMNS if n in names and kind_of(n) is not None]
        candidates += [n for n, k in typed if k in ("bytes", "struct") and n not in candidates]
        if not candidates:
            raise ScoringError(f"{path}: no image column found (looked for a binary column, a datasets Image "
                               f"struct, or one of {', '.join(IMAGE_COLUMNS)}); columns: {names}. "
                               "Name it with --image-column")
        image_column, kind = candidates[0], kind_of(candidates[0])
    if key_column is not None:
        if key_column not in names:
            raise ScoringError(f"{path}: no column {key_column!r} (--key-column); columns: {names}")
    else:
        key_column = next((n for n in KEY_COLUMNS if n in names), None)
    comments_column = COMMENTS_COLUMN if COMMENTS_COLUMN in names and COMMENTS_COLUMN != image_column else None
    return ParquetLayout(image_column, kind, key_column, comments_column)


def iter_parquet_samples(path: str, layout: ParquetLayout, rows_per_read: int = 64) -> Iterator[dict]:
    """Samples of one Parquet file, read row group by row group, `rows_per_read` rows at a time (never the whole
    file): `{"key", "image": bytes | None, "path": str | None, "name", "comments", "error"}`. A row group that
    cannot be read costs only its unread rows: each becomes an error sample (its key when the key column of that
    group is readable), so every row the footer counts is accounted for."""
    import pyarrow.parquet as pq

    columns = [layout.image_column] + [c for c in (layout.key_column, layout.comments_column) if c]
    base = os.path.dirname(path)
    row_number = 0
    with pq.ParquetFile(path) as reader:
        for group in range(reader.num_row_groups):
            group_rows = reader.metadata.row_group(group).num_rows
            first, read = row_number, 0
            try:
                for batch in reader.iter_batches(batch_size=rows_per_read, row_groups=[group],
                                                 columns=list(dict.fromkeys(columns))):
                    for sample in _parquet_batch_samples(path, layout, batch, base, row_number):
                        row_number += 1
                        read += 1
                        yield sample
            except Exception as err:  # noqa: BLE001 - a damaged row group: its unread rows become error rows
                reason = (f"row group {group} of {path} ({group_rows} rows per the footer, {group_rows - read} "
                          f"unread) could not be read: {type(err).__name__}: {err}".replace("\n", " ").strip())
                keys = _readable_keys(reader, group, layout.key_column)
                for offset in range(read, group_rows):
                    number = first + offset
                    key = (keys[offset] if keys is not None else None) if layout.key_column else str(number)
                    yield {"key": "" if key is None else str(key), "image": None, "path": None, "name": None,
                           "comments": None, "error": f"{path}, row {number}: lost: {reason}"}
                row_number = first + group_rows


def _readable_keys(reader, group: int, key_column: Optional[str]) -> Optional[list]:
    """The key column of row group `group`, None when it cannot be read either."""
    if key_column is None:
        return None
    try:
        return reader.read_row_group(group, columns=[key_column]).column(0).to_pylist()
    except Exception:  # noqa: BLE001 - the key chunk is damaged too: the rows are named by number
        return None


def _parquet_batch_samples(path: str, layout: ParquetLayout, batch, base: str, row_number: int) -> Iterator[dict]:
    images = batch.column(layout.image_column).to_pylist()
    keys = batch.column(layout.key_column).to_pylist() if layout.key_column else None
    comments = batch.column(layout.comments_column).to_pylist() if layout.comments_column else None
    for i, value in enumerate(images):
        key = str(keys[i]) if keys is not None and keys[i] is not None else str(row_number)
        sample = {"key": key, "image": None, "path": None, "name": key, "comments": None, "error": None}
        if layout.image_kind == "struct" and isinstance(value, dict):
            value = value.get("bytes") or value.get("path")
        if isinstance(value, (bytes, bytearray)):
            sample["image"] = bytes(value)
        elif isinstance(value, str) and value:
            sample["path"] = os.path.normpath(value if os.path.isabs(value) else os.path.join(base, value))
            sample["name"] = os.path.basename(value)
        else:
            sample["error"] = f"{path}, row {row_number} (key {key!r}): the image column " \
                              f"{layout.image_column!r} is empty"
        if comments is not None:
            text = comments[i]
            if isinstance(text, list):
                text = [str(c) for c in text if str(c).strip()] or None
            elif text is not None and not str(text).strip():
                text = None
            sample["comments"] = text
        row_number += 1
        yield sample


# ------------------------------------------------------------------------------------------ decoding (DataLoader)
def error_kind(text: str) -> str:
    """A short reason class for the end-of-run summary: the last exception name the message mentions, or the
    message's first clause without names ("no image member", "the image column ... is empty", ...)."""
    import re

    if ": lost: row group " in text:  # a damaged Parquet row group: its rows, whatever the reader raised
        return LOST_ROW_GROUP
    if "is truncated (its header says" in text:
        return "truncated member"
    if "read from an archive" in text and text.endswith("not read"):
        return "member too large"
    names = re.findall(r"\b([A-Z][A-Za-z]*(?:Error|Exception|Warning))\b", text)
    if names:
        return names[-1]
    for marker, kind in (("no image member", "no image member"), ("is corrupt or cut off", "corrupt tar shard"),
                         ("is empty", "empty image column"), ("no such file", "FileNotFoundError"),
                         ("not UTF-8", "comments not UTF-8"), ("not valid JSON", "comments not valid JSON")):
        if marker in text:
            return kind
    return text.split(":")[0][:60]


class ShardStream(torch.utils.data.IterableDataset):
    """Decoded samples of a list of shards, for a DataLoader. With workers, worker w reads shards w, w+n, ... in
    full and in order (with fewer shards than workers, every worker reads every shard and keeps every n-th sample);
    after a shard's last sample it yields an end marker `{"shard_end": shard_id, "items": n, "readers": r}`: once
    the consumer has the markers of all `r` readers, every row of that shard has been handed over.

    Items are `{"index": (worker, n), "meta": {...}, tensors...}` or `{"index", "meta", "error"}`; `meta` holds
    `key`, `shard`, `path`, `shard_id` for the output row."""

    def __init__(self, shards: Sequence[Shard], processor, max_image_pixels: Optional[int] = None,
                 comments_from: Optional[str] = None, layouts: Optional[dict] = None, comments_lookup=None):
        self.shards = list(shards)
        self.processor = processor
        self.max_image_pixels = pixel_limit(processor, max_image_pixels)
        self.comments_from = comments_from
        self.layouts = layouts or {}
        self.comments_lookup = comments_lookup

    def _samples(self, shard: Shard) -> Iterator[dict]:
        if shard.kind == "tar":
            for sample in iter_tar_samples(shard.source, self.comments_from, member_limit(self.max_image_pixels)):
                yield {"key": sample["key"], "shard": shard.source, "path": None, "source": sample["image"],
                       "name": sample["name"], "comments": sample["comments"], "error": sample["error"]}
        elif shard.kind == "parquet":
            layout = self.layouts.get(shard.shard_id) or parquet_layout(shard.source)
            for sample in iter_parquet_samples(shard.source, layout):
                source = sample["image"] if sample["image"] is not None else sample["path"]
                yield {"key": sample["key"], "shard": shard.source, "path": sample["path"], "source": source,
                       "name": sample["name"], "comments": sample["comments"], "error": sample["error"]}
        else:
            for path, comments in shard.files:
                yield {"key": None, "shard": None, "path": path, "source": path, "name": os.path.basename(path),
                       "comments": comments, "error": None}

    def _guarded_samples(self, shard: Shard) -> Iterator[dict]:
        """The shard's samples; a shard that breaks while being read ends with one error row (empty key) instead of
        stopping the whole run."""
        try:
            yield from self._samples(shard)
        except Exception as err:  # noqa: BLE001 - e.g. a Parquet file cut off after its footer was read
            yield {"key": "", "shard": shard.source, "path": None, "source": None, "name": None, "comments": None,
                   "error": f"{shard.describe()}: cannot read the shard: {type(err).__name__}: {err}"}

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        # More shards than workers: each worker takes whole shards. Fewer (one big Parquet file, say): every worker
        # reads every shard and decodes every `workers`-th sample, so decoding still runs in parallel.
        by_sample = len(self.shards) < workers
        n = 0
        for shard in self.shards if by_sample else self.shards[worker::workers]:
            count = 0
            for position, sample in enumerate(self._guarded_samples(shard)):
                if by_sample and position % workers != worker:
                    continue
                meta = {"key": sample["key"], "shard": sample["shard"], "path": sample["path"],
                        "shard_id": shard.shard_id}
                item = {"index": (worker, n), "meta": meta}
                n += 1
                count += 1
                comments = sample["comments"]
                if comments is None and self.comments_lookup is not None:
                    comments = self.comments_lookup(sample)
                if sample["error"]:
                    item["error"] = sample["error"]
                else:
                    try:
                        item.update(encode_image(self.processor, sample["source"], comments, self.max_image_pixels))
                    except Exception as err:  # noqa: BLE001 - every failure becomes a row, never a crash
                        item["error"] = error_text(err)
                yield item
            # the consumer finishes the shard once it has the end markers of all `readers` workers that read it
            yield {"shard_end": shard.shard_id, "items": count, "readers": workers if by_sample else 1}


__all__ = ["LOST_ROW_GROUP", "MEMBER_BYTES_PER_PIXEL", "SHARD_EXTENSIONS", "member_limit", "Shard", "ShardStream", "error_kind", "is_shard_file", "iter_parquet_samples",
           "iter_tar_samples", "shard_files_in_folder", "shard_fingerprint",
           "parquet_layout", "plan_shards"]
