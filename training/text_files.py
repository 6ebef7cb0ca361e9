"""The text files of a dataset (metadata, votes, comments, id lists): UTF-8 only, a bad byte reported with its file,
line and CSV data row (`TextEncodingError`); CSV records with the line each starts on; id lists. Read by the dataset
loaders and by the comments files (`aesformer_training.comments`)."""

from __future__ import annotations

import csv
import io
import os
import sys
from collections import Counter


def raise_csv_field_limit() -> None:
    # AVA-Comments rows hold all comments of an image in one field; the csv module's default limit is 128 KiB.
    limit = sys.maxsize
    while True:
        try:
            csv.field_size_limit(limit)
            return
        except OverflowError:
            limit //= 10


class TextEncodingError(ValueError):
    """A text file (metadata, votes, comments, list) is not valid UTF-8; `line` is the 1-based line of the first bad
    byte (and `row` the 1-based data row of a CSV file, the header not counted, when known)."""

    def __init__(self, message: str, path: str, line: int, row: int | None = None):
        super().__init__(message)
        self.path, self.line, self.row = path, line, row


def read_utf8_text(path: str | os.PathLike, csv_rows: bool = False) -> str:
    """
    The text of a UTF-8 file (a leading BOM is dropped; line endings are kept as written).

    Raises:
        TextEncodingError: the file holds bytes that are not UTF-8 (e.g. a Latin-1 or Windows-1252 export). The
            message names the file, the line (and with `csv_rows` the data row, header not counted) and the bytes,
            whatever the loader's ``on_error`` policy: a wrong encoding is a whole-file problem, so no row is guessed.
    """
    path = os.fspath(path)
    with open(path, "rb") as handle:
        data = handle.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line_start = data.rfind(b"\n", 0, err.start) + 1
        line = data.count(b"\n", 0, err.start) + 1
        row = None
        where = f"line {line}"
        if csv_rows:
            # Records up to the bad byte, the one holding it included (the "x" makes it non-empty): header + rows.
            prefix = data[:err.start].decode("utf-8") + "x"  # valid: the first bad byte comes later
            row = sum(1 for _ in csv.reader(io.StringIO(prefix, newline=""))) - 1
            where += f" (data row {row})" if row else " (the header)"
            row = row or None
        bad = data[err.start:err.end + 3][:6]
        raise TextEncodingError(
            f"{path}, {where}: byte(s) {bad!r} at byte offset {err.start} (byte {err.start - line_start + 1} of the "
            f"line) are not valid UTF-8 ({err.reason}). The file must be UTF-8: re-encode it (e.g. `iconv -f cp1252 "
            "-t utf-8`).",
            path, line, row,
        ) from None


def read_csv_records(path: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Reads a CSV file: the header (stripped) and `(first line number, fields)` for each non-blank record."""
    raise_csv_field_limit()
    with io.StringIO(read_utf8_text(path, csv_rows=True), newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise ValueError(f"{path} is empty: it needs a header line.") from None
        except csv.Error as err:
            raise ValueError(f"{path}, line {reader.line_num}: cannot parse the header: {err}") from err
        header = [name.strip() for name in header]
        duplicates = [name for name, n in Counter(header).items() if n > 1]
        if duplicates:
            raise ValueError(f"{path}: the header names the column(s) {duplicates} more than once.")
        records = []
        previous = reader.line_num
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                raise ValueError(f"{path}, line {reader.line_num}: cannot parse the CSV: {err}") from err
            start, previous = previous + 1, reader.line_num
            if not fields or all(not f.strip() for f in fields):
                continue
            records.append((start, fields))
    return header, records


def read_id_list(path: str) -> list[str]:
    """One id per line (first whitespace-separated token); blank and `#` lines ignored; an image extension
    (``.jpg``, ``.jpeg``, ``.png``) is stripped, so ``953619.jpg`` and ``953619`` are the same id."""
    ids = []
    with io.StringIO(read_utf8_text(path)) as handle:
        for line in handle:
            tokens = line.split()
            if not tokens or tokens[0].startswith("#"):
                continue
            token = tokens[0]
            if token.lower().endswith((".jpg", ".jpeg", ".png")):
                token = os.path.splitext(token)[0]
            ids.append(token)
    return ids


__all__ = ["raise_csv_field_limit", "TextEncodingError", "read_utf8_text", "read_csv_records", "read_id_list"]
