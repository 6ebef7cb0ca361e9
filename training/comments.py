"""Comments files: the one reader behind every command (the dataset loaders, stage 1, `aesformer eval`, `aesformer
score`) and the one rule that matches their keys to images.

Accepted files (UTF-8; the format is documented once, in ``docs/data-format.md``):

- a CSV (with a header) or a JSON Lines file with one row per image or per comment: a key column (``image``,
  ``path``, ``image_path``, ``file_name``, ``filename``, ``file``, ``id`` or ``image_id``) and a text column
  (``comments``, ``comment`` or ``text``). A CSV field may hold several comments, one per line; a JSONL value may be
  a string or a list of strings. Several rows for one key add up, in file order;
- the AVA-Comments CSV, ``index,label,comment``: ``index`` is the image id, ``label`` is ignored;
- a JSON object mapping a key to a comment or a list of comments (the DPC-Captions layout,
  ``{"953417.jpg": ["...", "..."]}``), or a JSON array of rows as in JSONL.

`pipeline_inputs` pairs image paths with their comments as inputs for the Aesformer pipeline.

A key names an image by its path relative to the image folder (with or without the extension), its file name or its
file stem (= the dataset id); `CommentTable.match` tries these in that order and refuses a key that names two images.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .text_files import raise_csv_field_limit, read_utf8_text

KEY_COLUMNS = ("image", "path", "image_path", "file_name", "filename", "file", "id", "image_id")
TEXT_COLUMNS = ("comments", "comment", "text")
# The AVA-Comments CSV as the AesFormer code reads it: `index` is the image id, `label` is ignored.
AVA_COMMENTS_KEY = "index"
MAX_LISTED = 20


class CommentsFileError(ValueError):
    """A comments file that cannot be read as a whole (no key or text column, not JSON, a value of the wrong type);
    the message names the file and, where there is one, the line or key."""


class AmbiguousCommentKeysError(ValueError):
    """Keys of a comments file that each name more than one image; `ambiguous` holds ``(key, [images])``."""

    def __init__(self, message: str, ambiguous: list[tuple[str, list[str]]]):
        super().__init__(message)
        self.ambiguous = ambiguous


@dataclass
class CommentEntry:
    """One key of a comments file with its comments, and where it was read (``"file, line N"`` or ``"file, key"``)."""

    key: str
    comments: list[str]
    location: str
    file: str = ""


@dataclass
class CommentMatch:
    """What `CommentTable.match` found: `comments[i]` is the list of comments of image ``i`` (empty when none)."""

    comments: list[list[str]]
    files: list[str]
    n_keys: int
    n_matched_keys: int
    unmatched: list[CommentEntry]
    notes: list[str] = field(default_factory=list)

    @property
    def n_images_with_comments(self) -> int:
        return sum(1 for texts in self.comments if texts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": list(self.files),
            "keys": self.n_keys,
            "matched_keys": self.n_matched_keys,
            "unmatched_keys": len(self.unmatched),
            "unmatched_examples": [entry.key for entry in self.unmatched[:MAX_LISTED]],
            "images_with_comments": self.n_images_with_comments,
        }


def _text_items(value: Any, where: str) -> list[str]:
    """A comments value -> list of non-empty strings (a string may hold several comments, one per line)."""
    if value is None:
        return []
    if isinstance(value, float) and value != value:  # NaN from a spreadsheet export
        return []
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        items = [str(value)]
    elif isinstance(value, list) and all(isinstance(v, (str, int, float)) and not isinstance(v, bool) or v is None
                                         for v in value):
        items = [str(v) for v in value if v is not None]
    else:
        raise CommentsFileError(f"{where}: comments must be a string or a list of strings, got {type(value).__name__}")
    # a comment that is only markup or characters the cleaning strips is no comment (image-only branch, counted so);
    # the text itself is cleaned by the processor, the one home of the rule
    from aesformer_processing.processing_aesformer import has_comment_text

    return [item for item in items if has_comment_text(item)]


def _normalise_key(value: Any) -> str:
    key = str(value).strip().replace("\\", "/")
    while key.startswith("./"):
        key = key[2:]
    return key


def _rows_to_entries(path: str, rows: list[tuple[str, dict]], columns: Sequence[str], notes: list[str]):
    name = os.path.basename(path)
    key_column = next((c for c in KEY_COLUMNS if c in columns), None)
    if key_column is None and AVA_COMMENTS_KEY in columns:
        key_column = AVA_COMMENTS_KEY
    text_column = next((c for c in TEXT_COLUMNS if c in columns), None)
    if rows and (key_column is None or text_column is None):
        raise CommentsFileError(
            f"{path}: a comments file needs a key column ({', '.join(KEY_COLUMNS)}; or index as in the AVA-Comments "
            f"CSV index,label,comment) and a text column ({', '.join(TEXT_COLUMNS)}); found columns {sorted(columns)}"
        )
    key_order = [c for c in (*KEY_COLUMNS, AVA_COMMENTS_KEY) if c in columns]
    text_order = [c for c in TEXT_COLUMNS if c in columns]
    entries, no_key, no_text = [], 0, 0
    for location, row in rows:
        # JSON rows may name their columns differently from row to row: each row uses its own first key and text
        key_column = next((c for c in key_order if c in row), key_column)
        text_column = next((c for c in text_order if c in row), text_column)
        key = row.get(key_column)
        if key is None or not _normalise_key(key):
            no_key += 1
            continue
        texts = _text_items(row.get(text_column), f"{name}, {location}")
        if not texts:
            no_text += 1
            continue
        entries.append(CommentEntry(_normalise_key(key), texts, f"{name}, {location}", path))
    if no_key:
        notes.append(f"{name}: {no_key} row(s) without a key ({', '.join(key_order)}) were ignored")
    if no_text:
        notes.append(f"{name}: {no_text} row(s) without comment text were ignored")
    return entries


def _read_json_lines(path: str, text: str) -> list[tuple[str, dict]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError as err:
            raise CommentsFileError(f"{path}, line {number}: not valid JSON: {err}") from None
        if not isinstance(item, dict):
            raise CommentsFileError(f"{path}, line {number}: each JSON Lines row must be an object, got "
                                    f"{type(item).__name__}")
        rows.append((f"line {number}", item))
    return rows


def _read_file(path: str, notes: list[str]) -> list[CommentEntry]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"comments file '{path}' does not exist")
    extension = os.path.splitext(path)[1].lower()
    text = read_utf8_text(path, csv_rows=extension not in (".json", ".jsonl", ".ndjson"))
    start = text.lstrip()[:1]
    if extension in (".jsonl", ".ndjson"):
        rows = _read_json_lines(path, text)
    elif extension == ".json" or start in ("{", "["):
        try:
            document = json.loads(text)
        except ValueError:
            if start != "{":
                raise CommentsFileError(f"{path}: not valid JSON (expected an object key -> comments, an array of "
                                        "rows, or JSON Lines)") from None
            rows = _read_json_lines(path, text)  # one object per line
        else:
            if isinstance(document, dict):
                name = os.path.basename(path)
                entries = []
                for key, value in document.items():
                    texts = _text_items(value, f"{name}, key {key!r}")
                    if texts and _normalise_key(key):
                        entries.append(CommentEntry(_normalise_key(key), texts, f"{name}, key {key!r}", path))
                return entries
            if not isinstance(document, list) or not all(isinstance(item, dict) for item in document):
                raise CommentsFileError(f"{path}: a JSON comments file holds an object (key -> comment or list of "
                                        "comments) or an array of objects (rows)")
            rows = [(f"row {i}", item) for i, item in enumerate(document, start=1)]
    else:
        raise_csv_field_limit()
        reader = csv.reader(io.StringIO(text, newline=""))
        try:
            header = [name.strip() for name in next(reader, [])]
            rows, previous = [], reader.line_num
            for fields in reader:
                line, previous = previous + 1, reader.line_num
                if not fields or all(not f.strip() for f in fields):
                    continue
                if len(fields) != len(header):
                    raise CommentsFileError(f"{path}, line {line}: {len(fields)} fields but the header has "
                                            f"{len(header)} ({', '.join(header)})")
                rows.append((f"line {line}", dict(zip(header, fields))))
        except csv.Error as err:
            raise CommentsFileError(f"{path}, line {reader.line_num}: cannot parse the CSV: {err}") from None
        return _rows_to_entries(path, rows, header, notes)
    columns = sorted(set().union(*(row.keys() for _, row in rows))) if rows else []
    return _rows_to_entries(path, rows, columns, notes)


@dataclass
class CommentTable:
    """The comments of one or more files, in file order; `match` assigns them to images."""

    files: list[str]
    entries: list[CommentEntry]
    notes: list[str] = field(default_factory=list)

    def match(
        self,
        images: Sequence[str],
        root: str | os.PathLike | None = None,
        ids: Sequence[str] | None = None,
    ) -> CommentMatch:
        """
        Assigns each key to images. A key matches, in this order (the first level with a hit decides): the image's
        path relative to `root` with or without its extension, its dataset id (`ids`) or its absolute path (a key
        that is a path is also read relative to its comments file's folder); else its file name; else its file
        stem. Image folders are never searched: only the given `images` are candidates.

        Raises:
            AmbiguousCommentKeysError: some key matches two or more different images at its level (all such keys are
                listed, up to 20).
        """
        root = os.path.abspath(os.fspath(root)) if root is not None else None
        paths = [os.path.abspath(os.fspath(p)) for p in images]
        exact: dict[str, set[int]] = {}
        by_name: dict[str, set[int]] = {}
        by_stem: dict[str, set[int]] = {}
        for index, path in enumerate(paths):
            forms = {path}
            if root is not None:
                relative = os.path.relpath(path, root).replace(os.sep, "/")
                if not relative.startswith("../"):
                    forms.update((relative, os.path.splitext(relative)[0]))
            if ids is not None and ids[index] is not None:
                forms.add(_normalise_key(ids[index]))
            for form in forms:
                exact.setdefault(form, set()).add(index)
            name = os.path.basename(path)
            by_name.setdefault(name, set()).add(index)
            by_stem.setdefault(os.path.splitext(name)[0], set()).add(index)

        comments: list[list[str]] = [[] for _ in paths]
        unmatched, ambiguous, matched = [], [], 0
        for entry in self.entries:
            key = entry.key
            forms = {key}
            if "/" in key or os.path.isabs(key):
                base = os.path.dirname(entry.file)
                forms.update((os.path.abspath(key), os.path.abspath(os.path.join(base, key))))
            hits: set[int] = set()
            for form in forms:
                hits |= exact.get(form, set())
            if not hits and "/" not in key:
                hits = by_name.get(key) or by_stem.get(key) or set()
            if not hits:
                unmatched.append(entry)
                continue
            if len({paths[i] for i in hits}) > 1:
                ambiguous.append((entry, sorted({paths[i] for i in hits})))
                continue
            matched += 1
            for index in sorted(hits):
                comments[index].extend(entry.comments)
        if ambiguous:
            listed = "\n".join(f"  {entry.location}: {entry.key!r} matches {', '.join(found[:5])}"
                               + (f" and {len(found) - 5} more" if len(found) > 5 else "")
                               for entry, found in ambiguous[:MAX_LISTED])
            more = f"\n  ... and {len(ambiguous) - MAX_LISTED} more" if len(ambiguous) > MAX_LISTED else ""
            raise AmbiguousCommentKeysError(
                f"{len(ambiguous)} comment key(s) match more than one image; write these keys as paths relative to "
                f"the image folder:\n{listed}{more}",
                [(entry.key, found) for entry, found in ambiguous],
            )
        files_with_keys = list(dict.fromkeys(entry.file for entry in self.entries))
        if len(files_with_keys) > 1:  # one file alone that matches nothing is the caller's (it names the flags)
            unmatched_files = [(file, [e for e in unmatched if e.file == file]) for file in files_with_keys]
            for file, missed in unmatched_files:
                total = sum(1 for entry in self.entries if entry.file == file)
                if len(missed) == total:
                    examples = ", ".join(repr(entry.key) for entry in missed[:3])
                    raise CommentsFileError(f"{file}: none of its {total:,} keys matches an image (keys like "
                                            f"{examples}); keys are image paths, file names or file names without "
                                            "the extension. Fix the file or leave it out")
        notes = list(self.notes)
        if unmatched:
            examples = ", ".join(repr(entry.key) for entry in unmatched[:5])
            notes.append(f"comments: {len(unmatched)} of {len(self.entries)} key(s) match no image (e.g. {examples})")
        return CommentMatch(comments, list(self.files), len(self.entries), matched, unmatched, notes)

    def lookup(self) -> "CommentLookup":
        """A matcher for images that arrive one at a time (streamed shards): see `CommentLookup`."""
        return CommentLookup(self)


class CommentLookup:
    """
    The comments of a `CommentTable` for one image at a time, matched in `CommentTable.match`'s order (a key that is a
    path: the image's absolute path, also read relative to its comments file's folder; else the file name; else the
    stem; else the sample's shard key). Streamed images cannot be checked for ambiguity against each other, so the
    first level with a hit decides and keys of one level add up.

    Called with a sample dict (`path`, `name`, `key`: any may be missing); returns the comments, or None.
    """

    def __init__(self, table: CommentTable):
        self.by_path: dict[str, list[str]] = {}
        self.by_name: dict[str, list[str]] = {}
        for entry in table.entries:
            if "/" in entry.key or os.path.isabs(entry.key):
                for form in {os.path.abspath(entry.key),
                             os.path.abspath(os.path.join(os.path.dirname(entry.file), entry.key))}:
                    self.by_path.setdefault(form, []).extend(entry.comments)
            else:
                self.by_name.setdefault(entry.key, []).extend(entry.comments)

    def __call__(self, sample: dict) -> list[str] | None:
        if sample.get("path"):
            found = self.by_path.get(os.path.abspath(sample["path"]))
            if found:
                return found
        name = os.path.basename(sample.get("path") or sample.get("name") or "")
        for form in (name, os.path.splitext(name)[0], sample.get("key") or ""):
            if form and self.by_name.get(form):
                return self.by_name[form]
        return None


def read_comments(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> CommentTable:
    """
    Reads one or more comments files (see the module docstring for the formats) into a `CommentTable`.

    Raises:
        FileNotFoundError: a file does not exist.
        CommentsFileError: a file cannot be read as comments (no key/text column, invalid JSON, ...).
        aesformer_training.text_files.TextEncodingError: a file is not UTF-8.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files = [os.path.abspath(os.fspath(p)) for p in paths]
    entries: list[CommentEntry] = []
    notes: list[str] = []
    for path in files:
        entries.extend(_read_file(path, notes))
    return CommentTable(files, entries, notes)


def pipeline_inputs(
    images: Sequence[str | os.PathLike],
    comments: str | os.PathLike | Iterable[str | os.PathLike],
    root: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """
    Pairs image paths with the comments of comments files (the same formats and key rule as every command) as inputs
    for the Aesformer pipeline: ``[{"image": path, "comments": [..] or None}, ...]``. An image without comments gets
    ``None`` (the image-only branch answers it).

    ```python
    scorer(pipeline_inputs(paths, ["dpc_color.json", "dpc_composition.json"], root="photos"))
    ```
    """
    paths = [os.fspath(image) for image in images]
    match = read_comments(comments).match(paths, root=root)
    return [{"image": path, "comments": texts or None} for path, texts in zip(paths, match.comments)]


__all__ = [
    "AmbiguousCommentKeysError",
    "CommentLookup",
    "CommentEntry",
    "CommentMatch",
    "CommentTable",
    "CommentsFileError",
    "KEY_COLUMNS",
    "TEXT_COLUMNS",
    "pipeline_inputs",
    "read_comments",
]
