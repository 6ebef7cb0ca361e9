import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_pre_hook

from aesformer_training.dataset_spec import DatasetSpec
from aesformer_training.loaders import load_generic, write_generic
from aesformer_training.loop import ADAPT, PRETRAIN, TrainConfig, train
from modeling_aesformer import AesformerConfig, AesformerImageProcessor, AesformerModel, AesformerProcessor

from _helpers import launch_two_processes, toy_training_rows

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """24 images in the generic format: votes centred on a hidden quality that brightness reveals."""
    folder = tmp_path_factory.mktemp("data")
    rows = toy_training_rows()
    write_generic(folder, rows, DatasetSpec("toy", 10, (1, 10), 5.0))
    return folder


def tiny(tiny_tokenizer, seed=0):
    torch.manual_seed(seed)
    model = AesformerModel(AesformerConfig.from_preset("tiny"))
    processor = AesformerProcessor(AesformerImageProcessor(size={"height": 32, "width": 32}), tiny_tokenizer,
                                   max_length=64)
    return model, processor


def run(stage, model, processor, data_dir, out, model_dir=None, **overrides):
    data, spec = load_generic(data_dir)
    settings = {"batch_size": 4, "epochs": 2, "learning_rate": 1e-3, "queue_size": 8, **overrides}
    config = TrainConfig(stage=stage, output_dir=str(out), **settings)
    return train(model, processor, data, spec, config, model_dir=model_dir)


def test_stage1_trains_saves_and_reports(tmp_path, dataset_dir, tiny_tokenizer):
    model, processor = tiny(tiny_tokenizer)
    report = run(PRETRAIN, model, processor, dataset_dir, tmp_path / "s1", epochs=3)
    # rows without comments cannot train stage 1: counted and reported, not silently dropped
    assert report["rows_without_comments"] == {"train": 4, "validation": 0, "test": 1}
    results = json.loads((tmp_path / "s1" / "results.json").read_text())
    assert set(results["test"]) >= {"srcc", "plcc", "accuracy", "emd_r1", "emd_r2", "mae", "rmse"}
    assert len(results["history"]) == 3 and results["best_epoch"] is not None
    saved = load_file(str(tmp_path / "s1" / "model" / "model.safetensors"))
    assert not any(k.startswith(("contrast", "model.")) or "queue" in k or "norm_cl" in k for k in saved)
    assert len(saved) == len(AesformerModel(AesformerConfig.from_preset("tiny")).state_dict())
    reloaded = AesformerModel.from_pretrained(tmp_path / "s1" / "model")
    # image-only parts are frozen in stage 1
    torch.manual_seed(0)
    base = AesformerModel(AesformerConfig.from_preset("tiny"))
    assert torch.equal(reloaded.vision_head.out_proj.weight, base.vision_head.out_proj.weight)
    assert not torch.equal(reloaded.vl_text_head.out_proj.weight, base.vl_text_head.out_proj.weight)
    # the resumable state holds the momentum encoders and queues
    checkpoints = sorted((tmp_path / "s1" / "checkpoints").iterdir())
    assert len(checkpoints) == 2  # save_total_limit
    state = load_file(str(checkpoints[-1] / "model.safetensors"))
    assert any("contrast.text_m." in k for k in state) and "contrast.image_queue" in state


def test_stage1_loss_goes_down(tmp_path, dataset_dir, tiny_tokenizer):
    from aesformer_training.collator import AestheticCollator

    from aesformer_training.losses import PretrainObjective

    model, processor = tiny(tiny_tokenizer)
    data, _ = load_generic(dataset_dir)
    rows = data["train"].filter(lambda r: bool(r["comments"]))
    batch = AestheticCollator(processor)([rows[i] for i in range(8)])
    objective = PretrainObjective(model, TrainConfig(stage=PRETRAIN, output_dir="", queue_size=16))
    optimizer = torch.optim.AdamW([p for p in objective.parameters() if p.requires_grad], lr=1e-3)
    losses = []
    for _ in range(15):
        loss, parts = objective(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(parts["emd"].item())
    assert losses[-1] < 0.9 * losses[0], losses
    assert 0.001 <= objective.contrast.temp.item() <= 0.5


@pytest.mark.parametrize("max_grad_norm", [None, 1e-3])
def test_max_grad_norm_clips_what_the_optimizer_sees(tmp_path, dataset_dir, tiny_tokenizer, max_grad_norm):
    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

    handle = register_optimizer_step_pre_hook(record)
    try:
        model, processor = tiny(tiny_tokenizer)
        run(PRETRAIN, model, processor, dataset_dir, tmp_path / "s1", epochs=1, max_grad_norm=max_grad_norm)
    finally:
        handle.remove()
    assert len(norms) == 3  # 16 training rows, 4 of them without comments, batch 4
    if max_grad_norm is None:
        assert min(norms) > 1e-2  # what the clipped run must bring down
    else:
        assert max(norms) <= max_grad_norm * 1.001, norms


def test_stage2_trains_only_the_adapter_and_saves_it(tmp_path, dataset_dir, tiny_tokenizer):
    model, processor = tiny(tiny_tokenizer)
    model_dir = tmp_path / "backbone"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = run(ADAPT, AesformerModel.from_pretrained(model_dir), processor, dataset_dir, tmp_path / "s2",
                 model_dir=model_dir, adapter_name="toy7", adapter_preset="lora")
    folder = model_dir / "adapters" / "toy7"
    assert sorted(os.listdir(folder)) == ["adapter_config.json", "adapter_model.safetensors",
                                          "aesformer_adapter.json"]
    assert not (model_dir / "adapter_config.json").exists()
    assert report["trainable_parameters"] < 0.5 * report["total_parameters"]
    # the backbone folder's own weights are untouched
    after = AesformerModel.from_pretrained(model_dir).state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert "srcc" in report["test"] and len(report["history"]) == 2


def test_resume_is_bit_identical(tmp_path, dataset_dir, tiny_tokenizer):
    model, processor = tiny(tiny_tokenizer)
    run(PRETRAIN, model, processor, dataset_dir, tmp_path / "full", save_steps=2)
    model, processor = tiny(tiny_tokenizer)
    run(PRETRAIN, model, processor, dataset_dir, tmp_path / "cut", save_steps=2, max_steps=3)  # "killed" mid-epoch
    model, processor = tiny(tiny_tokenizer, seed=123)  # the checkpoint must overwrite everything
    run(PRETRAIN, model, processor, dataset_dir, tmp_path / "cut", save_steps=2, resume_from_checkpoint="latest")
    full = sorted((tmp_path / "full" / "checkpoints").iterdir())[-1]
    cut = sorted((tmp_path / "cut" / "checkpoints").iterdir())[-1]
    assert full.name == cut.name
    a, b = load_file(str(full / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    ra = json.loads((tmp_path / "full" / "results.json").read_text())
    rb = json.loads((tmp_path / "cut" / "results.json").read_text())
    assert ra["test"] == rb["test"] and ra["history"] == rb["history"]


@pytest.mark.slow
def test_two_processes_run_both_stages(tmp_path, dataset_dir, tiny_tokenizer):
    model, processor = tiny(tiny_tokenizer)
    model_dir = tmp_path / "init"
    model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    common = ["--data", dataset_dir, "--batch-size", "2", "--epochs", "1", "--learning-rate", "1e-3"]
    s1 = launch_two_processes([REPO / "training" / "pretrain.py", "--model", model_dir,
                               "--output-dir", tmp_path / "s1", "--queue-size", "8", *common])
    assert s1.returncode == 0, s1.stderr[-4000:]
    s2 = launch_two_processes([REPO / "training" / "adapt.py", "--model", tmp_path / "s1" / "model",
                               "--output-dir", tmp_path / "s2", "--adapter-name", "toy", *common])
    assert s2.returncode == 0, s2.stderr[-4000:]
    # one process finishes each stage: copies results, sets the default adapter (config.json) and reports, once
    assert s1.stdout.count("stage 1 done") == 1, s1.stdout
    assert s2.stdout.count("stage 2 done") == 1, s2.stdout
    assert s2.stdout.count("are now answered by adapter 'toy'") == 1, s2.stdout
    assert json.loads((tmp_path / "s1" / "model" / "config.json").read_text())["default_adapter"] == "toy"
    assert (tmp_path / "s1" / "model" / "adapters" / "toy" / "aesformer_adapter.json").is_file()
    results = json.loads((tmp_path / "s1" / "results.json").read_text())
    # 12 train rows with comments / (2 per process x 2 processes) = 3 steps; one process would take 6
    assert results["steps"] == 3


def test_the_stages_as_python_calls_finish_as_the_commands_do(tmp_path, dataset_dir, tiny_tokenizer):
    """`stages.pretrain` / `stages.adapt`: a Python user gets what `aesformer pretrain|adapt` get: the stage-1 model
    marked untrained for images, the adapter with its results beside it, made the default answer."""
    from aesformer_training.stages import StageInputError, adapt, pretrain, summary

    model, processor = tiny(tiny_tokenizer)
    start = tmp_path / "init"
    model.save_pretrained(start)
    processor.save_pretrained(start)
    data, spec = load_generic(dataset_dir)
    settings = {"batch_size": 4, "epochs": 1, "learning_rate": 1e-3}
    stage1 = pretrain(data, spec, TrainConfig(stage=PRETRAIN, output_dir=str(tmp_path / "s1"), queue_size=8,
                                              **settings), model=start)
    assert stage1.main_process and stage1.model_dir == tmp_path / "s1" / "model"
    config = json.loads((stage1.model_dir / "config.json").read_text())
    assert config["image_only_trained"] is False and config["default_adapter"] is None
    assert summary(stage1)[-1].startswith(f"stage 1 done: model in {stage1.model_dir}; test n=3, srcc=")

    stage2 = adapt(data, spec, TrainConfig(stage=ADAPT, output_dir=str(tmp_path / "s2"), **settings),
                   stage1.model_dir)
    assert stage2.adapter == "toy" and stage2.adapter_dir == stage1.model_dir / "adapters" / "toy"
    beside = json.loads((stage2.adapter_dir / "results.json").read_text())
    assert beside == json.loads((tmp_path / "s2" / "results.json").read_text()) and beside["stage"] == "adapt"
    assert json.loads((stage1.model_dir / "config.json").read_text())["default_adapter"] == "toy"
    assert (stage2.default_adapter, stage2.previous_default) == ("toy", None)
    # the adapter is there now: a second run of that name is refused before training, naming the flag
    with pytest.raises(StageInputError, match="--adapter-name .*already has an adapter 'toy'"):
        adapt(data, spec, TrainConfig(stage=ADAPT, output_dir=str(tmp_path / "s3"), **settings), stage1.model_dir)
    assert not (tmp_path / "s3").exists()


def test_a_launch_script_reports_an_input_error_in_one_line(tmp_path):
    import subprocess
    import sys

    missing = tmp_path / "nowhere"
    run = subprocess.run([sys.executable, str(REPO / "training" / "adapt.py"), "--model", str(missing), "--data",
                          str(tmp_path), "--output-dir", str(tmp_path / "out")], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2, run.stderr
    assert run.stderr.strip().splitlines() == [
        f"training/adapt.py: error: --model {missing}: no model folder at {missing} (and it is not a Hugging Face "
        "Hub id)"]
    assert not (tmp_path / "out").exists()


def test_evaluate_branches_runs_the_branches_asked_for(dataset_dir, tiny_tokenizer):
    from aesformer_training.prediction import evaluate_branches

    model, processor = tiny(tiny_tokenizer)
    data, spec = load_generic(dataset_dir)
    both = evaluate_branches(model.eval(), processor, data["test"], spec)
    assert set(both) == {"with_comments", "image_only"}
    assert both["with_comments"]["n"] == 3 and both["image_only"]["n"] == 4  # one test row has no comments
    only = evaluate_branches(model, processor, data["test"], spec, branches=("image_only",))
    assert only == {"image_only": both["image_only"]}
    with pytest.raises(ValueError, match="unknown branches"):
        evaluate_branches(model, processor, data["test"], spec, branches=("text_only",))


def test_prediction_metrics_use_each_rows_own_scale():
    """`predict` keeps every row's threshold and bin values (from the model's output): a row counts as high by the
    threshold of the head that answered it, and a row answered on another number of bins is refused, not cut."""
    from aesformer_training.prediction import metrics_from_predictions

    nan = float("nan")
    labels = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])  # true scores 3, 3, 1
    pred = {"distribution": torch.tensor([[0.0, 1.0, 0.0]] * 3), "labels": labels,  # predicted scores 2
            "threshold": torch.tensor([1.5, 1.5, 0.5]), "bin_values": torch.tensor([[1.0, 2.0, 3.0]] * 3)}
    # rows 0 and 1: 2 and 3 both above 1.5; row 2: 2 and 1 both above 0.5 -> every row agrees
    assert metrics_from_predictions(pred, [1, 2, 3])["accuracy"] == 1.0
    # row 0's threshold for every row (what was kept before) gives another answer: row 2's 1 is below 1.5
    pred["threshold"] = torch.tensor([1.5, 1.5, 1.5])
    assert metrics_from_predictions(pred, [1, 2, 3])["accuracy"] == pytest.approx(2 / 3)
    pred["bin_values"] = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, nan]])
    with pytest.raises(ValueError, match=r"row 2\) .* 2 bins, but the labels have 3"):
        metrics_from_predictions(pred, [1, 2, 3])


def test_resume_after_an_undecodable_batch_sees_the_same_batches(tmp_path, dataset_dir, tiny_tokenizer):
    """A batch whose every image fails to decode is skipped, but it was read: a run resumed from a checkpoint taken
    after it must go on with the next batch, not replay one (bit-identical to the uninterrupted run)."""
    import shutil

    from aesformer_training.loop import EpochShuffle
    from aesformer_training.prediction import rows_with_comments

    data_dir = tmp_path / "data"
    shutil.copytree(dataset_dir, data_dir)
    data, _ = load_generic(data_dir)
    rows = rows_with_comments(data["train"])
    order = list(EpochShuffle(len(rows), 42))  # TrainConfig's default seed; batch_size 1: one row per batch
    Path(rows[order[1]]["image"]).write_bytes(b"not an image")  # the epoch's second batch decodes to nothing
    settings = {"batch_size": 1, "epochs": 1, "save_steps": 2}
    model, processor = tiny(tiny_tokenizer)
    full_report = run(PRETRAIN, model, processor, data_dir, tmp_path / "full", **settings)
    model, processor = tiny(tiny_tokenizer)
    run(PRETRAIN, model, processor, data_dir, tmp_path / "cut", max_steps=3, **settings)  # step_2: after 3 batches
    model, processor = tiny(tiny_tokenizer, seed=123)
    cut_report = run(PRETRAIN, model, processor, data_dir, tmp_path / "cut", resume_from_checkpoint="latest",
                     **settings)
    assert full_report["steps"] == cut_report["steps"] == len(rows) - 1
    full = sorted((tmp_path / "full" / "checkpoints").iterdir())[-1]
    cut = sorted((tmp_path / "cut" / "checkpoints").iterdir())[-1]
    assert full.name == cut.name
    a, b = load_file(str(full / "model.safetensors")), load_file(str(cut / "model.safetensors"))
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_stage1_answers_on_the_scale_of_its_dataset(tmp_path, tiny_tokenizer):
    """A 1..10 dataset that is not AVA labels at its midpoint (5.5): the stage-1 model takes that threshold (and the
    range) from the dataset it was trained on, so its evaluation and its later answers use the same one."""
    folder = tmp_path / "data"
    write_generic(folder, toy_training_rows(), DatasetSpec("toy", 10, (1, 10), 5.5))
    model, processor = tiny(tiny_tokenizer)
    assert model.config.score_threshold == 5.0  # the default scale is AVA's
    run(PRETRAIN, model, processor, folder, tmp_path / "s1", epochs=1)
    saved = AesformerModel.from_pretrained(tmp_path / "s1" / "model")
    assert saved.config.score_threshold == 5.5
    inputs = processor(images=[Image.new("RGB", (32, 32))], text=["nice"], return_tensors="pt")
    with torch.no_grad():
        assert saved(**inputs).threshold.tolist() == [5.5]
