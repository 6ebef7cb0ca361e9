"""Scoring: the scoring module (`modeling_aesformer.scoring`: decoding, the collate, the batch step, the rows, the
Python entry point) and `aesformer score` over it (folders/globs/list files, comments, a broken file, streaming output
and --resume), hostile image files and comments, non-UTF-8 comment files, a run killed mid-file and resumed
(also onto a CSV written before the comments_truncated column)."""

import csv
import json
import os
import shutil
import subprocess
import sys
import textwrap

import PIL.Image
import pytest
from transformers import AutoModel, AutoProcessor, pipeline

from modeling_aesformer import AesformerModel, scoring
from aesformer_cli import score as score_command
from aesformer_training.loaders import load_ava, load_generic
from aesformer_training.text_files import TextEncodingError
from modeling_aesformer.toy import draw_scene

from _helpers import HOSTILE, PIL_DEFAULT_MAX_IMAGE_PIXELS, SUBPROCESS_ENV, bomb_png, camera_jpeg, read_rows, \
    kill_when_stalled, score_cli as cli, tiny_model_folder


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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
    assert "1 input could not be scored" in report and "broken.jpg" in report and "images/s" in report

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
    assert "3 inputs could not be scored" in capsys.readouterr().out


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


def test_score_a_folder_of_hostile_files(model_dir, hostile_dir, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    code = cli(hostile_dir, "--model", model_dir, "--output", out, "--batch-size", 4, "--num-workers", 0)
    assert code == 1  # some files failed; the run did not stop
    rows = {os.path.basename(row["path"]): row for row in read_rows(out)}
    assert sorted(rows) == sorted(HOSTILE) and len(read_rows(out)) == len(HOSTILE)  # each file exactly once
    for name, reason in HOSTILE.items():
        row = rows[name]
        if reason is None:
            assert row["error"] == "" and 1 <= float(row["score"]) <= 10 and row["branch"] == "image_only", row
        else:
            assert row["score"] == "" and reason in row["error"], row
    assert "pixels" in rows["bomb.png"]["error"]
    report = capsys.readouterr().out
    assert f"{sum(r is not None for r in HOSTILE.values())} inputs could not be scored" in report
    assert PIL.Image.MAX_IMAGE_PIXELS == PIL_DEFAULT_MAX_IMAGE_PIXELS  # restored after the run

    # the limit is configurable, and a limit above Pillow's own works (Pillow's global is raised for the call only)
    small = tmp_path / "small.csv"
    assert cli(hostile_dir / "one_by_one.png", hostile_dir / "thin_1x20000.png", "--model", model_dir,
                     "--output", small, "--max-image-pixels", 19_999, "--num-workers", 0) == 1
    limited = {os.path.basename(r["path"]): r for r in read_rows(small)}
    assert limited["one_by_one.png"]["error"] == ""
    assert "max_image_pixels=19,999" in limited["thin_1x20000.png"]["error"]
    big = tmp_path / "big.png"
    big.write_bytes(bomb_png(15000, 15000))  # 225 M: above Pillow's hard limit, below the one asked for
    assert cli(big, "--model", model_dir, "--output", tmp_path / "big.csv", "--num-workers", 0,
                     "--max-image-pixels", 300_000_000) == 1
    error = read_rows(tmp_path / "big.csv")[0]["error"]
    assert "truncated" in error and "DecompressionBomb" not in error  # allowed past the guard, then its data ran out
    assert PIL.Image.MAX_IMAGE_PIXELS == PIL_DEFAULT_MAX_IMAGE_PIXELS
    assert cli(big, "--model", model_dir, "--output", tmp_path / "x.csv", "--max-image-pixels", 0) == 2


def test_score_reports_empty_and_truncated_comments(model_dir, tmp_path):
    images = []
    for i in range(4):
        path = tmp_path / f"photo{i}.png"
        draw_scene(i, size=(40, 30)).save(path)
        images.append(path)
    comments = tmp_path / "comments.jsonl"
    with open(comments, "w", encoding="utf-8") as f:
        f.write(json.dumps({"image": images[0].name, "comments": "   \t "}) + "\n")
        f.write(json.dumps({"image": images[1].name, "comments": ["lovely light"] * 400}) + "\n")
        f.write(json.dumps({"image": images[2].name, "comments": "\u05d9\u05e4\u05d4 \U0001F44D sharp"}) + "\n")
    out = tmp_path / "scores.jsonl"
    assert cli(*images, "--model", model_dir, "--comments", comments, "--output", out, "--num-workers", 0) == 0
    rows = {os.path.basename(r["path"]): r for r in read_rows(out)}
    assert (rows["photo0.png"]["branch"], rows["photo0.png"]["comments_truncated"]) == ("image_only", None)
    assert (rows["photo1.png"]["branch"], rows["photo1.png"]["comments_truncated"]) == ("with_comments", True)
    assert (rows["photo2.png"]["branch"], rows["photo2.png"]["comments_truncated"]) == ("with_comments", False)
    assert (rows["photo3.png"]["branch"], rows["photo3.png"]["comments_truncated"]) == ("image_only", None)
    csv_out = tmp_path / "scores.csv"
    assert cli(images[1], "--model", model_dir, "--comments", comments, "--output", csv_out) == 0
    assert read_rows(csv_out)[0]["comments_truncated"] == "true"


def test_non_utf8_comment_and_metadata_files_name_the_row(model_dir, tmp_path, capsys):
    latin1 = "Tr\u00e8s belle lumi\u00e8re".encode("latin-1")  # b"Tr\xe8s ..." is not UTF-8
    image = tmp_path / "a.png"
    draw_scene(1, size=(40, 30)).save(image)
    bad_csv = tmp_path / "comments.csv"
    bad_csv.write_bytes(b'image,comments\na.png,"fine\nstill fine"\nb.png,' + latin1 + b"\n")
    bad_jsonl = tmp_path / "comments.jsonl"
    bad_jsonl.write_bytes(b'{"image": "a.png", "comments": "ok"}\n\n{"image": "b.png", "comments": "' + latin1
                          + b'"}\n')
    for path, where in ((bad_csv, "line 4 (data row 2)"), (bad_jsonl, "line 3")):
        out = tmp_path / f"{path.suffix[1:]}.csv"
        assert cli(image, "--model", model_dir, "--comments", path, "--output", out) == 2
        err = capsys.readouterr().err
        assert f"{path}, {where}: byte(s) b'\\xe8" in err and "not valid UTF-8" in err, err
    # the dataset loaders: a whole-file problem, so an error whatever on_error says
    data = tmp_path / "data"
    data.mkdir()
    image.rename(data / "a.png")
    (data / "metadata.csv").write_bytes(b"file_name,score,comments\na.png,5,ok\na.png,6," + latin1 + b"\n")
    for policy in ("skip", "fail"):
        with pytest.raises(TextEncodingError, match=r"metadata\.csv, line 3 \(data row 2\).*not valid UTF-8") as info:
            load_generic(data, on_error=policy)
        assert (info.value.line, info.value.row) == (3, 2)
    (data / "AVA.txt").write_text("1 a " + "1 " * 10 + "0 0 0\n", encoding="utf-8")
    (data / "ava_comments.csv").write_bytes(b"index,label,comment\na,5,good\n" + b"a,5," + latin1 + b"\n")
    with pytest.raises(ValueError, match=r"ava_comments\.csv, line 3 \(data row 2\)"):
        load_ava(data / "AVA.txt", data, image_extension=".png", comments=data / "ava_comments.csv")


SCORE_STALL_DRIVER = textwrap.dedent("""
    import os, sys, time
    from modeling_aesformer import scoring
    marker = sys.argv[1]
    original_init = scoring.ScoreFileWriter.__init__

    class HalfWrites:
        def __init__(self, file):
            self.file, self.calls = file, 0

        def write(self, text):
            self.calls += 1
            if self.calls == 3:  # the third batch: half its bytes reach the file, then the process is killed
                self.file.write(text[: len(text) // 2])
                self.file.flush()
                open(marker, "w").close()
                time.sleep(600)
            return self.file.write(text)

        def __getattr__(self, name):
            return getattr(self.file, name)

    def init(self, path):
        original_init(self, path)
        self.file = HalfWrites(self.file)

    scoring.ScoreFileWriter.__init__ = init
    from aesformer_cli.main import main
    sys.exit(main(sys.argv[2:]))
""")


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_score_killed_mid_run_resumes_without_lost_or_duplicated_rows(model_dir, hostile_dir, tmp_path, suffix):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(10):
        draw_scene(i, size=(36 + i, 30)).save(photos / f"p{i:02d}.png")
    shutil.copy(hostile_dir / "truncated.jpg", photos / "p04_broken.jpg")
    reference = tmp_path / f"reference.{suffix}"
    assert cli(photos, "--model", model_dir, "--output", reference, "--num-workers", 0) == 1
    out, marker = tmp_path / f"scores.{suffix}", tmp_path / "stalled"
    argv = ["score", str(photos), "--model", str(model_dir), "--output", str(out), "--batch-size", "3",
            "--num-workers", "0"]
    killed = subprocess.Popen([sys.executable, "-c", SCORE_STALL_DRIVER, str(marker)] + argv,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=SUBPROCESS_ENV)
    kill_when_stalled(killed, marker)
    text = out.read_text(encoding="utf-8")
    assert not text.endswith("\n")  # killed in the middle of a line
    assert cli(*argv[1:], "--resume") == 1
    rows, expected = read_rows(out), read_rows(reference)
    assert sorted(r["path"] for r in rows) == sorted(r["path"] for r in expected)  # none lost, none twice
    assert len(rows) == 11
    expected = {r["path"]: r for r in expected}
    for row in rows:
        ref = expected[row["path"]]
        assert bool(row["error"]) == bool(ref["error"]), row
        if not row["error"]:
            assert float(row["score"]) == pytest.approx(float(ref["score"]), abs=1e-5)


def test_resume_appends_to_a_csv_written_before_the_comments_truncated_column(model_dir, tmp_path):
    photos = [tmp_path / "a.png", tmp_path / "b.png"]
    for i, path in enumerate(photos):
        draw_scene(i, size=(40, 30)).save(path)
    old_fields = [f for f in scoring.FIELDS if f != "comments_truncated"]
    out = tmp_path / "old.csv"
    first = cli(photos[0], "--model", model_dir, "--output", tmp_path / "new.csv")
    assert first == 0
    row = read_rows(tmp_path / "new.csv")[0]
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old_fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerow(row)
    assert cli(*photos, "--model", model_dir, "--output", out, "--resume") == 0
    with open(out, encoding="utf-8", newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == old_fields and len(lines) == 3 and all(len(line) == len(old_fields) for line in lines)
    assert [os.path.basename(r["path"]) for r in read_rows(out)] == ["a.png", "b.png"]
