"""Reliability and security (issue 9): hostile image files, hostile comments, bad dataset rows, work interrupted by
SIGKILL, atomic saves, safe loading, shared pipelines. Every bad input is built here, in the test, from bytes."""

import csv
import io
import json
import os
import pickle
import shutil
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageFile
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, BertTokenizer, pipeline

from aesformer_training.dataset_spec import DatasetSpec
from aesformer_training.loaders import load_ava, load_generic, write_generic
from aesformer_training.reports import DatasetLoadError
from aesformer_training.text_files import TextEncodingError
from modeling_aesformer import AesformerConfig, AesformerImageProcessor, AesformerModel, AesformerProcessor
from modeling_aesformer import scoring
from modeling_aesformer.loading import ModelLoadError, load_model
from modeling_aesformer.toy import draw_scene, write_toy_vocab

from _helpers import project_sources, read_rows, score_cli, shipped_file_problems, tiny_model_folder, \
    toy_training_rows

REPO = Path(__file__).resolve().parent.parent
PIL_DEFAULT_MAX_IMAGE_PIXELS = 89_478_485  # as Pillow ships it; nothing in this project may change it
SUBPROCESS_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
                  "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ------------------------------------------------------------------------------------------------------- helpers
def tokenizer_for(folder):
    return BertTokenizer(vocab=str(write_toy_vocab(Path(folder) / "vocab.txt", 512)), do_lower_case=False)



@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_folder(tmp_path_factory.mktemp("reliability") / "model")


def raw(path, **kwargs):
    """The decoded 0..255 RGB pixels of a file ([H, W, 3]) through the shipped image processor, no resize."""
    processor = AesformerImageProcessor(**kwargs)
    out = processor(str(path), do_resize=False, do_rescale=False, do_normalize=False, return_tensors="np")
    return out["pixel_values"][0].transpose(1, 2, 0)


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def bomb_png(width, height):
    """A ~60-byte PNG whose header declares width x height RGB pixels (the data is a few zero bytes)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + png_chunk(b"IEND", b""))


def encoded(image, fmt, **kwargs):
    buffer = io.BytesIO()
    image.save(buffer, fmt, **kwargs)
    return buffer.getvalue()


# -------------------------------------------------------------------------------------------- 1. hostile images
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)
# name -> the reason an error must give (None: the file must be scored)
HOSTILE = {
    "zero_bytes.jpg": "cannot identify image file",
    "truncated.jpg": "truncated",
    "truncated.png": "truncated",
    "text.jpg": "cannot identify image file",
    "page.png": "cannot identify image file",
    "bomb.png": "DecompressionBomb",
    "animated.gif": None,
    "animated.webp": None,
    "cmyk.jpg": None,
    "gray16.png": None,
    "palette_transparent.png": None,
    "exif_rotated.jpg": None,
    "one_by_one.png": None,
    "thin_1x20000.png": None,
    "thin_20000x1.png": None,
}


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile")
    noise = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    jpeg, png = encoded(noise, "JPEG", quality=90), encoded(noise, "PNG")
    files = {
        "zero_bytes.jpg": b"",
        "truncated.jpg": jpeg[: len(jpeg) // 2],
        "truncated.png": png[: len(png) // 2],
        "text.jpg": b"This is a note, not a photograph.\n",
        "page.png": b"<!DOCTYPE html><html><head><title>404</title></head><body>Not found</body></html>\n",
        # 20000 x 20000 = 400 M pixels declared in a 100-byte file (1.2 GB once decoded)
        "bomb.png": bomb_png(20000, 20000),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
    frames = [PIL.Image.new("RGB", (24, 16), RED), PIL.Image.new("RGB", (24, 16), BLUE)]
    frames[0].save(folder / "animated.gif", save_all=True, append_images=frames[1:], duration=40, loop=0)
    frames[0].save(folder / "animated.webp", save_all=True, append_images=frames[1:], duration=40, loop=0,
                   lossless=True)
    PIL.Image.new("CMYK", (24, 16), (0, 255, 255, 0)).save(folder / "cmyk.jpg", quality=95)  # red in CMYK
    ramp = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (8, 1))
    PIL.Image.fromarray(ramp).save(folder / "gray16.png")
    palette = PIL.Image.new("P", (16, 16), 0)
    palette.putpalette([0, 0, 255] + [255, 0, 0] + [0] * 762)
    palette.paste(1, (8, 0, 16, 16))  # left half index 0 (transparent), right half index 1 (red)
    palette.save(folder / "palette_transparent.png", transparency=0)
    stored = PIL.Image.new("RGB", (40, 20), RED)
    stored.paste(BLUE, (0, 10, 40, 20))  # stored: top half red, bottom half blue
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # display: rotate 90 degrees clockwise
    stored.save(folder / "exif_rotated.jpg", exif=exif, quality=95)
    PIL.Image.new("RGB", (1, 1), (10, 200, 30)).save(folder / "one_by_one.png")
    PIL.Image.new("RGB", (1, 20000), (10, 200, 30)).save(folder / "thin_1x20000.png")
    PIL.Image.new("RGB", (20000, 1), (10, 200, 30)).save(folder / "thin_20000x1.png")
    assert sorted(p.name for p in folder.iterdir()) == sorted(HOSTILE)
    return folder


def test_each_hostile_file_is_scored_correctly_or_refused_with_its_reason(hostile_dir):
    processor = AesformerImageProcessor(size=32)
    for name, reason in HOSTILE.items():
        path = hostile_dir / name
        if reason is None:
            pixels = processor(str(path), return_tensors="np")["pixel_values"]
            assert pixels.shape == (1, 3, 32, 32) and np.isfinite(pixels).all(), name
        else:
            with pytest.raises(ValueError) as info:
                processor(str(path))
            message = str(info.value)
            assert str(path) in message and reason in message, (name, message)

    # "correctly": the pixels the model sees
    np.testing.assert_allclose(raw(hostile_dir / "animated.gif")[0, 0], RED, atol=2)  # first frame
    np.testing.assert_allclose(raw(hostile_dir / "animated.webp")[0, 0], RED, atol=2)
    np.testing.assert_allclose(raw(hostile_dir / "cmyk.jpg")[8, 12], RED, atol=6)
    grey = raw(hostile_dir / "gray16.png")
    assert grey[0, 0, 0] == 0 and grey[0, -1, 0] == 255 and 120 < grey[0, 16, 0] < 136  # scaled, not clipped
    palette = raw(hostile_dir / "palette_transparent.png")
    np.testing.assert_allclose(palette[0, 0], WHITE)  # transparent -> the white matte
    np.testing.assert_allclose(palette[0, 15], RED)
    rotated = raw(hostile_dir / "exif_rotated.jpg")
    assert rotated.shape == (40, 20, 3)  # displayed upright: 20 wide, 40 high
    np.testing.assert_allclose(rotated[20, 2], BLUE, atol=8)  # the stored bottom (blue) is now on the left
    np.testing.assert_allclose(rotated[20, 17], RED, atol=8)
    np.testing.assert_allclose(raw(hostile_dir / "one_by_one.png")[0, 0], (10, 200, 30))
    thin = AesformerImageProcessor()(str(hostile_dir / "thin_1x20000.png"), return_tensors="np")["pixel_values"]
    assert thin.shape == (1, 3, 224, 224) and np.isfinite(thin).all()


def test_bomb_is_refused_from_its_header_before_any_decoding(hostile_dir, tmp_path, monkeypatch):
    loads = []
    original_load = PIL.ImageFile.ImageFile.load

    def spy(self):
        loads.append(self.size)
        return original_load(self)

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", spy)
    # a mid-sized bomb under Pillow's own limit: the processor's configurable limit refuses it
    mid = tmp_path / "mid_bomb.png"
    mid.write_bytes(bomb_png(5000, 5000))  # 25 M pixels declared, ~60 bytes of file
    processor = AesformerImageProcessor(size=32, max_image_pixels=1_000_000)
    with pytest.raises(ValueError,
                       match=r"mid_bomb\.png.*DecompressionBombError.*5000x5000.*max_image_pixels=1,000,000"):
        processor(str(mid))
    assert loads == []  # refused from the header: no decoder ran
    # ... per call too, and the setting survives save/load
    with pytest.raises(ValueError, match="DecompressionBomb"):
        AesformerImageProcessor(size=32)(str(mid), max_image_pixels=1_000_000)
    processor.save_pretrained(tmp_path / "proc")
    assert AesformerImageProcessor.from_pretrained(tmp_path / "proc").max_image_pixels == 1_000_000
    assert AesformerImageProcessor().max_image_pixels == 178_956_970
    for bad in (0, -5, 1.5, True, "many"):
        with pytest.raises(ValueError, match="max_image_pixels"):
            AesformerImageProcessor(max_image_pixels=bad)
    # the 400 M-pixel bomb is refused by default, even where other code switched Pillow's own guard off
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ValueError, match=r"bomb\.png.*20000x20000.*max_image_pixels=178,956,970"):
        AesformerImageProcessor(size=32)(str(hostile_dir / "bomb.png"))
    # an already opened (lazy) PIL image is checked the same way, before it is decoded
    with PIL.Image.open(mid) as lazy:
        with pytest.raises(ValueError, match="DecompressionBombError"):
            processor(lazy)
    assert loads == []


def test_pillow_guards_are_never_disabled():
    """No project file turns Pillow's decompression-bomb or truncation guard off, and using the package leaves the
    process-wide limit as Pillow ships it."""
    import ast

    offenders = []
    for path in project_sources():  # the four packages and bench/
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    name = getattr(target, "attr", getattr(target, "id", ""))
                    if name == "LOAD_TRUNCATED_IMAGES" or (
                            name == "MAX_IMAGE_PIXELS" and isinstance(node.value, ast.Constant)):
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders
    assert PIL.Image.MAX_IMAGE_PIXELS == PIL_DEFAULT_MAX_IMAGE_PIXELS
    assert PIL.ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_score_a_folder_of_hostile_files(model_dir, hostile_dir, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    code = score_cli(hostile_dir, "--model", model_dir, "--output", out, "--batch-size", 4, "--num-workers", 0)
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
    assert f"{sum(r is not None for r in HOSTILE.values())} input(s) could not be scored" in report
    assert PIL.Image.MAX_IMAGE_PIXELS == PIL_DEFAULT_MAX_IMAGE_PIXELS  # restored after the run

    # the limit is configurable, and a limit above Pillow's own works (Pillow's global is raised for the call only)
    small = tmp_path / "small.csv"
    assert score_cli(hostile_dir / "one_by_one.png", hostile_dir / "thin_1x20000.png", "--model", model_dir,
                     "--output", small, "--max-image-pixels", 19_999, "--num-workers", 0) == 1
    limited = {os.path.basename(r["path"]): r for r in read_rows(small)}
    assert limited["one_by_one.png"]["error"] == ""
    assert "max_image_pixels=19,999" in limited["thin_1x20000.png"]["error"]
    big = tmp_path / "big.png"
    big.write_bytes(bomb_png(15000, 15000))  # 225 M: above Pillow's hard limit, below the one asked for
    assert score_cli(big, "--model", model_dir, "--output", tmp_path / "big.csv", "--num-workers", 0,
                     "--max-image-pixels", 300_000_000) == 1
    error = read_rows(tmp_path / "big.csv")[0]["error"]
    assert "truncated" in error and "DecompressionBomb" not in error  # allowed past the guard, then its data ran out
    assert PIL.Image.MAX_IMAGE_PIXELS == PIL_DEFAULT_MAX_IMAGE_PIXELS
    assert score_cli(big, "--model", model_dir, "--output", tmp_path / "x.csv", "--max-image-pixels", 0) == 2


def test_pipeline_names_the_bad_item_of_a_list(model_dir, hostile_dir):
    """Documented choice, as transformers' image-classification pipeline: a bad item raises, naming it."""
    scorer = pipeline("image-aesthetics", model=AutoModel.from_pretrained(model_dir))
    good = [str(hostile_dir / "cmyk.jpg"), str(hostile_dir / "animated.webp")]
    results = scorer(good)
    assert len(results) == 2 and all(1 <= r["score"] <= 10 for r in results)
    bad = str(hostile_dir / "truncated.png")
    with pytest.raises(ValueError) as info:
        scorer([good[0], {"image": bad, "comments": "nice"}, good[1]], batch_size=2)
    message = str(info.value)
    assert message.startswith(f"inputs[1] {bad!r}: ") and "truncated" in message and "images[0]" not in message
    with pytest.raises(ValueError, match=r"^input '.*bomb\.png': .*DecompressionBombError"):
        scorer(str(hostile_dir / "bomb.png"))
    with pytest.raises(ValueError, match=r"^inputs\[0\] '.*zero_bytes\.jpg'.*cannot identify image file"):
        scorer([str(hostile_dir / "zero_bytes.jpg")])
    assert scorer(good) == results  # the pipeline is still usable after a failure


# ------------------------------------------------------------------------------------------------- 2. comments
def test_comment_edge_cases_in_the_processor(tmp_path):
    processor = AesformerProcessor(AesformerImageProcessor(size=32), tokenizer_for(tmp_path), max_length=64)
    image = PIL.Image.new("RGB", (8, 8))
    long_comment = " ".join(["lovely light"] * 3000)  # 6000 words
    comments = [
        None, "", " \t\r\n  ", "\\n\\n", "\u200b\u200f\u2066\ufeff\u200d",  # no comment text at all
        "great\x00 shot\x07\x1b colour\x7f",  # control characters
        "\u05e6\u05d9\u05dc\u05d5\u05dd \u05d9\u05e4\u05d4 \u200fgreat light",  # right-to-left
        "\U0001F44D\U0001F3FD great colour \U0001F468\u200d\U0001F469\u200d\U0001F467 \u2764\ufe0f",  # emoji
        long_comment,
    ]
    out = processor(images=[image] * len(comments), comments=comments, return_tensors="pt")
    mask = out["attention_mask"]
    assert mask.shape == (len(comments), 64)  # the long comment is truncated at max_length tokens
    assert [int(row.sum()) for row in mask[:5]] == [0] * 5  # image-only branch
    assert all(int(row.sum()) >= 3 for row in mask[5:])  # [CLS], at least one token, [SEP]
    words = processor.tokenizer.convert_ids_to_tokens(out["input_ids"][5][mask[5].bool()].tolist())
    assert words == ["[CLS]", "great", "shot", "colour", "[SEP]"]  # control characters removed
    assert processor.clean_and_check(long_comment) == (" ".join(["lovely light"] * 100), True)  # said so
    assert processor.clean_and_check(comments[7])[1] is False
    assert processor.clean_and_check(comments[4]) == ("", False)
    model = AesformerModel(AesformerConfig.from_preset("tiny")).eval()
    with torch.inference_mode():
        used = model(**out).used_comments.tolist()
    assert used == [False] * 5 + [True] * 4


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
    assert score_cli(*images, "--model", model_dir, "--comments", comments, "--output", out, "--num-workers", 0) == 0
    rows = {os.path.basename(r["path"]): r for r in read_rows(out)}
    assert (rows["photo0.png"]["branch"], rows["photo0.png"]["comments_truncated"]) == ("image_only", None)
    assert (rows["photo1.png"]["branch"], rows["photo1.png"]["comments_truncated"]) == ("with_comments", True)
    assert (rows["photo2.png"]["branch"], rows["photo2.png"]["comments_truncated"]) == ("with_comments", False)
    assert (rows["photo3.png"]["branch"], rows["photo3.png"]["comments_truncated"]) == ("image_only", None)
    csv_out = tmp_path / "scores.csv"
    assert score_cli(images[1], "--model", model_dir, "--comments", comments, "--output", csv_out) == 0
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
        assert score_cli(image, "--model", model_dir, "--comments", path, "--output", out) == 2
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


# ------------------------------------------------------------------------------------------------- 3. datasets
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


# --------------------------------------------------------------------------------------- 4. interrupted work
TRAIN_STALL_DRIVER = textwrap.dedent("""
    import os, sys, time
    import accelerate
    marker, stall_folder = sys.argv[1], sys.argv[2]
    original = accelerate.Accelerator.save_state

    def save_state(self, *args, **kwargs):
        output_dir = args[0] if args else kwargs.get("output_dir")
        result = original(self, *args, **kwargs)
        if os.path.basename(str(output_dir)) == stall_folder:
            open(marker, "w").close()
            time.sleep(600)  # killed here: written to its temporary folder, not yet renamed
        return result

    accelerate.Accelerator.save_state = save_state
    from aesformer_cli.main import main
    sys.exit(main(sys.argv[3:]))
""")


def wait_for(path, process, timeout=300):
    start = time.monotonic()
    while not os.path.exists(path):
        if process.poll() is not None:
            raise AssertionError(f"the process ended ({process.returncode}) before {path} appeared:\n"
                                 + process.stderr.read().decode(errors="replace")[-3000:])
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{path} did not appear in {timeout} s")
        time.sleep(0.05)


def finish(process, timeout=300):
    _, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err.decode(errors="replace")[-4000:]


class Payload:
    """A pickle that runs `os.mkdir(marker)` when it is unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def training_data(tmp_path_factory):
    """24 images in the generic format (as tests/test_training.py), plus a zero-vote row and a missing file."""
    folder = tmp_path_factory.mktemp("train-data")
    rows = toy_training_rows()
    rows.append({"file_name": "images/000.png", "id": "no-votes", "votes": [0] * 10, "comments": ["x"],
                 "split": "train"})
    rows.append({"file_name": "images/lost.png", "votes": [1] * 10, "comments": ["y"], "split": "train"})
    write_generic(folder, rows, DatasetSpec("toy", 10, (1, 10), 5.0))
    (folder / "tok-src").mkdir()
    tokenizer_for(folder / "tok-src").save_pretrained(folder / "tok")
    return folder


def test_training_killed_mid_epoch_resumes_to_bit_identical_weights(training_data, tmp_path):
    """`aesformer pretrain` killed with SIGKILL while saving step 5 (epoch 2 of 2, mid-epoch, step 5 already applied
    in memory) resumes from `latest` (step 4) and ends with the same bits as an uninterrupted run."""
    common = ["pretrain", "--preset", "tiny", "--tokenizer", str(training_data / "tok"), "--data",
              str(training_data), "--batch-size", "4", "--epochs", "2", "--save-steps", "1", "--learning-rate",
              "1e-3", "--queue-size", "8", "--seed", "7"]
    full, cut, marker = tmp_path / "full", tmp_path / "cut", tmp_path / "stalled"
    cli = [sys.executable, "-m", "aesformer_cli"]
    popen = dict(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=SUBPROCESS_ENV, cwd=tmp_path)
    reference = subprocess.Popen(cli + common + ["--output-dir", str(full)], **popen)
    killed = subprocess.Popen([sys.executable, "-c", TRAIN_STALL_DRIVER, str(marker), ".tmp_step_00000005"]
                              + common + ["--output-dir", str(cut)], **popen)
    try:
        wait_for(marker, killed)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=60)
    finally:
        if killed.poll() is None:
            os.kill(killed.pid, signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    checkpoints = cut / "checkpoints"
    # the save in flight never became a checkpoint; the previous ones are intact
    assert sorted(p.name for p in checkpoints.iterdir()) == [".tmp_step_00000005", "step_00000003", "step_00000004"]
    from aesformer_training.checkpoints import TrainerState, resolve_checkpoint

    latest = resolve_checkpoint(cut, "latest")
    state = TrainerState()
    state.load(latest)
    assert Path(latest).name == "step_00000004" and (state.epoch, state.step_in_epoch) == (1, 1)  # mid-epoch
    assert not (cut / "results.json").exists()

    resumed = subprocess.Popen(cli + common + ["--output-dir", str(cut), "--resume-from-checkpoint", "latest"],
                               **popen)
    finish(resumed)
    finish(reference)
    for a, b in ((full / "model" / "model.safetensors", cut / "model" / "model.safetensors"),
                 (full / "checkpoints" / "step_00000006" / "model.safetensors",
                  cut / "checkpoints" / "step_00000006" / "model.safetensors")):
        wa, wb = load_file(str(a)), load_file(str(b))
        assert wa.keys() == wb.keys() and len(wa) > 100
        assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])][:5]
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (full, cut))
    assert ra["test"] == rb["test"] and ra["history"] == rb["history"] and ra["steps"] == rb["steps"] == 6
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step_00000005", "step_00000006"]  # temp cleaned
    # bad rows are in the results, by id
    dropped = {issue["id"]: issue["reason"] for issue in ra["dataset_report"]["dropped"]}
    assert dropped == {"no-votes": "zero_votes", "images/lost.png": "missing_image"}

    # -- safe loading of a resumed checkpoint: a pickle inside it is refused, its payload never runs
    from aesformer_cli import train as scripts

    pickled = sorted(p.name for p in (checkpoints / "step_00000005").iterdir() if p.suffix in (".bin", ".pkl", ".pt"))
    assert "optimizer.bin" in pickled and "random_states_0.pkl" in pickled
    for name in pickled:  # each pickle of the checkpoint in turn: the others are genuine
        poisoned = tmp_path / f"poisoned-{name}"
        payload_ran = tmp_path / f"payload-ran-{name}"
        shutil.copytree(checkpoints / "step_00000005", poisoned / "checkpoints" / "step_00000005")
        torch.save({"state": Payload(payload_ran)}, poisoned / "checkpoints" / "step_00000005" / name)
        resume = common[1:] + ["--output-dir", str(poisoned), "--resume-from-checkpoint", "latest"]
        with pytest.raises((pickle.UnpicklingError, ValueError), match="weights_only"):
            scripts.pretrain_main(resume)
        assert not payload_ran.exists(), f"unpickling {name} ran its code"


def test_a_failed_or_killed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from aesformer_training import checkpoints
    from modeling_aesformer.file_modes import write_folder_atomically

    class FakeAccelerator:  # the parts of accelerate's API that save_checkpoint uses
        is_main_process = True
        fail = False

        def wait_for_everyone(self):
            pass

        def save_state(self, folder):
            os.makedirs(folder)
            save_file({"w": torch.full((4,), float(state.global_step))}, os.path.join(folder, "model.safetensors"))
            if self.fail:
                raise OSError("disk full")  # midway: model written, nothing else
            (Path(folder) / "optimizer.bin").write_bytes(b"ok")

    accelerator, state = FakeAccelerator(), checkpoints.TrainerState()
    for step in (1, 2):
        state.global_step = step
        checkpoints.save_checkpoint(accelerator, tmp_path, state, keep=2)
    accelerator.fail = True
    for step in (3, 2):  # a new step, and the same step saved again (epoch end after a --save-steps save)
        state.global_step, state.epoch = step, 9
        with pytest.raises(OSError, match="disk full"):
            checkpoints.save_checkpoint(accelerator, tmp_path, state, keep=2)
        latest = checkpoints.resolve_checkpoint(tmp_path, "latest")
        assert Path(latest).name == "step_00000002"
        assert load_file(os.path.join(latest, "model.safetensors"))["w"].tolist() == [2.0] * 4
        reloaded = checkpoints.TrainerState()
        reloaded.load(latest)
        assert (reloaded.global_step, reloaded.epoch) == (2, 0)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if not p.name.startswith(".tmp")) == [
        "step_00000001", "step_00000002"]

    # killed while deleting the folder a re-save of the same step replaces: `latest` is still complete
    real_rmtree = shutil.rmtree

    def killed_while_deleting(path, *args, **kwargs):
        if Path(path).name in ("step_00000002", ".old_step_00000002") and Path(path).is_dir():
            (Path(path) / "model.safetensors").unlink()  # the deletion got this far
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kwargs)

    accelerator.fail = False
    state.global_step, state.epoch = 2, 1
    monkeypatch.setattr(checkpoints.shutil, "rmtree", killed_while_deleting)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_checkpoint(accelerator, tmp_path, state, keep=2)
    monkeypatch.undo()
    latest = checkpoints.resolve_checkpoint(tmp_path, "latest")
    assert Path(latest).name == "step_00000002"
    assert load_file(os.path.join(latest, "model.safetensors"))["w"].tolist() == [2.0] * 4
    reloaded = checkpoints.TrainerState()
    reloaded.load(latest)
    assert (reloaded.global_step, reloaded.epoch) == (2, 1)  # the new save, complete

    # the best model folder: `write_folder_atomically` with a write that dies midway
    target = tmp_path / "model"
    model = AesformerModel(AesformerConfig.from_preset("tiny"))
    write_folder_atomically(lambda tmp: model.save_pretrained(tmp), target)

    def broken(tmp):
        os.makedirs(tmp, exist_ok=True)  # the writer makes it
        (Path(tmp) / "config.json").write_text("{")  # half a folder
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder_atomically(broken, target)
    reloaded = AesformerModel.from_pretrained(target)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
    # a kill between the two renames of a swap: the next save puts the previous folder back first
    os.replace(target, tmp_path / ".old_model")
    with pytest.raises(KeyboardInterrupt):
        write_folder_atomically(broken, target)
    reloaded = AesformerModel.from_pretrained(target)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))


def test_the_training_state_is_json_and_a_legacy_pickle_is_refused(tmp_path):
    from aesformer_training.checkpoints import TrainerState

    state = TrainerState()
    state.global_step, state.epoch, state.best_metric = 5, 1, np.float64(0.25)
    state.history = [{"epoch": 0, "validation": {"srcc": 0.1 + 0.2, "n": np.int64(4), "emd": float("nan")}}]
    state.save(tmp_path)
    loaded = TrainerState()
    loaded.load(tmp_path)
    assert loaded.history[0]["validation"]["srcc"] == 0.1 + 0.2 and loaded.best_metric == 0.25
    # an older checkpoint: accelerate's custom_checkpoint_0.pkl, read with weights_only=True only
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save({"global_step": 3, "epoch": 0, "step_in_epoch": 3, "best_metric": None, "best_epoch": None,
                "history": []}, legacy / "custom_checkpoint_0.pkl")
    loaded.load(legacy)
    assert loaded.global_step == 3
    payload_ran = tmp_path / "payload-ran"
    torch.save({"global_step": Payload(payload_ran)}, legacy / "custom_checkpoint_0.pkl")
    with pytest.raises(ValueError, match="weights_only=True"):
        loaded.load(legacy)
    assert not payload_ran.exists()
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        TrainerState().load(tmp_path / "missing")


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
    assert score_cli(photos, "--model", model_dir, "--output", reference, "--num-workers", 0) == 1
    out, marker = tmp_path / f"scores.{suffix}", tmp_path / "stalled"
    argv = ["score", str(photos), "--model", str(model_dir), "--output", str(out), "--batch-size", "3",
            "--num-workers", "0"]
    killed = subprocess.Popen([sys.executable, "-c", SCORE_STALL_DRIVER, str(marker)] + argv,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=SUBPROCESS_ENV)
    try:
        wait_for(marker, killed)
        os.kill(killed.pid, signal.SIGKILL)
        killed.wait(timeout=60)
    finally:
        if killed.poll() is None:
            os.kill(killed.pid, signal.SIGKILL)
    text = out.read_text(encoding="utf-8")
    assert not text.endswith("\n")  # killed in the middle of a line
    assert score_cli(*argv[1:], "--resume") == 1
    rows, expected = read_rows(out), read_rows(reference)
    assert sorted(r["path"] for r in rows) == sorted(r["path"] for r in expected)  # none lost, none twice
    assert len(rows) == 11
    expected = {r["path"]: r for r in expected}
    for row in rows:
        ref = expected[row["path"]]
        assert bool(row["error"]) == bool(ref["error"]), row
        if not row["error"]:
            assert float(row["score"]) == pytest.approx(float(ref["score"]), abs=1e-5)


def test_a_failed_export_leaves_the_previous_export_loadable(exported, tmp_path, monkeypatch):
    from modeling_aesformer import export as export_module

    model_dir, hub = exported
    target = tmp_path / "hub"
    shutil.copytree(hub, target)
    before = {p: p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()}
    original_copytree = shutil.copytree

    def die_midway(src, dst, *args, **kwargs):  # the model and processor are written: now the adapters fail
        original_copytree(src, dst, *args, **kwargs)
        raise OSError("no space left on device")

    monkeypatch.setattr(export_module.shutil, "copytree", die_midway)
    with pytest.raises(OSError, match="no space left"):
        export_module.export_model(model_dir, target, overwrite=True, log=lambda *a: None)
    monkeypatch.undo()
    real_replace, calls = os.replace, []

    def die_between_renames(src, dst):  # the swap: old folder aside (1st rename), new one in place (2nd): fail 2nd
        calls.append((src, dst))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_replace(src, dst)

    monkeypatch.setattr(export_module.os, "replace", die_between_renames)
    with pytest.raises(KeyboardInterrupt):
        export_module.export_model(model_dir, target, overwrite=True, log=lambda *a: None)
    monkeypatch.undo()
    assert len(calls) >= 2
    assert {p: p.read_bytes() for p in sorted(target.rglob("*")) if p.is_file()} == before  # byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hub"]  # no temporary folder left
    AutoModel.from_pretrained(target)


# -------------------------------------------------------------------------------------------- 5. safe loading
def test_every_legacy_load_uses_weights_only_and_nothing_unpickles():
    import ast

    problems = []
    for path in project_sources():  # the four packages and bench/
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Call):
                continue
            func = node.func
            name = getattr(func, "attr", getattr(func, "id", ""))
            owner = getattr(getattr(func, "value", None), "id", "")
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            keywords = {k.arg: k.value for k in node.keywords}
            if name == "load" and owner == "torch":
                flag = keywords.get("weights_only")
                if not (isinstance(flag, ast.Constant) and flag.value is True):
                    problems.append(f"{where}: torch.load without weights_only=True")
            if owner in ("pickle", "dill", "cloudpickle", "marshal", "shelve", "joblib") and name.startswith("load"):
                problems.append(f"{where}: {owner}.{name}")
            flag = keywords.get("allow_pickle")
            if isinstance(flag, ast.Constant) and flag.value is True:
                problems.append(f"{where}: allow_pickle=True")
            flag = keywords.get("weights_only")
            if isinstance(flag, ast.Constant) and flag.value is False:
                problems.append(f"{where}: weights_only=False")
    assert not problems, problems


def test_a_malicious_pickle_is_refused_everywhere_and_never_runs(model_dir, tmp_path):
    from modeling_aesformer.adapters import load_adapters
    from modeling_aesformer.convert_original import ConversionError, convert_original_checkpoint, \
        load_original_state_dict

    # the payload is live: plain unpickling runs it
    proof = tmp_path / "proof"
    pickle.loads(pickle.dumps(Payload(proof)))
    assert proof.is_dir()

    marker = tmp_path / "payload-ran"
    checkpoint = {"model": {"visual_encoder.embeddings.weight": torch.zeros(2), "evil": Payload(marker)}}
    zipped, legacy = tmp_path / "aesformer_t.pth", tmp_path / "aesformer_t_legacy.pt"
    torch.save(checkpoint, zipped)
    torch.save(checkpoint, legacy, _use_new_zipfile_serialization=False)
    for path in (zipped, legacy):
        with pytest.raises(ConversionError, match=r"weights_only=True\) refused the file"):
            load_original_state_dict(path)
        with pytest.raises(ConversionError, match="refused"):
            convert_original_checkpoint(path, tmp_path / "converted")
        assert not (tmp_path / "converted").exists()

    # a model folder whose weights are a pickle: the package's loaders want safetensors, transformers refuses it
    bad_model = tmp_path / "bad-model"
    shutil.copytree(model_dir, bad_model)
    (bad_model / "model.safetensors").unlink()
    torch.save({"evil": Payload(marker)}, bad_model / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="model.safetensors"):
        load_model(str(bad_model), None, log=lambda *a: None)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported global"):
        AutoModel.from_pretrained(bad_model)

    # an adapter folder with a pickled adapter_model.bin
    adapter = tmp_path / "with-adapter" / "adapters" / "evil"
    adapter.mkdir(parents=True)
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "aesformer_adapter.json").write_text('{"num_score_bins": 10}')
    torch.save({"evil": Payload(marker)}, adapter / "adapter_model.bin")
    with pytest.raises(ValueError, match="no adapter_model.safetensors.*adapter_model.bin.*only from safetensors"):
        load_adapters(AutoModel.from_pretrained(model_dir), tmp_path / "with-adapter")
    assert not marker.exists()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from modeling_aesformer.export import export_model

    root = tmp_path_factory.mktemp("exported")
    model_dir = tiny_model_folder(root / "model", adapters_scale=0.2)
    hub = export_model(model_dir, root / "hub", log=lambda *a: None)
    return model_dir, hub


def test_exported_remote_code_imports_only_allowed_modules(exported):
    _, hub = exported
    shipped = sorted(p.name for p in hub.rglob("*.py"))
    assert shipped == ["adapter_weights_aesformer.py", "attention_maps_aesformer.py", "configuration_aesformer.py",
                       "modeling_aesformer.py", "pipeline_aesformer.py", "processing_aesformer.py"]
    # the rule tests/test_layers.py checks on the package's files, here on the exported copies (one folder)
    assert shipped_file_problems({name: hub / name for name in shipped}) == []


def test_auto_classes_never_need_trust_remote_code_with_the_package(exported, monkeypatch):
    import transformers.dynamic_module_utils as dynamic
    from transformers import AutoConfig, AutoImageProcessor, AutoProcessor

    import modeling_aesformer  # noqa: F401 - the package is installed and imported

    model_dir, hub = exported
    assert "auto_map" in json.loads((hub / "config.json").read_text())  # the folder does offer remote code

    def refuse(*args, **kwargs):
        raise AssertionError("the folder's own code was loaded")

    monkeypatch.setattr(dynamic, "get_class_from_dynamic_module", refuse)
    loaded = [AutoConfig.from_pretrained(hub), AutoModel.from_pretrained(hub), AutoProcessor.from_pretrained(hub),
              AutoImageProcessor.from_pretrained(hub)]
    for obj in loaded:
        assert type(obj).__module__.split(".")[0] in ("modeling_aesformer", "aesformer_processing"), type(obj)
    # the pipeline of an exported FOLDER runs the folder's pipeline file: transformers asks for trust, by design
    monkeypatch.undo()
    with pytest.raises(ValueError, match="trust_remote_code"):
        pipeline("image-aesthetics", model=str(hub))
    assert pipeline("image-aesthetics", model=loaded[1], processor=loaded[2])(
        PIL.Image.new("RGB", (8, 8)))["branch"] == "image_only"


# ---------------------------------------------------------------------------------------------- 6. concurrency
def test_threads_sharing_one_pipeline_get_the_sequential_results(exported):
    from modeling_aesformer.adapters import load_adapters

    model_dir, _ = exported
    model = load_adapters(AutoModel.from_pretrained(model_dir), model_dir).eval()
    scorer = pipeline("image-aesthetics", model=model)
    images = [draw_scene(i, size=(40, 30)) for i in range(4)]
    jobs = [
        ({"inputs": images[:2]}, {}),
        ({"inputs": [{"image": images[2], "comments": "lovely light"}, images[3]]}, {"adapter": "photonet"}),
        ({"inputs": images[1:3]}, {"adapter": "base"}),
        ({"inputs": [images[0], {"image": images[1], "comments": ["too dark", "sharp subject"]}]},
         {"adapter": "all", "threshold": 6.0}),
        ({"inputs": images}, {"adapter": "ava", "batch_size": 3}),
    ]
    active = model.active_adapter
    sequential = [scorer(job["inputs"], **kwargs) for job, kwargs in jobs]
    results, errors = {}, []
    barrier = threading.Barrier(len(jobs))

    def work(k):
        job, kwargs = jobs[k]
        try:
            barrier.wait()
            results[k] = [scorer(job["inputs"], **kwargs) for _ in range(3)]
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(f"job {k}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    for k, want in enumerate(sequential):
        assert all(got == want for got in results[k]), k
    assert model.active_adapter == active  # the shared model's adapter state is as it was


def test_threads_calling_one_model_with_different_adapters_get_the_sequential_results(exported):
    """The model itself serialises its adapter switching, per instance (no module-level lock): direct calls with
    `adapter=`, `forward_adapters` and calls with the active adapter, from threads, give the sequential answers."""
    import copy

    from modeling_aesformer.adapters import load_adapters

    model_dir, _ = exported
    model = load_adapters(AutoModel.from_pretrained(model_dir), model_dir).eval()
    names = ["base", *model.peft_config]
    pixels = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ids = torch.randint(5, 500, (3, 6), generator=torch.Generator().manual_seed(1))
    mask = torch.ones(3, 6, dtype=torch.long)
    mask[1] = 0
    calls = [lambda n=n: model(pixels, input_ids=ids, attention_mask=mask, adapter=n).distribution for n in names]
    calls.append(lambda: model.forward_adapters(pixels, adapters=names[::-1])[names[-1]].distribution)
    calls.append(lambda: model(pixels, input_ids=ids, attention_mask=mask).distribution)  # the active adapter
    with torch.no_grad():
        sequential = [call() for call in calls]
    results, errors = {}, []
    barrier = threading.Barrier(len(calls))

    def work(k):
        try:
            barrier.wait()
            with torch.no_grad():
                results[k] = [calls[k]() for _ in range(5)]
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(f"call {k}: {type(err).__name__}: {err}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors, errors
    for k, want in enumerate(sequential):
        assert all(torch.equal(got, want) for got in results[k]), k
    base = model.get_base_model()
    copied = copy.deepcopy(base)  # the lock is the instance's own: a copy gets a fresh one
    assert copied._adapter_lock is not base._adapter_lock
    assert pickle.loads(pickle.dumps(base))._adapter_lock is not base._adapter_lock


def test_processors_sharing_one_tokenizer_across_threads_keep_their_own_truncation(tmp_path):
    """The fast tokenizer keeps truncation settings as state: two processors with different `max_length` over one
    tokenizer, in threads, must still truncate at their own length."""
    tokenizer = tokenizer_for(tmp_path)
    processors = [AesformerProcessor(AesformerImageProcessor(size=8), tokenizer, max_length=m)
                  for m in (16, 24, 32, 40)]
    image, text = PIL.Image.new("RGB", (4, 4)), " ".join(["lovely light"] * 50)
    wrong, errors = [], []

    def work(k):
        try:
            for _ in range(150):
                length = processors[k](images=[image], comments=[text])["input_ids"].shape[1]
                if length != processors[k].max_length:
                    wrong.append((processors[k].max_length, length))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(repr(err))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(processors))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors and not wrong, (errors[:3], wrong[:5])


def test_resume_appends_to_a_csv_written_before_the_comments_truncated_column(model_dir, tmp_path):
    photos = [tmp_path / "a.png", tmp_path / "b.png"]
    for i, path in enumerate(photos):
        draw_scene(i, size=(40, 30)).save(path)
    old_fields = [f for f in scoring.FIELDS if f != "comments_truncated"]
    out = tmp_path / "old.csv"
    first = score_cli(photos[0], "--model", model_dir, "--output", tmp_path / "new.csv")
    assert first == 0
    row = read_rows(tmp_path / "new.csv")[0]
    with open(out, "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=old_fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerow(row)
    assert score_cli(*photos, "--model", model_dir, "--output", out, "--resume") == 0
    with open(out, encoding="utf-8", newline="") as f:
        lines = list(csv.reader(f))
    assert lines[0] == old_fields and len(lines) == 3 and all(len(line) == len(old_fields) for line in lines)
    assert [os.path.basename(r["path"]) for r in read_rows(out)] == ["a.png", "b.png"]
