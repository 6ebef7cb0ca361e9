"""What the dataset loaders share: parsing a row's numbers, score and split (a bad row becomes a `RowProblem` with a
reason code), the ``on_error`` policy, the seeded split, comments attached from comments files, the check that the
images exist, and the end of every load (`finish_dataset`: kept rows -> `datasets.DatasetDict`, the report logged).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .dataset_spec import DatasetSpec
from .reports import (MALFORMED_ROW, MAX_LISTED_PROBLEMS, MISSING_IMAGE, NAN_SCORE, NEGATIVE_VOTES, NON_NUMERIC,
                      SCORE_OUT_OF_RANGE, SPLITS, WRONG_BINS, ZERO_VOTES, DatasetLoadError, ImagesNotFoundError,
                      LoadReport)

logger = logging.getLogger(__name__)


_SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "testing": "test",
}


class RowProblem(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class RowCandidate:
    id: str
    location: str
    image: str
    labels: np.ndarray | None = None
    score: float | None = None
    comments: str = ""
    split: str | None = None


def check_on_error(on_error: str) -> None:
    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}.")


def check_fractions(validation_fraction: float, test_fraction: float | None) -> None:
    for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
            raise ValueError(f"{name} must be a number in [0, 1), got {value!r}.")
    if (validation_fraction or 0) + (test_fraction or 0) >= 1:
        raise ValueError(
            f"validation_fraction + test_fraction must be < 1 (got {validation_fraction} + {test_fraction}): "
            "the train split would be empty."
        )


def parse_numbers(text: str | None, what: str) -> np.ndarray:
    tokens = (text or "").split()
    if not tokens:
        raise RowProblem(MALFORMED_ROW, f"the {what} field is empty")
    values = []
    for position, token in enumerate(tokens, start=1):
        try:
            value = float(token)
        except ValueError:
            raise RowProblem(NON_NUMERIC, f"{what} value {position} is {token!r}, not a number") from None
        if not math.isfinite(value):
            raise RowProblem(NON_NUMERIC, f"{what} value {position} is {token!r}, not a finite number")
        values.append(value)
    return np.asarray(values, dtype=np.float64)


def check_counts(values: np.ndarray, num_bins: int, what: str) -> None:
    if len(values) != num_bins:
        raise RowProblem(WRONG_BINS, f"has {len(values)} {what} values, expected {num_bins} (one per bin)")
    negative = np.flatnonzero(values < 0)
    if negative.size:
        i = int(negative[0])
        raise RowProblem(NEGATIVE_VOTES, f"{what} value {i + 1} is negative ({values[i]:g})")
    if values.sum() <= 0:
        raise RowProblem(ZERO_VOTES, f"all {len(values)} {what} values are zero")


def parse_score(text: str | None, score_range: tuple[float, float], what: str = "score") -> float:
    token = (text or "").strip()
    if not token:
        raise RowProblem(MALFORMED_ROW, f"the {what} field is empty")
    try:
        value = float(token)
    except ValueError:
        raise RowProblem(NON_NUMERIC, f"the {what} {token!r} is not a number") from None
    if not math.isfinite(value):
        raise RowProblem(NAN_SCORE, f"the {what} is {token!r}")
    lo, hi = score_range
    if not lo <= value <= hi:
        raise RowProblem(SCORE_OUT_OF_RANGE, f"the {what} {value:g} lies outside the range [{lo:g}, {hi:g}]")
    return value


def join_comment_text(value: Any) -> str:
    """Comments of one image -> one string: split on real newlines, strip, drop empty pieces, join with a space."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isnan(value):
        return ""
    if isinstance(value, (list, tuple)):
        pieces = [piece for item in value for piece in str(item).splitlines()]
    else:
        pieces = str(value).splitlines()
    return " ".join(piece.strip() for piece in pieces if piece.strip())


def normalise_split(value: str | None) -> str:
    key = (value or "").strip().lower()
    if key not in _SPLIT_ALIASES:
        raise RowProblem(
            MALFORMED_ROW, f"split {value!r} is not one of train/validation/test (or train/val/valid/dev/test)"
        )
    return _SPLIT_ALIASES[key]


def guess_row_id(header: list[str], fields: list[str], default: str) -> str:
    """The id of a row for messages, even when the row has the wrong number of fields."""
    for name in ("id", "file_name"):
        if name in header and header.index(name) < len(fields) and fields[header.index(name)].strip():
            return fields[header.index(name)].strip()
    return default


def record_to_dict(header: list[str], fields: list[str]) -> dict[str, str]:
    if len(fields) != len(header):
        raise RowProblem(
            MALFORMED_ROW, f"has {len(fields)} fields but the header has {len(header)} ({', '.join(header)})"
        )
    return dict(zip(header, fields))


def split_counts(n: int, validation_fraction: float, test_fraction: float) -> tuple[int, int]:
    """Rows for validation and test: rounded fractions of `n`, at least 1 each when the fraction is > 0 and n >= 3."""
    n_val, n_test = round(validation_fraction * n), round(test_fraction * n)
    if n >= 3:
        if validation_fraction > 0:
            n_val = max(n_val, 1)
        if test_fraction > 0:
            n_test = max(n_test, 1)
    while n_val + n_test >= n and (n_val or n_test):  # keep at least one training row
        if n_val >= n_test and n_val:
            n_val -= 1
        else:
            n_test -= 1
    return n_val, n_test


def seeded_assignment(ids: Iterable[str], n_validation: int, n_test: int, seed: int) -> dict[str, str]:
    """Deterministic split: sort the ids, permute them with `numpy.random.default_rng(seed)`; the first `n_test`
    go to test, the next `n_validation` to validation, the rest to train. Independent of the row order."""
    ordered = sorted(set(ids))
    order = np.random.default_rng(seed).permutation(len(ordered))
    assignment = {}
    for rank, position in enumerate(order):
        if rank < n_test:
            assignment[ordered[position]] = "test"
        elif rank < n_test + n_validation:
            assignment[ordered[position]] = "validation"
        else:
            assignment[ordered[position]] = "train"
    return assignment


def seeded_rule(seed: int) -> str:
    return f"seeded (the sorted ids permuted with numpy.random.default_rng({seed}))"


def list_assignment(all_ids: list[str], test_list, train_list, validation_fraction: float, seed: int,
                    report: LoadReport, source: str) -> dict[str, str]:
    """The split of the official lists: test = the ids of `test_list`, train = those of `train_list` (without one:
    every other id), validation = `validation_fraction` of the train ids, seeded. A list entry names an id, or an
    id without its image extension. Ids in neither list are left out (counted in a note and in
    `report.split_rule`); an id in both lists is an error. Sets `report.split_rule`."""
    from .text_files import read_id_list

    def listed(path, kind):
        entries = set(read_id_list(os.fspath(path)))
        matched = {i for i in all_ids if i in entries or os.path.splitext(i)[0] in entries}
        found = {i if i in entries else os.path.splitext(i)[0] for i in matched}
        absent = entries - found
        if absent:
            name = os.path.basename(os.fspath(path))
            report.notes.append(f"{len(absent):,} id(s) of the {kind} list {name} are not in {source} "
                                f"(e.g. {sorted(absent)[0]!r})")
        return matched

    test_ids = listed(test_list, "test") if test_list is not None else set()
    if train_list is not None:
        train_set = listed(train_list, "train")
        both = sorted(train_set & test_ids)
        if both:
            raise ValueError(f"{len(both):,} id(s) are in both the train list {os.fspath(train_list)} and the test "
                             f"list {os.fspath(test_list)} (e.g. {both[0]!r}): an image cannot be in both splits")
        train_ids = [i for i in all_ids if i in train_set]
    else:
        train_ids = [i for i in all_ids if i not in test_ids]
    n_val, _ = split_counts(len(train_ids), validation_fraction, 0.0)
    assignment = seeded_assignment(train_ids, n_val, 0, seed)
    assignment.update({i: "test" for i in all_ids if i in test_ids})
    unlisted = [i for i in all_ids if i not in assignment]
    if unlisted:
        report.notes.append(f"{len(unlisted):,} id(s) of {source} are in neither the train list nor the test list "
                            f"(e.g. {unlisted[0]!r}): left out of every split")
    test_name = os.path.basename(os.fspath(test_list)) if test_list is not None else None
    train_rule = (f"the ids of {os.path.basename(os.fspath(train_list))}" if train_list is not None
                  else "every other id")
    report.split_rule = (f"official lists: test = the ids of {test_name}, train = {train_rule}" if test_name else
                         f"lists: train = the ids of {os.path.basename(os.fspath(train_list))}, no test list: "
                         "test empty") + (
        f"; validation = {validation_fraction:g} of the train ids, {seeded_rule(seed)}"
        + (f"; {len(unlisted):,} id(s) in neither list left out" if unlisted else ""))
    return assignment


def random_split_rule(validation_fraction: float, test_fraction: float, seed: int) -> str:
    return (f"seeded random split of all ids, not an official split: test {test_fraction:g}, validation "
            f"{validation_fraction:g}, train the rest; {seeded_rule(seed)}")


def finish_dataset(
    name: str,
    candidates: list[RowCandidate],
    report: LoadReport,
    spec: DatasetSpec,
    on_error: str,
):
    """Applies the error policy, builds the DatasetDict, fills the report and logs the summary."""
    if on_error == "fail" and report.dropped:
        listed = "\n".join(f"  {issue}" for issue in report.dropped[:MAX_LISTED_PROBLEMS])
        more = len(report.dropped) - MAX_LISTED_PROBLEMS
        details = (f"{len(report.dropped)} row(s) of {report.source} cannot be used (counts: {report.counts()}):\n"
                   f"{listed}" + (f"\n  ... and {more} more" if more > 0 else ""))
        raise DatasetLoadError(
            details + "\nFix these rows, or pass on_error='skip' to drop them and get a report.", report, details
        )
    rows: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    for cand in candidates:
        if cand.split is None:  # in neither official list: counted in the report's notes
            continue
        rows[cand.split].append(
            {
                "id": cand.id,
                "image": cand.image,
                "labels": [float(v) for v in cand.labels],
                "score": float(cand.score),
                "comments": cand.comments,
            }
        )
    report.split_sizes = {split: len(rows[split]) for split in SPLITS}
    spec.report = report
    dataset = _to_dataset_dict(rows)
    level = logging.WARNING if report.dropped else logging.INFO
    logger.log(level, "%s dataset: %s", name, report.describe())
    return dataset, spec


def _to_dataset_dict(rows: dict[str, list[dict[str, Any]]]):
    import datasets

    features = datasets.Features(
        {
            "id": datasets.Value("string"),
            "image": datasets.Value("string"),
            "labels": datasets.List(datasets.Value("float64")),
            "score": datasets.Value("float64"),
            "comments": datasets.Value("string"),
        }
    )
    columns = list(features)
    return datasets.DatasetDict(
        {
            split: datasets.Dataset.from_dict(
                {name: [row[name] for row in rows[split]] for name in columns}, features=features
            )
            for split in SPLITS
        }
    )


def row_location(path: str, line: int) -> str:
    return f"{os.path.basename(path)}, line {line}"


def list_images(image_dir: str, image_extension: str) -> set[str]:
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"image folder '{image_dir}' does not exist.")
    return {name for name in os.listdir(image_dir) if name.endswith(image_extension)}


def as_paths(comments) -> list[str]:
    if comments is None:
        return []
    if isinstance(comments, (str, os.PathLike)):
        return [os.fspath(comments)]
    return [os.fspath(path) for path in comments]


def attach_comments(candidates: list[RowCandidate], comments, root: str, report: LoadReport) -> None:
    """Adds the comments of `comments` (one or more files in any of the formats of `aesformer_training.comments`)
    to the kept rows, after the comments a row already has; records what matched in the report."""
    from .comments import read_comments

    files = as_paths(comments)
    if not files or not candidates:  # no kept image (the report says why): nothing to match
        return
    match = read_comments(files).match([c.image for c in candidates], root=root, ids=[c.id for c in candidates])
    for cand, texts in zip(candidates, match.comments):
        if texts:
            cand.comments = join_comment_text([cand.comments, *texts] if cand.comments else texts)
    report.comments = match.to_dict()
    report.notes.extend(match.notes)


def check_images_found(candidates: list[RowCandidate], report: LoadReport, folder: str,
                        expected: list[str], on_error: str, relative_to: str | None = None) -> None:
    """When rows named images but not one exists (a wrong folder or layout), makes the `ImagesNotFoundError`: raised
    with ``on_error="fail"``, else kept in ``report.images_not_found``. `expected` are the expected paths relative to
    `folder`. Looks one folder down (and in the parent) for a hint; never searches deeper."""
    if candidates or not expected or not report.counts().get(MISSING_IMAGE):
        return

    def count_in(directory: str) -> int:
        if all("/" not in rel and os.sep not in rel for rel in expected):
            try:
                names = set(os.listdir(directory))
            except OSError:
                return 0
            return sum(1 for rel in expected if rel in names)
        return sum(1 for rel in expected[:5000] if os.path.isfile(os.path.join(directory, rel)))

    suggestion, best, holding = None, 0, []
    places = []
    if os.path.isdir(folder):
        places = sorted(entry.path for entry in os.scandir(folder) if entry.is_dir())[:200]
    parent = os.path.dirname(folder)
    if relative_to is None and parent and parent != folder and os.path.isdir(parent):
        places.append(parent)
    for place in places:
        n = count_in(place)
        if n:
            holding.append((place, n))
        if n > best:
            suggestion, best = place, n
    found_example = None
    if suggestion is not None:
        found_example = next(os.path.join(suggestion, rel) for rel in expected
                             if os.path.isfile(os.path.join(suggestion, rel)))
    listing = []
    if os.path.isdir(folder):
        entries = sorted(os.listdir(folder))
        listing = [f"{len(entries):,} entries, e.g. " + ", ".join(entries[:3])] if entries else []
    report.images_not_found = ImagesNotFoundError(
        folder, len(expected), os.path.join(folder, expected[0]), suggestion=suggestion, n_found=best,
        found_example=found_example, listing=listing, relative_to=relative_to if suggestion else None, report=report,
        holding=holding,
    )
    if on_error == "fail":
        raise report.images_not_found


__all__ = ["RowProblem", "RowCandidate", "check_on_error", "check_fractions", "parse_numbers", "check_counts",
           "parse_score", "join_comment_text", "normalise_split", "guess_row_id", "record_to_dict", "split_counts",
           "seeded_assignment", "list_assignment", "random_split_rule", "seeded_rule", "finish_dataset",
           "row_location", "list_images", "as_paths", "attach_comments",
           "check_images_found"]
