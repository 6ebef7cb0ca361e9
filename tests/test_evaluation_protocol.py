"""`aesformer eval` as a paper needs it, on AVA-format data built here (AVA.txt with its 15 columns, the official
generic_test.jpgl / generic_ls_train.jpgl lists, the AVA-Comments CSV, images in two folders): exact by default
(fp32, full decode) and recorded, per-image predictions beside the results, the protocol in results.json, warnings
on degenerate predictions, the official split lists, several image folders, an adapter on the data's scale."""

import csv
import json

import numpy as np
import pytest

from aesformer_cli.main import main as aesformer
from modeling_aesformer.toy import draw_scene

from _helpers import tiny_model_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IDS = [str(700100 + i) for i in range(30)]
TEST_IDS, TRAIN_IDS, UNLISTED_IDS = IDS[:10], IDS[10:28], IDS[28:]
WITH_COMMENTS = [i for k, i in enumerate(IDS) if k % 3 != 2]


def votes(k):
    """Vote counts whose mean moves from about 3 to 8 with k (both sides of AVA's threshold 5)."""
    centre = 2 + (k * 7) % 30 / 5
    return [int(40 * np.exp(-((j + 1 - centre) ** 2) / 4)) + 1 for j in range(10)]


@pytest.fixture(scope="module")
def ava(tmp_path_factory):
    root = tmp_path_factory.mktemp("ava")
    tiny_model_folder(root / "model", adapters_scale=0.2)  # adapters "ava" (10 bins) and "photonet" (7 bins)
    for k, image_id in enumerate(IDS):  # an AVA mirror: the images in two folders
        folder = root / "images" / ("a" if k % 2 == 0 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        draw_scene(k, size=(80, 72)).save(folder / f"{image_id}.jpg", quality=90)  # > 2x the input: draft-able
    (root / "AVA.txt").write_text("".join(f"{k + 1} {i} {' '.join(map(str, votes(k)))} 0 0 1000\n"
                                          for k, i in enumerate(IDS)))
    (root / "generic_test.jpgl").write_text("".join(f"{i}\n" for i in TEST_IDS))
    (root / "generic_ls_train.jpgl").write_text("".join(f"{i}\n" for i in TRAIN_IDS))
    with open(root / "comments.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["index", "label", "comment"])
        writer.writerows([i, "5", "lovely light"] for i in WITH_COMMENTS)
    return root


def run(capsys, *argv):
    code = aesformer([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def data_args(root, *extra):
    return ["--data-format", "ava", "--data", root / "AVA.txt", "--image-dir", root / "images" / "a",
            "--image-dir", root / "images" / "b", "--test-list", root / "generic_test.jpgl", "--train-list",
            root / "generic_ls_train.jpgl", "--comments", root / "comments.csv", "--validation-fraction", "0.2",
            *extra]


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def evaluated(ava, tmp_path_factory):
    """One default eval run into a folder that does not exist yet: (printed output, results, output path)."""
    output = tmp_path_factory.mktemp("runs") / "new" / "eval.json"
    code = aesformer([str(a) for a in ["eval", "--model", ava / "model", "--adapter", "ava", *data_args(ava),
                                       "--output", output]])
    assert code == 0
    return json.loads(output.read_text()), output


def test_eval_is_exact_by_default_and_says_so(ava, evaluated, tmp_path, capsys):
    results, output = evaluated
    protocol = results["protocol"]
    assert protocol["precision"]["dtype"] == "float32" and protocol["decode"] == "full"
    # the same numbers as `aesformer score` with its exact settings: one path from image to score
    scores = tmp_path / "scores.csv"
    code, out, _ = run(capsys, "score", ava / "images" / "a", ava / "images" / "b", "--model", ava / "model",
                       "--adapter", "ava", "--full-decode", "--dtype", "fp32", "--output", scores)
    assert code == 0 and "decode: full" in out
    by_path = {row["path"]: float(row["score"]) for row in read_csv(scores)}
    image_only = [row for row in read_csv(output.with_suffix(".predictions.csv")) if row["branch"] == "image_only"]
    assert len(image_only) == len(TEST_IDS)
    for row in image_only:
        assert float(row["score"]) == pytest.approx(by_path[row["path"]], abs=1e-5)
    # asked for: bf16 weights and the reduced decode, recorded as such
    fast = tmp_path / "fast.json"
    code, out, _ = run(capsys, "eval", "--model", ava / "model", "--adapter", "ava", *data_args(ava), "--dtype",
                       "bf16", "--fast-decode", "--output", fast)
    assert code == 0 and "precision: bf16" in out and "decode: reduced" in out
    recorded = json.loads(fast.read_text())["protocol"]
    assert recorded["precision"]["dtype"] == "bfloat16" and recorded["decode"].startswith("reduced")
    # `score` keeps its fast default, and says so
    code, out, _ = run(capsys, "score", ava / "images" / "a", "--model", ava / "model", "--output",
                       tmp_path / "quick.csv")
    assert code == 0 and "decode: reduced" in out and "precision:" in out


def test_per_image_predictions_beside_the_results(ava, evaluated, tmp_path, capsys):
    from scipy import stats

    results, output = evaluated
    rows = read_csv(output.with_suffix(".predictions.csv"))
    assert results["protocol"]["predictions"] == str(output.with_suffix(".predictions.csv"))
    assert list(rows[0])[:11] == ["id", "branch", "adapter", "trained", "has_comments", "true_score", "score", "std",
                                  "threshold", "label", "true_label"]
    test_with_comments = [i for i in TEST_IDS if i in WITH_COMMENTS]
    pairs = sorted((row["branch"], row["id"]) for row in rows)
    assert pairs == sorted([("with_comments", i) for i in test_with_comments]
                           + [("image_only", i) for i in TEST_IDS])  # one row per image and branch
    for branch in ("with_comments", "image_only"):
        mine = [row for row in rows if row["branch"] == branch]
        assert len(mine) == results[branch]["n"]
        srcc = stats.spearmanr([float(r["score"]) for r in mine], [float(r["true_score"]) for r in mine])[0]
        assert srcc == pytest.approx(results[branch]["srcc"], abs=1e-6)
        assert {r["threshold"] for r in mine} == {"5.0"}
        assert all(len(json.loads(r["distribution"])) == 10 for r in mine)
    assert {r["adapter"] for r in rows if r["branch"] == "image_only"} == {"ava"}
    # --predictions moves the file; its folder is made
    moved = tmp_path / "elsewhere" / "preds.csv"
    code, out, _ = run(capsys, "eval", "--model", ava / "model", "--adapter", "ava", *data_args(ava),
                       "--predictions", moved)
    assert code == 0 and len(read_csv(moved)) == len(rows)


def test_the_protocol_is_in_the_results_and_the_table(ava, evaluated, tmp_path, capsys):
    results, output = evaluated
    protocol = results["protocol"]
    test_with_comments = [i for i in TEST_IDS if i in WITH_COMMENTS]
    assert results["with_comments"]["n"] == len(test_with_comments) and results["image_only"]["n"] == len(TEST_IDS)
    paired = results["image_only_on_with_comments_set"]
    assert paired["n"] == len(test_with_comments) and paired["adapter"] == "ava"
    assert paired["srcc"] != results["image_only"]["srcc"]
    truth = {i: float(np.asarray(votes(k)) @ np.arange(1, 11) / sum(votes(k))) for k, i in enumerate(IDS)}
    for branch, ids in (("with_comments", test_with_comments), ("image_only", TEST_IDS)):
        metrics = results[branch]
        share = np.mean([truth[i] > 5.0 for i in ids])
        assert metrics["majority_baseline_accuracy"] == pytest.approx(max(share, 1 - share))
        assert metrics["threshold"] == 5.0 and metrics["num_bins"] == 10 and metrics["score_range"] == [1.0, 10.0]
    assert protocol["thresholds"] == {"with_comments": 5.0, "image_only": 5.0,
                                      "image_only_on_with_comments_set": 5.0}
    assert protocol["data"]["image_dir"] == [str(ava / "images" / "a"), str(ava / "images" / "b")]
    assert protocol["data"]["train_list"] == str(ava / "generic_ls_train.jpgl")
    assert protocol["data"]["comments"] == [str(ava / "comments.csv")]
    assert protocol["seed"] == 42 and "generic_test.jpgl" in protocol["split_rule"]
    assert "generic_ls_train.jpgl" in protocol["split_rule"] and "default_rng(42)" in protocol["split_rule"]
    assert protocol["split_sizes"]["test"] == len(TEST_IDS)
    assert sum(protocol["split_sizes"].values()) == len(TEST_IDS) + len(TRAIN_IDS)
    assert protocol["scale"] == {"num_bins": 10, "score_range": [1.0, 10.0], "threshold": 5.0}
    report = output.with_suffix(".dataset_report.csv")  # written even when no row was dropped
    assert report.is_file() and read_csv(report) == []
    # the printed table: n, the majority baseline and the threshold on every metric line
    code, out, _ = run(capsys, "eval", "--model", ava / "model", "--adapter", "ava", *data_args(ava))
    assert code == 0
    header = next(line for line in out.splitlines() if "accuracy" in line).split()
    assert header[:4] == ["n", "accuracy", "majority", "threshold"]
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("with_", "image_"))}
    assert lines["with_comments"][1] == str(len(test_with_comments))
    assert lines["image_only_on_with_comments_set"][1] == str(len(test_with_comments))
    assert lines["image_only"][1] == str(len(TEST_IDS))


def test_degenerate_predictions_are_warned_about(ava, evaluated, capsys):
    results, _ = evaluated
    # the random tiny model's with-comments heads answer near-uniform distributions: scores within hundredths
    assert any(w.startswith("with_comments: the predicted scores hardly vary") for w in results["protocol"]["warnings"])
    code, _, err = run(capsys, "eval", "--model", ava / "model", "--adapter", "ava", *data_args(ava))
    assert code == 0 and "warning: degenerate predictions: with_comments" in err


def test_official_lists_and_several_image_folders(ava, tmp_path, capsys):
    from aesformer_training.loaders import load_ava

    data, spec = load_ava(ava / "AVA.txt", [ava / "images" / "a", ava / "images" / "b"],
                          test_list=ava / "generic_test.jpgl", train_list=ava / "generic_ls_train.jpgl",
                          validation_fraction=0.2)
    assert sorted(data["test"]["id"]) == TEST_IDS  # found across both folders
    assert sorted(list(data["train"]["id"]) + list(data["validation"]["id"])) == TRAIN_IDS
    assert any("2 id(s) of AVA.txt are in neither" in note for note in spec.report.notes)
    # without --train-list every other id is train (the unlisted ones too)
    data, _ = load_ava(ava / "AVA.txt", [ava / "images" / "a", ava / "images" / "b"],
                       test_list=ava / "generic_test.jpgl", validation_fraction=0.2)
    assert sorted(list(data["train"]["id"]) + list(data["validation"]["id"])) == TRAIN_IDS + UNLISTED_IDS
    # an id in two folders: an error naming both files
    twice = tmp_path / "c"
    twice.mkdir()
    (twice / f"{IDS[0]}.jpg").write_bytes((ava / "images" / "a" / f"{IDS[0]}.jpg").read_bytes())
    code, _, err = run(capsys, "eval", "--model", ava / "model", *data_args(ava, "--image-dir", twice))
    assert code == 2
    assert str(ava / "images" / "a" / f"{IDS[0]}.jpg") in err and str(twice / f"{IDS[0]}.jpg") in err
    # the parent folder: the hint names every sub-folder holding images
    code, _, err = run(capsys, "eval", "--model", ava / "model", "--data-format", "ava", "--data", ava / "AVA.txt",
                       "--image-dir", ava / "images", "--test-list", ava / "generic_test.jpgl")
    assert code == 2 and f"{ava / 'images' / 'a'} (15)" in err and f"{ava / 'images' / 'b'} (15)" in err
    assert "give --image-dir once for each" in err


def test_generic_format_takes_the_split_lists(tmp_path):
    from aesformer_training.loaders import load_generic, write_generic

    rows = [{"file_name": f"{k}.png", "image": draw_scene(k, size=(20, 20)), "votes": votes(k)} for k in range(12)]
    write_generic(tmp_path / "data", rows)
    (tmp_path / "test.txt").write_text("0\n1\n2\n")
    (tmp_path / "train.txt").write_text("".join(f"{k}.png\n" for k in range(3, 11)))
    data, spec = load_generic(tmp_path / "data", test_list=tmp_path / "test.txt", train_list=tmp_path / "train.txt")
    assert sorted(data["test"]["id"]) == ["0.png", "1.png", "2.png"]
    assert sorted(list(data["train"]["id"]) + list(data["validation"]["id"])) == sorted(f"{k}.png" for k in range(3, 11))
    assert "test.txt" in spec.report.split_rule and "11.png" in " ".join(spec.report.notes)


def test_eval_picks_the_adapter_on_the_datas_scale(ava, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(ava / "model", model)
    assert aesformer(["set-default", str(model), "photonet"]) == 0  # 7 bins: not AVA's scale
    capsys.readouterr()
    output = tmp_path / "eval.json"
    code, out, err = run(capsys, "eval", "--model", model, *data_args(ava), "--output", output)
    assert code == 0, err
    assert "evaluating with adapter 'ava'" in out and f"aesformer set-default {model} ava" in out
    assert json.loads(output.read_text())["image_only"]["adapter"] == "ava"
    # asked for by name on another scale: a message naming the flag, before anything is written
    other = tmp_path / "other.json"
    code, _, err = run(capsys, "eval", "--model", model, "--adapter", "photonet", *data_args(ava), "--output", other)
    assert code == 2 and "--adapter NAME" in err and "'ava' (10 bins, 1..10)" in err and not other.exists()


def test_training_records_its_protocol(ava, tmp_path, capsys):
    from _helpers import tokenizer_for

    tokenizer = tmp_path / "tokenizer"
    tokenizer.mkdir()
    tokenizer_for(tokenizer).save_pretrained(tokenizer)
    run1 = tmp_path / "stage1"
    code, out, err = run(capsys, "pretrain", "--preset", "tiny", "--image-size", "32", "--tokenizer", tokenizer,
                         *data_args(ava), "--output-dir", run1, "--batch-size", "4", "--epochs", "1", "--max-steps",
                         "1", "--queue-size", "8")
    assert code == 0, err
    assert "; test n=" in out  # n printed with the test metrics
    results = json.loads((run1 / "results.json").read_text())
    protocol = results["protocol"]
    assert protocol["evaluation"]["dtype"] == "float32" and protocol["evaluation"]["decode"] == "full"
    assert protocol["data"]["train_list"] == str(ava / "generic_ls_train.jpgl")
    assert "generic_test.jpgl" in protocol["split_rule"] and protocol["seed"] == 42
    assert protocol["split_sizes"]["test"] == len(TEST_IDS) and protocol["scale"]["threshold"] == 5.0
    assert (run1 / "dataset_report.csv").is_file()  # always, even with no row dropped
    assert results["test"]["threshold"] == 5.0 and 0.5 <= results["test"]["majority_baseline_accuracy"] <= 1
    assert results["dataset_report"]["split_rule"] == protocol["split_rule"]
    run2 = tmp_path / "stage2"
    code, out, err = run(capsys, "adapt", "--model", run1 / "model", *data_args(ava), "--output-dir", run2,
                         "--batch-size", "4", "--max-steps", "1")
    assert code == 0, err
    adapted = json.loads((run1 / "model" / "adapters" / "ava" / "results.json").read_text())
    assert adapted["protocol"]["data"]["image_dir"] == [str(ava / "images" / "a"), str(ava / "images" / "b")]
    assert (run2 / "dataset_report.csv").is_file()
