"""`--dtype int8`: the image-only branch quantized dynamically on ONNX Runtime (`onnx_backend.int8_file_for`), its
first batch checked against fp32 on every run, through `aesformer score` and the scoring module. Tiny preset; the
agreement bar on a trained model is `tests/test_demo.py`'s (the demo's model)."""

import json
from pathlib import Path

import pytest
import torch

from _helpers import camera_jpeg, read_rows, score_cli, tiny_model_folder

pytest.importorskip("onnxscript")
pytest.importorskip("onnxruntime.quantization")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six photos, and a comments file for one of them."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(6):
        camera_jpeg(folder / f"{i}.jpg", (40 + 4 * i, 36), seed=i)
    comments = folder.parent / f"{folder.name}-comments.json"
    comments.write_text(json.dumps({"2.jpg": "lovely light"}))
    return folder, comments


def _scores(path):
    return {Path(row["path"]).name: row for row in read_rows(path)}


def test_score_int8_answers_near_fp32_checks_its_first_batch_and_quantizes_once(photos, tmp_path, monkeypatch,
                                                                                 capsys):
    monkeypatch.setenv("AESFORMER_CACHE", str(tmp_path / "cache"))
    model_dir = tiny_model_folder(tmp_path / "model", seed=2)
    folder, comments = photos
    common = [folder, "--model", model_dir, "--comments", comments, "--num-workers", 0, "--batch-size", 4]
    assert score_cli(*common, "--output", tmp_path / "fp32.csv", "--dtype", "fp32") == 0
    capsys.readouterr()
    assert score_cli(*common, "--output", tmp_path / "int8.csv", "--dtype", "int8", "--backend", "onnxruntime") == 0
    out = capsys.readouterr().out
    assert "precision: int8 (asked for) on onnxruntime" in out
    assert "quantized model.onnx to int8" in out
    assert "int8 check (adapter base, the first 3 image(s) without comments): scores within" in out
    reference, quantized = _scores(tmp_path / "fp32.csv"), _scores(tmp_path / "int8.csv")
    assert reference.keys() == quantized.keys() and len(reference) == 6
    moved = []
    for name, row in reference.items():
        got = quantized[name]
        assert got["branch"] == row["branch"] and got["error"] == row["error"] == ""
        moved.append(abs(float(got["score"]) - float(row["score"])))
        if row["branch"] == "with_comments":  # fp32 answers them (the with-comments file): unchanged
            assert moved[-1] <= 1e-4
    assert max(moved) <= 0.05
    assert max(moved) > 1e-6  # it did run quantized: int8 rounding moves the image-only scores a little

    cached = list((tmp_path / "cache" / "onnx" / "int8").glob("*/model_int8.onnx"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    assert score_cli(*common, "--output", tmp_path / "again.csv", "--dtype", "int8", "--backend", "onnxruntime") == 0
    assert "quantized model.onnx" not in capsys.readouterr().out and cached[0].stat().st_mtime_ns == stamp
    again = _scores(tmp_path / "again.csv")
    for name, row in quantized.items():
        assert abs(float(again[name]["score"]) - float(row["score"])) <= 1e-6


def test_score_int8_stops_before_writing_when_a_score_moves_past_the_bar(photos, tmp_path, monkeypatch, capsys):
    """A model whose answer int8 rounding moves far (its image-only head amplified, so the logits' quantization
    error moves the distribution): the run stops on the first batch, names the difference and the flag."""
    from modeling_aesformer import AesformerConfig, AesformerModel

    monkeypatch.setenv("AESFORMER_CACHE", str(tmp_path / "cache"))
    torch.manual_seed(0)
    model = AesformerModel(AesformerConfig.from_preset("tiny")).eval()
    with torch.no_grad():
        model.vision_head.dense.weight.mul_(40.0)
        model.vision_head.out_proj.weight.mul_(40.0)
    model_dir = tiny_model_folder(tmp_path / "model", model=model)
    folder, _ = photos
    out_file = tmp_path / "int8.csv"
    assert score_cli(folder, "--model", model_dir, "--output", out_file, "--dtype", "int8", "--backend",
                     "onnxruntime", "--num-workers", 0) == 2
    err = capsys.readouterr().err
    assert "--dtype int8 moves this model's scores too far from fp32 (adapter base" in err
    assert "Use --dtype fp32 with this model" in err
    assert not out_file.exists() or not read_rows(out_file)  # no row written


@pytest.mark.parametrize("flags, message", [
    (["--dtype", "int8"], "--dtype int8 runs the images without comments on ONNX Runtime: add --backend onnxruntime"),
    (["--dtype", "int8", "--backend", "openvino"], "--dtype int8 runs on ONNX Runtime: use --backend onnxruntime"),
    (["--dtype", "int8", "--backend", "onnxruntime", "--device", "cuda"], None),
])
def test_score_int8_refuses_what_cannot_run_int8_before_writing(photos, tmp_path, capsys, flags, message):
    if "cuda" in flags and torch.cuda.is_available():
        pytest.skip("a GPU is here: --device cuda is available")
    folder, _ = photos
    out_file = tmp_path / "out.csv"
    assert score_cli(folder, "--model", tiny_model_folder(tmp_path / "model"), "--output", out_file,
                     "--num-workers", 0, *flags) == 2
    err = capsys.readouterr().err
    assert message is None or message in err, err
    assert "--device cpu" in err or message is not None
    assert not out_file.exists()


def test_int8_is_offered_by_score_only_and_refused_for_shards(tmp_path, capsys):
    from aesformer_cli.main import main

    with pytest.raises(SystemExit):
        main(["explain", "x.jpg", "--model", "m", "--dtype", "int8"])
    assert "invalid choice: 'int8'" in capsys.readouterr().err
    shard = tmp_path / "shard-0.tar"
    import tarfile

    with tarfile.open(shard, "w"):
        pass
    assert score_cli(shard, "--model", tiny_model_folder(tmp_path / "model"), "--output", tmp_path / "o.jsonl",
                     "--dtype", "int8") == 2
    assert "--dtype int8 scores image files only" in capsys.readouterr().err


def test_scoring_module_takes_int8_and_keeps_the_torch_model_as_it_was(tmp_path, monkeypatch):
    from modeling_aesformer import AesformerImageProcessor, AesformerModel
    from modeling_aesformer.onnx_backend import BackendError
    from modeling_aesformer.scoring import score_files
    from modeling_aesformer.toy import draw_scene

    monkeypatch.setenv("AESFORMER_CACHE", str(tmp_path / "cache"))
    model = AesformerModel.from_pretrained(tiny_model_folder(tmp_path / "model", seed=4)).eval()
    processor = AesformerImageProcessor(size={"height": 32, "width": 32})
    images = [draw_scene(i, size=(40, 36)) for i in range(5)]
    reference = list(score_files(model, processor, images, batch_size=2))
    quantized = list(score_files(model, processor, images, batch_size=2, backend="onnxruntime", dtype="int8"))
    assert next(model.parameters()).dtype == torch.float32
    assert [r["index"] for r in quantized] == list(range(5))
    assert all(abs(a["score"] - b["score"]) <= 0.05 for a, b in zip(reference, quantized))
    with pytest.raises(BackendError, match="add --backend onnxruntime"):
        list(score_files(model, processor, images, dtype="int8"))
