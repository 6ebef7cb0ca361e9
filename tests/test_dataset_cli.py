"""Real dataset layouts through the command line: the official AVA files (AVA.txt with its 15 columns, a .jpgl test
list, the AVA-Comments CSV), DPC-Captions-style JSON keyed "<id>.jpg", and the common mistakes (images one folder
down, comments that match nothing, an empty split, a mistyped model folder, a bad adapter name, bad rows reported
by id with counts). Every command runs in this process through `aesformer ...` (`aesformer_cli.main.main`, or the
pretrain command's own entry point `aesformer_cli.train.pretrain_main`)."""

import csv
import json
import os

import pytest

from aesformer_processing import clean_comments
from aesformer_training.comments import AmbiguousCommentKeysError, read_comments
from aesformer_training.dataset_spec import DatasetSpec
from aesformer_training.loaders import load_ava, load_generic, write_generic
from aesformer_training.reports import DatasetLoadError, ImagesNotFoundError
from aesformer_cli.main import main as aesformer
from modeling_aesformer.toy import draw_scene

from _helpers import tokenizer_for

pytestmark = pytest.mark.usefixtures("one_torch_thread")

N_IMAGES = 24
IDS = [str(953400 + i) for i in range(N_IMAGES)]
TEST_IDS = IDS[-4:]
MISSING_IDS = [str(960000 + i) for i in range(25)]  # rows of AVA.txt whose image is not in the folder
WORDS = ["lovely light", "too dark", "sharp subject", "boring composition", "great colour", "blurry"]


def ava_line(index, image_id, counts):
    # index, image id, 10 vote counts, two semantic tags, challenge id: the 15 columns of the official file
    return f"{index} {image_id} {' '.join(map(str, counts))} {index % 7} {index % 11} {1000 + index}\n"


@pytest.fixture(scope="module")
def ava(tmp_path_factory):
    """An AVA download as it comes: images in ava/images/a/ (the parent is the mistake), AVA.txt, the .jpgl test
    list, the AVA-Comments CSV and two DPC-Captions files (one per attribute) keyed "<id>.jpg"."""
    root = tmp_path_factory.mktemp("ava-layout")
    images = root / "ava" / "images" / "a"
    images.mkdir(parents=True)
    lines = []
    for i, image_id in enumerate(IDS):
        draw_scene(i, size=(40, 36)).save(images / f"{image_id}.jpg", quality=90)
        lines.append(ava_line(i + 1, image_id, [(i + j) % 6 + 1 for j in range(10)]))
    lines += [ava_line(100 + k, image_id, [1] * 10) for k, image_id in enumerate(MISSING_IDS)]
    (root / "AVA.txt").write_text("".join(lines))
    (root / "generic_test.jpgl").write_text("".join(f"{i}\n" for i in TEST_IDS))
    with open(root / "ava_comments.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "label", "comment"])
        writer.writerows([image_id, "5", f"{WORDS[i % 6]}\\n{WORDS[(i + 1) % 6]}"] for i, image_id in enumerate(IDS))
    for attribute, offset in (("color_lighting", 2), ("composition", 3)):
        mapping = {f"{image_id}.jpg": [WORDS[(i + offset) % 6], f"it\uff0as {attribute}"]
                   for i, image_id in enumerate(IDS)}
        (root / f"dpc_{attribute}.json").write_text(json.dumps(mapping, ensure_ascii=False), encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    tokenizer_for(folder).save_pretrained(folder)
    return folder


def run(capsys, *argv):
    """`aesformer ARGV` in this process: (exit status, stdout, stderr)."""
    code = aesformer([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def ava_args(root, image_dir, *extra, validation_fraction="0.3"):
    # 0.3 of the 45 non-test ids, the 25 without an image included: 3 kept validation rows (0.05 keeps none)
    fraction = ["--validation-fraction", validation_fraction] if validation_fraction else []
    return ["--data-format", "ava", "--data", root / "AVA.txt", "--image-dir", image_dir, "--test-list",
            root / "generic_test.jpgl", *fraction, *extra]


def stage1_args(root, tokenizer_dir, output, image_dir, *extra, **kwargs):
    return ["pretrain", "--preset", "tiny", "--image-size", "32", "--tokenizer", tokenizer_dir,
            *ava_args(root, image_dir, *extra, **kwargs), "--output-dir", output, "--batch-size", "8", "--epochs", "1",
            "--queue-size", "8", "--learning-rate", "1e-3"]


# ------------------------------------------------------------------------------------------- the comments format
def test_every_comments_form_matches_the_same_images(ava):
    image_dir = ava / "ava" / "images" / "a"
    forms = {
        "ava-comments csv": ava / "ava_comments.csv",
        "dpc json": ava / "dpc_composition.json",
    }
    jsonl = ava / "by_path.jsonl"
    jsonl.write_text("".join(json.dumps({"image": f"{i}.jpg", "comments": ["x", "y"]}) + "\n" for i in IDS))
    forms["jsonl by file name"] = jsonl
    by_stem = ava / "by_id.csv"
    by_stem.write_text("image_id,comment\n" + "".join(f"{i},first line\n" for i in IDS))
    forms["csv by id"] = by_stem
    for name, path in forms.items():
        data, spec = load_ava(ava / "AVA.txt", image_dir, test_list=ava / "generic_test.jpgl", comments=path)
        with_comments = {row["id"] for split in data.values() for row in split if row["comments"]}
        assert with_comments == set(IDS), name
        assert spec.report.comments["matched_keys"] == N_IMAGES, name
    # two files (DPC ships one per attribute): both attributes' comments, in file order
    data, _ = load_ava(ava / "AVA.txt", image_dir, comments=[ava / "dpc_color_lighting.json",
                                                             ava / "dpc_composition.json"])
    row = next(r for split in data.values() for r in split if r["id"] == IDS[0])
    assert row["comments"] == f"{WORDS[2]} it\uff0as color_lighting {WORDS[3]} it\uff0as composition"
    # cleaning normalises the full-width asterisk (U+FF0A) to "*" before stripping it
    assert clean_comments(row["comments"]) == f"{WORDS[2]} it s color_lighting {WORDS[3]} it s composition"
    assert clean_comments("ｇｒｅａｔ ｓｈｏｔ！") == "great shot!"


def test_keys_match_path_then_file_name_then_stem_and_ambiguous_keys_are_refused(tmp_path):
    rows = []
    for folder in ("day1", "day2"):
        for name in ("beach", "dog"):
            rows.append({"file_name": f"images/{folder}/{name}.png", "image": draw_scene(len(rows), size=(20, 20)),
                         "votes": [1, 2, 3, 4, 5, 4, 3, 2, 1, 1], "split": "train"})
    write_generic(tmp_path / "data", rows, DatasetSpec("mine", 10, (1, 10), 5.0))
    comments = tmp_path / "comments.csv"
    comments.write_text("file_name,comments\nimages/day1/beach.png,exact\nimages/day2/dog,no extension\n")
    data, spec = load_generic(tmp_path / "data", comments=comments)
    got = {row["id"]: row["comments"] for row in data["train"]}
    assert got == {"images/day1/beach.png": "exact", "images/day1/dog.png": "", "images/day2/beach.png": "",
                   "images/day2/dog.png": "no extension"}
    comments.write_text("file_name,comments\nbeach.png,which one?\ndog,this one?\nimages/day1/dog.png,fine\n")
    with pytest.raises(AmbiguousCommentKeysError) as info:
        load_generic(tmp_path / "data", comments=comments)
    message = str(info.value)
    assert "2 comment key(s) match more than one image" in message
    assert "comments.csv, line 2: 'beach.png' matches" in message and "day1/beach.png" in message
    assert "day2/beach.png" in message and "comments.csv, line 3: 'dog'" in message
    # the same rule in `aesformer score`'s reader: a file name shared by two inputs is ambiguous there too
    table = read_comments(comments)
    with pytest.raises(AmbiguousCommentKeysError):
        table.match([tmp_path / "data" / r["file_name"] for r in rows])


def test_pipeline_inputs_pair_images_with_their_comments(ava):
    from aesformer_training.comments import pipeline_inputs

    image_dir = ava / "ava" / "images" / "a"
    paths = [image_dir / f"{i}.jpg" for i in IDS[:3]] + [ava / "generic_test.jpgl"]
    inputs = pipeline_inputs(paths, [ava / "dpc_composition.json"], root=image_dir)
    assert [item["image"] for item in inputs] == [str(p) for p in paths]
    assert inputs[0]["comments"] == [WORDS[3], "it\uff0as composition"] and inputs[3]["comments"] is None


def test_bad_rows_with_fail_name_the_command_line_flag(tmp_path, capsys):
    rows = [{"file_name": f"{i}.png", "image": draw_scene(i, size=(20, 20)), "votes": [1] * 10} for i in range(3)]
    rows.append({"file_name": "3.png", "image": draw_scene(3, size=(20, 20)), "votes": [0] * 10})
    write_generic(tmp_path / "data", rows)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    code, _, err = run(capsys, "eval", "--model", model, "--data", tmp_path / "data", "--on-bad-rows", "fail")
    assert code == 2 and "id '3.png': zero_votes" in err
    assert "pass --on-bad-rows skip to drop them" in err and "on_error" not in err and "Traceback" not in err


# ---------------------------------------------------------------------------------------- the common mistakes
def test_images_one_folder_down_get_the_hint_and_nothing_is_written(ava, tokenizer_dir, tmp_path, capsys):
    parent = ava / "ava" / "images"
    out = tmp_path / "stage1"
    code, _, err = run(capsys, *stage1_args(ava, tokenizer_dir, out, parent, "--comments", ava / "ava_comments.csv"))
    assert code == 2
    expected = (f"aesformer: error: --image-dir {parent}: 0 of {N_IMAGES + len(MISSING_IDS)} images found; "
                f"expected files like {parent / IDS[0]}.jpg; found {N_IMAGES} files like "
                f"{parent / 'a' / IDS[0]}.jpg — did you mean --image-dir {parent / 'a'}?")
    assert expected in err, err
    assert "Traceback" not in err and not out.exists()
    # eval and adapt stop the same way, before loading the model or writing anything
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    results = tmp_path / "eval.json"
    code, _, err = run(capsys, "eval", "--model", model, *ava_args(ava, parent), "--output", results)
    assert code == 2 and "did you mean --image-dir" in err and not results.exists()
    code, _, err = run(capsys, "adapt", "--model", model, *ava_args(ava, parent), "--adapter-name", "ava",
                       "--output-dir", tmp_path / "stage2")
    assert code == 2 and "did you mean --image-dir" in err
    assert sorted(os.listdir(model)) == ["config.json"] and not (tmp_path / "stage2").exists()
    # the library: raised with on_error="fail", else kept in the report (and logged with it)
    with pytest.raises(ImagesNotFoundError, match="did you mean the image folder"):
        load_ava(ava / "AVA.txt", parent, on_error="fail")
    data, spec = load_ava(ava / "AVA.txt", parent)
    assert spec.report.n_kept == 0 and "did you mean" in str(spec.report.images_not_found)
    assert "did you mean" in spec.report.to_dict()["images_not_found"]


def test_unmatched_comments_stop_stage_1(ava, tokenizer_dir, tmp_path, capsys):
    comments = tmp_path / "scraped.json"
    comments.write_text(json.dumps({f"photo_{i}": "nice" for i in IDS}))
    out = tmp_path / "stage1"
    code, _, err = run(capsys, *stage1_args(ava, tokenizer_dir, out, ava / "ava" / "images" / "a",
                                            "--comments", comments))
    assert code == 2 and not out.exists()
    assert (f"aesformer: error: --comments {comments}: none of its {N_IMAGES} keys matches one of the {N_IMAGES} kept "
            f"images (keys like 'photo_{IDS[0]}', 'photo_{IDS[1]}', 'photo_{IDS[2]}'") in err, err
    # no comments at all: stage 1 says what it needs
    code, _, err = run(capsys, *stage1_args(ava, tokenizer_dir, out, ava / "ava" / "images" / "a"))
    assert code == 2 and "stage 1 trains on images with comments" in err and "--comments FILE" in err


def test_an_empty_split_stops_every_command(ava, tokenizer_dir, tmp_path, capsys):
    wrong_list = tmp_path / "other_test.jpgl"
    wrong_list.write_text("1\n2\n")
    argv = stage1_args(ava, tokenizer_dir, tmp_path / "s1", ava / "ava" / "images" / "a", "--comments",
                       ava / "ava_comments.csv")
    argv[argv.index(ava / "generic_test.jpgl")] = wrong_list
    code, _, err = run(capsys, *argv)
    assert code == 2 and not (tmp_path / "s1").exists()
    _, spec = load_ava(ava / "AVA.txt", ava / "ava" / "images" / "a", test_list=wrong_list, validation_fraction=0.3)
    sizes = spec.report.split_sizes
    assert sizes["test"] == 0 and sizes["train"] and sizes["validation"]
    assert (f"aesformer: error: the test split is empty (kept: train {sizes['train']}, validation "
            f"{sizes['validation']}, test 0); --test-list {wrong_list}: none of its ids is a kept row of --data "
            f"{ava / 'AVA.txt'}") in err, err
    # AVA's default validation fraction (0.05 of the ids, those without an image included) keeps no row here
    code, _, err = run(capsys, *stage1_args(ava, tokenizer_dir, tmp_path / "s1", ava / "ava" / "images" / "a",
                                            "--comments", ava / "ava_comments.csv", validation_fraction=None))
    assert code == 2 and not (tmp_path / "s1").exists()
    assert ("aesformer: error: the validation split is empty (kept: train 20, validation 0, test 4); the seeded "
            "validation split (the default --validation-fraction of the ids, dropped rows included) holds no kept "
            "row; raise --validation-fraction") in err, err
    # a generic dataset whose split column names no validation row
    rows = [{"file_name": f"{i}.png", "image": draw_scene(i, size=(20, 20)), "votes": [1] * 10,
             "comments": "nice", "split": "train" if i < 3 else "test"} for i in range(4)]
    write_generic(tmp_path / "mine", rows)
    code, _, err = run(capsys, "pretrain", "--preset", "tiny", "--tokenizer", tokenizer_dir, "--data",
                       tmp_path / "mine", "--output-dir", tmp_path / "s1")
    assert code == 2 and "the validation split is empty (kept: train 3, validation 0, test 1)" in err
    assert "the split column of metadata.csv puts no kept row in validation" in err
    # eval exits non-zero and writes no --output
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    code, _, err = run(capsys, "eval", "--model", model, "--data", tmp_path / "mine", "--split", "validation",
                       "--output", tmp_path / "r.json")
    assert code == 2 and "the validation split is empty" in err and not (tmp_path / "r.json").exists()


def test_model_folders_adapter_names_and_debug(ava, tmp_path, capsys):
    typo = tmp_path / "runs" / "stage1" / "modle"
    for command in (["eval", "--model", typo, *ava_args(ava, ava / "ava" / "images" / "a")],
                    ["adapt", "--model", typo, *ava_args(ava, ava / "ava" / "images" / "a"), "--output-dir",
                     tmp_path / "s2"],
                    ["score", ava / "ava" / "images" / "a", "--model", typo, "--output", tmp_path / "s.csv"]):
        code, _, err = run(capsys, *command)
        assert code == 2 and f"--model {typo}: no model folder at {typo}" in err, err
        assert "Repo id" not in err and "Traceback" not in err
    model = tmp_path / "model"
    (model / "adapters" / "ava").mkdir(parents=True)
    (model / "config.json").write_text("{}")
    base = ["adapt", "--model", model, *ava_args(ava, ava / "ava" / "images" / "a"), "--output-dir", tmp_path / "s2"]
    for name in ("a/b", "..", "base"):
        code, _, err = run(capsys, *base, "--adapter-name", name)
        assert code == 2 and f"aesformer: error: --adapter-name: adapter name {name!r} is" in err, err
    code, _, err = run(capsys, *base)  # the default name, the dataset's ("ava"), is taken
    assert code == 2 and "already has an adapter 'ava'" in err and "--overwrite" in err
    assert sorted(os.listdir(model / "adapters")) == ["ava"] and not (tmp_path / "s2").exists()
    from modeling_aesformer.adapters import check_adapter_name

    with pytest.raises(ValueError, match="letters, digits, '-' and '_'"):
        check_adapter_name("a/b")
    # --debug shows the traceback instead of the message
    from aesformer_training.stages import StageInputError

    with pytest.raises(StageInputError, match="no such folder"):
        aesformer(["--debug", "eval", "--model", str(model), "--data", str(tmp_path / "nowhere")])
    code, _, err = run(capsys, "eval", "--model", model, "--data", tmp_path / "nowhere")
    assert code == 2 and f"--data {tmp_path / 'nowhere'}: no such folder" in err


def test_score_stops_before_writing_when_nothing_can_be_scored(ava, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text("{}")
    out = tmp_path / "scores.csv"
    code, _, err = run(capsys, "score", empty, "--model", model, "--output", out)
    assert code == 2 and "nothing to score" in err and not out.exists()
    comments = tmp_path / "c.json"
    comments.write_text(json.dumps({"elsewhere.jpg": "nice"}))
    code, _, err = run(capsys, "score", ava / "ava" / "images" / "a", "--model", model, "--comments", comments,
                       "--output", out)
    assert code == 2 and f"none of its 1 keys matches an input image (keys like 'elsewhere.jpg'" in err
    assert not out.exists()


# ------------------------------------------------------------------------------------------ the happy path
def test_ava_with_dpc_comments_end_to_end(ava, tokenizer_dir, tmp_path, capsys):
    """Stage 1 with two DPC-style JSON files keyed "<id>.jpg", stage 2, eval and score with the AVA-Comments CSV;
    25 rows of AVA.txt have no image: counted, 20 listed per reason in results.json, all in the CSV beside it."""
    image_dir = ava / "ava" / "images" / "a"
    s1 = tmp_path / "s1"
    code, out, err = run(capsys, *stage1_args(ava, tokenizer_dir, s1, image_dir, "--max-steps", "2", "--comments",
                                              ava / "dpc_color_lighting.json", "--comments",
                                              ava / "dpc_composition.json"))
    assert code == 0, err
    results = json.loads((s1 / "results.json").read_text())
    report = results["dataset_report"]
    assert report["dropped_counts"] == {"missing_image": len(MISSING_IDS)}
    assert len(report["dropped"]) == 20 and report["examples_per_reason"] == 20
    assert report["all_rows_csv"] == "dataset_report.csv"
    assert report["comments"]["images_with_comments"] == N_IMAGES and report["comments"]["keys"] == 2 * N_IMAGES
    with open(s1 / "dataset_report.csv", newline="", encoding="utf-8") as f:
        listed = list(csv.DictReader(f))
    assert sorted(r["id"] for r in listed) == sorted(MISSING_IDS) and {r["reason"] for r in listed} == {
        "missing_image"}
    assert f"listed in {s1 / 'dataset_report.csv'}" in out

    model = s1 / "model"
    code, out, err = run(capsys, "adapt", "--model", model, *ava_args(ava, image_dir), "--output-dir",
                         tmp_path / "s2", "--batch-size", "8", "--max-steps", "1")
    assert code == 0, err
    assert (model / "adapters" / "ava" / "adapter_model.safetensors").is_file()
    metrics_file = tmp_path / "eval.json"
    code, out, err = run(capsys, "eval", "--model", model, "--adapter", "ava", *ava_args(ava, image_dir),
                         "--comments", ava / "ava_comments.csv", "--output", metrics_file)
    assert code == 0, err
    metrics = json.loads(metrics_file.read_text())
    assert set(metrics) == {"with_comments", "image_only", "image_only_on_with_comments_set", "protocol"}
    assert metrics["with_comments"]["n"] == metrics["image_only"]["n"] == len(TEST_IDS)
    assert metrics["image_only_on_with_comments_set"]["n"] == len(TEST_IDS)
    scores = tmp_path / "scores.csv"
    code, out, err = run(capsys, "score", image_dir, "--model", model, "--comments", ava / "ava_comments.csv",
                         "--output", scores, "--num-workers", "0", "--adapter", "ava")
    assert code == 0, err
    with open(scores, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == N_IMAGES and {r["branch"] for r in rows} == {"with_comments"}


def test_bad_rows_are_reported_by_id_with_counts_through_the_training_cli(tmp_path, caplog):
    from aesformer_cli import train as scripts

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    for i in range(3):
        draw_scene(i, size=(40, 30)).save(data / "images" / f"{i}.png")
    rows = [
        ["images/0.png", "1 2 3 4 5 4 3 2 1 1", "nice", "train"],
        ["images/1.png", "0 0 0 0 0 0 0 0 0 0", "zero", "train"],
        ["images/2.png", "1 2 -3 4 5 4 3 2 1 1", "negative", "train"],
        ["images/2.png", "1 2 x 4 5 4 3 2 1 1", "text", "train"],
        ["images/2.png", "1 2 nan 4 5 4 3 2 1 1", "nan", "train"],
        ["images/2.png", "1 2 3", "bins", "train"],
        ["images/0.png", "1 1 1 1 1 1 1 1 1 1", "nice", "test"],
        ["images/9.png", "1 1 1 1 1 1 1 1 1 1", "gone", "test"],
    ]
    with open(data / "metadata.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["file_name", "votes", "id", "split"])
        writer.writerows([[r[0], r[1], r[2], r[3]] for r in rows])
    expected = {"zero": "zero_votes", "negative": "negative_votes", "text": "non_numeric", "nan": "non_numeric",
                "bins": "wrong_bins", "nice": "duplicate_id", "gone": "missing_image"}
    tokenizer_dir = tmp_path / "tok"
    tokenizer_for(tmp_path).save_pretrained(tokenizer_dir)
    argv = ["--preset", "tiny", "--tokenizer", str(tokenizer_dir), "--data", str(data), "--output-dir",
            str(tmp_path / "out")]
    with pytest.raises(DatasetLoadError) as info:
        scripts.pretrain_main(argv + ["--on-bad-rows", "fail"])
    message = str(info.value)
    assert "7 row(s)" in message and all(f"id {i!r}: {r}" in message for i, r in expected.items())
    assert not (tmp_path / "out").exists()
    caplog.clear()
    _, spec = load_generic(data, on_error="skip")
    report = spec.report
    assert {i.id: i.reason for i in report.dropped} == expected and report.n_kept == 1
    assert report.counts() == {"zero_votes": 1, "negative_votes": 1, "non_numeric": 2, "wrong_bins": 1,
                               "duplicate_id": 1, "missing_image": 1}
    assert report.total_rows == report.n_kept + report.n_dropped == 8
    assert any(rec.levelname == "WARNING" and "7 dropped" in rec.getMessage() for rec in caplog.records)
