"""Sharded scoring: webdataset tar shards and Parquet files read as streams, per-shard parts and completion markers,
resumption, the merge, and a real 2-process (gloo) launch through accelerate."""

import contextlib
import glob
import io
import json
import os
import signal
import subprocess
import tarfile
import time

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from aesformer_training import sharded_scoring, shards
from modeling_aesformer.toy import draw_scene

from _helpers import launch_two_processes, read_rows, score_cli as cli, two_process_launch
from _helpers import tiny_model_folder


pytestmark = pytest.mark.usefixtures("one_torch_thread")

COMMENTS = ["lovely light", "too dark", "sharp subject", "boring composition", "great colour"]


def _image_bytes(seed, fmt):
    buffer = io.BytesIO()
    draw_scene(seed, size=(40 + seed % 7, 36)).save(buffer, format=fmt)
    return buffer.getvalue()


def _add(archive, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_tar_shards(folder):
    """4 webdataset shards of 5 samples; shard 1 holds a corrupt jpg, shard 2 has a .txt comment per sample, every
    shard has a .json caption-like member that is never read as comments."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    for s in range(4):
        path = folder / f"shard-{s:04d}.tar"
        with tarfile.open(path, "w") as archive:
            for i in range(5):
                key, seed = f"{s:02d}{i:04d}", 10 * s + i
                fmt = ("JPEG", "PNG", "WEBP")[i % 3]
                data = b"\xff\xd8\xff this is not a jpeg" if (s, i) == (1, 2) else _image_bytes(seed, fmt)
                _add(archive, f"{key}.{ {'JPEG': 'jpg', 'PNG': 'png', 'WEBP': 'webp'}[fmt]}", data)
                if s == 2:
                    _add(archive, f"{key}.txt", COMMENTS[i].encode())
                _add(archive, f"{key}.json", json.dumps({"caption": "a photo"}).encode())
                expected[(str(path), key)] = {"corrupt": (s, i) == (1, 2), "comments": s == 2}
    return expected


def write_parquet(path):
    """6 rows: `id`, a `datasets` Image struct column, comments on every other row."""
    rows = [{"id": f"pq-{i}", "image": {"bytes": _image_bytes(100 + i, "PNG"), "path": None},
             "comments": COMMENTS[i % 5] if i % 2 else None} for i in range(6)]
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=4)
    return {(str(path), f"pq-{i}"): {"corrupt": False, "comments": bool(i % 2)} for i in range(6)}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("shards")
    expected = write_tar_shards(root / "tars")
    expected.update(write_parquet(root / "table.parquet"))
    model = tiny_model_folder(root / "model")
    return root, model, expected


def _args(root, model, output, *more):
    return [str(root / "tars" / "shard-*.tar"), str(root / "table.parquet"), "--model", str(model), "--output",
            str(output), "--shard-comments", "txt", "--batch-size", "4", *more]


def _by_key(rows):
    out = {}
    for row in rows:
        key = (row["shard"], row["key"])
        assert key not in out, f"{key} written twice"
        out[key] = row
    return out


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """One process, in this process: the result the launches must reproduce."""
    root, model, _ = data
    out = tmp_path_factory.mktemp("reference") / "scores.parquet"
    code = cli(*_args(root, model, out, "--num-workers", "0"))
    return code, out


def test_single_process_one_row_per_key(data, reference, capsys):
    root, model, expected = data
    code, out = reference
    assert code == 1  # the corrupt member
    rows = pq.read_table(out).to_pylist()
    assert list(rows[0]) == sharded_scoring.OUTPUT_FIELDS
    by_key = _by_key(rows)
    assert set(by_key) == set(expected)  # 20 tar samples + 6 Parquet rows, each once
    for key, want in expected.items():
        row = by_key[key]
        if want["corrupt"]:
            assert row["score"] is None and "UnidentifiedImageError" in row["error"]
        else:
            assert row["error"] is None and 1 <= row["score"] <= 10 and row["num_bins"] == 10
            assert row["branch"] == ("with_comments" if want["comments"] else "image_only"), key
            # a with-comments row claims no adapter; an image-only row names its head and whether it was trained
            assert (row["adapter"], row["trained"]) == ((None, None) if want["comments"] else ("base", False)), key
        assert row["path"] is None
    markers = sorted(p for p in os.listdir(f"{out}.parts") if p.endswith(".done.json"))
    assert len(markers) == 5


def test_scores_equal_the_file_path_scorer(data, reference, tmp_path):
    """The shard readers feed the model exactly what `aesformer score` reads from the same images as files."""
    root, model, expected = data
    _, out = reference
    by_key = _by_key(pq.read_table(out).to_pylist())
    folder = tmp_path / "files"
    folder.mkdir()
    with tarfile.open(root / "tars" / "shard-0000.tar") as archive:
        archive.extractall(folder, filter="data")
    files_out = tmp_path / "files.csv"
    assert cli(folder, "--model", model, "--output", files_out, "--num-workers", 0) == 0
    file_rows = read_rows(files_out)
    assert len(file_rows) == 5
    for row in file_rows:
        key = os.path.basename(row["path"]).split(".")[0]
        shard_row = by_key[(str(root / "tars" / "shard-0000.tar"), key)]
        assert shard_row["score"] == pytest.approx(float(row["score"]), abs=1e-5)
        assert shard_row["std"] == pytest.approx(float(row["std"]), abs=1e-5)
    # the same folder through the sharded driver, cut into units of 2 files: rows keep their path
    parquet_out = tmp_path / "files.parquet"
    assert cli(folder, "--model", model, "--output", parquet_out, "--num-workers", 0, "--files-per-shard", 2) == 0
    sharded = {row["path"]: row for row in pq.read_table(parquet_out).to_pylist()}
    assert len(sharded) == 5 and len([p for p in os.listdir(f"{parquet_out}.parts") if p.endswith(".done.json")]) == 3
    for row in file_rows:
        assert sharded[row["path"]]["score"] == pytest.approx(float(row["score"]), abs=1e-5)
        assert sharded[row["path"]]["key"] is None and sharded[row["path"]]["shard"] is None


def test_one_shard_decoded_by_two_workers(data, reference, tmp_path):
    """Fewer shards than DataLoader workers: the workers share the shard sample by sample; one row per key."""
    root, model, _ = data
    out = tmp_path / "scores.parquet"
    assert cli(root / "table.parquet", "--model", model, "--output", out, "--num-workers", 2) == 0
    got = _by_key(pq.read_table(out).to_pylist())
    want = {k: v for k, v in _by_key(pq.read_table(reference[1]).to_pylist()).items() if k[0].endswith(".parquet")}
    assert set(got) == set(want) and len(got) == 6
    for key, row in want.items():
        assert got[key]["score"] == pytest.approx(row["score"], abs=1e-5)


def test_comments_file_matches_shard_members(data, tmp_path):
    root, model, _ = data
    (tmp_path / "comments.csv").write_text("image,comments\n000001.png,lovely light\n", encoding="utf-8")
    out = tmp_path / "scores.jsonl"
    assert cli(root / "tars" / "shard-0000.tar", "--model", model, "--output", out, "--num-workers", 0,
               "--comments", tmp_path / "comments.csv") == 0
    branches = {row["key"]: row["branch"] for row in read_rows(out)}
    assert branches == {"000000": "image_only", "000001": "with_comments", "000002": "image_only",
                        "000003": "image_only", "000004": "image_only"}


def test_existing_output_needs_resume_and_resume_skips_finished_shards(data, reference, tmp_path, capsys):
    root, model, _ = data
    _, out = reference
    assert cli(*_args(root, model, out)) == 2
    assert "--resume" in capsys.readouterr().err
    # a changed setting is refused rather than mixed into the finished parts
    assert cli(*_args(root, model, out, "--resume", "--threshold", "3")) == 2
    assert "--threshold" in capsys.readouterr().err
    before = pq.read_table(out).to_pylist()
    assert cli(*_args(root, model, out, "--resume", "--num-workers", "0")) == 1
    report = capsys.readouterr().out
    assert "0 to score" in report and "5 finished earlier" in report
    assert pq.read_table(out).to_pylist() == before


def test_csv_output_and_merge_only(data, reference, tmp_path, capsys):
    root, model, expected = data
    _, out = reference
    csv_out = tmp_path / "scores.csv"
    # the finished parts of the reference run, merged again into CSV by --merge alone
    os.symlink(f"{out}.parts", f"{csv_out}.parts")
    assert cli("--merge", "--output", csv_out) == 1
    rows = read_rows(csv_out)
    assert list(rows[0]) == sharded_scoring.OUTPUT_FIELDS and len(rows) == len(expected)
    report = capsys.readouterr().out
    assert "errors by reason" in report and "UnidentifiedImageError 1" in report
    assert cli("--merge", "--output", tmp_path / "nothing.csv") == 2
    assert "nothing.csv.parts" in capsys.readouterr().err


def test_the_driver_runs_from_python(data, reference, tmp_path):
    """The training layer's driver without the command line: options and a model loader of one's own."""
    from transformers import AutoModel, AutoProcessor

    root, model, _ = data
    shard = str(root / "tars" / "shard-0002.tar")  # the shard with comments
    out = tmp_path / "scores.jsonl"
    options = sharded_scoring.ShardedScoringOptions(inputs=[shard], output=str(out), model=str(model),
                                                    shard_comments="txt", batch_size=4)

    def load_scorer(device, log):
        return AutoModel.from_pretrained(model).eval(), AutoProcessor.from_pretrained(model), ["base"]

    assert sharded_scoring.run(options, load_scorer, log=lambda *a: None) == 0
    got = _by_key(read_rows(out))
    want = {k: v for k, v in _by_key(pq.read_table(reference[1]).to_pylist()).items() if k[0] == shard}
    assert set(got) == set(want) and len(got) == 5
    for key, row in want.items():
        assert got[key]["branch"] == row["branch"] == "with_comments"
        assert got[key]["score"] == pytest.approx(row["score"], abs=1e-5)


def test_tar_reader_groups_members_and_reads_comments_only_when_asked(tmp_path):
    path = tmp_path / "s.tar"
    with tarfile.open(path, "w") as archive:
        _add(archive, "a/001.jpg", _image_bytes(1, "JPEG"))
        _add(archive, "a/001.txt", b"alt text caption")
        _add(archive, "a/001.json", json.dumps({"comments": ["nice", " "]}).encode())
        _add(archive, "a/002.txt", b"orphan caption")
    plain = list(shards.iter_tar_samples(str(path)))
    assert [s["key"] for s in plain] == ["a/001", "a/002"]
    assert plain[0]["comments"] is None and plain[0]["name"] == "a/001.jpg" and plain[0]["image"][:2] == b"\xff\xd8"
    assert "no image member for key 'a/002'" in plain[1]["error"]
    assert list(shards.iter_tar_samples(str(path), "txt"))[0]["comments"] == "alt text caption"
    assert list(shards.iter_tar_samples(str(path), "json"))[0]["comments"] == ["nice"]
    # compressed shards stream the same way
    with tarfile.open(path) as plain_tar, tarfile.open(tmp_path / "s.tar.gz", "w:gz") as gz:
        for member in plain_tar:
            gz.addfile(member, plain_tar.extractfile(member))
    gz_samples = list(shards.iter_tar_samples(str(tmp_path / "s.tar.gz"), "txt"))
    assert [(s["key"], s["image"], s["comments"]) for s in gz_samples] == \
        [(s["key"], s["image"], s["comments"]) for s in shards.iter_tar_samples(str(path), "txt")]
    # a shard cut off in the middle: the samples before the cut, then one error naming the shard
    data = path.read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[:700])
    cut = list(shards.iter_tar_samples(str(tmp_path / "cut.tar")))
    assert cut[-1]["key"] == "" and "corrupt or cut off" in cut[-1]["error"] and "cut.tar" in cut[-1]["error"]


def test_parquet_layouts(tmp_path):
    image = _image_bytes(3, "PNG")
    (tmp_path / "img.png").write_bytes(image)
    pq.write_table(pa.table({"__key__": ["k"], "jpg": pa.array([image], pa.binary()), "text": ["a caption"]}),
                   tmp_path / "binary.parquet")
    pq.write_table(pa.table({"file_name": ["img.png"], "uid": [7]}), tmp_path / "paths.parquet")
    pq.write_table(pa.table({"caption": ["x"]}), tmp_path / "none.parquet")
    layout = shards.parquet_layout(str(tmp_path / "binary.parquet"))
    assert (layout.image_column, layout.image_kind, layout.key_column, layout.comments_column) == \
        ("jpg", "bytes", "__key__", None)  # a caption column is never read as comments
    [sample] = shards.iter_parquet_samples(str(tmp_path / "binary.parquet"), layout)
    assert sample["key"] == "k" and sample["image"] == image and sample["comments"] is None
    layout = shards.parquet_layout(str(tmp_path / "paths.parquet"), key_column="uid")
    [sample] = shards.iter_parquet_samples(str(tmp_path / "paths.parquet"), layout)
    assert sample["key"] == "7" and sample["path"] == str(tmp_path / "img.png")
    with pytest.raises(shards.ScoringError, match="--image-column"):
        shards.parquet_layout(str(tmp_path / "none.parquet"))
    with pytest.raises(shards.ScoringError, match="--key-column"):
        shards.parquet_layout(str(tmp_path / "paths.parquet"), key_column="nope")


# --------------------------------------------------------------------------------------------- two real processes
def _launch(argv, env_extra=None):
    return launch_two_processes(["-m", "aesformer_cli", "score", *argv], env_extra)


def _assert_same(out, reference_out):
    got, want = _by_key(pq.read_table(out).to_pylist()), _by_key(pq.read_table(reference_out).to_pylist())
    assert set(got) == set(want)
    for key, row in want.items():
        other = got[key]
        assert (other["error"] is None) == (row["error"] is None), key
        if row["error"] is None:
            assert other["score"] == pytest.approx(row["score"], abs=1e-5)
            assert other["std"] == pytest.approx(row["std"], abs=1e-5)
            assert other["distribution"] == pytest.approx(row["distribution"], abs=1e-5)
            assert (other["label"], other["branch"], other["adapter"]) == (row["label"], row["branch"],
                                                                        row["adapter"])


@pytest.mark.slow
def test_two_processes_equal_one(data, reference, tmp_path):
    root, model, _ = data
    out = tmp_path / "scores.parquet"
    result = _launch(_args(root, model, out, "--num-workers", "1"))
    assert result.returncode == 1, result.stderr[-4000:]  # 1: the corrupt member
    assert "process 0:" in result.stdout and "process 1:" in result.stdout, result.stdout
    assert "shards done: 5/5" in result.stdout and "UnidentifiedImageError 1" in result.stdout
    ranks = {json.load(open(os.path.join(f"{out}.parts", p)))["rank"]
             for p in os.listdir(f"{out}.parts") if p.endswith(".done.json")}
    assert ranks == {0, 1}  # both processes did work
    _assert_same(out, reference[1])


def _descendants(pid):
    """The ids of every process below `pid` (from /proc)."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                with open(f"/proc/{entry}/stat") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(parent, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@pytest.mark.slow
def test_a_launch_killed_after_its_first_shard_resumes_to_the_same_result(data, tmp_path):
    """SIGKILL from outside, to both processes the moment the first completion marker appears: the finished shards
    are kept, `--resume` scores only the others, and the result equals a one-process run of the same shards."""
    _, model, _ = data
    tars = tmp_path / "tars"
    tars.mkdir()
    # round-robin: each process first finishes a short shard, then is still busy with a long one when killed
    for s, count in enumerate((2, 2, 800, 800)):
        with tarfile.open(tars / f"shard-{s}.tar", "w") as archive:
            for i in range(count):
                _add(archive, f"{s}{i:04d}.png", _image_bytes(1000 * s + i, "PNG"))
    reference = tmp_path / "reference.parquet"
    assert cli(tars / "shard-*.tar", "--model", model, "--output", reference, "--num-workers", 0) == 0
    out = tmp_path / "scores.parquet"
    argv = ["-m", "aesformer_cli", "score", tars / "shard-*.tar", "--model", model, "--output", out,
            "--num-workers", "0"]
    command, env = two_process_launch([*argv, "--batch-size", "1"])
    launch = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              start_new_session=True)
    try:
        start = time.monotonic()
        while not glob.glob(f"{out}.parts/*.done.json"):
            assert launch.poll() is None, launch.stderr.read().decode(errors="replace")[-4000:]
            assert time.monotonic() - start < 600, "no shard finished in 600 s"
            time.sleep(0.01)
    finally:
        # the launcher and both processes (torch's launcher starts each in a session of its own)
        for pid in [launch.pid] + _descendants(launch.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        launch.wait(timeout=60)
        launch.stderr.close()
    assert not out.exists()
    done = [p for p in os.listdir(f"{out}.parts") if p.endswith(".done.json")]
    assert 1 <= len(done) <= 2, done  # the short shards at most: both long ones were unfinished
    resumed = launch_two_processes([*argv, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert f"{len(done)} finished earlier" in resumed.stdout
    assert not [p for p in os.listdir(f"{out}.parts") if ".tmp-" in p]
    _assert_same(out, reference)


def test_missing_shard_is_a_row_and_a_foreign_parts_folder_is_refused(data, tmp_path, capsys):
    root, model, _ = data
    out = tmp_path / "scores.jsonl"
    assert cli(root / "tars" / "shard-0000.tar", tmp_path / "gone.tar", "--model", model, "--output", out,
               "--num-workers", 0) == 1
    rows = read_rows(out)
    assert len(rows) == 6 and rows[0]["path"] == str(tmp_path / "gone.tar") and rows[0]["error"] == "no such shard file"
    # a folder that happens to sit where the parts would go is never written into or deleted
    (tmp_path / "other.parquet.parts").mkdir()
    (tmp_path / "other.parquet.parts" / "precious.txt").write_text("keep me")
    assert cli(root / "tars" / "shard-0000.tar", "--model", model, "--output", tmp_path / "other.parquet",
               "--overwrite") == 2
    assert "manifest.json" in capsys.readouterr().err
    assert (tmp_path / "other.parquet.parts" / "precious.txt").read_text() == "keep me"
