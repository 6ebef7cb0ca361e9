"""Aesthetic datasets for training and evaluating Aesformer, and the batch collator.

Every loader returns ``(datasets.DatasetDict, DatasetSpec)``. The `DatasetDict` always has the three splits
``train``, ``validation`` and ``test`` (a split may be empty) and these columns:

- ``id`` (`str`): the image id, unique within the dataset;
- ``image`` (`str`): the ABSOLUTE path of the image file. Images are not decoded while the metadata is read (only
  their existence is checked); the collator decodes them, so a broken file is found, logged and skipped when it is
  used;
- ``labels`` (`list[float]`): the target distribution over the dataset's bins (sums to 1);
- ``score`` (`float`): the mean score on the dataset's scale;
- ``comments`` (`str`): the image's comments joined with single spaces, ``""`` when there are none.

`DatasetSpec` describes the scale: bin ``i`` stands for the score ``linspace(score_range[0], score_range[1],
num_bins)[i]``, and an image is "high quality" iff its score is ``> threshold``. `DatasetSpec.report` is a
`LoadReport`: how many rows were read, kept per split, dropped and repaired, with the id, the reason code, the file
location and a message for each dropped or repaired row. Nothing is dropped silently: with ``on_error="skip"`` a bad
row is dropped and reported, with ``on_error="fail"`` the loader raises a `DatasetLoadError` naming every bad row.
Problems with a whole file (a missing ``metadata.csv``, a missing column, an unreadable ``dataset.json``) always raise.
When not one image of a file exists (a wrong image folder), the report's ``images_not_found`` holds an
`ImagesNotFoundError` with a hint from the folders one level down (raised with ``on_error="fail"``).
`LoadReport.describe` is the readable report (counts, a few rows per reason, every note); `LoadReport.to_dict` keeps
at most 20 rows per reason and `LoadReport.write_csv` writes them all.

Comments files (``comments=``, one path or several) are read by `aesformer_training.comments`, the one reader
every command uses.

Loaders (the formats are documented in ``docs/data-format.md``):

- `load_generic`: a folder with ``metadata.csv`` (and optionally ``dataset.json``); `write_generic` writes one;
- `load_ava`: ``AVA.txt`` + the official ``generic_test.jpgl`` split + optional AVA-Comments files;
- `load_photonet`: a whitespace-separated ``<id> <7 vote counts>`` file;
- `load_jas`: a CSV of JenAesthetics scores 0..100, normalised to [0, 1].

`datasets` is imported only when a loader builds its `DatasetDict`, so importing this module (e.g. for
`AestheticCollator`) stays cheap.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import math
import os
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL.Image


logger = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
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

# Reason codes of dropped rows.
MISSING_IMAGE = "missing_image"
ZERO_VOTES = "zero_votes"
NEGATIVE_VOTES = "negative_votes"
NON_NUMERIC = "non_numeric"
NAN_SCORE = "nan_score"
WRONG_BINS = "wrong_bins"
DUPLICATE_ID = "duplicate_id"
MALFORMED_ROW = "malformed_row"
SCORE_OUT_OF_RANGE = "score_out_of_range"
# Reason codes of repaired (kept) rows.
RENORMALISED = "renormalised"

DROP_REASONS = {
    MISSING_IMAGE: "the image file does not exist",
    ZERO_VOTES: "all vote counts (or probabilities) are zero",
    NEGATIVE_VOTES: "a vote count (or probability) is negative",
    NON_NUMERIC: "a vote count or probability is not a finite number (text, empty token, nan, inf)",
    NAN_SCORE: "the score is NaN or infinite",
    WRONG_BINS: "the number of vote counts (or probabilities) differs from the dataset's number of bins",
    DUPLICATE_ID: "the id already appeared on an earlier row (the first occurrence is kept)",
    MALFORMED_ROW: "the row cannot be parsed (wrong number of fields, empty required field, unknown split, ...)",
    SCORE_OUT_OF_RANGE: "the score lies outside the dataset's score range",
}
REPAIR_REASONS = {
    RENORMALISED: "the probabilities did not sum to 1 and were divided by their sum",
}

_DEFAULT_SCORE_SIGMA = 1.0
_DEFAULT_SCORE_RANGE = (1.0, 10.0)
_DEFAULT_SCORE_BINS = 10
_MAX_LISTED_PROBLEMS = 20


# ------------------------------------------------------------------------------------------------------------------
# Report and spec
# ------------------------------------------------------------------------------------------------------------------


class DatasetLoadError(ValueError):
    """Raised by a loader with ``on_error="fail"`` when rows cannot be used; `report` holds every problem and
    `details` the message without its last line (the advice, which names the Python argument ``on_error``; the
    command line gives its own flag instead)."""

    def __init__(self, message: str, report: LoadReport | None = None, details: str | None = None):
        super().__init__(message)
        self.report = report
        self.details = details if details is not None else message


class ImagesNotFoundError(DatasetLoadError):
    """
    Not one image of a dataset file exists in its image folder (a wrong folder, or a layout the loader does not
    expect). It says how many images were expected, one expected path, and what the folder (and the folders one level
    down) hold instead. With ``on_error="fail"`` the loader raises it; with ``"skip"`` the rows are dropped as
    ``missing_image`` and the error is kept in ``report.images_not_found`` (its message is logged with the report):
    a command that needs images stops on it.

    Attributes:
        folder: the image folder that was searched.
        n_expected: number of rows that named an image.
        expected_example: one expected image path.
        suggestion: a sub-folder (one level down) or the parent folder holding `n_found` of the expected images, or
            ``None``.
        relative_to: for formats whose paths are relative to the dataset folder (generic), that folder; the hint
            then says so instead of proposing another folder.
    """

    def __init__(self, folder: str, n_expected: int, expected_example: str, *, suggestion: str | None = None,
                 n_found: int = 0, found_example: str | None = None, listing: Sequence[str] = (),
                 relative_to: str | None = None, report: LoadReport | None = None):
        self.folder, self.n_expected, self.expected_example = folder, n_expected, expected_example
        self.suggestion, self.n_found, self.found_example = suggestion, n_found, found_example
        self.listing, self.relative_to = list(listing), relative_to
        super().__init__(self.describe(), report)

    def describe(self, flag: str | None = None, as_typed: str | None = None) -> str:
        """The message; with `flag` (``"--image-dir"``) it names the command-line flag to fix, with `as_typed` it
        shows the paths as the user wrote the folder (relative paths stay relative)."""

        def show(path: str) -> str:
            if as_typed is None:
                return path
            if path == self.folder or path.startswith(self.folder + os.sep):
                return os.path.normpath(as_typed + path[len(self.folder):])
            relative = os.path.relpath(path)
            return path if relative.startswith(os.pardir + os.sep + os.pardir) else relative

        what = f"{flag} {show(self.folder)}" if flag else f"image folder {self.folder}"
        text = f"{what}: 0 of {self.n_expected:,} images found; expected files like {show(self.expected_example)}"
        if self.suggestion is not None:
            text += f"; found {self.n_found:,} files like {show(self.found_example)}"
            if self.relative_to is not None:
                text += (f" — image paths are relative to {show(self.relative_to)}: write them with their sub-folder "
                         f"({os.path.relpath(self.found_example, self.relative_to)})")
            else:
                text += f" — did you mean {flag or 'the image folder'} {show(self.suggestion)}?"
        elif not os.path.isdir(self.folder):
            text += "; the folder does not exist"
        elif self.listing:
            text += f"; the folder holds {', '.join(self.listing)}"
        else:
            text += "; the folder is empty"
        return text


@dataclass(frozen=True)
class RowIssue:
    """One dropped or repaired row: its id, a reason code (see `DROP_REASONS`/`REPAIR_REASONS`), where it is
    (``"file, line N"``) and a human-readable message."""

    id: str
    reason: str
    location: str
    message: str

    def __str__(self) -> str:
        return f"{self.location}, id {self.id!r}: {self.reason}: {self.message}"


@dataclass
class LoadReport:
    """What a loader did with the rows it read.

    Attributes:
        source: the main file that was read.
        total_rows: number of data rows read (blank lines and ``#`` comment lines of text files are not rows).
        split_sizes: rows kept per split.
        dropped: one `RowIssue` per dropped row.
        repaired: one `RowIssue` per kept row that was changed (e.g. a renormalised distribution).
        notes: other facts worth knowing (ignored columns, test-list ids absent from the dataset, comments for
            unknown ids, ...).
        comments: when a comments file was given, what matched (`aesformer_training.comments.CommentMatch.to_dict`:
            files, keys, matched keys, unmatched keys with examples, images with comments); else ``None``.
    """

    source: str = ""
    total_rows: int = 0
    split_sizes: dict[str, int] = field(default_factory=dict)
    dropped: list[RowIssue] = field(default_factory=list)
    repaired: list[RowIssue] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    comments: dict[str, Any] | None = None
    rows_csv: str | None = None  # where the full list of dropped/repaired rows is written (`write_csv`), if known
    images_not_found: ImagesNotFoundError | None = field(default=None, repr=False)

    @property
    def n_kept(self) -> int:
        return sum(self.split_sizes.values())

    @property
    def n_dropped(self) -> int:
        return len(self.dropped)

    @property
    def n_repaired(self) -> int:
        return len(self.repaired)

    def counts(self) -> dict[str, int]:
        """Dropped rows per reason code."""
        return dict(Counter(issue.reason for issue in self.dropped))

    def repair_counts(self) -> dict[str, int]:
        """Repaired rows per reason code."""
        return dict(Counter(issue.reason for issue in self.repaired))

    def dropped_ids(self, reason: str | None = None) -> list[str]:
        """Ids of the dropped rows, optionally only those dropped for `reason`."""
        return [issue.id for issue in self.dropped if reason is None or issue.reason == reason]

    def summary(self) -> str:
        """A one-line summary with all counts."""

        def by_reason(counts: dict[str, int]) -> str:
            return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))

        sizes = ", ".join(f"{split} {self.split_sizes.get(split, 0)}" for split in SPLITS)
        text = f"{self.source}: {self.total_rows} rows read, {self.n_kept} kept ({sizes}), {self.n_dropped} dropped"
        if self.dropped:
            text += f" ({by_reason(self.counts())})"
        text += f", {self.n_repaired} repaired"
        if self.repaired:
            text += f" ({by_reason(self.repair_counts())})"
        return text

    def describe(self, examples: int = 3) -> str:
        """A readable, multi-line report: the summary, each drop and repair reason with its count, meaning and up to
        `examples` rows, the comments that matched, and every note (printed, not counted)."""
        lines = [self.summary()]
        for title, issues, meanings in (("dropped", self.dropped, DROP_REASONS),
                                        ("repaired", self.repaired, REPAIR_REASONS)):
            for reason, n in sorted(Counter(issue.reason for issue in issues).items()):
                lines.append(f"  {title} {reason}: {n:,} — {meanings.get(reason, reason)}")
                shown = [issue for issue in issues if issue.reason == reason][:examples]
                lines += [f"    e.g. {issue}" for issue in shown]
        if self.comments is not None:
            c = self.comments
            lines.append(f"  comments: {c['images_with_comments']:,} of {self.n_kept:,} kept images have comments "
                         f"({c['matched_keys']:,} of {c['keys']:,} keys matched)")
        if self.images_not_found is not None:
            lines.append(f"  no image found: {self.images_not_found}")
        lines += [f"  note: {note}" for note in self.notes]
        return "\n".join(lines)

    def to_dict(self, max_examples: int | None = _MAX_LISTED_PROBLEMS) -> dict[str, Any]:
        """A JSON-serialisable dict (e.g. to write next to the training outputs): the counts per reason and at most
        `max_examples` rows per reason (``None``: all rows; `write_csv` writes the full list)."""

        def listed(issues: list[RowIssue]) -> list[dict[str, str]]:
            if max_examples is None:
                return [vars(issue).copy() for issue in issues]
            shown: Counter = Counter()
            out = []
            for issue in issues:
                shown[issue.reason] += 1
                if shown[issue.reason] <= max_examples:
                    out.append(vars(issue).copy())
            return out

        out = {
            "source": self.source,
            "total_rows": self.total_rows,
            "kept": self.n_kept,
            "split_sizes": dict(self.split_sizes),
            "dropped_counts": self.counts(),
            "repaired_counts": self.repair_counts(),
            "dropped": listed(self.dropped),
            "repaired": listed(self.repaired),
            "notes": list(self.notes),
        }
        if max_examples is not None:
            out["examples_per_reason"] = max_examples
        if self.comments is not None:
            out["comments"] = dict(self.comments)
        if self.rows_csv is not None:
            out["all_rows_csv"] = self.rows_csv
        if self.images_not_found is not None:
            out["images_not_found"] = str(self.images_not_found)
        return out

    def write_csv(self, path: str | os.PathLike) -> str:
        """Writes every dropped and repaired row (columns ``status, id, reason, location, message``) to `path`."""
        path = os.fspath(path)
        with open(path, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["status", "id", "reason", "location", "message"])
            for status, issues in (("dropped", self.dropped), ("repaired", self.repaired)):
                writer.writerows([status, i.id, i.reason, i.location, i.message] for i in issues)
        return path

    # internal helpers
    def _drop(self, id_: str, reason: str, location: str, message: str) -> None:
        self.dropped.append(RowIssue(str(id_), reason, location, message))

    def _repair(self, id_: str, reason: str, location: str, message: str) -> None:
        self.repaired.append(RowIssue(str(id_), reason, location, message))


@dataclass
class DatasetSpec:
    """The score scale of a dataset.

    Attributes:
        name: dataset name (``"ava"``, ``"photonet"``, ``"jas"`` or the generic dataset's name).
        num_bins: number of bins of the target distributions.
        score_range: ``(lowest, highest)`` score; bin ``i`` stands for ``linspace(*score_range, num_bins)[i]``.
        threshold: accuracy threshold: an image is "high" iff its score is ``> threshold``.
        report: the `LoadReport` of the load that produced this spec (``None`` for a hand-made spec).
    """

    name: str
    num_bins: int
    score_range: tuple[float, float]
    threshold: float
    report: LoadReport | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if isinstance(self.num_bins, bool) or not isinstance(self.num_bins, (int, np.integer)) or self.num_bins < 2:
            raise ValueError(f"num_bins must be an int >= 2, got {self.num_bins!r}.")
        self.num_bins = int(self.num_bins)
        lo, hi = _as_range(self.score_range, "score_range")
        self.score_range = (lo, hi)
        self.threshold = float(self.threshold)
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number, got {self.threshold!r}.")

    @property
    def bin_values(self) -> np.ndarray:
        """The score each bin stands for: ``linspace(score_range[0], score_range[1], num_bins)``."""
        return np.linspace(self.score_range[0], self.score_range[1], self.num_bins)

    def score_of(self, distribution: Sequence[float]) -> float:
        """The mean score of a distribution (or of vote counts, which are normalised first)."""
        values = np.asarray(distribution, dtype=np.float64)
        return float(values @ self.bin_values / values.sum())

    def to_json_dict(self) -> dict[str, Any]:
        """The scale as written to ``dataset.json`` (without the report)."""
        return {
            "name": self.name,
            "num_bins": self.num_bins,
            "score_range": list(self.score_range),
            "threshold": self.threshold,
        }


def _as_range(value: Any, what: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be a pair of numbers [lowest, highest], got {value!r}.") from err
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{what} must be two finite numbers with lowest < highest, got {value!r}.")
    return lo, hi


def _default_threshold(score_range: Sequence[float], dataset: str | None) -> float:
    """The one threshold rule of `modeling_aesformer` (imported here, not at module level: the command line imports
    this module before torch)."""
    from modeling_aesformer.configuration_aesformer import default_score_threshold

    return default_score_threshold(score_range, dataset)


# ------------------------------------------------------------------------------------------------------------------
# Score -> distribution
# ------------------------------------------------------------------------------------------------------------------


def scores_to_distributions(
    scores: Sequence[float], score_range: Sequence[float], num_bins: int, sigma: float = _DEFAULT_SCORE_SIGMA
) -> np.ndarray:
    """
    Turns mean scores into target distributions with a discretised Gaussian whose mean is exactly the score.

    For bin indices ``k = 0..num_bins-1`` (bin ``k`` stands for ``linspace(*score_range, num_bins)[k]``),
    ``p_k ∝ exp(-(k - c)² / (2 σ²))`` with `sigma` in BINS. The centre ``c`` is chosen so that the mean of the
    distribution, ``Σ p_k · value_k``, equals the score exactly: in the middle of the scale ``c`` is the score's
    position in bins, near the ends it moves outwards so that the truncated Gaussian does not pull the mean inwards.
    A score at either end of the range gives a one-hot distribution on the end bin.

    Args:
        scores: mean scores, each inside `score_range`.
        score_range: ``(lowest, highest)``.
        num_bins: number of bins (>= 2).
        sigma: the Gaussian's standard deviation in bins (> 0). Default 1.0 bin.

    Returns:
        `np.ndarray` float64 of shape ``[len(scores), num_bins]``; each row sums to 1.
    """
    lo, hi = _as_range(score_range, "score_range")
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"score_sigma must be a positive number of bins, got {sigma!r}.")
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}.")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(scores)) or np.any(scores < lo) or np.any(scores > hi):
        raise ValueError(f"scores must be finite and inside the score range [{lo}, {hi}].")
    position = (scores - lo) / (hi - lo) * (num_bins - 1)  # target mean in bin units
    k = np.arange(num_bins, dtype=np.float64)
    # p_k ∝ exp(theta·k − k²/(2σ²)) is the Gaussian centred at c = theta·σ²; its mean grows strictly with
    # theta, so bisection on theta finds the centre whose mean equals `position`.
    bound = (num_bins - 1) / sigma**2 + 60.0
    theta_lo = np.full_like(position, -bound)
    theta_hi = np.full_like(position, bound)
    base = -(k**2) / (2 * sigma**2)

    def distributions(theta: np.ndarray) -> np.ndarray:
        logits = theta[:, None] * k[None, :] + base[None, :]
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    for _ in range(100):  # the bracket is < 2·(N/σ² + 60) wide: 100 halvings reach float precision
        mid = (theta_lo + theta_hi) / 2
        too_low = distributions(mid) @ k < position
        theta_lo = np.where(too_low, mid, theta_lo)
        theta_hi = np.where(too_low, theta_hi, mid)
    out = distributions((theta_lo + theta_hi) / 2)
    out[position <= 0] = np.eye(num_bins)[0]
    out[position >= num_bins - 1] = np.eye(num_bins)[-1]
    return out


# ------------------------------------------------------------------------------------------------------------------
# Shared parsing helpers
# ------------------------------------------------------------------------------------------------------------------


class _RowProblem(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass
class _Candidate:
    id: str
    location: str
    image: str
    labels: np.ndarray | None = None
    score: float | None = None
    comments: str = ""
    split: str | None = None


def _check_policy(on_error: str) -> None:
    if on_error not in ("skip", "fail"):
        raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}.")


def _check_fractions(validation_fraction: float, test_fraction: float | None) -> None:
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


def _parse_numbers(text: str | None, what: str) -> np.ndarray:
    tokens = (text or "").split()
    if not tokens:
        raise _RowProblem(MALFORMED_ROW, f"the {what} field is empty")
    values = []
    for position, token in enumerate(tokens, start=1):
        try:
            value = float(token)
        except ValueError:
            raise _RowProblem(NON_NUMERIC, f"{what} value {position} is {token!r}, not a number") from None
        if not math.isfinite(value):
            raise _RowProblem(NON_NUMERIC, f"{what} value {position} is {token!r}, not a finite number")
        values.append(value)
    return np.asarray(values, dtype=np.float64)


def _check_counts(values: np.ndarray, num_bins: int, what: str) -> None:
    if len(values) != num_bins:
        raise _RowProblem(WRONG_BINS, f"has {len(values)} {what} values, expected {num_bins} (one per bin)")
    negative = np.flatnonzero(values < 0)
    if negative.size:
        i = int(negative[0])
        raise _RowProblem(NEGATIVE_VOTES, f"{what} value {i + 1} is negative ({values[i]:g})")
    if values.sum() <= 0:
        raise _RowProblem(ZERO_VOTES, f"all {len(values)} {what} values are zero")


def _parse_score(text: str | None, score_range: tuple[float, float], what: str = "score") -> float:
    token = (text or "").strip()
    if not token:
        raise _RowProblem(MALFORMED_ROW, f"the {what} field is empty")
    try:
        value = float(token)
    except ValueError:
        raise _RowProblem(NON_NUMERIC, f"the {what} {token!r} is not a number") from None
    if not math.isfinite(value):
        raise _RowProblem(NAN_SCORE, f"the {what} is {token!r}")
    lo, hi = score_range
    if not lo <= value <= hi:
        raise _RowProblem(SCORE_OUT_OF_RANGE, f"the {what} {value:g} lies outside the range [{lo:g}, {hi:g}]")
    return value


def _join_comment_text(value: Any) -> str:
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


def _normalise_split(value: str | None) -> str:
    key = (value or "").strip().lower()
    if key not in _SPLIT_ALIASES:
        raise _RowProblem(
            MALFORMED_ROW, f"split {value!r} is not one of train/validation/test (or train/val/valid/dev/test)"
        )
    return _SPLIT_ALIASES[key]


def _raise_csv_field_limit() -> None:
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


def _read_csv(path: str) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Reads a CSV file: the header (stripped) and `(first line number, fields)` for each non-blank record."""
    _raise_csv_field_limit()
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


def _guess_id(header: list[str], fields: list[str], default: str) -> str:
    """The id of a row for messages, even when the row has the wrong number of fields."""
    for name in ("id", "file_name"):
        if name in header and header.index(name) < len(fields) and fields[header.index(name)].strip():
            return fields[header.index(name)].strip()
    return default


def _record_to_dict(header: list[str], fields: list[str]) -> dict[str, str]:
    if len(fields) != len(header):
        raise _RowProblem(
            MALFORMED_ROW, f"has {len(fields)} fields but the header has {len(header)} ({', '.join(header)})"
        )
    return dict(zip(header, fields))


def _read_id_list(path: str) -> list[str]:
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


def _split_counts(n: int, validation_fraction: float, test_fraction: float) -> tuple[int, int]:
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


def _seeded_assignment(ids: Iterable[str], n_validation: int, n_test: int, seed: int) -> dict[str, str]:
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


def _finish(
    name: str,
    candidates: list[_Candidate],
    report: LoadReport,
    spec: DatasetSpec,
    on_error: str,
):
    """Applies the error policy, builds the DatasetDict, fills the report and logs the summary."""
    if on_error == "fail" and report.dropped:
        listed = "\n".join(f"  {issue}" for issue in report.dropped[:_MAX_LISTED_PROBLEMS])
        more = len(report.dropped) - _MAX_LISTED_PROBLEMS
        details = (f"{len(report.dropped)} row(s) of {report.source} cannot be used (counts: {report.counts()}):\n"
                   f"{listed}" + (f"\n  ... and {more} more" if more > 0 else ""))
        raise DatasetLoadError(
            details + "\nFix these rows, or pass on_error='skip' to drop them and get a report.", report, details
        )
    rows: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    for cand in candidates:
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


def _location(path: str, line: int) -> str:
    return f"{os.path.basename(path)}, line {line}"


# ------------------------------------------------------------------------------------------------------------------
# Generic format
# ------------------------------------------------------------------------------------------------------------------

_LABEL_FORMS = ("votes", "distribution", "score")
_GENERIC_COLUMNS = {"file_name", "id", "comments", "split", *_LABEL_FORMS}
_DATASET_JSON_KEYS = {"name", "score_range", "num_bins", "threshold", "score_sigma"}
# Free-form metadata a dataset.json may carry besides its scale (not interpreted; any other key is an error, which
# catches misspelt scale keys).
_DATASET_JSON_METADATA_KEYS = {"description", "generator", "license", "citation", "homepage"}


def _read_dataset_json(folder: str) -> dict[str, Any]:
    path = os.path.join(folder, "dataset.json")
    if not os.path.isfile(path):
        return {}
    try:
        config = json.loads(read_utf8_text(path))
    except TextEncodingError:
        raise
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read {path}: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(config).__name__}.")
    unknown = sorted(set(config) - _DATASET_JSON_KEYS - _DATASET_JSON_METADATA_KEYS)
    if unknown:
        raise ValueError(f"{path}: unknown key(s) {unknown}; the known keys are {sorted(_DATASET_JSON_KEYS)} and the "
                         f"free-form {sorted(_DATASET_JSON_METADATA_KEYS)}.")
    if "score_range" in config:
        try:
            config["score_range"] = _as_range(config["score_range"], "score_range")
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None
    if "num_bins" in config:
        n = config["num_bins"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ValueError(f"{path}: num_bins must be an int >= 2, got {n!r}.")
    for key in ("threshold", "score_sigma"):
        if key in config:
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ValueError(f"{path}: {key} must be a number, got {value!r}.")
    if "score_sigma" in config and config["score_sigma"] <= 0:
        raise ValueError(f"{path}: score_sigma must be > 0 (in bins), got {config['score_sigma']!r}.")
    if "name" in config and not isinstance(config["name"], str):
        raise ValueError(f"{path}: name must be a string, got {config['name']!r}.")
    return config


def load_generic(
    folder: str | os.PathLike,
    *,
    seed: int = 42,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    score_sigma: float | None = None,
    comments=None,
    on_error: str = "skip",
):
    """
    Loads a dataset in the generic format: a folder with ``metadata.csv`` and an optional ``dataset.json``.

    ``metadata.csv`` columns (see ``docs/data-format.md``):

    - ``file_name`` (required): image path relative to the folder;
    - exactly ONE label column: ``votes`` (space-separated vote counts, any number of bins, the same for every row),
      ``distribution`` (space-separated probabilities; rows not summing to 1 are renormalised and reported) or
      ``score`` (a mean score inside the score range; turned into a target distribution with
      `scores_to_distributions`);
    - ``comments`` (optional): plain text, several comments separated by newlines (joined with a space);
    - ``id`` (optional): defaults to ``file_name`` (also for a row whose ``id`` is empty);
    - ``split`` (optional): ``train``/``validation``/``test`` (``val``, ``valid``, ``dev`` accepted) on EVERY row;
      without this column a seeded split is made (see below).

    ``dataset.json`` (optional, every key optional): ``name`` (default: the folder's name), ``num_bins`` (votes and
    distribution: the number of values per row, which it must equal if given; score: default 10),
    ``score_range`` (votes and distribution: default ``[1, num_bins]``; score: default ``[1, 10]``), ``threshold``
    (default 5.0 on the 1..10 and 1..7 scales, else the midpoint of the range), ``score_sigma`` (score labels
    only: the Gaussian's σ in bins, default 1.0).

    The seeded split sorts all ids that appear in the file (also those of rows that are then dropped, so that a
    missing image does not move other rows between splits), permutes them with ``numpy.random.default_rng(seed)``
    and puts ``round(test_fraction·n)`` ids in test, ``round(validation_fraction·n)`` in validation (at least one
    each when the fraction is > 0 and n >= 3) and the rest in train. It does not depend on the row order.

    Args:
        folder: the dataset folder.
        seed, validation_fraction, test_fraction: the seeded split (ignored when there is a ``split`` column).
        score_sigma: σ in bins for score labels; overrides ``dataset.json``.
        comments: optional comments file(s) in any format of `aesformer_training.comments` (keys: the path
            relative to the folder, the id, the file name or stem); added after the ``comments`` column's text.
        on_error: ``"skip"`` drops bad rows and reports them; ``"fail"`` raises `DatasetLoadError` naming them.

    Returns:
        ``(DatasetDict, DatasetSpec)``; ``spec.report`` is the `LoadReport`.

    Raises:
        FileNotFoundError: no ``metadata.csv``.
        ValueError: a file-level problem (no ``file_name`` column, zero or several label columns, bad
            ``dataset.json``); `DatasetLoadError` with ``on_error="fail"`` and bad rows.
    """
    _check_policy(on_error)
    _check_fractions(validation_fraction, test_fraction)
    folder = os.path.abspath(os.fspath(folder))
    meta_path = os.path.join(folder, "metadata.csv")
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(
            f"no metadata.csv in {folder}: a generic aesthetic dataset is a folder with metadata.csv (columns "
            "file_name and one of votes/distribution/score) and an optional dataset.json; see docs/data-format.md."
        )
    config = _read_dataset_json(folder)
    header, records = _read_csv(meta_path)
    if "file_name" not in header:
        raise ValueError(f"{meta_path}: the header {header} has no 'file_name' column (image path relative to "
                         "the folder).")
    forms = [form for form in _LABEL_FORMS if form in header]
    if len(forms) != 1:
        raise ValueError(
            f"{meta_path}: exactly one label column is needed (votes, distribution or score), found "
            f"{forms or 'none'} in the header {header}."
        )
    form = forms[0]
    report = LoadReport(source=meta_path, total_rows=len(records))
    ignored = [name for name in header if name not in _GENERIC_COLUMNS]
    if ignored:
        report.notes.append(f"ignored column(s) of metadata.csv: {ignored}")
    has_split = "split" in header

    sigma = score_sigma if score_sigma is not None else config.get("score_sigma", _DEFAULT_SCORE_SIGMA)
    if form == "score":
        num_bins = config.get("num_bins", _DEFAULT_SCORE_BINS)
        score_range = config.get("score_range", _DEFAULT_SCORE_RANGE)
        if not (isinstance(sigma, (int, float)) and not isinstance(sigma, bool) and math.isfinite(sigma)
                and sigma > 0):
            raise ValueError(f"score_sigma must be a positive number of bins, got {sigma!r}.")
    else:
        num_bins = config.get("num_bins") or _most_common_length(header, records, form)
        score_range = config.get("score_range", (1.0, float(num_bins)))
    name = config.get("name", os.path.basename(folder))
    spec = DatasetSpec(
        name=name,
        num_bins=num_bins,
        score_range=score_range,
        threshold=config["threshold"] if "threshold" in config else _default_threshold(score_range, name),
    )

    bin_values = spec.bin_values
    candidates: list[_Candidate] = []
    first_line: dict[str, int] = {}
    expected: list[str] = []
    for line, fields in records:
        location = _location(meta_path, line)
        row_id = _guess_id(header, fields, f"<line {line}>")
        try:
            row = _record_to_dict(header, fields)
            file_name = row["file_name"].strip()
            row_id = (row.get("id") or "").strip() or file_name or row_id
            if not file_name:
                raise _RowProblem(MALFORMED_ROW, "the file_name field is empty")
            if row_id in first_line:
                raise _RowProblem(DUPLICATE_ID, f"the id already appears on line {first_line[row_id]}")
            first_line[row_id] = line
            split = _normalise_split(row["split"]) if has_split else None
            cand = _Candidate(
                id=row_id,
                location=location,
                image=os.path.normpath(os.path.join(folder, file_name)),
                comments=_join_comment_text(row.get("comments")),
                split=split,
            )
            if form == "score":
                cand.score = _parse_score(row["score"], spec.score_range)
            else:
                values = _parse_numbers(row[form], "vote" if form == "votes" else "probability")
                _check_counts(values, num_bins, "vote" if form == "votes" else "probability")
                total = values.sum()
                cand.labels = values / total
                cand.score = float(cand.labels @ bin_values)
            expected.append(file_name)
            if not os.path.isfile(cand.image):
                raise _RowProblem(MISSING_IMAGE, f"image file '{cand.image}' does not exist")
        except _RowProblem as problem:
            report._drop(row_id, problem.reason, location, problem.message)
            continue
        if form == "distribution" and abs(total - 1) > 1e-6:
            report._repair(row_id, RENORMALISED, location, f"the probabilities summed to {total:.6g}")
        candidates.append(cand)

    _check_images_found(candidates, report, folder, expected, on_error, relative_to=folder)
    _attach_comments(candidates, comments, folder, report)
    if form == "score" and candidates:
        distributions = scores_to_distributions([c.score for c in candidates], spec.score_range, num_bins, sigma)
        for cand, dist in zip(candidates, distributions):
            cand.labels = dist
    if not has_split:
        n_val, n_test = _split_counts(len(first_line), validation_fraction, test_fraction)
        assignment = _seeded_assignment(first_line, n_val, n_test, seed)
        for cand in candidates:
            cand.split = assignment[cand.id]
    return _finish(spec.name, candidates, report, spec, on_error)


def _most_common_length(header: list[str], records: list[tuple[int, list[str]]], form: str) -> int:
    """The number of bins of a votes/distribution file: the most common number of values per row."""
    lengths = Counter()
    for _, fields in records:
        if len(fields) == len(header):
            n = len(dict(zip(header, fields))[form].split())
            if n:
                lengths[n] += 1
    if not lengths:
        return 10
    return max(lengths.items(), key=lambda item: item[1])[0]  # first seen wins a tie


def write_generic(
    folder: str | os.PathLike,
    rows: Iterable[Mapping[str, Any]],
    spec: DatasetSpec | None = None,
    *,
    score_sigma: float | None = None,
) -> str:
    """
    Writes a dataset in the generic format (``metadata.csv`` and, with a `spec`, ``dataset.json``).

    Args:
        folder: the dataset folder (created if needed).
        rows: dicts with ``file_name`` (relative path), exactly one of ``votes`` / ``distribution`` (sequences of
            numbers) / ``score`` (a number), and optionally ``id``, ``comments`` (a str, or a list of str written
            one per line), ``split`` and ``image`` (a PIL image, saved to ``folder/file_name``; the format follows
            the extension). All rows must use the same label form.
        spec: the scale to record in ``dataset.json`` (name, num_bins, score_range, threshold).
        score_sigma: written to ``dataset.json`` as ``score_sigma`` when given.

    Returns:
        The path of ``metadata.csv``.
    """
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    rows = list(rows)
    if not rows:
        raise ValueError("write_generic needs at least one row.")
    forms = {form for row in rows for form in _LABEL_FORMS if row.get(form) is not None}
    if len(forms) != 1:
        raise ValueError(f"every row must use the same single label form (votes, distribution or score), got {forms}.")
    form = forms.pop()
    optional = [name for name in ("id", "comments", "split") if any(row.get(name) is not None for row in rows)]
    header = ["file_name", form, *optional]

    def number(value: float) -> str:
        value = float(value)
        return str(int(value)) if value.is_integer() and abs(value) < 2**53 else repr(value)

    lines = []
    for index, row in enumerate(rows):
        if not row.get("file_name"):
            raise ValueError(f"rows[{index}] has no file_name.")
        if row.get(form) is None:
            raise ValueError(f"rows[{index}] ({row['file_name']}) has no {form}.")
        record = {"file_name": str(row["file_name"])}
        if form == "score":
            record[form] = number(row[form])
        else:
            record[form] = " ".join(number(v) for v in row[form])
        comments = row.get("comments")
        if isinstance(comments, (list, tuple)):
            comments = "\n".join(str(c) for c in comments)
        record["comments"] = comments or ""
        record["id"] = "" if row.get("id") is None else str(row["id"])
        record["split"] = "" if row.get("split") is None else str(row["split"])
        lines.append([record[name] for name in header])
        image = row.get("image")
        if isinstance(image, PIL.Image.Image):
            path = os.path.join(folder, record["file_name"])
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            image.save(path)

    meta_path = os.path.join(folder, "metadata.csv")
    with open(meta_path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(lines)
    if spec is not None or score_sigma is not None:
        config = spec.to_json_dict() if spec is not None else {}
        if score_sigma is not None:
            config["score_sigma"] = float(score_sigma)
        with open(os.path.join(folder, "dataset.json"), "w", encoding="utf-8") as handle:
            json.dump(config, handle, indent=2)
            handle.write("\n")
    return meta_path


# ------------------------------------------------------------------------------------------------------------------
# Vote tables: AVA and Photo.net
# ------------------------------------------------------------------------------------------------------------------


def _list_images(image_dir: str, image_extension: str) -> set[str]:
    if not os.path.isdir(image_dir):
        raise FileNotFoundError(f"image folder '{image_dir}' does not exist.")
    return {name for name in os.listdir(image_dir) if name.endswith(image_extension)}


def _as_paths(comments) -> list[str]:
    if comments is None:
        return []
    if isinstance(comments, (str, os.PathLike)):
        return [os.fspath(comments)]
    return [os.fspath(path) for path in comments]


def _attach_comments(candidates: list[_Candidate], comments, root: str, report: LoadReport) -> None:
    """Adds the comments of `comments` (one or more files in any of the formats of `aesformer_training.comments`)
    to the kept rows, after the comments a row already has; records what matched in the report."""
    from .comments import read_comments

    files = _as_paths(comments)
    if not files or not candidates:  # no kept image (the report says why): nothing to match
        return
    match = read_comments(files).match([c.image for c in candidates], root=root, ids=[c.id for c in candidates])
    for cand, texts in zip(candidates, match.comments):
        if texts:
            cand.comments = _join_comment_text([cand.comments, *texts] if cand.comments else texts)
    report.comments = match.to_dict()
    report.notes.extend(match.notes)


def _check_images_found(candidates: list[_Candidate], report: LoadReport, folder: str,
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

    suggestion, best = None, 0
    places = []
    if os.path.isdir(folder):
        places = sorted(entry.path for entry in os.scandir(folder) if entry.is_dir())[:200]
    parent = os.path.dirname(folder)
    if relative_to is None and parent and parent != folder and os.path.isdir(parent):
        places.append(parent)
    for place in places:
        n = count_in(place)
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
    )
    if on_error == "fail":
        raise report.images_not_found


def _load_vote_table(
    *,
    name: str,
    path: str,
    image_dir: str,
    num_bins: int,
    id_column: int,
    first_count: int,
    exact_columns: bool,
    test_list,
    comments,
    validation_fraction: float,
    test_fraction: float,
    seed: int,
    image_extension: str,
    on_error: str,
    spec: DatasetSpec,
):
    _check_policy(on_error)
    _check_fractions(validation_fraction, test_fraction)
    path = os.path.abspath(os.fspath(path))
    image_dir = os.path.abspath(os.fspath(image_dir))
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name} vote file '{path}' does not exist.")
    present = _list_images(image_dir, image_extension)
    report = LoadReport(source=path)
    expected: list[str] = []

    candidates: list[_Candidate] = []
    first_line: dict[str, int] = {}
    min_columns = first_count + num_bins
    bin_values = spec.bin_values
    with io.StringIO(read_utf8_text(path)) as handle:
        for line_number, line in enumerate(handle, start=1):
            tokens = line.split()
            if not tokens or tokens[0].startswith("#"):
                continue
            report.total_rows += 1
            location = _location(path, line_number)
            row_id = tokens[id_column] if len(tokens) > id_column else f"<line {line_number}>"
            try:
                if len(tokens) < min_columns:
                    if exact_columns and len(tokens) > first_count:
                        raise _RowProblem(
                            WRONG_BINS, f"has {len(tokens) - first_count} vote counts, expected {num_bins}"
                        )
                    raise _RowProblem(
                        MALFORMED_ROW, f"has {len(tokens)} columns, expected at least {min_columns}"
                    )
                if exact_columns and len(tokens) != min_columns:
                    raise _RowProblem(
                        WRONG_BINS, f"has {len(tokens) - first_count} vote counts, expected {num_bins}"
                    )
                if row_id in first_line:
                    raise _RowProblem(DUPLICATE_ID, f"the id already appears on line {first_line[row_id]}")
                first_line[row_id] = line_number
                values = _parse_numbers(" ".join(tokens[first_count:min_columns]), "vote")
                _check_counts(values, num_bins, "vote")
                file_name = row_id + image_extension
                expected.append(file_name)
                if file_name not in present:
                    raise _RowProblem(
                        MISSING_IMAGE, f"image file '{os.path.join(image_dir, file_name)}' does not exist"
                    )
            except _RowProblem as problem:
                report._drop(row_id, problem.reason, location, problem.message)
                continue
            labels = values / values.sum()
            candidates.append(
                _Candidate(
                    id=row_id,
                    location=location,
                    image=os.path.join(image_dir, file_name),
                    labels=labels,
                    score=float(labels @ bin_values),
                )
            )

    _check_images_found(candidates, report, image_dir, expected, on_error)
    _attach_comments(candidates, comments, image_dir, report)

    all_ids = list(first_line)
    if test_list is not None:
        test_ids = set(_read_id_list(os.fspath(test_list)))
        absent = test_ids - set(first_line)
        if absent:
            report.notes.append(
                f"{len(absent)} id(s) of the test list {os.path.basename(os.fspath(test_list))} are not in "
                f"{os.path.basename(path)}"
            )
        train_ids = [i for i in all_ids if i not in test_ids]
        n_val, _ = _split_counts(len(train_ids), validation_fraction, 0.0)
        assignment = _seeded_assignment(train_ids, n_val, 0, seed)
        assignment.update({i: "test" for i in all_ids if i in test_ids})
    else:
        n_val, n_test = _split_counts(len(all_ids), validation_fraction, test_fraction)
        assignment = _seeded_assignment(all_ids, n_val, n_test, seed)
    for cand in candidates:
        cand.split = assignment[cand.id]
    return _finish(name, candidates, report, spec, on_error)


def load_ava(
    ava_txt: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    test_list: str | os.PathLike | None = None,
    comments: str | os.PathLike | None = None,
    validation_fraction: float = 0.05,
    test_fraction: float = 0.1,
    seed: int = 42,
    image_extension: str = ".jpg",
    on_error: str = "skip",
):
    """
    Loads AVA (10 bins, scores 1..10, accuracy threshold 5.0).

    Args:
        ava_txt: ``AVA.txt``: whitespace-separated columns index, image id, the counts of votes for 1..10 (columns
            3-12), two semantic tag ids and the challenge id (the columns after the counts are not used; a row
            needs at least 12 columns).
        image_dir: folder of the images, ``<image_dir>/<id>.jpg`` (not searched recursively). When not one image
            is there, an `ImagesNotFoundError` (raised with ``on_error="fail"``, else in
            ``report.images_not_found``) says what the folder and the folders one level down hold.
        test_list: the official test list ``generic_test.jpgl`` (one id per line); train is the rest. Without it,
            a SEEDED RANDOM split of all ids is made instead (`test_fraction` of them go to test), as several papers
            do; say so when you report results.
        comments: optional comments file(s) (a path or a list of paths), in any format of
            `aesformer_training.comments`: the AVA-Comments CSV ``index,label,comment`` (``index`` = image id,
            ``label`` ignored: AVA.txt is authoritative), a CSV/JSONL keyed by id, file name or path, or a JSON object
            key -> comment(s) (DPC-Captions, keyed ``"<id>.jpg"``). Several entries for one image are joined.
        validation_fraction: part of the TRAIN ids carved out as validation (sorted ids permuted with `seed`).
        test_fraction: part of all ids used as test when there is no `test_list`.
        seed: seed of the validation (and random test) split.
        image_extension: the image files' extension.
        on_error: ``"skip"`` or ``"fail"`` (see the module docstring).

    Returns:
        ``(DatasetDict, DatasetSpec)``. Test-list ids absent from ``AVA.txt`` are counted in ``report.notes``.
    """
    spec = DatasetSpec(name="ava", num_bins=10, score_range=(1.0, 10.0),
                       threshold=_default_threshold((1.0, 10.0), "ava"))
    return _load_vote_table(
        name="ava", path=ava_txt, image_dir=image_dir, num_bins=10, id_column=1, first_count=2,
        exact_columns=False, test_list=test_list, comments=comments, validation_fraction=validation_fraction,
        test_fraction=test_fraction, seed=seed, image_extension=image_extension, on_error=on_error, spec=spec,
    )


def load_photonet(
    votes_txt: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    test_list: str | os.PathLike | None = None,
    comments: str | os.PathLike | None = None,
    validation_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 42,
    image_extension: str = ".jpg",
    on_error: str = "skip",
):
    """
    Loads Photo.net (7 bins, scores 1..7, accuracy threshold 5.0 as AesMamba keeps it).

    There is no single canonical Photo.net file, so this loader reads a simple one: a text file with one image per
    line, ``<id> <n1> <n2> ... <n7>`` (whitespace-separated: the id, then the number of votes for each rating 1..7;
    blank lines and lines starting with ``#`` are skipped). Images are ``<image_dir>/<id>.jpg``.

    Args:
        votes_txt: the vote file described above.
        image_dir: folder of the images.
        test_list: optional file with one test id per line; without it a seeded random split is made.
        comments: optional comments file(s) (same formats as `load_ava`).
        validation_fraction, test_fraction, seed, image_extension, on_error: as for `load_ava`.

    Returns:
        ``(DatasetDict, DatasetSpec)``.
    """
    spec = DatasetSpec(name="photonet", num_bins=7, score_range=(1.0, 7.0),
                       threshold=_default_threshold((1.0, 7.0), "photonet"))
    return _load_vote_table(
        name="photonet", path=votes_txt, image_dir=image_dir, num_bins=7, id_column=0, first_count=1,
        exact_columns=True, test_list=test_list, comments=comments, validation_fraction=validation_fraction,
        test_fraction=test_fraction, seed=seed, image_extension=image_extension, on_error=on_error, spec=spec,
    )


# ------------------------------------------------------------------------------------------------------------------
# JAS / JenAesthetics
# ------------------------------------------------------------------------------------------------------------------

JAS_SPLIT_SIZES = (1125, 126, 313)


def load_jas(
    csv_path: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    *,
    score_column: str = "score",
    num_bins: int = 10,
    score_sigma: float = _DEFAULT_SCORE_SIGMA,
    split_sizes: tuple[int, int, int] = JAS_SPLIT_SIZES,
    seed: int = 42,
    image_extension: str = ".jpg",
    comments=None,
    on_error: str = "skip",
):
    """
    Loads JenAesthetics (JAS): subjective scores 0..100 normalised to [0, 1]; accuracy threshold 0.5.

    CSV columns: ``id`` and/or ``file_name`` (at least one; ``file_name`` is the image path relative to
    `image_dir`, else the image is ``<image_dir>/<id>.jpg``; the id defaults to ``file_name``), the score column
    (`score_column`, 0..100; JenAesthetics has several attributes: pick one), an optional ``split``
    (train/validation/test on every row) and optional ``comments``. Other columns are ignored (noted in the report).
    Targets: `scores_to_distributions` with `num_bins` bins over [0, 1] and σ = `score_sigma` bins.

    Without a ``split`` column a seeded split is made with the sizes `split_sizes` (train, validation, test:
    the common 1,125 / 126 / 313 of 1,564 paintings); for another number of ids the sizes are scaled
    proportionally. Ids are sorted and permuted with ``numpy.random.default_rng(seed)``.

    Args:
        csv_path: the CSV file.
        image_dir: image folder; defaults to the CSV's folder.
        score_column, num_bins, score_sigma, split_sizes, seed, image_extension, on_error: see above.
        comments: optional comments file(s), as for `load_ava`; added after a ``comments`` column's text.

    Returns:
        ``(DatasetDict, DatasetSpec)`` with ``score_range=(0, 1)``, ``threshold=0.5``.
    """
    _check_policy(on_error)
    csv_path = os.path.abspath(os.fspath(csv_path))
    image_dir = os.path.abspath(os.fspath(image_dir)) if image_dir is not None else os.path.dirname(csv_path)
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"JAS score file '{csv_path}' does not exist.")
    if len(split_sizes) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in split_sizes) \
            or split_sizes[0] < 1:
        raise ValueError(f"split_sizes must be three non-negative ints (train >= 1), got {split_sizes!r}.")
    header, records = _read_csv(csv_path)
    if "id" not in header and "file_name" not in header:
        raise ValueError(f"{csv_path}: the header {header} needs an 'id' or a 'file_name' column.")
    if score_column not in header:
        raise ValueError(f"{csv_path}: the header {header} has no score column {score_column!r}.")
    spec = DatasetSpec(name="jas", num_bins=num_bins, score_range=(0.0, 1.0),
                       threshold=_default_threshold((0.0, 1.0), "jas"))
    report = LoadReport(source=csv_path, total_rows=len(records))
    known = {"id", "file_name", "split", "comments", score_column}
    ignored = [name for name in header if name not in known]
    if ignored:
        report.notes.append(f"ignored column(s): {ignored}")
    has_split = "split" in header

    candidates: list[_Candidate] = []
    first_line: dict[str, int] = {}
    expected: list[str] = []
    for line, fields in records:
        location = _location(csv_path, line)
        row_id = _guess_id(header, fields, f"<line {line}>")
        try:
            row = _record_to_dict(header, fields)
            file_name = (row.get("file_name") or "").strip()
            row_id = (row.get("id") or "").strip() or file_name or row_id
            if not file_name and not (row.get("id") or "").strip():
                raise _RowProblem(MALFORMED_ROW, "both id and file_name are empty")
            if row_id in first_line:
                raise _RowProblem(DUPLICATE_ID, f"the id already appears on line {first_line[row_id]}")
            first_line[row_id] = line
            split = _normalise_split(row["split"]) if has_split else None
            raw = _parse_score(row[score_column], (0.0, 100.0), what=score_column)
            image = os.path.normpath(os.path.join(image_dir, file_name or row_id + image_extension))
            expected.append(file_name or row_id + image_extension)
            if not os.path.isfile(image):
                raise _RowProblem(MISSING_IMAGE, f"image file '{image}' does not exist")
        except _RowProblem as problem:
            report._drop(row_id, problem.reason, location, problem.message)
            continue
        candidates.append(
            _Candidate(id=row_id, location=location, image=image, score=raw / 100.0,
                       comments=_join_comment_text(row.get("comments")), split=split)
        )
    _check_images_found(candidates, report, image_dir, expected, on_error)
    _attach_comments(candidates, comments, image_dir, report)
    if candidates:
        distributions = scores_to_distributions([c.score for c in candidates], (0.0, 1.0), num_bins, score_sigma)
        for cand, dist in zip(candidates, distributions):
            cand.labels = dist
    if not has_split:
        n = len(first_line)
        total = sum(split_sizes)
        if n == total:
            n_val, n_test = split_sizes[1], split_sizes[2]
        else:
            n_val, n_test = _split_counts(n, split_sizes[1] / total, split_sizes[2] / total)
        assignment = _seeded_assignment(first_line, n_val, n_test, seed)
        for cand in candidates:
            cand.split = assignment[cand.id]
    return _finish("jas", candidates, report, spec, on_error)


# ------------------------------------------------------------------------------------------------------------------
# Collator
# ------------------------------------------------------------------------------------------------------------------


def stable_index(sample_id: str, seed: int = 0) -> int:
    """A stable non-negative 63-bit integer for a sample id (SHA-256 of ``"<seed>:<id>"``): the same in every
    process, run and Python version (unlike `hash`)."""
    digest = hashlib.sha256(f"{seed}:{sample_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class AestheticCollator:
    """
    Turns a list of dataset rows into a model batch.

    For each row the image file is decoded through the processor's image processor (EXIF orientation, every Pillow
    mode to 8-bit RGB, transparency over the matte colour; no resize), the training `transform` is applied when
    given, and the `AesformerProcessor` makes ``pixel_values`` and, when at least one row of the batch has comments
    (and `include_comments` is set), ``input_ids`` / ``attention_mask`` / ``token_type_ids`` (an all-zero mask row
    for a row without comments: that sample goes to the image-only branch).

    Returns a dict with those tensors, ``labels`` (float32 ``[B, bins]``), ``ids`` (list of str, the rows that made
    it into the batch) and ``skipped`` (list of ``(id, reason)`` of this batch's rows whose image could not be
    decoded; usually empty). Pass only the tensor keys to the model (pop ``ids`` and ``skipped``).

    An image that fails to decode is logged (a warning with the id, path and reason) and SKIPPED: the batch is
    smaller. `skipped` keeps the running list of ``(id, reason)`` for all batches. When every image of a batch fails,
    the collator returns ``None``: the training loop must skip ``None`` batches. With ``DataLoader(num_workers>0)``
    each worker has its own copy of the collator, so count skips from the batches' ``skipped`` lists, not from
    ``collator.skipped``.

    Augmentation randomness: `transform` is called as ``transform(image, index, epoch)``. ``index`` is the row's
    ``index`` field when the rows have one (e.g. added with ``dataset.map(lambda r, i: {"index": i},
    with_indices=True)``), else `stable_index(id, seed)`; ``epoch`` is `epoch` (update it with `set_epoch` before
    each epoch's DataLoader iterator is created; persistent workers would keep the old value). So the augmentation
    of a sample depends only on (transform seed, collator seed, epoch, sample) and a resumed run reproduces it.

    Args:
        processor: an `AesformerProcessor` (or an `AesformerImageProcessor` with ``include_comments=False``).
        transform: ``(PIL image, index, epoch) -> PIL image``, e.g. `aesformer_training.transforms.TrainTransform`;
            ``None`` for evaluation (the processor's deterministic resize).
        epoch: the current epoch.
        seed: mixed into the sample index of rows without an ``index`` field.
        include_comments: ``False`` drops all comments (stage 2 trains the image-only branch).
    """

    def __init__(
        self,
        processor,
        transform: Callable[[PIL.Image.Image, int, int], PIL.Image.Image] | None = None,
        epoch: int = 0,
        seed: int = 42,
        include_comments: bool = True,
    ):
        self.processor = processor
        self.image_processor = getattr(processor, "image_processor", processor)
        if include_comments and getattr(processor, "tokenizer", None) is None:
            raise ValueError(
                "include_comments=True needs an AesformerProcessor (with a tokenizer); pass include_comments=False "
                "to use an image processor alone."
            )
        self.transform = transform
        self.epoch = int(epoch)
        self.seed = int(seed)
        self.include_comments = bool(include_comments)
        self.skipped: list[tuple[str, str]] = []
        self._checked_size = False

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch passed to the transform."""
        self.epoch = int(epoch)

    def _decode(self, path: str) -> PIL.Image.Image:
        array = self.image_processor(
            path, do_resize=False, do_rescale=False, do_normalize=False, return_tensors="np"
        )["pixel_values"][0]
        return PIL.Image.fromarray(np.rint(array).clip(0, 255).astype(np.uint8).transpose(1, 2, 0), mode="RGB")

    def _check_transform_size(self) -> None:
        self._checked_size = True
        output_size = getattr(self.transform, "output_size", None)
        size = getattr(self.image_processor, "size", None)
        if output_size is not None and isinstance(size, dict):
            if tuple(output_size) != (size.get("height"), size.get("width")):
                logger.warning(
                    "the transform outputs %s images but the image processor resizes to %sx%s: the crops are "
                    "resized (squashed) again; make the crop size equal the processor size.",
                    "x".join(map(str, output_size)), size.get("height"), size.get("width"),
                )

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        import torch

        if self.transform is not None and not self._checked_size:
            self._check_transform_size()
        images, kept, skipped = [], [], []
        for row in rows:
            sample_id = str(row["id"])
            try:
                image = self._decode(row["image"])
            except Exception as err:  # unreadable, truncated, not an image, decompression bomb, ...
                reason = f"{type(err).__name__}: {err}"
                skipped.append((sample_id, reason))
                self.skipped.append((sample_id, reason))
                logger.warning(
                    "skipping image id=%r path=%r: %s (%d skipped so far)",
                    sample_id, row["image"], reason, len(self.skipped),
                )
                continue
            if self.transform is not None:
                index = row.get("index")
                index = stable_index(sample_id, self.seed) if index is None else int(index)
                image = self.transform(image, index, self.epoch)
            images.append(image)
            kept.append(row)
        if not kept:
            logger.warning("every image of a batch of %d failed to decode: returning None", len(rows))
            return None
        n_bins = {len(row["labels"]) for row in kept}
        if len(n_bins) != 1:
            raise ValueError(f"the rows of a batch have labels of different lengths {sorted(n_bins)}.")
        if self.include_comments:
            comments = [row.get("comments") or None for row in kept]
            encoded = self.processor(images=images, comments=comments, return_tensors="pt")
        else:
            encoded = self.image_processor(images, return_tensors="pt")
        batch = dict(encoded.items())
        batch["labels"] = torch.tensor([list(row["labels"]) for row in kept], dtype=torch.float32)
        batch["ids"] = [str(row["id"]) for row in kept]
        batch["skipped"] = skipped
        return batch


__all__ = [
    "AestheticCollator",
    "DatasetLoadError",
    "DatasetSpec",
    "ImagesNotFoundError",
    "LoadReport",
    "TextEncodingError",
    "RowIssue",
    "SPLITS",
    "DROP_REASONS",
    "REPAIR_REASONS",
    "load_ava",
    "load_generic",
    "load_jas",
    "load_photonet",
    "read_utf8_text",
    "scores_to_distributions",
    "stable_index",
    "write_generic",
]
