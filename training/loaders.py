"""Aesthetic datasets for training and evaluating Aesformer: the loaders of the real layouts.

Every loader returns ``(datasets.DatasetDict, DatasetSpec)``. The `DatasetDict` always has the three splits
``train``, ``validation`` and ``test`` (a split may be empty) and these columns:

- ``id`` (`str`): the image id, unique within the dataset;
- ``image`` (`str`): the ABSOLUTE path of the image file. Images are not decoded while the metadata is read (only
  their existence is checked); the collator decodes them, so a broken file is found, logged and skipped when it is
  used (`aesformer_training.collator`);
- ``labels`` (`list[float]`): the target distribution over the dataset's bins (sums to 1);
- ``score`` (`float`): the mean score on the dataset's scale;
- ``comments`` (`str`): the image's comments joined with single spaces, ``""`` when there are none.

`DatasetSpec` (`aesformer_training.dataset_spec`) describes the scale; `DatasetSpec.report` is the load's `LoadReport`
(`aesformer_training.reports`): nothing is dropped silently, with ``on_error="skip"`` a bad row is dropped and
reported, with ``on_error="fail"`` the loader raises a `DatasetLoadError` naming every bad row. Problems with a whole
file (a missing ``metadata.csv``, a missing column, an unreadable ``dataset.json``) always raise.

Comments files (``comments=``, one path or several) are read by `aesformer_training.comments`, the one reader
every command uses.

Loaders (the formats are documented in ``docs/data-format.md``):

- `load_generic`: a folder with ``metadata.csv`` (and optionally ``dataset.json``); `write_generic` writes one;
- `load_ava`: ``AVA.txt`` + the official ``generic_test.jpgl`` split + optional AVA-Comments files;
- `load_photonet`: a whitespace-separated ``<id> <7 vote counts>`` file;
- `load_jas`: a CSV of JenAesthetics scores 0..100, normalised to [0, 1].

`datasets` is imported only when a loader builds its `DatasetDict`, so importing this module stays cheap.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

import PIL.Image

from .dataset_spec import DEFAULT_SCORE_SIGMA, DatasetSpec, as_score_range, default_threshold, scores_to_distributions
from .loader_rows import (RowCandidate, RowProblem, attach_comments, check_counts, check_fractions, check_images_found,
                          check_on_error, finish_dataset, guess_row_id, join_comment_text, list_assignment,
                          list_images, normalise_split, parse_numbers, parse_score, random_split_rule, seeded_rule,
                          record_to_dict, row_location, seeded_assignment, split_counts)
from .reports import DUPLICATE_ID, MALFORMED_ROW, MISSING_IMAGE, RENORMALISED, WRONG_BINS, LoadReport
from .text_files import TextEncodingError, read_csv_records, read_id_list, read_utf8_text


_DEFAULT_SCORE_RANGE = (1.0, 10.0)
_DEFAULT_SCORE_BINS = 10


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
            config["score_range"] = as_score_range(config["score_range"], "score_range")
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
    test_list: str | os.PathLike | None = None,
    train_list: str | os.PathLike | None = None,
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
        test_list, train_list: official split lists (one id per line; an id, or an id without its image
            extension), instead of a ``split`` column or the seeded split: see `load_ava`.

    Returns:
        ``(DatasetDict, DatasetSpec)``; ``spec.report`` is the `LoadReport`.

    Raises:
        FileNotFoundError: no ``metadata.csv``.
        ValueError: a file-level problem (no ``file_name`` column, zero or several label columns, bad
            ``dataset.json``); `DatasetLoadError` with ``on_error="fail"`` and bad rows.
    """
    check_on_error(on_error)
    check_fractions(validation_fraction, test_fraction)
    folder = os.path.abspath(os.fspath(folder))
    meta_path = os.path.join(folder, "metadata.csv")
    if not os.path.isfile(meta_path):
        raise FileNotFoundError(
            f"no metadata.csv in {folder}: a generic aesthetic dataset is a folder with metadata.csv (columns "
            "file_name and one of votes/distribution/score) and an optional dataset.json; see docs/data-format.md."
        )
    config = _read_dataset_json(folder)
    header, records = read_csv_records(meta_path)
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
    if has_split and (test_list is not None or train_list is not None):
        raise ValueError(f"{meta_path} has a split column: the split lists (test_list, train_list) would contradict "
                         "it; remove the column or the lists")

    sigma = score_sigma if score_sigma is not None else config.get("score_sigma", DEFAULT_SCORE_SIGMA)
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
        threshold=config["threshold"] if "threshold" in config else default_threshold(score_range, name),
    )

    bin_values = spec.bin_values
    candidates: list[RowCandidate] = []
    first_line: dict[str, int] = {}
    expected: list[str] = []
    for line, fields in records:
        location = row_location(meta_path, line)
        row_id = guess_row_id(header, fields, f"<line {line}>")
        try:
            row = record_to_dict(header, fields)
            file_name = row["file_name"].strip()
            row_id = (row.get("id") or "").strip() or file_name or row_id
            if not file_name:
                raise RowProblem(MALFORMED_ROW, "the file_name field is empty")
            if row_id in first_line:
                raise RowProblem(DUPLICATE_ID, f"the id already appears on line {first_line[row_id]}")
            first_line[row_id] = line
            split = normalise_split(row["split"]) if has_split else None
            cand = RowCandidate(
                id=row_id,
                location=location,
                image=os.path.normpath(os.path.join(folder, file_name)),
                comments=join_comment_text(row.get("comments")),
                split=split,
            )
            if form == "score":
                cand.score = parse_score(row["score"], spec.score_range)
            else:
                values = parse_numbers(row[form], "vote" if form == "votes" else "probability")
                check_counts(values, num_bins, "vote" if form == "votes" else "probability")
                total = values.sum()
                cand.labels = values / total
                cand.score = float(cand.labels @ bin_values)
            expected.append(file_name)
            if not os.path.isfile(cand.image):
                raise RowProblem(MISSING_IMAGE, f"image file '{cand.image}' does not exist")
        except RowProblem as problem:
            report._drop(row_id, problem.reason, location, problem.message)
            continue
        if form == "distribution" and abs(total - 1) > 1e-6:
            report._repair(row_id, RENORMALISED, location, f"the probabilities summed to {total:.6g}")
        candidates.append(cand)

    check_images_found(candidates, report, folder, expected, on_error, relative_to=folder)
    attach_comments(candidates, comments, folder, report)
    if form == "score" and candidates:
        distributions = scores_to_distributions([c.score for c in candidates], spec.score_range, num_bins, sigma)
        for cand, dist in zip(candidates, distributions):
            cand.labels = dist
    if test_list is not None or train_list is not None:
        assignment = list_assignment(list(first_line), test_list, train_list, validation_fraction, seed, report,
                                     "metadata.csv")
        for cand in candidates:
            cand.split = assignment.get(cand.id)
    elif not has_split:
        n_val, n_test = split_counts(len(first_line), validation_fraction, test_fraction)
        assignment = seeded_assignment(first_line, n_val, n_test, seed)
        report.split_rule = random_split_rule(validation_fraction, test_fraction, seed)
        for cand in candidates:
            cand.split = assignment[cand.id]
    else:
        report.split_rule = "the split column of metadata.csv"
    return finish_dataset(spec.name, candidates, report, spec, on_error)


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
    train_list,
    comments,
    validation_fraction: float,
    test_fraction: float,
    seed: int,
    image_extension: str,
    on_error: str,
    spec: DatasetSpec,
):
    check_on_error(on_error)
    check_fractions(validation_fraction, test_fraction)
    path = os.path.abspath(os.fspath(path))
    image_dirs = [os.path.abspath(os.fspath(d)) for d in
                  ([image_dir] if isinstance(image_dir, (str, os.PathLike)) else image_dir)]
    if not image_dirs:
        raise ValueError("give at least one image folder")
    image_dir = image_dirs[0]
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{name} vote file '{path}' does not exist.")
    present = _images_across(image_dirs, image_extension)
    report = LoadReport(source=path)
    expected: list[str] = []

    candidates: list[RowCandidate] = []
    first_line: dict[str, int] = {}
    min_columns = first_count + num_bins
    bin_values = spec.bin_values
    with io.StringIO(read_utf8_text(path)) as handle:
        for line_number, line in enumerate(handle, start=1):
            tokens = line.split()
            if not tokens or tokens[0].startswith("#"):
                continue
            report.total_rows += 1
            location = row_location(path, line_number)
            row_id = tokens[id_column] if len(tokens) > id_column else f"<line {line_number}>"
            try:
                if len(tokens) < min_columns:
                    if exact_columns and len(tokens) > first_count:
                        raise RowProblem(
                            WRONG_BINS, f"has {len(tokens) - first_count} vote counts, expected {num_bins}"
                        )
                    raise RowProblem(
                        MALFORMED_ROW, f"has {len(tokens)} columns, expected at least {min_columns}"
                    )
                if exact_columns and len(tokens) != min_columns:
                    raise RowProblem(
                        WRONG_BINS, f"has {len(tokens) - first_count} vote counts, expected {num_bins}"
                    )
                if row_id in first_line:
                    raise RowProblem(DUPLICATE_ID, f"the id already appears on line {first_line[row_id]}")
                first_line[row_id] = line_number
                values = parse_numbers(" ".join(tokens[first_count:min_columns]), "vote")
                check_counts(values, num_bins, "vote")
                file_name = row_id + image_extension
                expected.append(file_name)
                if file_name not in present:
                    where = image_dir if len(image_dirs) == 1 else f"any of {len(image_dirs)} image folders"
                    raise RowProblem(
                        MISSING_IMAGE, f"image file '{os.path.join(image_dir, file_name)}' does not exist"
                        + ("" if len(image_dirs) == 1 else f" (nor in {where})")
                    )
            except RowProblem as problem:
                report._drop(row_id, problem.reason, location, problem.message)
                continue
            labels = values / values.sum()
            candidates.append(
                RowCandidate(
                    id=row_id,
                    location=location,
                    image=os.path.join(present[file_name], file_name),
                    labels=labels,
                    score=float(labels @ bin_values),
                )
            )

    check_images_found(candidates, report, image_dir, expected, on_error)
    attach_comments(candidates, comments, image_dir, report)

    all_ids = list(first_line)
    if test_list is not None or train_list is not None:
        assignment = list_assignment(all_ids, test_list, train_list, validation_fraction, seed, report,
                                     os.path.basename(path))
    else:
        n_val, n_test = split_counts(len(all_ids), validation_fraction, test_fraction)
        assignment = seeded_assignment(all_ids, n_val, n_test, seed)
        report.split_rule = random_split_rule(validation_fraction, test_fraction, seed)
    for cand in candidates:
        cand.split = assignment.get(cand.id)
    return finish_dataset(name, candidates, report, spec, on_error)


def _images_across(image_dirs: list[str], image_extension: str) -> dict[str, str]:
    """File name -> the folder holding it, over several image folders (not searched recursively); a file name
    found in two folders is an error naming both."""
    present: dict[str, str] = {}
    for folder in image_dirs:
        for file_name in list_images(folder, image_extension):
            if file_name in present:
                raise ValueError(f"image {file_name} is in two image folders: "
                                 f"{os.path.join(present[file_name], file_name)} and "
                                 f"{os.path.join(folder, file_name)}; "
                                 "each id must be in one folder only")
            present[file_name] = folder
    return present


def load_ava(
    ava_txt: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    test_list: str | os.PathLike | None = None,
    train_list: str | os.PathLike | None = None,
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
        image_dir: folder of the images, ``<image_dir>/<id>.jpg`` (not searched recursively), or a list of folders
            (AVA mirrors ship several): each id is looked up in all of them, one found in two is an error. When not
            one image is there, an `ImagesNotFoundError` (raised with ``on_error="fail"``, else in
            ``report.images_not_found``) says what the folder and the folders one level down hold.
        test_list: the official test list ``generic_test.jpgl`` (one id per line); train is the rest. Without it,
            a SEEDED RANDOM split of all ids is made instead (`test_fraction` of them go to test), as several papers
            do; say so when you report results (`report.split_rule` states the rule).
        train_list: the official train list ``generic_ls_train.jpgl``: train is its ids (validation is carved out
            of them), ids in neither list are left out (counted in ``report.notes``).
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
                       threshold=default_threshold((1.0, 10.0), "ava"))
    return _load_vote_table(
        name="ava", path=ava_txt, image_dir=image_dir, num_bins=10, id_column=1, first_count=2,
        exact_columns=False, test_list=test_list, train_list=train_list, comments=comments,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction, seed=seed, image_extension=image_extension, on_error=on_error, spec=spec,
    )


def load_photonet(
    votes_txt: str | os.PathLike,
    image_dir: str | os.PathLike,
    *,
    test_list: str | os.PathLike | None = None,
    train_list: str | os.PathLike | None = None,
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
                       threshold=default_threshold((1.0, 7.0), "photonet"))
    return _load_vote_table(
        name="photonet", path=votes_txt, image_dir=image_dir, num_bins=7, id_column=0, first_count=1,
        exact_columns=True, test_list=test_list, train_list=train_list, comments=comments,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction, seed=seed, image_extension=image_extension, on_error=on_error, spec=spec,
    )


JAS_SPLIT_SIZES = (1125, 126, 313)


def load_jas(
    csv_path: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    *,
    score_column: str = "score",
    num_bins: int = 10,
    score_sigma: float = DEFAULT_SCORE_SIGMA,
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
    check_on_error(on_error)
    csv_path = os.path.abspath(os.fspath(csv_path))
    image_dir = os.path.abspath(os.fspath(image_dir)) if image_dir is not None else os.path.dirname(csv_path)
    if not os.path.isfile(csv_path):
        raise FileNotFoundError(f"JAS score file '{csv_path}' does not exist.")
    if len(split_sizes) != 3 or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in split_sizes) \
            or split_sizes[0] < 1:
        raise ValueError(f"split_sizes must be three non-negative ints (train >= 1), got {split_sizes!r}.")
    header, records = read_csv_records(csv_path)
    if "id" not in header and "file_name" not in header:
        raise ValueError(f"{csv_path}: the header {header} needs an 'id' or a 'file_name' column.")
    if score_column not in header:
        raise ValueError(f"{csv_path}: the header {header} has no score column {score_column!r}.")
    spec = DatasetSpec(name="jas", num_bins=num_bins, score_range=(0.0, 1.0),
                       threshold=default_threshold((0.0, 1.0), "jas"))
    report = LoadReport(source=csv_path, total_rows=len(records))
    known = {"id", "file_name", "split", "comments", score_column}
    ignored = [name for name in header if name not in known]
    if ignored:
        report.notes.append(f"ignored column(s): {ignored}")
    has_split = "split" in header

    candidates: list[RowCandidate] = []
    first_line: dict[str, int] = {}
    expected: list[str] = []
    for line, fields in records:
        location = row_location(csv_path, line)
        row_id = guess_row_id(header, fields, f"<line {line}>")
        try:
            row = record_to_dict(header, fields)
            file_name = (row.get("file_name") or "").strip()
            row_id = (row.get("id") or "").strip() or file_name or row_id
            if not file_name and not (row.get("id") or "").strip():
                raise RowProblem(MALFORMED_ROW, "both id and file_name are empty")
            if row_id in first_line:
                raise RowProblem(DUPLICATE_ID, f"the id already appears on line {first_line[row_id]}")
            first_line[row_id] = line
            split = normalise_split(row["split"]) if has_split else None
            raw = parse_score(row[score_column], (0.0, 100.0), what=score_column)
            image = os.path.normpath(os.path.join(image_dir, file_name or row_id + image_extension))
            expected.append(file_name or row_id + image_extension)
            if not os.path.isfile(image):
                raise RowProblem(MISSING_IMAGE, f"image file '{image}' does not exist")
        except RowProblem as problem:
            report._drop(row_id, problem.reason, location, problem.message)
            continue
        candidates.append(
            RowCandidate(id=row_id, location=location, image=image, score=raw / 100.0,
                       comments=join_comment_text(row.get("comments")), split=split)
        )
    check_images_found(candidates, report, image_dir, expected, on_error)
    attach_comments(candidates, comments, image_dir, report)
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
            n_val, n_test = split_counts(n, split_sizes[1] / total, split_sizes[2] / total)
        assignment = seeded_assignment(first_line, n_val, n_test, seed)
        report.split_rule = (f"seeded random split: train / validation / test {n - n_val - n_test} / {n_val} / "
                             f"{n_test} ids; " + seeded_rule(seed))
        for cand in candidates:
            cand.split = assignment[cand.id]
    else:
        report.split_rule = "the split column of the score file"
    return finish_dataset("jas", candidates, report, spec, on_error)


__all__ = ["load_generic", "write_generic", "load_ava", "load_photonet", "JAS_SPLIT_SIZES", "load_jas"]
