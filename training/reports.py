"""What a dataset loader did with the rows it read, and the errors it raises.

`LoadReport`: how many rows were read, kept per split (`SPLITS`), dropped and repaired, with the id, the reason code
(`DROP_REASONS`, `REPAIR_REASONS`), the file location and a message for each dropped or repaired row (`RowIssue`).
`LoadReport.describe` is the readable report (counts, a few rows per reason, every note); `LoadReport.to_dict` keeps
at most 20 rows per reason and `LoadReport.write_csv` writes them all. Nothing is dropped silently: with
``on_error="fail"`` a loader raises a `DatasetLoadError` naming every bad row; when not one image of a file exists,
`ImagesNotFoundError` says where the images are instead.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


SPLITS = ("train", "validation", "test")


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


MAX_LISTED_PROBLEMS = 20


# What a command line says to do about bad dataset rows (the training launchers and `aesformer` alike).
ON_BAD_ROWS_ADVICE = "Fix these rows, or pass --on-bad-rows skip to drop them and get a report."


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
                 relative_to: str | None = None, report: LoadReport | None = None,
                 holding: Sequence[tuple[str, int]] = ()):
        self.folder, self.n_expected, self.expected_example = folder, n_expected, expected_example
        self.holding = list(holding)  # every folder looked in that holds expected images: (folder, count)
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
                if len(self.holding) > 1:
                    text += (" The images are in several folders: " + ", ".join(
                        f"{show(place)} ({n:,})" for place, n in self.holding)
                        + f"; give {flag or 'the image folder'} once for each")
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
    split_rule: str | None = None  # how the rows were put in train/validation/test (for the results' protocol)
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

    def to_dict(self, max_examples: int | None = MAX_LISTED_PROBLEMS) -> dict[str, Any]:
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
        if self.split_rule is not None:
            out["split_rule"] = self.split_rule
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


__all__ = ["ON_BAD_ROWS_ADVICE", "SPLITS", "MISSING_IMAGE",
           "ZERO_VOTES", "NEGATIVE_VOTES", "NON_NUMERIC", "NAN_SCORE", "WRONG_BINS",
           "DUPLICATE_ID", "MALFORMED_ROW", "SCORE_OUT_OF_RANGE", "RENORMALISED", "DROP_REASONS", "REPAIR_REASONS",
           "MAX_LISTED_PROBLEMS", "DatasetLoadError", "ImagesNotFoundError", "RowIssue", "LoadReport"]
