"""Dataset loaders (generic, AVA, Photo.net, JAS), the collator and the training transforms (offline, small files)."""

import csv
import json
import logging
import random

import numpy as np
import PIL.Image
import pytest
import torch

from aesformer_training.collator import AestheticCollator, stable_index
from aesformer_training.dataset_spec import DatasetSpec, scores_to_distributions
from aesformer_training.loaders import load_ava, load_generic, load_jas, load_photonet, write_generic
from aesformer_training.reports import DatasetLoadError
from aesformer_processing.processing_aesformer import AesformerImageProcessor, AesformerProcessor
from aesformer_training.transforms import EvalTransform, TrainTransform


COLUMNS = ["id", "image", "labels", "score", "comments"]


def make_image(path, seed=0, size=(20, 14)):
    """A small random RGB image (so crops and flips change pixels)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    PIL.Image.fromarray(array, "RGB").save(path)
    return path


def write_csv(path, header, rows):
    with open(path, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)


def all_rows(dataset_dict):
    return {row["id"]: dict(row, split=split) for split in dataset_dict for row in dataset_dict[split]}


def reasons(report):
    return {issue.id: issue.reason for issue in report.dropped}


# ---------------------------------------------------------------------------------------------------------------
# generic format
# ---------------------------------------------------------------------------------------------------------------


def test_generic_votes_columns_values_and_comments(tmp_path):
    for i in range(3):
        make_image(tmp_path / "img" / f"{i}.png", seed=i)
    write_csv(
        tmp_path / "metadata.csv",
        ["file_name", "votes", "comments", "split"],
        [
            ["img/0.png", "0 1 0 0 0 0 0 0 0 3", "Great light.\nToo dark\n\n  nice  ", "train"],
            ["img/1.png", "1 1 1 1 1 1 1 1 1 1", "", "val"],
            ["img/2.png", "0 0 0 0 2 2 0 0 0 0", "", "test"],
        ],
    )
    dataset, spec = load_generic(tmp_path)
    assert list(dataset) == ["train", "validation", "test"]
    for split in dataset:
        assert dataset[split].column_names == COLUMNS
    assert (spec.name, spec.num_bins, spec.score_range, spec.threshold) == (tmp_path.name, 10, (1.0, 10.0), 5.5)
    rows = all_rows(dataset)
    first = rows["img/0.png"]  # id defaults to file_name
    assert first["split"] == "train"
    assert first["image"] == str(tmp_path / "img" / "0.png")
    np.testing.assert_allclose(first["labels"], [0, 0.25, 0, 0, 0, 0, 0, 0, 0, 0.75])
    assert first["score"] == pytest.approx(0.25 * 2 + 0.75 * 10)
    assert first["comments"] == "Great light. Too dark nice"
    assert rows["img/1.png"]["split"] == "validation" and rows["img/1.png"]["score"] == pytest.approx(5.5)
    assert rows["img/2.png"]["comments"] == "" and rows["img/2.png"]["score"] == pytest.approx(5.5)
    report = spec.report
    assert (report.total_rows, report.n_kept, report.n_dropped, report.n_repaired) == (3, 3, 0, 0)
    assert report.split_sizes == {"train": 1, "validation": 1, "test": 1}


BAD_ROWS = [
    # file_name, id, votes  -> expected reason (None = kept)
    ("a.png", "a", "1 2 3 4 5", None),
    ("missing.png", "m", "1 2 3 4 5", "missing_image"),
    ("b.png", "zero", "0 0 0 0 0", "zero_votes"),
    ("b.png", "neg", "1 2 -3 4 5", "negative_votes"),
    ("b.png", "text", "1 2 x 4 5", "non_numeric"),
    ("b.png", "nan", "1 2 nan 4 5", "non_numeric"),
    ("b.png", "bins", "1 2 3 4", "wrong_bins"),
    ("b.png", "a", "1 1 1 1 1", "duplicate_id"),
    ("", "nofile", "1 1 1 1 1", "malformed_row"),
    ("b.png", "empty", "", "malformed_row"),
    ("b.png", "b", "5 4 3 2 1", None),
]


def write_bad_generic(folder):
    make_image(folder / "a.png", 1)
    make_image(folder / "b.png", 2)
    rows = [[f, i, v] for f, i, v, _ in BAD_ROWS]
    write_csv(folder / "metadata.csv", ["file_name", "id", "votes"], rows)
    with open(folder / "metadata.csv", "a", encoding="utf-8") as handle:
        handle.write("b.png,extra,1 1 1 1 1,surplus\n")  # one field too many


def test_generic_bad_rows_are_dropped_and_reported(tmp_path, caplog):
    write_bad_generic(tmp_path)
    with caplog.at_level(logging.INFO, logger="aesformer_training.loader_rows"):
        dataset, spec = load_generic(tmp_path, validation_fraction=0.0, test_fraction=0.0)
    expected = {i: r for _, i, _, r in BAD_ROWS if r is not None}
    expected["extra"] = "malformed_row"
    assert reasons(spec.report) == expected
    assert sorted(all_rows(dataset)) == ["a", "b"]
    report = spec.report
    assert report.total_rows == 12
    assert report.n_dropped == 10
    assert report.counts()["malformed_row"] == 3
    assert report.dropped_ids("duplicate_id") == ["a"]
    duplicate = next(issue for issue in report.dropped if issue.reason == "duplicate_id")
    assert duplicate.location == "metadata.csv, line 9" and "line 2" in duplicate.message
    extra = next(issue for issue in report.dropped if issue.id == "extra")
    assert "4 fields" in extra.message and extra.location == "metadata.csv, line 13"
    assert spec.num_bins == 5 and spec.score_range == (1.0, 5.0) and spec.threshold == 3.0
    summary = report.summary()
    assert "12 rows read, 2 kept" in summary and "10 dropped" in summary and "missing_image 1" in summary
    assert any("10 dropped" in record.getMessage() and record.levelno == logging.WARNING for record in caplog.records)
    json.dumps(report.to_dict())  # serialisable


def test_generic_bad_rows_fail_policy_names_ids(tmp_path):
    write_bad_generic(tmp_path)
    with pytest.raises(DatasetLoadError) as info:
        load_generic(tmp_path, on_error="fail")
    message = str(info.value)
    assert "10 row(s)" in message
    assert "metadata.csv, line 3, id 'm': missing_image" in message
    assert "id 'zero': zero_votes" in message and "id 'bins': wrong_bins" in message
    assert info.value.report.n_dropped == 10
    with pytest.raises(ValueError, match="on_error"):
        load_generic(tmp_path, on_error="ignore")


def test_generic_distribution_is_renormalised_and_reported(tmp_path):
    make_image(tmp_path / "x.png")
    make_image(tmp_path / "y.png")
    write_csv(tmp_path / "metadata.csv", ["file_name", "distribution"],
              [["x.png", "0.2 0.2 0.4"], ["y.png", "1 1 2"], ["gone.png", "2 2 2"]])
    dataset, spec = load_generic(tmp_path, validation_fraction=0, test_fraction=0)
    rows = all_rows(dataset)
    np.testing.assert_allclose(rows["x.png"]["labels"], [0.25, 0.25, 0.5])
    np.testing.assert_allclose(rows["y.png"]["labels"], [0.25, 0.25, 0.5])
    # a dropped row is not also reported as repaired
    assert [(i.id, i.reason) for i in spec.report.repaired] == [("x.png", "renormalised"), ("y.png", "renormalised")]
    assert reasons(spec.report) == {"gone.png": "missing_image"}
    assert spec.num_bins == 3 and spec.threshold == 2.0  # midpoint of (1, 3)


def test_generic_scores_become_gaussians_with_the_exact_mean(tmp_path):
    for name in "abcde":
        make_image(tmp_path / f"{name}.png")
    json.dump(
        {"name": "mine", "score_range": [0, 10], "num_bins": 5, "threshold": 6, "score_sigma": 0.5},
        open(tmp_path / "dataset.json", "w"),
    )
    scores = {"a.png": 0, "b.png": 2.5, "c.png": 5, "d.png": 9.2, "e.png": 11}
    rows = [[k, v] for k, v in scores.items()] + [["a.png", "nan"]]
    write_csv(tmp_path / "metadata.csv", ["file_name", "score"], rows)
    dataset, spec = load_generic(tmp_path, validation_fraction=0, test_fraction=0)
    assert (spec.name, spec.num_bins, spec.score_range, spec.threshold) == ("mine", 5, (0.0, 10.0), 6.0)
    assert reasons(spec.report) == {"e.png": "score_out_of_range", "a.png": "duplicate_id"}
    rows = all_rows(dataset)
    for name in "abcd":
        row = rows[f"{name}.png"]
        assert row["score"] == scores[f"{name}.png"]
        assert sum(row["labels"]) == pytest.approx(1)
        assert np.dot(row["labels"], spec.bin_values) == pytest.approx(row["score"], abs=1e-9)
    np.testing.assert_allclose(rows["a.png"]["labels"], [1, 0, 0, 0, 0])  # the end of the scale is one-hot
    middle = np.array(rows["c.png"]["labels"])
    k = np.arange(5)
    gauss = np.exp(-((k - 2) ** 2) / (2 * 0.5**2))
    np.testing.assert_allclose(middle, gauss / gauss.sum(), atol=1e-9)  # symmetric case: a plain Gaussian
    # score_sigma argument overrides dataset.json: a wider distribution
    wide, _ = load_generic(tmp_path, validation_fraction=0, test_fraction=0, score_sigma=2.0)
    assert max(all_rows(wide)["c.png"]["labels"]) < middle.max()


def test_generic_score_defaults_and_nan(tmp_path):
    make_image(tmp_path / "a.png")
    write_csv(tmp_path / "metadata.csv", ["file_name", "score", "id"], [["a.png", "7.5", "1"], ["a.png", "NaN", "2"]])
    with open(tmp_path / "metadata.csv", "a") as handle:
        handle.write("a.png,,3\n")
    dataset, spec = load_generic(tmp_path, validation_fraction=0, test_fraction=0)
    # no dataset.json: scores on 1..10, 10 bins, threshold the midpoint 5.5 (not a named dataset), sigma 1 bin
    assert (spec.num_bins, spec.score_range, spec.threshold) == (10, (1.0, 10.0), 5.5)
    assert [i.reason for i in spec.report.dropped] == ["nan_score", "malformed_row"]
    assert [i.id for i in spec.report.dropped] == ["2", "3"]
    assert spec.report.dropped[1].location == "metadata.csv, line 4"
    expected = scores_to_distributions([7.5], (1, 10), 10, 1.0)[0]
    np.testing.assert_allclose(dataset["train"][0]["labels"], expected)


def test_scores_to_distributions_properties():
    scores = np.array([1.0, 1.001, 2.7, 5.5, 9.999, 10.0])
    for sigma in (0.3, 1.0, 3.0):
        dist = scores_to_distributions(scores, (1, 10), 10, sigma)
        assert dist.shape == (6, 10)
        np.testing.assert_allclose(dist.sum(axis=1), 1)
        np.testing.assert_allclose(dist @ np.arange(1, 11), scores, atol=1e-9)
        assert np.all(dist >= 0)
    narrow = scores_to_distributions([5.5], (1, 10), 10, 0.5)[0]
    wide = scores_to_distributions([5.5], (1, 10), 10, 2.0)[0]
    assert (narrow * (np.arange(10) - 4.5) ** 2).sum() < (wide * (np.arange(10) - 4.5) ** 2).sum()
    with pytest.raises(ValueError):
        scores_to_distributions([11], (1, 10), 10)
    with pytest.raises(ValueError):
        scores_to_distributions([5], (1, 10), 10, sigma=0)


def test_generic_votes_dataset_json_and_threshold_defaults(tmp_path):
    make_image(tmp_path / "a.png")
    write_csv(tmp_path / "metadata.csv", ["file_name", "votes"], [["a.png", "1 1 1 1 1 1 1"]])
    _, spec = load_generic(tmp_path)
    assert (spec.num_bins, spec.score_range, spec.threshold) == (7, (1.0, 7.0), 4.0)  # the midpoint
    json.dump({"name": "Photo.net"}, open(tmp_path / "dataset.json", "w"))
    _, spec = load_generic(tmp_path)
    assert spec.threshold == 5.0  # a named dataset keeps its documented threshold
    json.dump({"score_range": [0, 6], "num_bins": 7}, open(tmp_path / "dataset.json", "w"))
    dataset, spec = load_generic(tmp_path)
    assert (spec.score_range, spec.threshold) == ((0.0, 6.0), 3.0)
    assert dataset["train"][0]["score"] == pytest.approx(3.0)
    json.dump({"num_bins": 5}, open(tmp_path / "dataset.json", "w"))
    _, spec = load_generic(tmp_path)
    assert spec.report.counts() == {"wrong_bins": 1}


def test_generic_file_level_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata.csv"):
        load_generic(tmp_path)
    make_image(tmp_path / "a.png")
    write_csv(tmp_path / "metadata.csv", ["file_name", "votes", "score"], [["a.png", "1 1", "3"]])
    with pytest.raises(ValueError, match="exactly one label column"):
        load_generic(tmp_path)
    write_csv(tmp_path / "metadata.csv", ["path", "votes"], [["a.png", "1 1"]])
    with pytest.raises(ValueError, match="file_name"):
        load_generic(tmp_path)
    write_csv(tmp_path / "metadata.csv", ["file_name", "votes"], [["a.png", "1 1"]])
    json.dump({"bins": 3}, open(tmp_path / "dataset.json", "w"))
    with pytest.raises(ValueError, match="unknown key"):
        load_generic(tmp_path)
    json.dump({"score_range": [5, 1]}, open(tmp_path / "dataset.json", "w"))
    with pytest.raises(ValueError, match="score_range"):
        load_generic(tmp_path)
    (tmp_path / "dataset.json").unlink()
    with pytest.raises(ValueError, match="validation_fraction"):
        load_generic(tmp_path, validation_fraction=0.6, test_fraction=0.5)


def write_many(folder, n, order_seed=None, missing=()):
    rows = [[f"{i:03d}.png", f"{i % 7} 1 {i % 3}", f"id{i:03d}"] for i in range(n)]
    if order_seed is not None:
        random.Random(order_seed).shuffle(rows)
    for name, _, _ in rows:
        if name not in missing:
            (folder / name).write_bytes(b"")  # existence is all the loader checks
    write_csv(folder / "metadata.csv", ["file_name", "votes", "id"], rows)


def split_of(dataset):
    return {row["id"]: row["split"] for row in all_rows(dataset).values()}


def test_seeded_split_is_deterministic_and_independent_of_row_order(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    write_many(tmp_path / "a", 40)
    write_many(tmp_path / "b", 40, order_seed=3)
    write_many(tmp_path / "c", 40, missing={"005.png"})
    first, spec = load_generic(tmp_path / "a", seed=1, validation_fraction=0.1, test_fraction=0.2)
    assert spec.report.split_sizes == {"train": 28, "validation": 4, "test": 8}
    assert split_of(first) == split_of(load_generic(tmp_path / "a", seed=1, validation_fraction=0.1,
                                                    test_fraction=0.2)[0])
    assert split_of(first) == split_of(load_generic(tmp_path / "b", seed=1, validation_fraction=0.1,
                                                    test_fraction=0.2)[0])
    other = split_of(load_generic(tmp_path / "a", seed=2, validation_fraction=0.1, test_fraction=0.2)[0])
    assert other != split_of(first)
    # a missing image does not move the other rows between splits
    with_missing = split_of(load_generic(tmp_path / "c", seed=1, validation_fraction=0.1, test_fraction=0.2)[0])
    expected = {k: v for k, v in split_of(first).items() if k != "id005"}
    assert with_missing == expected


def test_tiny_seeded_split_keeps_every_split_non_empty(tmp_path):
    write_many(tmp_path, 4)
    _, spec = load_generic(tmp_path)
    assert spec.report.split_sizes == {"train": 2, "validation": 1, "test": 1}


def test_split_column_errors(tmp_path):
    make_image(tmp_path / "a.png")
    write_csv(tmp_path / "metadata.csv", ["file_name", "votes", "split"],
              [["a.png", "1 1", "train"], ["a.png", "1 2", "holdout"], ["a.png", "1 3", ""]])
    dataset, spec = load_generic(tmp_path)
    assert spec.report.counts() == {"duplicate_id": 2}  # ids default to file_name
    write_csv(tmp_path / "metadata.csv", ["file_name", "votes", "split", "id"],
              [["a.png", "1 1", "train", "1"], ["a.png", "1 2", "holdout", "2"], ["a.png", "1 3", "", "3"]])
    dataset, spec = load_generic(tmp_path)
    assert reasons(spec.report) == {"2": "malformed_row", "3": "malformed_row"}
    assert "holdout" in spec.report.dropped[0].message
    assert dataset["train"]["id"] == ["1"]


def test_write_generic_round_trip(tmp_path):
    images = [PIL.Image.new("RGB", (8, 6), (i * 40, 0, 0)) for i in range(4)]
    rows = [
        {"file_name": f"images/{i}.png", "image": images[i], "distribution": [0.5, 0.25, 0.25],
         "comments": ["first line", "second"] if i == 0 else None, "split": "train" if i < 2 else "test",
         "id": f"s{i}"}
        for i in range(4)
    ]
    spec = DatasetSpec(name="toy", num_bins=3, score_range=(0, 2), threshold=1.2)
    path = write_generic(tmp_path / "out", rows, spec)
    assert path == str(tmp_path / "out" / "metadata.csv")
    assert json.load(open(tmp_path / "out" / "dataset.json")) == {
        "name": "toy", "num_bins": 3, "score_range": [0.0, 2.0], "threshold": 1.2}
    dataset, loaded = load_generic(tmp_path / "out")
    assert loaded == spec
    assert dataset["train"]["id"] == ["s0", "s1"] and dataset["test"]["id"] == ["s2", "s3"]
    assert dataset["train"][0]["comments"] == "first line second"
    assert dataset["test"][0]["score"] == pytest.approx(0.75)
    assert PIL.Image.open(dataset["test"][0]["image"]).getpixel((0, 0)) == (80, 0, 0)
    scores = [{"file_name": "images/0.png", "score": 7}, {"file_name": "images/1.png", "score": 3.25}]
    write_generic(tmp_path / "scores", scores, score_sigma=0.7)
    for i in range(2):
        make_image(tmp_path / "scores" / "images" / f"{i}.png")
    dataset, spec = load_generic(tmp_path / "scores", validation_fraction=0, test_fraction=0)
    assert sorted(dataset["train"]["score"]) == [3.25, 7.0]
    expected = scores_to_distributions([3.25], (1, 10), 10, 0.7)[0]
    np.testing.assert_allclose(all_rows(dataset)["images/1.png"]["labels"], expected)
    with pytest.raises(ValueError, match="same single label form"):
        write_generic(tmp_path / "bad", [{"file_name": "a", "score": 1}, {"file_name": "b", "votes": [1, 2]}])


# ---------------------------------------------------------------------------------------------------------------
# AVA, Photo.net, JAS
# ---------------------------------------------------------------------------------------------------------------


def ava_line(index, image_id, counts, tags="0 0 1"):
    return f"{index} {image_id} {' '.join(map(str, counts))} {tags}\n"


@pytest.fixture
def ava(tmp_path):
    images = tmp_path / "images"
    lines = []
    for k in range(20):
        image_id = str(1000 + k)
        counts = [(k + j) % 5 for j in range(10)]
        lines.append(ava_line(k + 1, image_id, counts))
        make_image(images / f"{image_id}.jpg", seed=k)
    lines.append(ava_line(21, "2000", [1] * 10))  # image missing
    make_image(images / "2001.jpg")
    lines.append(ava_line(22, "2001", [0] * 10))  # zero votes
    lines.append(ava_line(23, "2002", [1, 2, 3]))  # too short
    lines.append(ava_line(24, "1003", [1] * 10))  # duplicate
    lines.append("\n")
    lines.append(ava_line(25, "2003", [1, 2, "x", 4, 5, 6, 7, 8, 9, 10]))
    (tmp_path / "AVA.txt").write_text("".join(lines))
    (tmp_path / "generic_test.jpgl").write_text("1000\n1001.jpg\n1002\n9999\n2000\n")
    write_csv(tmp_path / "comments.csv", ["index", "label", "comment"],
              [["1000", "1 2 3", "Lovely tones.\nGreat\\nshot"], ["1005", "0", "meh"], ["424242", "0", "lost"]])
    return tmp_path


def test_ava_official_split_comments_and_bad_rows(ava):
    dataset, spec = load_ava(ava / "AVA.txt", ava / "images", test_list=ava / "generic_test.jpgl",
                             comments=ava / "comments.csv", validation_fraction=0.2)
    assert (spec.name, spec.num_bins, spec.score_range, spec.threshold) == ("ava", 10, (1.0, 10.0), 5.0)
    assert reasons(spec.report) == {"2000": "missing_image", "2001": "zero_votes", "2002": "malformed_row",
                                    "1003": "duplicate_id", "2003": "non_numeric"}
    assert spec.report.total_rows == 25
    assert sorted(dataset["test"]["id"]) == ["1000", "1001", "1002"]
    # validation: round(0.2 * 19) = 4 of the 19 non-test ids (dropped rows included, so that the split is stable)
    assert len(dataset["validation"]) in (3, 4) and len(dataset["train"]) + len(dataset["validation"]) == 17
    assert set(dataset["validation"]["id"]).isdisjoint(dataset["test"]["id"])
    rows = all_rows(dataset)
    counts = np.array([(5 + j) % 5 for j in range(10)], dtype=float)
    np.testing.assert_allclose(rows["1005"]["labels"], counts / counts.sum())
    assert rows["1005"]["score"] == pytest.approx(counts @ np.arange(1, 11) / counts.sum())
    assert rows["1000"]["comments"] == "Lovely tones. Great\\nshot"  # literal \n is left for clean_comments
    assert rows["1005"]["comments"] == "meh" and rows["1001"]["comments"] == ""
    assert rows["1000"]["image"] == str(ava / "images" / "1000.jpg")
    notes = " | ".join(spec.report.notes)
    assert "1 id(s) of the test list" in notes  # 9999 (2000 is in AVA.txt; its image is missing)
    assert "comments: 1 of 3 key(s) match no image (e.g. '424242')" in notes
    assert spec.report.comments["images_with_comments"] == 2
    again, _ = load_ava(ava / "AVA.txt", ava / "images", test_list=ava / "generic_test.jpgl", validation_fraction=0.2)
    assert again["validation"]["id"] == dataset["validation"]["id"]


def test_ava_random_split_and_jsonl_comments(ava):
    (ava / "comments.jsonl").write_text(
        '{"image_id": "1004", "comment": "first"}\n\n{"image_id": 1004, "comment": "second"}\n'
        '{"image_id": "1006", "comments": ["a", "b"]}\n'
    )
    dataset, spec = load_ava(ava / "AVA.txt", ava / "images", comments=ava / "comments.jsonl",
                             validation_fraction=0.1, test_fraction=0.2, seed=7)
    sizes = spec.report.split_sizes  # of the 23 ids with a row: round(0.2·23) = 5 test, 2 validation
    assert sum(sizes.values()) == 20 and 3 <= sizes["test"] <= 5 and 0 < sizes["validation"] <= 2
    again, _ = load_ava(ava / "AVA.txt", ava / "images", validation_fraction=0.1, test_fraction=0.2, seed=7)
    other, _ = load_ava(ava / "AVA.txt", ava / "images", validation_fraction=0.1, test_fraction=0.2, seed=8)
    assert again["test"]["id"] == dataset["test"]["id"] != other["test"]["id"]
    rows = all_rows(dataset)
    assert rows["1004"]["comments"] == "first second"
    with pytest.raises(DatasetLoadError, match="id '2000': missing_image"):
        load_ava(ava / "AVA.txt", ava / "images", on_error="fail")
    write_csv(ava / "bad.csv", ["picture", "text"], [["1", "x"]])
    with pytest.raises(ValueError, match="needs a key column"):
        load_ava(ava / "AVA.txt", ava / "images", comments=ava / "bad.csv")
    with pytest.raises(FileNotFoundError):
        load_ava(ava / "AVA.txt", ava / "nope")


def test_photonet(tmp_path):
    lines = ["# id then votes for 1..7\n"]
    for k in range(6):
        make_image(tmp_path / "img" / f"p{k}.jpg", seed=k)
        lines.append(f"p{k} " + " ".join(str((k + j) % 4) for j in range(7)) + "\n")
    lines.append("p9 1 2 3 4 5 6 7 8\n")  # 8 counts
    lines.append("p10 1 2\n")
    lines.append("p11\n")
    (tmp_path / "photonet.txt").write_text("".join(lines))
    dataset, spec = load_photonet(tmp_path / "photonet.txt", tmp_path / "img", validation_fraction=0, test_fraction=0)
    assert (spec.name, spec.num_bins, spec.score_range, spec.threshold) == ("photonet", 7, (1.0, 7.0), 5.0)
    assert reasons(spec.report) == {"p9": "wrong_bins", "p10": "wrong_bins", "p11": "malformed_row"}
    rows = all_rows(dataset)
    assert len(rows) == 6 and len(rows["p1"]["labels"]) == 7
    counts = np.array([(1 + j) % 4 for j in range(7)], dtype=float)
    assert rows["p1"]["score"] == pytest.approx(counts @ np.arange(1, 8) / counts.sum())


def test_jas_normalisation_split_column_and_bad_rows(tmp_path):
    make_image(tmp_path / "paintings" / "a.jpg")
    make_image(tmp_path / "paintings" / "b.jpg")
    make_image(tmp_path / "c.png")
    write_csv(tmp_path / "jas.csv", ["id", "file_name", "score", "beauty", "split"], [
        ["a", "", "75", "1", "train"],
        ["b", "", "0", "1", "test"],
        ["c", "../c.png", "50", "1", "validation"],
        ["d", "", "101", "1", "train"],
        ["e", "", "abc", "1", "train"],
    ])
    dataset, spec = load_jas(tmp_path / "jas.csv", tmp_path / "paintings")
    assert (spec.name, spec.num_bins, spec.score_range, spec.threshold) == ("jas", 10, (0.0, 1.0), 0.5)
    assert reasons(spec.report) == {"d": "score_out_of_range", "e": "non_numeric"}
    assert "ignored column(s): ['beauty']" in spec.report.notes
    rows = all_rows(dataset)
    assert rows["a"]["score"] == 0.75 and rows["a"]["split"] == "train"
    assert rows["c"]["image"] == str(tmp_path / "c.png") and rows["c"]["split"] == "validation"
    np.testing.assert_allclose(rows["b"]["labels"], np.eye(10)[0])
    assert np.dot(rows["a"]["labels"], np.linspace(0, 1, 10)) == pytest.approx(0.75)
    _, spec = load_jas(tmp_path / "jas.csv", tmp_path / "paintings", score_column="beauty")
    assert reasons(spec.report) == {"d": "missing_image", "e": "missing_image"}


def test_jas_common_split_sizes(tmp_path):
    rows = []
    for i in range(1564):
        (tmp_path / f"{i}.jpg").write_bytes(b"")
        rows.append([str(i), str(i % 101)])
    write_csv(tmp_path / "jas.csv", ["id", "score"], rows)
    dataset, spec = load_jas(tmp_path / "jas.csv")
    assert spec.report.split_sizes == {"train": 1125, "validation": 126, "test": 313}
    again, _ = load_jas(tmp_path / "jas.csv")
    assert again["test"]["id"] == dataset["test"]["id"]


# ---------------------------------------------------------------------------------------------------------------
# collator
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture
def processor(tiny_tokenizer):
    return AesformerProcessor(image_processor=AesformerImageProcessor(size=32), tokenizer=tiny_tokenizer)


@pytest.fixture
def rows(tmp_path):
    out = []
    for i in range(3):
        path = make_image(tmp_path / f"{i}.png", seed=i, size=(48, 40))
        out.append({"id": f"r{i}", "image": str(path), "labels": [0.1 * (i + 1), 1 - 0.1 * (i + 1)], "score": 1.5,
                    "comments": "nice light" if i != 1 else ""})
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"this is not an image")
    out.append({"id": "bad", "image": str(broken), "labels": [0.5, 0.5], "score": 1.5, "comments": "x"})
    return out


def test_collator_batch_with_and_without_comments(processor, rows):
    collator = AestheticCollator(processor)
    batch = collator(rows[:3])
    assert batch["pixel_values"].shape == (3, 3, 32, 32)
    assert batch["ids"] == ["r0", "r1", "r2"] and batch["skipped"] == []
    assert batch["labels"].dtype == torch.float32 and batch["labels"].shape == (3, 2)
    torch.testing.assert_close(batch["labels"][0], torch.tensor([0.1, 0.9]))
    assert batch["attention_mask"][1].sum() == 0 and batch["attention_mask"][0].sum() > 0
    assert set(batch) == {"pixel_values", "input_ids", "attention_mask", "token_type_ids", "labels", "ids", "skipped"}
    # without a transform the pixels are exactly the processor's on the files
    expected = processor(images=[r["image"] for r in rows[:3]], return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(batch["pixel_values"], expected, rtol=0, atol=0)
    image_only = AestheticCollator(processor, include_comments=False)(rows[:3])
    assert set(image_only) == {"pixel_values", "labels", "ids", "skipped"}
    bare = AestheticCollator(processor.image_processor, include_comments=False)(rows[:1])
    assert bare["pixel_values"].shape == (1, 3, 32, 32)
    with pytest.raises(ValueError, match="include_comments"):
        AestheticCollator(processor.image_processor)


def test_collator_skips_broken_images(processor, rows, caplog):
    collator = AestheticCollator(processor)
    with caplog.at_level(logging.WARNING, logger="aesformer_training.collator"):
        batch = collator([rows[3], rows[0]])
    assert batch["ids"] == ["r0"] and batch["pixel_values"].shape[0] == 1 and batch["labels"].shape == (1, 2)
    assert [s[0] for s in batch["skipped"]] == ["bad"]
    assert [s[0] for s in collator.skipped] == ["bad"] and "cannot read image file" in collator.skipped[0][1]
    warning = next(r for r in caplog.records if "skipping image" in r.getMessage())
    assert "'bad'" in warning.getMessage() and "broken.jpg" in warning.getMessage()
    assert collator([rows[3]]) is None
    assert len(collator.skipped) == 2


def test_collator_transform_is_reproducible(processor, rows):
    transform = TrainTransform.for_image_processor(processor, seed=5)
    assert transform.resize == (37, 37) and transform.crop == (32, 32)
    collator = AestheticCollator(processor, transform=transform, epoch=0, seed=1)
    first = collator(rows[:3])["pixel_values"]
    torch.testing.assert_close(collator(rows[:3])["pixel_values"], first, rtol=0, atol=0)
    # the same sample alone in a batch gets the same augmentation
    torch.testing.assert_close(collator(rows[1:2])["pixel_values"][0], first[1], rtol=0, atol=0)
    changed = []
    for epoch in range(1, 5):
        collator.set_epoch(epoch)
        changed.append(not torch.equal(collator(rows[:3])["pixel_values"], first))
    assert any(changed)
    # an explicit `index` field decides the draw: index 7 in epoch 3 is transform(image, 7, 3)
    collator.set_epoch(3)
    indexed = [dict(rows[0], index=7)]
    decoded = collator._decode(rows[0]["image"])
    expected = processor.image_processor(transform(decoded, 7, 3), return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(collator(indexed)["pixel_values"], expected, rtol=0, atol=0)
    assert stable_index("r0", 1) == stable_index("r0", 1) != stable_index("r0", 2)


# ---------------------------------------------------------------------------------------------------------------
# transforms
# ---------------------------------------------------------------------------------------------------------------


def test_train_transform_depends_only_on_seed_epoch_index():
    image = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 50, 3), dtype=np.uint8))
    transform = TrainTransform(resize=(12, 16), crop=(8, 10), seed=3)
    out = transform(image, 5, 2)
    assert out.size == (10, 8) and transform.output_size == (8, 10)
    transform(image, 9, 9)  # other calls in between do not change a sample's draw
    assert np.array_equal(np.asarray(transform(image, 5, 2)), np.asarray(out))
    assert np.array_equal(np.asarray(TrainTransform(resize=(12, 16), crop=(8, 10), seed=3)(image, 5, 2)),
                          np.asarray(out))
    resized = np.asarray(image.resize((16, 12), PIL.Image.BICUBIC))
    params = {transform.params(i, e) for i in range(20) for e in range(3)}
    assert {p[2] for p in params} == {True, False} and len({p[:2] for p in params}) > 5
    for index in range(6):
        top, left, flipped = transform.params(index, 1)
        expected = resized[top:top + 8, left:left + 10]
        if flipped:
            expected = expected[:, ::-1]
        assert np.array_equal(np.asarray(transform(image, index, 1)), expected)
    no_flip = TrainTransform(resize=12, crop=8, flip=False, seed=3)
    assert not any(no_flip.params(i, 0)[2] for i in range(20))
    seed_3, seed_4 = TrainTransform(resize=12, crop=8, seed=3), TrainTransform(resize=12, crop=8, seed=4)
    assert any(seed_3.params(i, 2) != seed_4.params(i, 2) for i in range(10))


def test_transform_argument_checks_and_eval_transform():
    with pytest.raises(ValueError, match="fit inside"):
        TrainTransform(resize=20, crop=32)
    with pytest.raises(ValueError):
        TrainTransform(resize=0)
    with pytest.raises(ValueError, match="index"):
        TrainTransform(resize=40, crop=32)(PIL.Image.new("RGB", (5, 5)), -1, 0)
    image = PIL.Image.fromarray(np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8))
    image_processor = AesformerImageProcessor(size=32)
    direct = image_processor(image, return_tensors="np")["pixel_values"]
    via_eval = image_processor(EvalTransform(32)(image, 3, 4), return_tensors="np")["pixel_values"]
    np.testing.assert_array_equal(direct, via_eval)
    assert EvalTransform((24, 16))(image).size == (16, 24)


def test_one_resize_ratio_and_one_comment_length_clamp():
    from aesformer_training.transforms import TrainTransform, train_resize
    from modeling_aesformer import AesformerConfig, AesformerImageProcessor
    from modeling_aesformer.configuration_aesformer import comment_max_length

    assert (train_resize(224), train_resize(32)) == (256, 37)  # the paper's 256/224; a tiny model's crop
    transform = TrainTransform.for_image_processor(AesformerImageProcessor(size={"height": 32, "width": 48}))
    assert transform.resize == (37, 55) and transform.crop == (32, 48)
    tiny, full = AesformerConfig.from_preset("tiny"), AesformerConfig.from_preset("aesformer-t")
    assert (comment_max_length(tiny), comment_max_length(full), comment_max_length(full, 64)) == (128, 512, 64)
    assert comment_max_length(tiny.text_config, 1000) == 128
