"""ONNX backends of both branches (`modeling_aesformer.onnx_backend`): `aesformer export --onnx`, `aesformer score
--backend onnxruntime|openvino` and the scoring module's `backend`, against torch fp32; the measured choice of
`--dtype auto` / `--backend auto` (`modeling_aesformer.precision`) and its cache. Tiny preset throughout."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from _helpers import camera_jpeg, read_rows, score_cli, tiny_model_folder

pytest.importorskip("onnxscript")
onnxruntime = pytest.importorskip("onnxruntime")

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TOLERANCE = 1e-4  # same answers as torch fp32: float rounding of a different kernel order only


def cli(*argv):
    from aesformer_cli.main import main

    return main([str(a) for a in argv])


@pytest.fixture(scope="module")
def hub_dir(tmp_path_factory):
    """A tiny model with the "ava" (10 bins) and "photonet" (7 bins) adapters, exported with `--onnx`."""
    root = tmp_path_factory.mktemp("backends")
    model_dir = tiny_model_folder(root / "model", adapters_scale=0.5)
    assert cli("export", model_dir, "--output", root / "hub", "--onnx") == 0
    return root / "hub"


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Six photos, and a comments file for two of them."""
    folder = tmp_path_factory.mktemp("photos")
    for i in range(6):
        camera_jpeg(folder / f"{i}.jpg", (40 + 4 * i, 36), seed=i)
    comments = folder.parent / f"{folder.name}-comments.json"
    comments.write_text(json.dumps({"1.jpg": "lovely light", "4.jpg": ["great colours", "sharp"]}))
    return folder, comments


def _scores(path):
    return {(Path(row["path"]).name, row["adapter"]): row for row in read_rows(path)}


@pytest.fixture
def comment_rows_on_runtime(monkeypatch):
    """The number of rows of each batch part the runtime's with-comments file answered (a spy on
    `RuntimeBackend.comment_outputs`, which still answers)."""
    from modeling_aesformer import onnx_backend

    seen = []
    real = onnx_backend.RuntimeBackend.comment_outputs

    def spy(self, pixel_values, *text):
        seen.append(pixel_values.shape[0])
        return real(self, pixel_values, *text)

    monkeypatch.setattr(onnx_backend.RuntimeBackend, "comment_outputs", spy)
    return seen


def _assert_rows_agree(reference, other, tolerance):
    assert reference.keys() == other.keys() and reference
    for key, row in reference.items():
        got = other[key]
        for column in ("branch", "label", "num_bins", "score_range", "trained", "adapter", "error"):
            assert got[column] == row[column], (key, column)
        assert abs(float(got["score"]) - float(row["score"])) <= tolerance, key
        assert abs(float(got["std"]) - float(row["std"])) <= tolerance, key
        np.testing.assert_allclose(json.loads(got["distribution"]), json.loads(row["distribution"]), rtol=0,
                                   atol=tolerance)


# ------------------------------------------------------------------------------------------------- export --onnx
def test_export_onnx_writes_the_hub_layout_one_input_and_a_dynamic_batch(hub_dir):
    from modeling_aesformer import AesformerModel
    from modeling_aesformer.adapters import load_adapters

    answers = json.loads((hub_dir / "onnx" / "adapters.json").read_text())
    assert answers.pop("model_with_comments.onnx") == {"branch": "with_comments"}  # tested below
    assert sorted(answers.values()) == ["ava", "base", "photonet"] and "model.onnx" in answers
    assert sorted(p.name for p in (hub_dir / "onnx").iterdir()) == sorted(
        [*answers, "model_with_comments.onnx", "adapters.json"])
    assert all(name == "model.onnx" or name == f"model_{adapter}.onnx" for name, adapter in answers.items())
    assert not list(hub_dir.parent.glob(".hub.onnx-*"))  # the temporary folder is gone
    model = load_adapters(AesformerModel.from_pretrained(hub_dir).eval(), hub_dir)
    for name, adapter in answers.items():
        session = onnxruntime.InferenceSession(str(hub_dir / "onnx" / name), providers=["CPUExecutionProvider"])
        (only,) = session.get_inputs()
        assert only.name == "pixel_values" and not isinstance(only.shape[0], int)  # a named, dynamic batch
        for batch in (1, 3):
            pixels = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(batch))
            with torch.inference_mode():
                expected = model.forward_adapters(pixels, adapters=[adapter])[adapter]
            score, std, threshold, distribution, bin_values = session.run(None, {"pixel_values": pixels.numpy()})
            np.testing.assert_allclose(score, expected.score.numpy(), rtol=0, atol=TOLERANCE)
            np.testing.assert_allclose(std, expected.std.numpy(), rtol=0, atol=TOLERANCE)
            bins = expected.distribution.shape[-1]  # the traced head answers at full width, zero past its bins
            np.testing.assert_allclose(distribution[:, :bins], expected.distribution.numpy(), rtol=0, atol=TOLERANCE)
            assert np.all(distribution[:, bins:] == 0) and np.all(np.isnan(bin_values[:, bins:]))
            np.testing.assert_allclose(threshold, expected.threshold.numpy(), rtol=0, atol=TOLERANCE)


def test_export_onnx_writes_one_with_comments_file_with_dynamic_batch_and_comment_length(hub_dir):
    """`onnx/model_with_comments.onnx`: the processor's four inputs, batch and comment length dynamic; it answers as
    the model does for images with comments, whatever adapter is active (one file for all)."""
    from modeling_aesformer import AesformerModel
    from modeling_aesformer.adapters import load_adapters

    session = onnxruntime.InferenceSession(str(hub_dir / "onnx" / "model_with_comments.onnx"),
                                           providers=["CPUExecutionProvider"])
    inputs = {item.name: item for item in session.get_inputs()}
    assert list(inputs) == ["pixel_values", "input_ids", "attention_mask", "token_type_ids"]
    for name in ("input_ids", "attention_mask", "token_type_ids"):
        batch, length = inputs[name].shape
        assert not isinstance(batch, int) and not isinstance(length, int), (name, inputs[name].shape)
        assert inputs[name].type == "tensor(int64)"
    assert [item.name for item in session.get_outputs()] == ["score", "std", "threshold", "distribution",
                                                             "bin_values"]
    model = load_adapters(AesformerModel.from_pretrained(hub_dir).eval(), hub_dir)
    for batch, length, adapter in ((1, 3, "base"), (3, 11, "ava"), (2, 5, "photonet")):
        g = torch.Generator().manual_seed(10 * batch + length)
        pixels = torch.randn(batch, 3, 32, 32, generator=g)
        ids = torch.randint(5, 500, (batch, length), generator=g)
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[0, max(1, length - 2):] = 0  # a shorter comment padded on the right
        with torch.inference_mode():
            expected = model.forward_adapters(pixels, ids, mask, adapters=[adapter])[adapter]
        assert expected.used_comments.all()
        score, std, threshold, distribution, bin_values = session.run(None, {
            "pixel_values": pixels.numpy(), "input_ids": ids.numpy(), "attention_mask": mask.numpy(),
            "token_type_ids": np.zeros_like(ids.numpy())})
        np.testing.assert_allclose(score, expected.score.numpy(), rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(std, expected.std.numpy(), rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(distribution, expected.distribution.numpy(), rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(threshold, expected.threshold.numpy(), rtol=0, atol=TOLERANCE)
        np.testing.assert_allclose(bin_values, expected.bin_values.numpy(), rtol=0, atol=TOLERANCE)


def test_an_adapter_named_with_comments_gets_a_file_name_of_its_own():
    from modeling_aesformer.onnx_backend import WITH_COMMENTS_FILE, onnx_file_name

    assert onnx_file_name("with_comments", "base") != WITH_COMMENTS_FILE
    assert onnx_file_name("with_comments", "base").endswith(".onnx")
    assert onnx_file_name("ava", "base") == "model_ava.onnx" and onnx_file_name("base", "base") == "model.onnx"


def test_export_onnx_without_the_exporter_stops_before_writing(tmp_path, monkeypatch, capsys):
    import importlib.util

    model_dir = tiny_model_folder(tmp_path / "model")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxscript" else real(name, *a))
    assert cli("export", model_dir, "--output", tmp_path / "hub", "--onnx") == 2
    assert "--onnx needs onnx and onnxscript" in capsys.readouterr().err
    assert not (tmp_path / "hub").exists()


# ------------------------------------------------------------------------------------------------ score --backend
def test_score_backend_onnxruntime_answers_as_torch_fp32_on_both_branches(hub_dir, photos, tmp_path, capsys,
                                                                          comment_rows_on_runtime):
    """Mixed batches (batch 4 of 6 photos: one image with comments in each batch, the two comments of different
    lengths): every row on onnxruntime, the same answers as torch fp32."""
    folder, comments = photos
    common = [folder, "--model", hub_dir, "--comments", comments, "--adapter", "all", "--num-workers", 0,
              "--batch-size", 4, "--dtype", "fp32"]
    assert score_cli(*common, "--output", tmp_path / "torch.csv") == 0
    assert comment_rows_on_runtime == []
    assert score_cli(*common, "--output", tmp_path / "ort.csv", "--backend", "onnxruntime") == 0
    out = capsys.readouterr().out
    assert "every image on onnxruntime" in out and "exporting" not in out  # the folder's own onnx/
    assert comment_rows_on_runtime == [1, 1]
    reference, runtime = _scores(tmp_path / "torch.csv"), _scores(tmp_path / "ort.csv")
    assert sum(row["branch"] == "with_comments" for row in reference.values()) == 2
    assert {row["adapter"] for row in reference.values()} == {"base", "ava", "photonet", ""}
    _assert_rows_agree(reference, runtime, TOLERANCE)


def test_score_backend_refuses_what_it_cannot_run(hub_dir, photos, tmp_path, capsys, monkeypatch):
    folder, _ = photos
    assert score_cli(folder, "--model", hub_dir, "--output", tmp_path / "a.csv", "--backend", "onnxruntime",
                     "--dtype", "bf16", "--num-workers", 0) == 2
    assert "--backend onnxruntime computes fp32 or int8 (asked for bf16)" in capsys.readouterr().err
    assert not (tmp_path / "a.csv").exists()
    from modeling_aesformer import onnx_backend

    monkeypatch.setattr(onnx_backend, "installed_runtimes", lambda: [])
    assert score_cli(folder, "--model", hub_dir, "--output", tmp_path / "b.csv", "--backend", "openvino",
                     "--dtype", "fp32", "--num-workers", 0) == 2
    assert "pip install 'aesformer[openvino]'" in capsys.readouterr().err
    assert not (tmp_path / "b.csv").exists()


def test_score_backend_openvino_f32_matches_torch_and_bf16_is_within_bf16_rounding(hub_dir, photos, tmp_path,
                                                                                  capsys, comment_rows_on_runtime):
    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'aesformer[openvino]')")
    folder, comments = photos
    common = [folder, "--model", hub_dir, "--comments", comments, "--adapter", "ava", "--num-workers", 0]
    assert score_cli(*common, "--output", tmp_path / "torch.csv", "--dtype", "fp32") == 0
    assert score_cli(*common, "--output", tmp_path / "f32.csv", "--backend", "openvino", "--dtype", "fp32") == 0
    assert score_cli(*common, "--output", tmp_path / "bf16.csv", "--backend", "openvino", "--dtype", "bf16") == 0
    out = capsys.readouterr().out
    assert "precision: bf16 (asked for) on openvino" in out and "every image on openvino" in out
    assert comment_rows_on_runtime == [2, 2]  # one batch of 6 with both images with comments, per run
    reference = _scores(tmp_path / "torch.csv")
    _assert_rows_agree(reference, _scores(tmp_path / "f32.csv"), TOLERANCE)
    reduced = _scores(tmp_path / "bf16.csv")
    assert reduced.keys() == reference.keys()
    for key, row in reference.items():
        assert abs(float(reduced[key]["score"]) - float(row["score"])) <= 0.05
        assert reduced[key]["branch"] == row["branch"]


OPENVINO_THEN_A_CHILD = """
import subprocess
import sys

from modeling_aesformer import AesformerModel, AesformerProcessor
from modeling_aesformer.adapters import load_adapters
from modeling_aesformer.scoring import score_files
from modeling_aesformer.toy import draw_scene

hub = sys.argv[1]
model = load_adapters(AesformerModel.from_pretrained(hub).eval(), hub)
processor = AesformerProcessor.from_pretrained(hub)
images = [draw_scene(i, size=(40, 36)) for i in range(4)]
# a DataLoader worker: torch installs its SIGCHLD handler (a Python handler, run on the alternate signal stack)
rows = list(score_files(model, processor, images, ["lovely light", None, "sharp", None], adapter="all",
                        batch_size=2, num_workers=1, backend="openvino", model_dir=hub))
assert len(rows) == 8, rows
subprocess.run([sys.executable, "-c", "pass"], check=True)  # its exit signals this process once more
print("still alive")
"""


def test_openvino_runtimes_are_released_without_leaving_a_freed_signal_stack(hub_dir):
    """OpenVINO's compiled models swap the compiling thread's alternate signal stack and put back the previous one
    when released: released out of order (several adapters and the with-comments file), the process crashed
    (SIGSEGV) at its next Python signal handler, here torch's SIGCHLD handler when a child process exits."""
    import subprocess
    import sys

    from _helpers import SUBPROCESS_ENV

    pytest.importorskip("openvino", reason="openvino is not installed (pip install 'aesformer[openvino]')")
    done = subprocess.run([sys.executable, "-c", OPENVINO_THEN_A_CHILD, str(hub_dir)], env=SUBPROCESS_ENV,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "still alive" in done.stdout, (done.returncode, done.stderr[-2000:])


def test_scoring_module_exports_on_the_fly_once_into_the_cache(tmp_path, monkeypatch):
    """A model folder without onnx/: the Python scoring module exports the image-only branch into the user's cache
    ($AESFORMER_CACHE here) the first time, and finds it there the next time."""
    from modeling_aesformer import AesformerImageProcessor, AesformerModel
    from modeling_aesformer.scoring import score_files
    from modeling_aesformer.toy import draw_scene

    monkeypatch.setenv("AESFORMER_CACHE", str(tmp_path / "cache"))
    model = AesformerModel.from_pretrained(tiny_model_folder(tmp_path / "model", seed=3)).eval()
    processor = AesformerImageProcessor(size={"height": 32, "width": 32})
    images = [draw_scene(i, size=(40, 36)) for i in range(5)]
    reference = list(score_files(model, processor, images, batch_size=2))
    runtime = list(score_files(model, processor, images, batch_size=2, backend="onnxruntime"))
    cached = sorted((tmp_path / "cache" / "onnx").glob("*/model.onnx"))
    assert len(cached) == 1
    stamp = cached[0].stat().st_mtime_ns
    again = list(score_files(model, processor, images, batch_size=2, backend="onnxruntime"))
    assert cached[0].stat().st_mtime_ns == stamp and len(list((tmp_path / "cache" / "onnx").iterdir())) == 1
    for rows in (runtime, again):
        assert [r["index"] for r in rows] == [r["index"] for r in reference] == list(range(5))
        for a, b in zip(reference, rows):
            assert a["adapter"] == b["adapter"] and a["label"] == b["label"] and a["branch"] == b["branch"]
            assert abs(a["score"] - b["score"]) <= TOLERANCE
            np.testing.assert_allclose(a["distribution"], b["distribution"], rtol=0, atol=TOLERANCE)


def test_scoring_module_runs_comment_rows_on_the_runtime_and_caches_their_export(tmp_path, monkeypatch, capsys,
                                                                                comment_rows_on_runtime):
    """A model folder without onnx/ and items with comments of different lengths: a batch of only rows with
    comments, a mixed one, one without comments; the with-comments branch is exported once into the cache (beside
    the image-only file) and answers as torch fp32."""
    from modeling_aesformer import AesformerModel, AesformerProcessor
    from modeling_aesformer.onnx_backend import WITH_COMMENTS_FILE
    from modeling_aesformer.scoring import score_files
    from modeling_aesformer.toy import draw_scene

    monkeypatch.setenv("AESFORMER_CACHE", str(tmp_path / "cache"))
    folder = tiny_model_folder(tmp_path / "model", seed=4)
    model = AesformerModel.from_pretrained(folder).eval()
    processor = AesformerProcessor.from_pretrained(folder)
    images = [draw_scene(i, size=(40, 36)) for i in range(7)]
    comments = ["lovely light and a sharp subject in the corner", "dull", ["great colours", "sharp"], None,
                "soft", None, None]  # batches of 3: all with comments / mixed / none
    reference = list(score_files(model, processor, images, comments, batch_size=3))
    capsys.readouterr()
    runtime = list(score_files(model, processor, images, comments, batch_size=3, backend="onnxruntime"))
    assert comment_rows_on_runtime == [3, 1]
    (cached,) = (tmp_path / "cache" / "onnx").glob(f"*/{WITH_COMMENTS_FILE}")
    assert "exporting the with-comments branch" in capsys.readouterr().out
    stamp = cached.stat().st_mtime_ns
    again = list(score_files(model, processor, images, comments, batch_size=3, backend="onnxruntime"))
    assert cached.stat().st_mtime_ns == stamp and len(comment_rows_on_runtime) == 4
    assert [r["branch"] for r in reference] == ["with_comments"] * 3 + ["image_only", "with_comments"] + \
        ["image_only"] * 2
    for rows in (runtime, again):
        assert [r["index"] for r in rows] == [r["index"] for r in reference]
        for a, b in zip(reference, rows):
            assert (a["adapter"], a["label"], a["branch"]) == (b["adapter"], b["label"], b["branch"])
            assert abs(a["score"] - b["score"]) <= TOLERANCE and abs(a["std"] - b["std"]) <= TOLERANCE
            np.testing.assert_allclose(a["distribution"], b["distribution"], rtol=0, atol=TOLERANCE)


def test_image_only_runtime_keeps_comment_rows_on_torch(hub_dir, comment_rows_on_runtime):
    """`ImageOnlyRuntime` (the name callers used before) still runs only the rows without comments; the others go
    to torch, in the same batch, in input order."""
    from modeling_aesformer import AesformerModel, AesformerProcessor
    from modeling_aesformer.adapters import load_adapters
    from modeling_aesformer.onnx_backend import ImageOnlyRuntime
    from modeling_aesformer.scoring import collate_encodings, encode_image, score_collated
    from modeling_aesformer.toy import draw_scene

    model = load_adapters(AesformerModel.from_pretrained(hub_dir).eval(), hub_dir)
    processor = AesformerProcessor.from_pretrained(hub_dir)
    items = [{"index": i, **encode_image(processor, draw_scene(i, size=(40, 36)), text)}
             for i, text in enumerate([None, "lovely light", None, ["great colours", "sharp"]])]
    collated = collate_encodings(items, processor.tokenizer.pad_token_id)
    runtime = ImageOnlyRuntime(model, ["ava"], "onnxruntime", model_dir=hub_dir)
    assert not runtime.runs_comments
    reference = score_collated(model, collated, ["ava"])
    mixed = score_collated(model, collated, ["ava"], backend=runtime)
    assert comment_rows_on_runtime == [] and list(mixed) == list(reference) == [0, 1, 2, 3]
    for index, rows in reference.items():
        (row,), (got,) = rows, mixed[index]
        assert row["branch"] == got["branch"] == ("with_comments" if index % 2 else "image_only")
        assert abs(row["score"] - got["score"]) <= TOLERANCE


def test_a_folder_exported_before_the_with_comments_file_still_scores(hub_dir, photos, tmp_path, monkeypatch,
                                                                      capsys, comment_rows_on_runtime):
    """An `onnx/` folder of the earlier layout (adapters.json maps file names to adapter names only): its
    image-only files are used, the with-comments branch is exported into the cache."""
    import shutil

    monkeypatch.setenv("AESFORMER_CACHE", str(tmp_path / "cache"))
    old = tmp_path / "old-hub"
    shutil.copytree(hub_dir, old)
    (old / "onnx" / "model_with_comments.onnx").unlink()
    answers = json.loads((old / "onnx" / "adapters.json").read_text())
    del answers["model_with_comments.onnx"]
    (old / "onnx" / "adapters.json").write_text(json.dumps(answers))
    folder, comments = photos
    common = [folder, "--model", old, "--comments", comments, "--num-workers", 0, "--dtype", "fp32"]
    assert score_cli(*common, "--output", tmp_path / "torch.csv") == 0
    assert score_cli(*common, "--output", tmp_path / "ort.csv", "--backend", "onnxruntime") == 0
    out = capsys.readouterr().out
    assert "exporting the with-comments branch" in out and "exporting the image-only branch" not in out
    assert len(list((tmp_path / "cache" / "onnx").glob("*/model_with_comments.onnx"))) == 1
    assert comment_rows_on_runtime == [2]  # one batch of the 6 photos, 2 with comments
    _assert_rows_agree(_scores(tmp_path / "torch.csv"), _scores(tmp_path / "ort.csv"), TOLERANCE)


# ------------------------------------------------------------------------------------------- auto, by measurement
def test_auto_never_picks_a_path_slower_than_torch_fp32():
    from modeling_aesformer.precision import MIN_GAIN, choose_path

    slower = {"torch/fp32": 1.0, "torch/bf16": 1.3, "onnxruntime/fp32": 1.2, "openvino/fp32": 1.1}
    assert choose_path(slower)[:2] == ("torch", "fp32")
    barely = {"torch/fp32": 1.0, "onnxruntime/fp32": 1.0 / (MIN_GAIN * 0.95)}  # within the noise margin
    backend, dtype, why = choose_path(barely)
    assert (backend, dtype) == ("torch", "fp32") and "nothing" in why
    faster = {"torch/fp32": 1.0, "torch/bf16": 0.6, "onnxruntime/fp32": 0.7, "openvino/bf16": 0.4}
    assert choose_path(faster)[:2] == ("openvino", "bf16")
    assert choose_path(faster, backend="torch")[:2] == ("torch", "bf16")
    assert choose_path(faster, dtype="fp32")[:2] == ("onnxruntime", "fp32")


def test_auto_is_measured_once_then_cached_per_machine_and_model_shape(tmp_path, monkeypatch):
    from modeling_aesformer import AesformerConfig
    from modeling_aesformer import precision

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC Test\n"
                       "flags\t\t: fpu avx2 avx512f avx512_bf16\n")
    config = AesformerConfig.from_preset("tiny")
    calls = []
    real = precision.measure_paths

    def counting(paths, config=None, runs=3, path_budget_s=0.05):
        calls.append(list(paths))
        return real(paths, config, runs=1)

    monkeypatch.setattr(precision, "measure_paths", counting)
    first = precision.resolve_precision("auto", "auto", "cpu", config, str(cpuinfo), cache_dir=tmp_path / "cache")
    assert len(calls) == 1 and ("torch", "fp32") in calls[0] and ("torch", "bf16") in calls[0]
    assert ("onnxruntime", "fp32") in calls[0]
    assert "(auto: " in first.reason and "probe" in first.reason and "AMD EPYC Test" in first.reason
    stored = json.loads((tmp_path / "cache" / "probe.json").read_text())
    (key,) = stored
    assert "AMD EPYC Test" in key and f"torch={torch.__version__}" in key
    again = precision.resolve_precision("auto", "auto", "cpu", config, str(cpuinfo), cache_dir=tmp_path / "cache")
    assert len(calls) == 1 and (again.backend, again.dtype) == (first.backend, first.dtype)
    assert "cached probe" in again.reason
    # another model shape is measured anew; torch alone measures only the torch paths
    precision.resolve_precision("auto", "auto", "cpu", AesformerConfig.from_preset("demo"), str(cpuinfo),
                                cache_dir=tmp_path / "cache")
    precision.resolve_precision("auto", "torch", "cpu", config, str(cpuinfo), cache_dir=tmp_path / "cache")
    assert len(calls) == 3 and all(backend == "torch" for backend, _ in calls[2])
    # a CPU without bf16 instructions keeps fp32 without measuring
    plain = tmp_path / "plain"
    plain.write_text("processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu avx2\n")
    chosen = precision.resolve_precision("auto", "torch", "cpu", config, str(plain), cache_dir=tmp_path / "cache")
    assert (chosen.dtype, len(calls)) == ("fp32", 3) and "emulated" in chosen.reason


def test_backend_default_stays_torch_and_auto_prints_its_measured_reason(hub_dir, photos, tmp_path, monkeypatch,
                                                                         capsys):
    from modeling_aesformer import precision

    folder, _ = photos
    assert score_cli(folder, "--model", hub_dir, "--output", tmp_path / "default.csv", "--num-workers", 0) == 0
    out = capsys.readouterr().out
    assert "images without comments on" not in out  # torch unless asked for auto or a runtime
    # a machine where every runtime measured slower than torch fp32: auto keeps torch
    monkeypatch.setattr(precision, "measured_paths", lambda *a, **k: (
        {"torch/fp32": 1.0, "torch/bf16": 1.4, "onnxruntime/fp32": 1.2, "openvino/fp32": 1.3}, True))
    assert score_cli(folder, "--model", hub_dir, "--output", tmp_path / "auto.csv", "--num-workers", 0,
                     "--backend", "auto", "--dtype", "auto") == 0
    out = capsys.readouterr().out
    assert "precision: fp32 (auto: torch; cached probe" in out and "images without comments on" not in out
    # ... and where onnxruntime measured faster, auto takes it
    monkeypatch.setattr(precision, "measured_paths", lambda *a, **k: (
        {"torch/fp32": 1.0, "torch/bf16": 1.4, "onnxruntime/fp32": 0.5}, True))
    assert score_cli(folder, "--model", hub_dir, "--output", tmp_path / "auto2.csv", "--num-workers", 0,
                     "--backend", "auto", "--dtype", "auto") == 0
    out = capsys.readouterr().out
    assert "precision: fp32 (auto: onnxruntime" in out and "images without comments on onnxruntime" in out
    _assert_rows_agree(_scores(tmp_path / "default.csv"), _scores(tmp_path / "auto2.csv"), TOLERANCE)


def test_the_backend_flag_offers_exactly_the_choices_the_library_resolves():
    from aesformer_cli.precision import BACKEND_CHOICES as flag_choices
    from modeling_aesformer.precision import BACKEND_CHOICES

    assert flag_choices == BACKEND_CHOICES


def test_auto_keeps_fp32_on_an_amd_bf16_cpu_where_bf16_measures_no_faster(tmp_path, monkeypatch):
    """The issue's case: on the demo preset (64 px) bf16 gave nothing on an AMD CPU with AVX512-BF16 (11.3 vs 11.1
    images/s), yet `--dtype auto` picked bf16 from the vendor string. Measured, it keeps fp32."""
    from modeling_aesformer import AesformerConfig
    from modeling_aesformer import precision

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n"
                       "flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    monkeypatch.setattr(precision, "measure_paths", lambda paths, config=None, **k: {
        f"{b}/{d}": {"torch/fp32": 11.3, "torch/bf16": 11.1}[f"{b}/{d}"] ** -1 for b, d in paths})
    dtype, reason = precision.resolve_dtype("auto", "cpu", cpuinfo_path=str(cpuinfo),
                                            config=AesformerConfig.from_preset("demo"), cache_dir=tmp_path)
    assert dtype == torch.float32 and "torch/bf16 0.98x" in reason and "AMD EPYC 9R14" in reason
