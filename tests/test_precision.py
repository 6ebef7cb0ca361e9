"""Precision as a choice: `from_pretrained(dtype=bf16)` (heads and score in fp32), bf16-vs-fp32 agreement at tiny
scale, `--dtype` on score/eval/explain, JPEG draft decode in `aesformer score`, accelerate bf16 mixed precision."""

import argparse
import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from modeling_aesformer import AesformerConfig, AesformerImageProcessor, AesformerModel
from modeling_aesformer.precision import resolve_dtype
from modeling_aesformer.toy import draw_scene

from _helpers import camera_jpeg, cpu_bf16_flags, read_rows, score_cli, tiny_model_folder

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def spread_model_dir(tmp_path_factory):
    """A tiny random model whose score heads are scaled up so that its scores spread (std ~0.2 around 5.5) like a
    trained model's: with the raw initialisation every score sits within 0.01 and a rank correlation means nothing."""
    torch.manual_seed(0)
    model = AesformerModel(AesformerConfig.from_preset("tiny")).eval()
    with torch.no_grad():
        for head in (model.vision_head, model.vl_image_head, model.vl_text_head):
            head.out_proj.weight.mul_(50)
    return tiny_model_folder(tmp_path_factory.mktemp("precision") / "model", model=model)


def _cpuinfo(path, vendor, flags):
    path.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: fpu avx2 avx512f {flags}\n")
    return str(path)


def test_auto_dtype_follows_the_cpu(tmp_path, monkeypatch):
    """`auto` follows what bf16 is measured to gain on the CPU (the probe, `precision.measured_paths`, stubbed here
    with what such CPUs measure), not its vendor string; a CPU without bf16 instructions keeps fp32 unmeasured."""
    from modeling_aesformer import precision

    amd = _cpuinfo(tmp_path / "amd", "AuthenticAMD", "avx512_bf16 avx512_vnni")
    amx = _cpuinfo(tmp_path / "amx", "GenuineIntel", "avx512_bf16 amx_bf16 amx_tile")
    intel = _cpuinfo(tmp_path / "intel", "GenuineIntel", "avx512_bf16 avx512_vnni")  # no AMX: bf16 is not faster
    plain = _cpuinfo(tmp_path / "plain", "GenuineIntel", "avx512_vnni")
    assert cpu_bf16_flags(amd) == ("avx512_bf16",) and cpu_bf16_flags(amx) == ("avx512_bf16", "amx_bf16")
    assert cpu_bf16_flags(str(tmp_path / "missing")) == ()
    bf16_seconds = {amd: 0.5, amx: 0.3, intel: 1.04}  # per fp32 second, as measured on such machines
    monkeypatch.setattr(precision, "measured_paths", lambda config, path, *a, **k: (
        {"torch/fp32": 1.0, "torch/bf16": bf16_seconds[path]}, False))
    for path, expected, words in ((amd, torch.bfloat16, "torch/bf16 2.00x"), (amx, torch.bfloat16, "3.33x"),
                                  (intel, torch.float32, "torch/bf16 0.96x"), (plain, torch.float32, "emulated")):
        dtype, reason = resolve_dtype("auto", "cpu", cpuinfo_path=path)
        assert dtype == expected and words in reason and reason.startswith(("bf16 (auto", "fp32 (auto"))
    assert resolve_dtype("fp32", "cpu", cpuinfo_path=amx)[0] == torch.float32
    assert resolve_dtype("bf16", "cpu", cpuinfo_path=plain)[0] == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        resolve_dtype("fp16", "cpu")
    with pytest.raises(ValueError, match="--dtype must be one of"):
        resolve_dtype("int4", "cpu")
    with pytest.raises(ValueError, match="--dtype int8 runs the images without comments on ONNX Runtime"):
        resolve_dtype("int8", "cpu")  # the torch backend has no int8 path


def test_the_dtype_flag_offers_exactly_the_choices_the_library_resolves():
    from aesformer_cli.precision import DTYPE_CHOICES as flag_choices
    from modeling_aesformer.precision import DTYPE_CHOICES

    assert flag_choices == DTYPE_CHOICES
    from aesformer_cli.precision import SCORING_DTYPE_CHOICES as score_choices
    from modeling_aesformer.precision import SCORING_DTYPE_CHOICES

    assert score_choices == SCORING_DTYPE_CHOICES


def test_bf16_weights_keep_the_heads_and_the_score_in_fp32(spread_model_dir):
    model = AesformerModel.from_pretrained(spread_model_dir, dtype=torch.bfloat16).eval()
    assert model.vision_model.embeddings.patch_embeddings.projection.weight.dtype == torch.bfloat16
    assert model.fusion_layers[0].attention.query.weight.dtype == torch.bfloat16
    for head in (model.vision_head, model.vl_image_head, model.vl_text_head):
        assert head.out_proj.weight.dtype == head.dense.weight.dtype == torch.float32
        assert head.bin_values.dtype == head.threshold.dtype == torch.float32 and int(head.num_active_bins) == 10
    pixels = torch.randn(2, 3, 32, 32)  # fp32 images into a bf16 model: cast by the model
    ids = torch.randint(5, 500, (2, 8))
    with torch.inference_mode():
        for kwargs in ({}, {"input_ids": ids}):
            out = model(pixels, output_attentions=True, **kwargs)
            assert out.score.dtype == out.distribution.dtype == torch.float32
            assert torch.allclose(out.distribution.sum(-1), torch.ones(2), atol=1e-6)
            assert out.attentions[0].dtype == torch.float32  # the eager softmax runs in fp32
            assert out.score.dtype == torch.float32 and torch.isfinite(out.score).all()
    labels = torch.softmax(torch.randn(2, 10), -1)
    with torch.inference_mode():
        loss = model(pixels, labels=labels).loss
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_bf16_agrees_with_fp32(spread_model_dir):
    """The agreement goals at tiny scale: SRCC >= 0.995, max |delta score| <= 0.05, and a high/low label flips only
    where the fp32 score lies within 0.05 of the threshold — on both branches."""
    fp32 = AesformerModel.from_pretrained(spread_model_dir).eval()
    bf16 = AesformerModel.from_pretrained(spread_model_dir, dtype=torch.bfloat16).eval()
    processor = AesformerImageProcessor(size={"height": 32, "width": 32})
    pixels = processor([draw_scene(i, size=(48, 40)) for i in range(64)], return_tensors="pt")["pixel_values"]
    ids = torch.randint(5, 500, (64, 16), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for kwargs in ({}, {"input_ids": ids}):
            reference, reduced = fp32(pixels, **kwargs), bf16(pixels, **kwargs)
            a, b = reference.score.numpy(), reduced.score.numpy()
            assert a.std() > 0.1  # the scores spread: the rank correlation is meaningful
            assert spearmanr(a, b)[0] >= 0.995
            assert np.abs(a - b).max() <= 0.05
            threshold = reference.threshold.numpy()
            flips = (a > threshold) != (b > threshold)
            assert np.all(np.abs(a[flips] - threshold[flips]) <= 0.05)


def test_score_reduced_decode_and_bf16_against_full_decode_and_fp32(spread_model_dir, tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(6):
        camera_jpeg(photos / f"{i}.jpg", (960 + 16 * i, 720), seed=i)
    fast, full = tmp_path / "fast.csv", tmp_path / "full.csv"
    assert score_cli(photos, "--model", spread_model_dir, "--output", fast, "--num-workers", 0,
                     "--dtype", "bf16") == 0
    out = capsys.readouterr().out
    assert "precision: bf16 (asked for)" in out and "scored 6 images in" in out
    assert score_cli(photos, "--model", spread_model_dir, "--output", full, "--num-workers", 0,
                     "--dtype", "fp32", "--full-decode") == 0
    assert "precision: fp32 (asked for)" in capsys.readouterr().out
    a = {row["path"]: float(row["score"]) for row in read_rows(full)}
    b = {row["path"]: float(row["score"]) for row in read_rows(fast)}
    assert a.keys() == b.keys() and len(a) == 6
    deltas = [abs(a[k] - b[k]) for k in a]
    assert max(deltas) <= 0.1 and max(deltas) > 0  # the reduced decode did change the pixels
    # --dtype auto says what it chose and why
    assert score_cli(photos, "--model", spread_model_dir, "--output", tmp_path / "auto.csv",
                     "--num-workers", 0, "--dtype", "auto") == 0
    measured = resolve_dtype("auto", "cpu", config=AesformerConfig.from_pretrained(spread_model_dir))[0]  # cached
    expected = "bf16 (auto" if measured == torch.bfloat16 else "fp32 (auto"
    assert f"precision: {expected}" in capsys.readouterr().out


def test_explain_and_eval_take_dtype(spread_model_dir, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from aesformer_training.dataset_spec import DatasetSpec
    from aesformer_training.loaders import write_generic
    from aesformer_cli.train import eval_main
    from aesformer_cli import explain

    from _helpers import toy_training_rows

    image = tmp_path / "photo.jpg"
    draw_scene(3, size=(64, 48)).save(image)
    parser = argparse.ArgumentParser(prog="aesformer")
    explain.add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["explain", str(image), "--model", str(spread_model_dir), "--output",
                              str(tmp_path / "fig.png"), "--dtype", "bf16"])
    assert args.func(args) == 0
    assert "precision: bf16 (asked for)" in capsys.readouterr().out

    data = tmp_path / "data"
    write_generic(data, toy_training_rows(), DatasetSpec("toy", 10, (1, 10), 5.0))
    results = {}
    for dtype in ("fp32", "bf16"):
        path = tmp_path / f"{dtype}.json"
        assert eval_main(["--model", str(spread_model_dir), "--data", str(data), "--dtype", dtype,
                          "--output", str(path)]) == 0
        assert f"precision: {dtype} (asked for)" in capsys.readouterr().out
        results[dtype] = json.loads(path.read_text())
    for branch in ("with_comments", "image_only"):
        assert results["bf16"][branch]["n"] == results["fp32"][branch]["n"]
        assert results["bf16"][branch]["emd_r2"] == pytest.approx(results["fp32"][branch]["emd_r2"], abs=0.01)


@pytest.fixture
def fresh_accelerate_state():
    """accelerate keeps one process-wide state: a Trainer or training run earlier in this process fixed its mixed
    precision ("no"). Start from a fresh one, and leave none behind (bf16 must not leak into later tests)."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    yield
    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.mark.parametrize("stage", ["pretrain", "adapt"])
def test_accelerate_bf16_mixed_precision_trains_both_stages(stage, tmp_path, monkeypatch, tiny_tokenizer,
                                                            fresh_accelerate_state):
    """`mixed_precision: bf16` (here through accelerate's environment variable, as `accelerate launch` sets it):
    the forward runs under bf16 autocast, the loss stays fp32 and finite, the trainable weights (fp32) move."""
    from aesformer_training.dataset_spec import DatasetSpec
    from aesformer_training.loaders import load_generic, write_generic
    from aesformer_training.loop import ADAPT, PRETRAIN, TrainConfig, train
    from modeling_aesformer import AesformerProcessor

    from _helpers import toy_training_rows

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    data_dir = tmp_path / "data"
    write_generic(data_dir, toy_training_rows(), DatasetSpec("toy", 10, (1, 10), 5.0))
    torch.manual_seed(0)
    model = AesformerModel(AesformerConfig.from_preset("tiny"))
    processor = AesformerProcessor(AesformerImageProcessor(size={"height": 32, "width": 32}), tiny_tokenizer,
                                   max_length=64)
    if stage == "adapt":
        model.save_pretrained(tmp_path / "stage1")
        processor.save_pretrained(tmp_path / "stage1")
        model = AesformerModel.from_pretrained(tmp_path / "stage1")
    seen, losses, first = [], [], {}

    def record(module, args, output):
        if module.training:
            losses.append(output.loss.detach())
            if not first:  # the trainable weights as the first step saw them
                first.update({k: p.detach().clone() for k, p in module.named_parameters() if p.requires_grad})

    probe = model.fusion_layers[0].attention.query
    handles = [probe.register_forward_hook(lambda module, args, out: seen.append(out.dtype) if module.training
                                           else None), model.register_forward_hook(record)]
    data, spec = load_generic(data_dir)
    config = TrainConfig(stage=PRETRAIN if stage == "pretrain" else ADAPT, output_dir=str(tmp_path / "out"),
                         batch_size=4, epochs=1, max_steps=3, learning_rate=1e-3, queue_size=8)
    try:
        report = train(model, processor, data, spec, config, model_dir=str(tmp_path / "stage1")
                       if stage == "adapt" else None)
    finally:
        for handle in handles:
            handle.remove()
    assert report["steps"] == 3
    assert seen and set(seen) == {torch.bfloat16}  # the training forward ran under bf16 autocast
    assert len(losses) == 3 and all(loss.dtype == torch.float32 and torch.isfinite(loss) for loss in losses)
    now = dict(model.named_parameters())
    assert first and all(now[k].dtype == torch.float32 for k in first)  # the master weights stay fp32
    assert any(not torch.equal(now[k], v) for k, v in first.items())  # and they trained
    assert np.isfinite(report["test"]["emd_r1"])


def test_pipeline_with_a_bf16_model(spread_model_dir):
    from transformers import AutoModel, AutoProcessor, pipeline

    image = draw_scene(5, size=(64, 48))
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        model = AutoModel.from_pretrained(spread_model_dir, dtype=dtype)
        scorer = pipeline("image-aesthetics", model=model, processor=AutoProcessor.from_pretrained(spread_model_dir))
        results[dtype] = scorer(image)
    assert results[torch.bfloat16]["score"] == pytest.approx(results[torch.float32]["score"], abs=0.05)
    assert sum(results[torch.bfloat16]["distribution"]) == pytest.approx(1, abs=1e-5)
