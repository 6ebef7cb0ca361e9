"""The inputs of scoring as a command names them: image files, folders, glob patterns and list files expanded to
`(path, comments)` records (`collect_inputs`), and the comments of comments files matched to those images
(`load_comments`, `attach_comments`: the reader every command shares, `aesformer_training.comments`).

    records, problems = collect_inputs(["photos/", "more/*.png", "list.csv"])

- folders are searched recursively for every extension Pillow can open;
- list files: `.csv` / `.jsonl` with an `image` (or `path`) column and an optional `comments` column, or `.txt` with
  one path per line; relative paths are relative to the list file's folder. They must be UTF-8: other bytes stop
  with an error naming the file and the line.
"""

import csv
import glob
import io
import json
import os
from typing import Iterable, List, Optional, Sequence, Tuple

from modeling_aesformer.scoring import ScoringError, image_extensions

LIST_EXTENSIONS = (".csv", ".jsonl", ".txt")
_IMAGE_KEYS = ("image", "path", "file", "file_name", "filename", "image_path")
_COMMENT_KEYS = ("comments", "comment", "text")
_GLOB_CHARS = "*?["


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
    from .text_files import TextEncodingError, read_utf8_text

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
        from .text_files import TextEncodingError, read_utf8_text

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
    from .text_files import TextEncodingError

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


__all__ = ["LIST_EXTENSIONS", "attach_comments", "collect_inputs", "load_comments"]
