"""The synthetic aesthetic dataset generator (`aesformer make-dataset`): format, determinism, realism, learnability."""

import argparse
import csv
import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from aesformer_cli import make_dataset as make_dataset_command
from aesformer_training import synthetic
from aesformer_training.synthetic import SyntheticConfig, make_dataset

ROOT = Path(__file__).resolve().parents[1]
HAVE_PHOTOS = len(synthetic.load_photos()[0]) >= 3
COLUMNS = ["id", "file_name", "votes", "comments", "split"]


def _read_rows(folder):
    with open(Path(folder) / "metadata.csv", encoding="utf-8", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [dict(zip(header, row)) for row in reader]
    return header, rows


def _mean_scores(rows):
    out = []
    for row in rows:
        votes = np.array([int(v) for v in row["votes"].split()], dtype=np.float64)
        out.append(float((votes * np.arange(1, len(votes) + 1)).sum() / votes.sum()))
    return np.array(out)


def _spearman(a, b):
    def ranks(x):
        x = np.asarray(x, dtype=np.float64)
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=np.float64)
        _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
        return (np.bincount(inverse, weights=r) / counts)[inverse]  # average ranks of ties

    ra, rb = ranks(a), ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1])


def _hashes(folder):
    folder = Path(folder)
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    """800 images at 64 px with a large test split (shared by the realism and learnability checks)."""
    folder = tmp_path_factory.mktemp("synthetic-medium")
    summary = make_dataset(folder, size=800, seed=1, image_size=64, split_fractions=(0.55, 0.05, 0.4),
                           write_attributes=True)
    return folder, summary


# ---------------------------------------------------------------------------------------------------------------------


def test_same_arguments_give_identical_bytes(tmp_path):
    kwargs = dict(size=24, seed=7, image_size=48, write_attributes=True)
    make_dataset(tmp_path / "a", **kwargs)
    make_dataset(tmp_path / "b", **kwargs)
    first, second = _hashes(tmp_path / "a"), _hashes(tmp_path / "b")
    assert len(first) == 24 + 3  # images + metadata.csv + dataset.json + attributes.csv
    assert first == second
    make_dataset(tmp_path / "c", **{**kwargs, "seed": 8})
    assert _hashes(tmp_path / "c")["metadata.csv"] != first["metadata.csv"]


def test_generic_format(medium):
    folder, summary = medium
    header, rows = _read_rows(folder)
    assert header == COLUMNS
    assert len(rows) == summary["size"] == 800
    assert len({r["id"] for r in rows}) == len(rows)
    for row in rows[:100]:
        votes = [int(v) for v in row["votes"].split(" ")]
        assert len(votes) == 10 and min(votes) >= 0
        assert 80 <= sum(votes) <= 250
        assert row["split"] in ("train", "validation", "test")
        assert row["file_name"].startswith("images/")
        with Image.open(folder / row["file_name"]) as image:
            assert image.format == "PNG" and image.mode == "RGB" and image.size == (64, 64)
        if row["comments"]:
            comments = row["comments"].split("\n")
            assert 1 <= len(comments) <= 4 and all(c.strip() for c in comments)
            assert "\r" not in row["comments"]
            assert row["comments"] == row["comments"].lower()  # lower-case friendly: nothing lost by lowering
    info = json.loads((folder / "dataset.json").read_text(encoding="utf-8"))
    assert info["num_bins"] == 10 and info["score_range"] == [1, 10] and info["threshold"] == 5.5
    generator = info["generator"]
    assert generator["seed"] == 1 and generator["size"] == 800 and generator["version"] == 1
    assert info["name"] == "aesformer-synthetic"
    for knob in ("image_size", "flaw_rate", "appeal_weight", "rater_noise", "comment_rate", "wrong_comment_rate"):
        assert knob in generator["knobs"]
    assert summary["split_counts"] == {s: sum(r["split"] == s for r in rows) for s in ("train", "validation", "test")}


def test_seven_bins(tmp_path):
    summary = make_dataset(tmp_path, size=60, seed=3, num_bins=7, image_size=48)
    _, rows = _read_rows(tmp_path)
    assert all(len(r["votes"].split()) == 7 for r in rows)
    info = json.loads((tmp_path / "dataset.json").read_text(encoding="utf-8"))
    assert info["num_bins"] == 7 and info["score_range"] == [1, 7]
    assert info["threshold"] == 4.0  # the midpoint of 1..7
    assert 3.3 < summary["score_mean"] < 4.6  # 5.4 on the 1..10 scale maps to 3.93


def test_scores_and_comments_are_realistic(medium):
    folder, summary = medium
    _, rows = _read_rows(folder)
    means = _mean_scores(rows)
    assert abs(means.mean() - 5.4) < 0.2  # AVA: 5.4 +- 0.7
    assert 0.4 <= means.std() <= 1.0
    assert 1.0 < summary["vote_std_mean"] < 2.0  # per-image spread of votes, AVA about 1.4
    with_comments = np.mean([bool(r["comments"]) for r in rows])
    assert 0.78 <= with_comments <= 0.92
    assert summary["comment_fraction"] == pytest.approx(with_comments, abs=1e-4)
    if HAVE_PHOTOS:  # scikit-image is an optional (demo) dependency; without it the data are scenes only
        assert len(summary["photos"]) >= 3
    else:
        assert summary["photos"] == [] and "not installed" in summary["photo_note"]


def test_splits_are_disjoint_by_source(medium):
    folder, summary = medium
    with open(folder / "attributes.csv", encoding="utf-8", newline="") as fh:
        source = {r["id"]: r["source"] for r in csv.DictReader(fh)}
    _, rows = _read_rows(folder)
    split_of_source = {}
    for row in rows:
        split_of_source.setdefault(source[row["id"]], set()).add(row["split"])
    assert all(len(splits) == 1 for splits in split_of_source.values())
    assert {next(iter(s)) for s in split_of_source.values()} == {"train", "validation", "test"}
    photo_splits = {next(iter(s)) for k, s in split_of_source.items() if k.startswith("photo-")}
    assert photo_splits == ({"train", "validation", "test"} if HAVE_PHOTOS else set())


# simple image statistics: exposure (percentiles, clipping), saturation, noise, sharpness, subject offset
def _image_features(path):
    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0
    luma = a @ np.array([0.299, 0.587, 0.114])
    p5, p50, p95 = np.percentile(luma, [5, 50, 95])
    chroma = float((a.max(2) - a.min(2)).mean())
    h, w = luma.shape

    def laplacian(g):
        return 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]

    half = luma[: h // 2 * 2, : w // 2 * 2].reshape(h // 2, 2, w // 2, 2).mean((1, 3))
    noise = np.log(np.median(np.abs(laplacian(luma))) + 1e-3)
    sharpness = np.log(np.abs(laplacian(half)).mean() + 1e-3)
    saliency = np.abs(a - np.median(a.reshape(-1, 3), 0)).sum(2)
    saliency /= saliency.sum() + 1e-9
    ys, xs = np.mgrid[0:h, 0:w] / h
    offset = abs((saliency * xs).sum() - 0.5) + abs((saliency * ys).sum() - 0.5)
    return [p5, p50, p95, (p50 - 0.45) ** 2, (luma > 0.97).mean(), (luma < 0.04).mean(), chroma, chroma ** 2,
            noise, sharpness, offset]


_APPEALING = ("love", "wonderful", "beautiful", "charming", "speaks", "interesting", "like the", "nice subject")
_UNAPPEALING = ("boring", "the point", "does nothing", "not much", "not very", "dull idea", "ordinary")


def _comment_feature(text):
    text = text.lower()
    return sum(text.count(w) for w in _APPEALING) - sum(text.count(w) for w in _UNAPPEALING)


def _ridge_test_srcc(features, y, split):
    train, test = split == "train", split == "test"
    mu, sd = features[train].mean(0), features[train].std(0) + 1e-9
    z = np.c_[(features - mu) / sd, np.ones(len(features))]
    w = np.linalg.solve(z[train].T @ z[train] + 10.0 * np.eye(z.shape[1]), z[train].T @ y[train])
    return _spearman(z[test] @ w, y[test])


def test_pixels_carry_signal_and_comments_add_information(medium):
    folder, _ = medium
    _, rows = _read_rows(folder)
    y = _mean_scores(rows)
    split = np.array([r["split"] for r in rows])
    images = np.array([_image_features(folder / r["file_name"]) for r in rows])
    comments = np.array([[_comment_feature(r["comments"])] for r in rows], dtype=np.float64)
    image_only = _ridge_test_srcc(images, y, split)
    with_comments = _ridge_test_srcc(np.c_[images, comments], y, split)
    print(f"test SRCC of a ridge on image statistics: {image_only:.3f}; with the comment feature: {with_comments:.3f}")
    assert image_only > 0.3
    assert with_comments > image_only + 0.05
    # and it is not trivial: even the hidden image quality leaves the score far from perfectly ranked
    with open(folder / "attributes.csv", encoding="utf-8", newline="") as fh:
        hidden = {r["id"]: float(r["image_quality"]) for r in csv.DictReader(fh)}
    oracle = _spearman([hidden[r["id"]] for r in rows], y)
    assert 0.5 < oracle < 0.9


def test_without_scikit_image_uses_scenes_only(tmp_path, monkeypatch):
    def missing():
        raise ImportError("no scikit-image")

    monkeypatch.setattr(synthetic, "_import_skimage_data", missing)
    summary = make_dataset(tmp_path, size=30, seed=2, image_size=48, write_attributes=True)
    assert summary["photos"] == [] and "not installed" in summary["photo_note"]
    with open(tmp_path / "attributes.csv", encoding="utf-8", newline="") as fh:
        assert {r["kind"] for r in csv.DictReader(fh)} == {"scene"}
    info = json.loads((tmp_path / "dataset.json").read_text(encoding="utf-8"))
    assert info["generator"]["sources"]["photos"] == [] and "not installed" in info["generator"]["photo_note"]


def test_cli_subcommand(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="aesformer")
    sub = parser.add_subparsers(dest="command", required=True)
    make_dataset_command.add_subparser(sub)
    args = parser.parse_args(["make-dataset", "--size", "12", "--seed", "4", "--output", str(tmp_path / "d"),
                              "--num-bins", "7", "--image_size", "40", "--comment-rate", "0.5", "--photos", "chelsea",
                              "--split-fractions", "0.5", "0.25", "0.25"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "12" in out and "train" in out and "images/s" in out
    info = json.loads((tmp_path / "d" / "dataset.json").read_text(encoding="utf-8"))
    knobs = info["generator"]["knobs"]
    assert info["num_bins"] == 7 and knobs["image_size"] == 40 and knobs["comment_rate"] == 0.5
    assert knobs["split_fractions"] == [0.5, 0.25, 0.25]
    assert info["generator"]["sources"]["photos"] in ([], ["chelsea"])
    bad = parser.parse_args(["make-dataset", "--size", "0", "--output", str(tmp_path / "e")])
    assert bad.func(bad) == 2


def test_invalid_settings_are_refused(tmp_path):
    with pytest.raises(ValueError, match="num_bins"):
        make_dataset(tmp_path, size=5, num_bins=1)
    with pytest.raises(ValueError, match="unknown photos"):
        make_dataset(tmp_path, size=5, photos=["not-a-photo"])
    with pytest.raises(ValueError, match="comment_rate"):
        make_dataset(tmp_path, size=5, comment_rate=1.5)


def test_docs_cover_every_knob():
    text = (ROOT / "docs" / "synthetic-data.md").read_text(encoding="utf-8")
    for f in dataclasses.fields(SyntheticConfig):
        assert f"--{f.name.replace('_', '-')}" in text, f.name


def test_the_generic_loader_reads_it(tmp_path):
    from aesformer_training.loaders import load_generic

    summary = make_dataset(tmp_path, size=40, seed=5, num_bins=7, image_size=32)
    data, spec = load_generic(tmp_path)
    assert spec.num_bins == 7 and spec.score_range == (1.0, 7.0)
    assert spec.threshold == 4.0
    assert {s: len(data[s]) for s in ("train", "validation", "test")} == summary["split_counts"]
    assert not spec.report.dropped
