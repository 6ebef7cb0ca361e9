"""Issue 26: nothing lost, nothing silently wrong. Each case is run through the command line with the fault
injected; each failed (exit 0 with data lost or wrong) before the fix.

1. Finished training output is never replaced without --overwrite; a resume continues only its own run.
2. A shard or file changed between runs is scored again on --resume, its old rows replaced.
3. A Parquet file with a damaged row group loses only that row group, reported with its row count.
"""

import json
import os
from pathlib import Path

import pytest

from aesformer_cli.main import main as cli_main
from aesformer_training.dataset_spec import DatasetSpec
from aesformer_training.loaders import write_generic

from _helpers import tokenizer_for, toy_training_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(capsys, *argv):
    code = cli_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------------------------------- 1. training output
@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    write_generic(root / "data", toy_training_rows(), DatasetSpec("toy", 10, (1, 10), 5.0))
    (root / "vocab").mkdir()
    tokenizer_for(root / "vocab").save_pretrained(root / "tok")
    return root


def stage1(toy, output, *extra):
    return ["pretrain", "--preset", "tiny", "--tokenizer", toy / "tok", "--data", toy / "data", "--batch-size", "8",
            "--epochs", "1", "--seed", "3", "--queue-size", "8", "--output-dir", output, *extra]


def stage2(toy, model, output, *extra):
    return ["adapt", "--model", model, "--data", toy / "data", "--batch-size", "8", "--epochs", "1", "--seed", "3",
            "--adapter-name", "toy", "--output-dir", output, *extra]


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def test_a_finished_run_is_never_replaced_without_overwrite(toy, tmp_path, capsys):
    out = tmp_path / "s1"
    assert run(capsys, *stage1(toy, out))[0] == 0
    assert run(capsys, *stage2(toy, out / "model", tmp_path / "s2"))[0] == 0
    before = snapshot(tmp_path)
    # pretrain again into the finished folder: refused, nothing touched (the adapter "toy" stays)
    code, _, err = run(capsys, *stage1(toy, out))
    assert code == 2, err
    assert "--overwrite" in err and str(out) in err and "adapter" in err and "toy" in err
    # adapt again into its finished output folder (the adapter name is free: another name)
    code, _, err = run(capsys, *stage2(toy, out / "model", tmp_path / "s2")[:-4], "--adapter-name", "other",
                       "--output-dir", tmp_path / "s2")
    assert code == 2 and "--output-dir" in err and "results.json" in err and "--overwrite" in err, err
    assert snapshot(tmp_path) == before

    # --overwrite: says what it replaces (the model and the adapters trained on it), the old checkpoints go
    old_steps = sorted(p.name for p in (out / "checkpoints").glob("step_*"))
    code, stdout, err = run(capsys, *stage1(toy, out, "--overwrite", "--seed", "4"))
    assert code == 0, err
    assert "replaced the model in" in stdout and "adapter trained on it (toy)" in stdout, stdout
    assert not (out / "model" / "adapters").exists()
    record = json.loads((out / "checkpoints" / old_steps[-1] / "run.json").read_text())
    assert record["stage"] == "pretrain" and record["output_dir"] == os.path.realpath(out)


def test_resume_continues_only_its_own_run(toy, tmp_path, capsys):
    out = tmp_path / "s1"
    assert run(capsys, *stage1(toy, out))[0] == 0
    # stage 2 killed after its adapter was saved: its checkpoints and adapter exist, results.json does not yet
    s2 = tmp_path / "s2"
    assert run(capsys, *stage2(toy, out / "model", s2))[0] == 0
    (s2 / "results.json").unlink()
    code, stdout, err = run(capsys, *stage2(toy, out / "model", s2, "--resume-from-checkpoint", "latest"))
    assert code == 0, err  # before: refused ("pass --overwrite")
    assert "continued the run of checkpoint" in stdout and (s2 / "results.json").is_file()
    # `latest` in a folder of another run (stage 1's checkpoints) is refused, naming it
    code, _, err = run(capsys, *stage2(toy, out / "model", out, "--resume-from-checkpoint", "latest"))
    assert code == 2 and "belongs to another run" in err and "stage 'pretrain'" in err, err
    # another adapter's checkpoints
    code, _, err = run(capsys, *stage2(toy, out / "model", s2, "--resume-from-checkpoint", "latest")[:-6],
                       "--adapter-name", "other", "--output-dir", s2, "--resume-from-checkpoint", "latest")
    assert code == 2 and "adapter 'toy'" in err, err


# ------------------------------------------------------------------------------------------------- 2. resume
def _png(seed):
    import io

    from modeling_aesformer.toy import draw_scene

    buffer = io.BytesIO()
    draw_scene(seed, size=(40, 36)).save(buffer, format="PNG")
    return buffer.getvalue()


def write_tar(path, keys, members=None):
    import io
    import tarfile

    with tarfile.open(path, "w") as archive:
        for i, key in enumerate(keys):
            for name, data in (members or {}).get(key, [(f"{key}.png", _png(i))]):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from _helpers import tiny_model_folder

    return tiny_model_folder(tmp_path_factory.mktemp("model") / "model")


def test_a_shard_changed_between_runs_is_scored_again_on_resume(model_dir, tmp_path, capsys):
    from _helpers import read_rows

    shards = tmp_path / "shards"
    shards.mkdir()
    write_tar(shards / "shard-000.tar", ["old-a", "old-b"])
    write_tar(shards / "shard-001.tar", ["kept"])
    out = tmp_path / "scores.csv"
    argv = ["score", shards / "shard-*.tar", "--model", model_dir, "--output", out, "--batch-size", "2"]
    assert run(capsys, *argv)[0] == 0
    # shard-000.tar replaced by new images (another size and modification time)
    write_tar(shards / "shard-000.tar", ["new-a", "new-b", "new-c"])
    code, stdout, err = run(capsys, *argv, "--resume")
    assert code == 0, err
    assert "1 finished earlier" in stdout and "shard-000.tar changed since it was scored" in stdout, stdout
    assert "its 2 earlier rows replaced" in stdout
    keys = sorted(row["key"] for row in read_rows(out))
    assert keys == ["kept", "new-a", "new-b", "new-c"]  # before: old-a, old-b and kept ("2 finished earlier")


# ------------------------------------------------------------------------------------------------ 3. Parquet
def damage_row_group(path, group, column=1):
    """Overwrite the pages of one column chunk of row group `group` with garbage (the footer stays readable)."""
    import pyarrow.parquet as pq

    chunk = pq.ParquetFile(path).metadata.row_group(group).column(column)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    data = bytearray(Path(path).read_bytes())
    data[start: start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    Path(path).write_bytes(bytes(data))


def test_a_damaged_parquet_row_group_costs_only_its_rows(model_dir, tmp_path, capsys):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from _helpers import read_rows

    path = tmp_path / "table.parquet"
    rows = [{"id": f"k{i:02d}", "image": _png(i)} for i in range(40)]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=10)
    damage_row_group(path, 2)  # the image column of rows 20-29
    out = tmp_path / "scores.csv"
    code, stdout, err = run(capsys, "score", path, "--model", model_dir, "--output", out, "--batch-size", "8")
    assert code == 1, err
    written = read_rows(out)
    assert len(written) == 40  # before: 1 error row with an empty key, the 30 readable rows gone
    scored = sorted(r["key"] for r in written if not r["error"])
    lost = sorted(r["key"] for r in written if r["error"])
    assert scored == [f"k{i:02d}" for i in range(40) if not 20 <= i < 30]
    assert lost == [f"k{i:02d}" for i in range(20, 30)]  # named by key: the key column is readable
    assert all("row group 2" in r["error"] and "10 rows per the footer" in r["error"] for r in written if r["error"])
    assert "lost Parquet row group 10" in stdout, stdout
    marker = json.loads(next((tmp_path / "scores.csv.parts").glob("*.done.json")).read_text())
    assert marker["lost_rows"] == 10 and marker["errors"] == {"lost Parquet row group": 10}


def test_a_file_changed_between_runs_is_scored_again_on_resume(model_dir, tmp_path, capsys):
    from _helpers import read_rows
    from modeling_aesformer.toy import draw_scene

    images = tmp_path / "images"
    images.mkdir()
    for i, name in enumerate(("a.png", "b.png")):
        draw_scene(i, size=(40, 36)).save(images / name)
    for out in (tmp_path / "scores.csv", tmp_path / "scores.jsonl"):
        argv = ["score", images, "--model", model_dir, "--output", out, "--adapter", "base"]
        assert run(capsys, *argv)[0] == 0
        before = {Path(r["path"]).name: r["score"] for r in read_rows(out)}
        draw_scene(7, size=(48, 30)).save(images / "b.png")  # replaced by another photo
        code, stdout, err = run(capsys, *argv, "--resume")
        assert code == 0, err
        assert "1 file(s) changed since they were scored" in stdout and "1 earlier row(s) replaced" in stdout, stdout
        rows = read_rows(out)
        assert sorted(Path(r["path"]).name for r in rows) == ["a.png", "b.png"]  # one row each
        after = {Path(r["path"]).name: r["score"] for r in rows}
        assert after["a.png"] == before["a.png"] and after["b.png"] != before["b.png"]  # before: the old score
        fresh = tmp_path / f"fresh-{out.name}"
        assert run(capsys, "score", images / "b.png", "--model", model_dir, "--output", fresh, "--adapter",
                   "base")[0] == 0
        assert after["b.png"] == read_rows(fresh)[0]["score"]
        draw_scene(0, size=(40, 36)).save(images / "b.png")  # back for the next format (a new mtime)


# ------------------------------------------------------------------------------------ 4. and 7. archive members
def _padded_png(size_bytes):
    """A valid 20x20 PNG (400 pixels) padded with a text chunk to `size_bytes`: few pixels, many bytes."""
    import io
    import zlib

    from modeling_aesformer.toy import draw_scene

    buffer = io.BytesIO()
    draw_scene(1, size=(20, 20)).save(buffer, format="PNG")
    data = buffer.getvalue()
    body = b"tEXt" + b"pad\0" + b"x" * max(0, size_bytes - len(data) - 16)
    chunk = len(body[4:]).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")
    return data[:33] + chunk + data[33:]  # after the IHDR chunk


def test_an_archive_member_above_the_limit_is_refused_unread(model_dir, tmp_path, capsys):
    from _helpers import read_rows

    shard = tmp_path / "shard.tar.gz"
    big = _padded_png(20_000)
    write_tar(shard, ["small", "big"], {"small": [("small.png", _png(3))], "big": [("big.png", big)]})
    out = tmp_path / "scores.csv"
    # 3 bytes per pixel of the pixel limit: 5,000 pixels admit members up to 15,000 bytes; the 20x20 PNG of
    # 20,000 bytes has few pixels (the pixel check alone passes it) but too many bytes
    code, stdout, err = run(capsys, "score", shard, "--model", model_dir, "--output", out, "--max-image-pixels",
                            "5000")
    assert code == 1, err  # before: 0, the member read whole and scored
    rows = {r["key"]: r for r in read_rows(out)}
    assert rows["small"]["score"] and not rows["small"]["error"]
    assert "member big.png holds 20,000 bytes, more than the 15,000" in rows["big"]["error"], rows["big"]
    assert "member too large 1" in stdout, stdout


def test_a_truncated_member_is_reported_as_truncated(model_dir, tmp_path, capsys):
    from _helpers import read_rows

    shard = tmp_path / "shard.tar"
    write_tar(shard, ["a", "b"])
    data = shard.read_bytes()
    cut = data.index(b"b.png") + 512 + 100  # 100 bytes into b.png's data
    shard.write_bytes(data[:cut])
    out = tmp_path / "scores.csv"
    code, stdout, err = run(capsys, "score", shard, "--model", model_dir, "--output", out)
    assert code == 1, err
    rows = {r["key"]: r for r in read_rows(out)}
    assert not rows["a"]["error"]
    # before: "no image member for key 'b' ... (members: png)"
    assert "member b.png is truncated" in rows["b"]["error"] and "no image member" not in rows["b"]["error"]


# ------------------------------------------------------------------------------------------- 5. strict loading
@pytest.mark.parametrize("field, value, expected", [
    ("text_config.num_hidden_layers", 1, "weights the model does not use (e.g. text_model.encoder.layer.1."),
    ("num_fusion_layers", 3, "weights the model needs that they lack (e.g. fusion_layers.2."),
    ("text_config.intermediate_size", 96, "config field text_config.intermediate_size = 96 (the weights have 128)"),
])
def test_a_config_that_disagrees_with_the_weights_is_refused_naming_the_file(model_dir, tmp_path, capsys, field,
                                                                              value, expected):
    import shutil

    from modeling_aesformer.toy import draw_scene

    folder = tmp_path / "model"
    shutil.copytree(model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    *parents, name = field.split(".")
    target = config
    for parent in parents:
        target = target[parent]
    target[name] = value
    (folder / "config.json").write_text(json.dumps(config))
    draw_scene(1, size=(40, 36)).save(tmp_path / "a.png")
    out = tmp_path / "scores.csv"
    code, _, err = run(capsys, "score", tmp_path / "a.png", "--model", folder, "--output", out)
    assert code == 2, err  # before: 0 with unused or fresh random weights, or a message naming neither
    assert "model.safetensors" in err and expected in err, err
    assert not out.exists()


# ------------------------------------------------------------------------------------------ 8. the page's files
def test_the_page_removes_its_temporary_files(model_dir, tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from gradio_client import Client, handle_file

    from _helpers import free_port
    from aesformer_cli import serve as app_module
    from modeling_aesformer.toy import draw_scene

    cache = tmp_path / "gradio-cache"
    monkeypatch.setenv("GRADIO_TEMP_DIR", str(cache))
    photo = tmp_path / "photo.png"
    draw_scene(3, size=(48, 40)).save(photo)
    page, url = app_module.serve(model_dir, port=free_port(), block=False, log=lambda *a: None)
    try:
        client = Client(url, verbose=False)
        for _ in range(3):
            client.predict(image=handle_file(str(photo)), comments="", adapter="base", api_name="/score")
        copies = [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size]
        assert [p.name for p in copies] == ["photo.png"]  # the upload was copied into the cache (once: by content)
    finally:
        page.close()
    # before: every upload stayed after shutdown. (gradio's upload parser also leaves an empty tmp* file per
    # upload in the folder's root, which its cache settings do not track: empty, so not counted here)
    left = [p for p in cache.rglob("*") if p.is_file() and p.stat().st_size]
    assert not left, left


def test_duplicate_keys_across_shards_are_counted_and_reported(model_dir, tmp_path, capsys):
    from _helpers import read_rows

    shards = tmp_path / "shards"
    shards.mkdir()
    write_tar(shards / "a.tar", ["k1", "k2", "k3"])
    write_tar(shards / "b.tar", ["k2", "k3", "k4"])
    out = tmp_path / "scores.csv"
    code, stdout, err = run(capsys, "score", shards / "*.tar", "--model", model_dir, "--output", out)
    assert code == 0, err
    # before: not a word
    assert "2 keys appear in more than one shard" in stdout and "'k2' in " in stdout, stdout
    rows = read_rows(out)
    assert sorted((r["key"], Path(r["shard"]).name) for r in rows if r["key"] in ("k2", "k3")) == [
        ("k2", "a.tar"), ("k2", "b.tar"), ("k3", "a.tar"), ("k3", "b.tar")]  # both rows kept


# ------------------------------------------------------------------------------------------- 6. comment text
def test_comment_markup_is_cleaned_and_markup_alone_is_no_comment(model_dir, tmp_path, capsys):
    import csv

    from _helpers import read_rows
    from modeling_aesformer.toy import draw_scene

    for i, name in enumerate(("a.png", "b.png")):
        draw_scene(i, size=(40, 36)).save(tmp_path / name)

    def comments_file(name, rows):
        with open(tmp_path / name, "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["index", "label", "comment"])  # the AVA-Comments layout
            writer.writerows(rows)
        return tmp_path / name

    scraped = comments_file("scraped.csv", [["a", "0", "Great &quot;moody&quot; light[br]Sharp &amp; clean &#39;ok&#39;"],
                                            ["b", "0", "[br]<br />\\n"]])
    plain = comments_file("plain.csv", [["a", "0", "Great \"moody\" light. Sharp & clean 'ok'"]])
    images = [tmp_path / "a.png", tmp_path / "b.png"]
    code, stdout, err = run(capsys, "score", *images, "--model", model_dir, "--output", tmp_path / "s.csv",
                            "--comments", scraped)
    assert code == 0, err
    assert "1 of 2 images have comments" in stdout, stdout  # before: 2 of 2 (b's markup counted as comments)
    rows = {Path(r["path"]).name: r for r in read_rows(tmp_path / "s.csv")}
    assert rows["b.png"]["branch"] == "image_only"
    assert run(capsys, "score", images[0], "--model", model_dir, "--output", tmp_path / "p.csv", "--comments",
               plain)[0] == 0
    clean = read_rows(tmp_path / "p.csv")[0]
    # the text encoder read the same words: the markup was cleaned to the plain text
    assert rows["a.png"]["branch"] == clean["branch"] == "with_comments"
    assert float(rows["a.png"]["score"]) == pytest.approx(float(clean["score"]), abs=1e-5)


def test_a_comments_file_matching_no_image_stops_the_run_even_beside_another(model_dir, tmp_path, capsys):
    from modeling_aesformer.toy import draw_scene

    draw_scene(1, size=(40, 36)).save(tmp_path / "a.png")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"id": "a", "comments": "lovely light"}) + "\n")
    stray = tmp_path / "stray.jsonl"
    stray.write_text(json.dumps({"id": "zzz", "comments": "too dark"}) + "\n")
    out = tmp_path / "s.csv"
    code, _, err = run(capsys, "score", tmp_path / "a.png", "--model", model_dir, "--output", out,
                       "--comments", good, "--comments", stray)
    assert code == 2, err  # before: 0, with a note
    assert str(stray) in err and "none of its 1 keys matches" in err and not out.exists(), err


def test_comment_markup_is_one_rule_for_the_pipeline_and_eval(model_dir, tmp_path, capsys):
    """The markup rule lives in the processor's cleaning, so the pipeline (and the page, which calls it) and `eval`
    on a metadata.csv dataset treat markup as `--comments` files do: the same words, and markup alone is no
    comment (before: the pipeline sent "[br]" to the with-comments branch as the word "br", and eval counted such
    rows as having comments)."""
    from transformers import pipeline

    from modeling_aesformer.toy import draw_scene

    scorer = pipeline("image-aesthetics", model=str(model_dir))
    image = draw_scene(1, size=(40, 36))
    scraped = scorer({"image": image, "comments": "Great &quot;moody&quot; light[br]Sharp &amp; clean"})
    plain = scorer({"image": image, "comments": 'Great "moody" light. Sharp & clean'})
    assert scraped["branch"] == plain["branch"] == "with_comments"
    assert scraped["score"] == pytest.approx(plain["score"], abs=1e-5)
    assert scorer({"image": image, "comments": "[br]<br />&nbsp;"})["branch"] == "image_only"

    rows = toy_training_rows()
    markup_only = [i for i, row in enumerate(rows) if row["split"] == "test" and row["comments"]][0]
    rows[markup_only]["comments"] = ["[br]", "<p></p>"]
    write_generic(tmp_path / "data", rows, DatasetSpec("toy", 10, (1, 10), 5.0))
    code, _, err = run(capsys, "eval", "--model", model_dir, "--data", tmp_path / "data", "--output",
                       tmp_path / "eval" / "results.json")
    assert code == 0, err
    import csv

    with open(tmp_path / "eval" / "results.predictions.csv", newline="", encoding="utf-8") as f:
        predictions = list(csv.DictReader(f))
    name = f"{markup_only:03d}"
    mine = [row for row in predictions if name in row["id"] or name in row.get("path", "")]
    assert mine and all(row["has_comments"] in ("False", "false", "0") for row in mine), mine
    assert not [row for row in mine if row["branch"] == "with_comments"], mine
