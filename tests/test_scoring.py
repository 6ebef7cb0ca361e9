"""Scoring: the scoring module (`modeling_aesformer.scoring`: decoding, the collate, the batch step, the rows, the
Python entry point) and `aesformer score` over it (folders/globs/list files, comments, a broken file, streaming output
and --resume)."""

import csv
import json
import os

import PIL.Image
import pytest
from transformers import AutoModel, AutoProcessor, pipeline

from modeling_aesformer import AesformerModel, scoring
from aesformer_cli import score as score_command
from modeling_aesformer.toy import draw_scene

from _helpers import camera_jpeg, read_rows, score_cli as cli, tiny_model_folder


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.mktemp("scoring") / "model")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """14 images in nested folders and 4 formats, one broken .jpg and one non-image file."""
    root = tmp_path_factory.mktemp("photos")
    (root / "trip" / "day2").mkdir(parents=True)
    formats = ["jpg", "png", "bmp", "webp"]
    paths = []
    for i in range(14):
        sub = root if i < 5 else (root / "trip" if i < 10 else root / "trip" / "day2")
        path = sub / f"img{i:02d}.{formats[i % 4]}"
        draw_scene(i, size=(48 + i, 40)).save(path)
        paths.append(path)
    (root / "trip" / "broken.jpg").write_bytes(b"\xff\xd8\xff this is not a jpeg")
    (root / "notes.txt").write_text("not an image")
    return root, paths


def test_folder_with_a_broken_file(model_dir, photos, tmp_path, capsys):
    root, paths = photos
    out = tmp_path / "scores.csv"
    code = cli(root, "--model", model_dir, "--output", out, "--batch-size", 4, "--num-workers", 2,
               "--dtype", "fp32")  # compared with the pipeline (fp32) below
    assert code == 1  # one file failed
    rows = read_rows(out)
    assert list(rows[0]) == scoring.FIELDS
    by_path = {row["path"]: row for row in rows}
    assert len(rows) == len(by_path) == 15  # 14 images + the broken one, each once; notes.txt is not an image
    assert {os.path.abspath(p) for p in by_path} == {str(p) for p in paths} | {str(root / "trip" / "broken.jpg")}
    broken = by_path[str(root / "trip" / "broken.jpg")]
    assert broken["error"] and "cannot identify image file" in broken["error"] and broken["score"] == ""
    report = capsys.readouterr().out
    assert "1 input(s) could not be scored" in report and "broken.jpg" in report and "images/s" in report

    # the scores are the pipeline's
    scorer = pipeline("image-aesthetics", model=AutoModel.from_pretrained(model_dir))
    expected = scorer([str(p) for p in paths[:5]])
    for path, result in zip(paths[:5], expected):
        row = by_path[str(path)]
        assert float(row["score"]) == pytest.approx(result["score"], abs=1e-5)
        assert float(row["std"]) == pytest.approx(result["std"], abs=1e-5)
        assert row["label"] == result["label"] and row["branch"] == "image_only" and row["adapter"] == "base"
        assert json.loads(row["distribution"]) == pytest.approx(result["distribution"], abs=1e-6)

    # an existing output is never silently appended to or overwritten
    assert cli(root, "--model", model_dir, "--output", out) == 2
    assert "--resume" in capsys.readouterr().err


def test_interrupted_run_resumes_without_lost_or_duplicated_rows(model_dir, photos, tmp_path, monkeypatch):
    root, paths = photos
    reference = tmp_path / "reference.jsonl"
    assert cli(root, "--model", model_dir, "--output", reference, "--num-workers", 0) == 1

    out = tmp_path / "scores.jsonl"
    calls = {"n": 0}
    forward = AesformerModel.forward_adapters  # the scoring module's one model call

    def interrupted(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third batch
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(AesformerModel, "forward_adapters", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli(root, "--model", model_dir, "--output", out, "--batch-size", 3, "--num-workers", 0)
    monkeypatch.setattr(AesformerModel, "forward_adapters", forward)
    partial = read_rows(out)
    assert 0 < len(partial) < 15  # two batches were written and flushed before the interruption
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"path": "half a line written when the process was kil')  # a cut-off last line

    assert cli(root, "--model", model_dir, "--output", out, "--batch-size", 3, "--num-workers", 0,
               "--resume") == 1
    rows, expected = read_rows(out), read_rows(reference)
    assert [r["path"] for r in rows[: len(partial)]] == [r["path"] for r in partial]  # kept, not redone
    assert sorted(r["path"] for r in rows) == sorted(r["path"] for r in expected)  # none lost, none twice
    expected = {r["path"]: r for r in expected}
    for row in rows:
        ref = expected[row["path"]]
        assert (row["error"] is None) == (ref["error"] is None)
        if row["error"] is None:
            assert row["score"] == pytest.approx(ref["score"], abs=1e-5) and row["branch"] == ref["branch"]

    # resuming a finished run does nothing (the broken file is not retried, it stays reported)
    before = out.read_text()
    assert cli(root, "--model", model_dir, "--output", out, "--resume", "--num-workers", 0) == 1
    assert out.read_text() == before


def test_list_file_glob_and_comments_file(model_dir, photos, tmp_path, capsys):
    root, paths = photos
    listing = tmp_path / "list.csv"
    with open(listing, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "comments"])
        writer.writerow([os.path.relpath(paths[0], tmp_path), "lovely light, well placed subject"])
        writer.writerow([str(paths[1]), ""])
    comments = tmp_path / "comments.jsonl"
    with open(comments, "w", encoding="utf-8") as f:
        f.write(json.dumps({"image": paths[5].name, "comments": ["great colour", "sharp focus"]}) + "\n")
        f.write(json.dumps({"image": str(paths[9]), "comments": "too dark"}) + "\n")
    pattern = str(root / "trip" / "*.png")
    out = tmp_path / "scores.jsonl"
    code = cli(listing, pattern, root / "trip" / "day2", "--model", model_dir, "--comments", comments,
               "--output", out, "--num-workers", 1)
    assert code == 0, capsys.readouterr()
    rows = {os.path.abspath(r["path"]): r for r in read_rows(out)}
    png = {str(p) for p in paths[5:10] if p.suffix == ".png"}
    expected = {str(paths[0]), str(paths[1])} | png | {str(p) for p in paths[10:]}
    assert set(rows) == expected
    assert rows[str(paths[0])]["branch"] == "with_comments"  # from the list file
    assert rows[str(paths[1])]["branch"] == "image_only"  # empty comments
    for path in png:
        want = "with_comments" if path in (str(paths[5]), str(paths[9])) else "image_only"
        assert rows[path]["branch"] == want, path
    assert all(isinstance(r["distribution"], list) and r["error"] is None for r in rows.values())
    assert {str(paths[5]), str(paths[9])} <= png  # the comments matched inputs (by file name, by path)


def test_inputs_that_name_nothing_and_the_pixel_limit(model_dir, photos, tmp_path, capsys):
    root, paths = photos
    out = tmp_path / "scores.csv"
    code = cli(paths[0], tmp_path / "missing.jpg", str(tmp_path / "*.nothing"), "--model", model_dir,
               "--output", out, "--max-image-pixels", 1000, "--num-workers", 0)
    assert code == 1
    rows = {row["path"]: row for row in read_rows(out)}
    assert "DecompressionBomb" in rows[str(paths[0])]["error"]  # 48x40 = 1920 pixels > 1000
    assert "no such file" in rows[str(tmp_path / "missing.jpg")]["error"]
    assert "no file matches" in rows[str(tmp_path / "*.nothing")]["error"]
    assert "3 input(s) could not be scored" in capsys.readouterr().out


def test_adapter_all_writes_one_row_per_adapter(model_dir, photos, tmp_path):
    from modeling_aesformer.adapters import add_dataset_adapter, save_adapters

    folder = tiny_model_folder(tmp_path / "model")
    model = add_dataset_adapter(AutoModel.from_pretrained(folder), "ava", dataset="AVA")
    model = add_dataset_adapter(model, "photonet", num_score_bins=7, dataset="Photo.net")
    save_adapters(model, folder)
    _, paths = photos
    out = tmp_path / "scores.csv"
    assert cli(*paths[:3], "--model", folder, "--adapter", "all", "--output", out, "--num-workers", 0) == 0
    rows = read_rows(out)
    assert [(r["path"], r["adapter"]) for r in rows] == [(str(p), a) for p in paths[:3]
                                                         for a in ("base", "ava", "photonet")]
    assert all(len(json.loads(r["distribution"])) == (7 if r["adapter"] == "photonet" else 10) for r in rows)
    # --resume with one more adapter name than before only adds the missing rows
    out2 = tmp_path / "two.csv"
    assert cli(*paths[:2], "--model", folder, "--adapter", "ava", "--output", out2, "--num-workers", 0) == 0
    assert cli(*paths[:2], "--model", folder, "--adapter", "ava", "--adapter", "base", "--output", out2,
               "--resume", "--num-workers", 0) == 0
    assert sorted((r["path"], r["adapter"]) for r in read_rows(out2)) == sorted(
        (str(p), a) for p in paths[:2] for a in ("ava", "base"))


# ------------------------------------------------------------------------------------------- the scoring module
def test_the_command_lists_the_modules_columns():
    assert score_command.FIELDS == scoring.FIELDS  # --help names them without importing torch


def test_score_files_equals_the_pipeline_for_paths_images_bytes_and_comments(model_dir, photos):
    _, paths = photos
    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    scorer = pipeline("image-aesthetics", model=model, processor=processor)
    with PIL.Image.open(paths[1]) as opened:
        image = opened.convert("RGB")
    items = [str(paths[0]), image, paths[2].read_bytes(), (str(paths[3]), "lovely light, sharp subject"),
             str(paths[0].parent / "missing.png")]
    rows = list(scoring.score_files(model, processor, items, batch_size=2))
    assert [row["index"] for row in rows] == [0, 1, 2, 3, 4]
    assert [row["path"] for row in rows] == [str(paths[0]), None, None, str(paths[3]),
                                             str(paths[0].parent / "missing.png")]
    wants = [scorer(str(paths[0])), scorer(image), scorer(str(paths[2])),
             scorer({"image": str(paths[3]), "comments": "lovely light, sharp subject"})]
    for row, want in zip(rows, wants):
        assert row["error"] is None and set(want) <= set(row) and row["branch"] == want["branch"]
        assert row["score"] == pytest.approx(want["score"], abs=1e-5)
        assert row["distribution"] == pytest.approx(want["distribution"], abs=1e-6)
    assert rows[3]["branch"] == "with_comments" and rows[3]["comments_truncated"] is False
    assert rows[4]["score"] is None and "no such file" in rows[4]["error"]
    # comments given beside the items; the count must match
    again = list(scoring.score_files(model, processor, [str(paths[3])], comments=["lovely light, sharp subject"]))
    assert again[0]["score"] == pytest.approx(rows[3]["score"], abs=1e-6)
    with pytest.raises(scoring.ScoringError, match="one per item"):
        list(scoring.score_files(model, processor, [str(paths[3])], comments=[]))


def test_collate_pads_comments_passes_errors_and_markers_through(model_dir, photos):
    _, paths = photos
    processor = AutoProcessor.from_pretrained(model_dir)
    dataset = scoring.ImageEncodingDataset([(str(paths[0]), "too dark"), (str(paths[1]), None),
                                            (str(paths[0].parent / "gone.png"), None)], processor)
    items = [dataset[i] for i in range(3)] + [{"shard_end": "s0", "readers": 1}]
    collated = scoring.collate_encodings(items, pad_token_id=scoring.pad_token_id(processor))
    assert collated["indices"] == [0, 1] and collated["errors"][0][0] == 2
    assert "no such file" in collated["errors"][0][1]
    assert collated["markers"] == [{"shard_end": "s0", "readers": 1}]
    inputs = collated["inputs"]
    assert inputs["pixel_values"].shape[0] == 2 and inputs["input_ids"].shape[0] == 2
    assert inputs["attention_mask"][1].sum() == 0 and inputs["attention_mask"][0].sum() > 0
    assert scoring.collate_encodings(items[2:])["inputs"] is None  # nothing decoded: errors only


def test_open_jpeg_draft(tmp_path):
    big = camera_jpeg(tmp_path / "big.jpg", (1024, 768))
    image = scoring.open_jpeg_draft(str(big), (32, 32))
    assert image is not None and image.size == (128, 96)  # 1/8: still at least the target on both sides
    assert scoring.open_jpeg_draft(str(big), (300, 300)).size == (512, 384)  # 1/2
    assert scoring.open_jpeg_draft(str(big), (600, 600)) is None  # not twice the target: decoded in full
    assert scoring.open_jpeg_draft(str(big), (32, 32), max_image_pixels=1000) is None  # the full read refuses it
    PIL.Image.open(big).save(tmp_path / "big.png")
    assert scoring.open_jpeg_draft(str(tmp_path / "big.png"), (32, 32)) is None
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    assert scoring.open_jpeg_draft(str(tmp_path / "broken.jpg"), (32, 32)) is None
