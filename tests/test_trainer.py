"""AesformerModel under transformers.Trainer: loss scaling, stable predictions, DDP, bf16, dataset adapters."""

import json
import logging
import os
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainingArguments

from aesformer_training.dataset_spec import DatasetSpec
from aesformer_training.loaders import load_generic, write_generic
from modeling_aesformer import AesformerConfig, AesformerModel
from modeling_aesformer.toy import write_toy_vocab

from _helpers import launch_two_processes, toy_training_rows, trainer_collator, trainer_processor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FIELDS = ("distribution", "score", "threshold", "used_comments")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """The toy dataset (train rows 0, 5, 10, 15 have no comments), its processor and a saved tiny model."""
    folder = tmp_path_factory.mktemp("trainer")
    write_generic(folder / "data", toy_training_rows(), DatasetSpec("toy", 10, (1, 10), 5.0))
    data, _ = load_generic(folder / "data")
    vocab = write_toy_vocab(folder / "vocab.txt", 512)
    tiny_model().save_pretrained(folder / "model")
    return SimpleNamespace(folder=folder, train=data["train"], vocab=vocab, processor=trainer_processor(vocab),
                           model_dir=folder / "model")


def tiny_model(seed=0):
    torch.manual_seed(seed)
    # No dropout: a training-mode forward is then deterministic, comparable with Trainer's.
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    return AesformerModel(AesformerConfig.from_preset("tiny", text_config=no_dropout))


def arguments(out, **overrides):
    settings = {"report_to": [], "remove_unused_columns": False, "save_strategy": "no", "use_cpu": True, "seed": 0,
                "logging_steps": 1, "train_sampling_strategy": "sequential", "disable_tqdm": True}
    return TrainingArguments(str(out), **{**settings, **overrides})


def batches(toy, order, size, **collator_kwargs):
    collate = trainer_collator(toy.processor, **collator_kwargs)
    rows = list(toy.train.select(order))
    return [collate(rows[i:i + size]) for i in range(0, len(rows), size)]


# Batch mixes, 4 rows each: comments only, image-only only, then two mixed batches.
MIXED_ORDER = [1, 2, 3, 4, 0, 5, 10, 15, 6, 7, 8, 0, 9, 11, 12, 5]


def test_logged_loss_and_gradients_equal_the_models_own_with_gradient_accumulation(toy, tmp_path):
    model = tiny_model()
    trainer = Trainer(model=model, data_collator=trainer_collator(toy.processor),
                      train_dataset=toy.train.select(MIXED_ORDER),
                      args=arguments(tmp_path, per_device_train_batch_size=4, gradient_accumulation_steps=2,
                                     learning_rate=0.0, max_steps=2, lr_scheduler_type="constant"))
    assert trainer.model_accepts_loss_kwargs is False
    trainer.train()
    logged = [(h["loss"], h["grad_norm"]) for h in trainer.state.log_history if "loss" in h]
    own = []
    model.train()
    micro = batches(toy, MIXED_ORDER, 4)
    for step in range(2):
        model.zero_grad()
        losses = []
        for batch in micro[2 * step:2 * step + 2]:
            loss = model(**batch).loss
            (loss / 2).backward()
            losses.append(loss.item())
        norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))
        own.append((sum(losses) / 2, norm.item()))
    assert len(logged) == 2
    for (logged_loss, logged_norm), (own_loss, own_norm) in zip(logged, own):
        assert logged_loss == pytest.approx(own_loss, rel=1e-5)
        assert logged_norm == pytest.approx(own_norm, rel=1e-4)


def test_evaluate_with_compute_metrics_matches_one_forward_over_the_whole_set(toy, tmp_path):
    order = [0, 5, 10, 1, 2, 3, 4, 15]  # eval batches of 3: image-only, comments only, mixed
    evaluation = toy.train.select(order)
    seen = {}

    def compute_metrics(prediction):
        seen["predictions"], seen["labels"] = prediction.predictions, prediction.label_ids
        return {"mean_score": float(prediction.predictions[1].mean())}

    model = tiny_model()
    trainer = Trainer(model=model, data_collator=trainer_collator(toy.processor), eval_dataset=evaluation,
                      compute_metrics=compute_metrics, args=arguments(tmp_path, per_device_eval_batch_size=3))
    metrics = trainer.evaluate()
    # batches of one branch each (and the ignored keys: each row's scale, the fusion stack's per-batch-length tensors)
    with torch.no_grad():
        parts = [model(**batch) for batch in batches(toy, order, 3)]
    assert parts[0].used_comments.sum() == 0 and parts[1].used_comments.all()
    whole = batches(toy, order, len(order))[0]
    with torch.no_grad():
        own = model(**whole)
    assert len(seen["predictions"]) == len(FIELDS)
    for name, value in zip(FIELDS, seen["predictions"]):
        expected = getattr(own, name).numpy()
        assert value.shape == expected.shape and value.dtype == expected.dtype, name
        assert abs(value.astype("float64") - expected.astype("float64")).max() < 1e-5, name
    assert (seen["labels"] == whole["labels"].numpy()).all()
    assert seen["predictions"][3].tolist() == [False] * 3 + [True] * 4 + [False]
    assert metrics["eval_loss"] == pytest.approx(own.loss.item(), rel=1e-5)  # mean over samples, not over batches
    assert metrics["eval_mean_score"] == pytest.approx(own.score.mean().item(), rel=1e-5)


def test_every_trainable_parameter_gets_a_gradient_whatever_the_batch_holds(toy):
    """DDP with find_unused_parameters=False (Trainer's choice with gradient checkpointing) needs this on every
    rank: Swin's final norm is gone, and a branch no sample used still gets a (zero) gradient."""
    model = tiny_model().train()
    assert not any(name.startswith("vision_model.layernorm.") for name, _ in model.named_parameters())
    for order, idle in (([0, 1, 2, 5], None), ([1, 2, 3, 4], "vision_head"), ([0, 5, 10, 15], "vl_text_head")):
        batch = batches(toy, order, 4)[0]
        model.zero_grad(set_to_none=True)
        loss = model(**batch).loss
        loss.backward()
        missing = [name for name, p in model.named_parameters() if p.grad is None]
        assert not missing, (order, missing)
        if idle is not None:  # the idle branch's gradient is zero, the loss value is the plain batch mean
            assert all(not p.grad.any() for p in getattr(model, idle).parameters())
            with torch.no_grad():
                assert loss.item() == model(**batch).loss.item()


@pytest.mark.slow
def test_two_processes_with_gradient_checkpointing_and_trainer_defaults(toy, tmp_path):
    script = os.path.join(os.path.dirname(__file__), "trainer_ddp.py")
    run = launch_two_processes([script, toy.folder / "data", toy.model_dir, toy.vocab, tmp_path], timeout=420)
    assert run.returncode == 0, run.stderr[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    result = json.loads((tmp_path / "result.json").read_text())
    assert [r["world"] for r in ranks] == [2, 2]
    assert ranks[0]["find_unused_parameters"] is False  # Trainer's default with gradient checkpointing
    # the first step: rank 0 held only samples with comments, rank 1 only image-only ones
    assert ranks[0]["train_batches"][0] == [True, True] and ranks[1]["train_batches"][0] == [False, False]
    assert ranks[0]["checksum"] == ranks[1]["checksum"]  # the ranks stayed in sync
    assert {"multi_scale_adapter", "vision_head", "text_model", "vl_text_head"} <= set(ranks[0]["changed"])
    assert len(result["logged_losses"]) == 2
    # evaluate over batches of different mixes on the two ranks = one forward over the whole set
    assert result["metrics"]["eval_loss"] == pytest.approx(result["own_loss"], rel=1e-5)
    assert all(difference < 1e-5 for difference in result["differences"].values()), result["differences"]


def mixed_batch(toy):
    return batches(toy, [0, 1, 2, 5], 4)[0]


def test_loss_is_float32_for_a_bfloat16_model_and_under_cpu_autocast(toy):
    batch = mixed_batch(toy)
    model = AesformerModel.from_pretrained(toy.model_dir).eval()
    with torch.no_grad():
        reference = model(**batch).loss
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(**batch).loss
    bf16 = AesformerModel.from_pretrained(toy.model_dir, dtype=torch.bfloat16).train()
    # the encoders and fusion load in bf16; the score heads stay fp32 (`_keep_in_fp32_modules_strict`)
    assert bf16.text_model.embeddings.word_embeddings.weight.dtype == torch.bfloat16
    assert bf16.vision_head.out_proj.weight.dtype == torch.float32
    loss = bf16(**{**batch, "pixel_values": batch["pixel_values"].bfloat16()}).loss
    loss.backward()
    assert loss.dtype == autocast.dtype == torch.float32
    assert loss.item() == pytest.approx(reference.item(), rel=0.05)
    assert autocast.item() == pytest.approx(reference.item(), rel=0.05)
    assert bf16.vision_head.out_proj.weight.grad is not None and bf16.vl_text_head.out_proj.weight.grad is not None


def test_trainer_bf16_on_cpu(toy, tmp_path):
    model = AesformerModel.from_pretrained(toy.model_dir)
    trainer = Trainer(model=model, data_collator=trainer_collator(toy.processor),
                      train_dataset=toy.train.select(MIXED_ORDER[8:]),
                      args=arguments(tmp_path, per_device_train_batch_size=4, learning_rate=0.0, max_steps=1,
                                     bf16=True))
    trainer.train()
    logged = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    with torch.no_grad():
        own = model.train()(**batches(toy, MIXED_ORDER[8:12], 4)[0]).loss.item()
    assert len(logged) == 1 and logged[0] == pytest.approx(own, rel=0.05)


def test_adapter_trained_by_trainer_reloads_with_load_adapters(toy, tmp_path):
    from modeling_aesformer.adapters import add_dataset_adapter, load_adapters

    model = add_dataset_adapter(AesformerModel.from_pretrained(toy.model_dir), "toy")
    # the adapter trains the image-only branch: its loss counts those samples only
    with torch.no_grad():
        mixed = model(**mixed_batch(toy)).loss
        image_only = model(**batches(toy, [0, 5], 2, include_comments=False)[0]).loss
    assert mixed.item() == pytest.approx(image_only.item(), rel=1e-6)
    with pytest.raises(ValueError, match="adapter 'toy' trains the image-only branch.*every sample of this batch"):
        model(**batches(toy, [1, 2, 3, 4], 4)[0])
    base_before = {k: v.clone() for k, v in model.get_base_model().state_dict().items() if ".toy." not in k}
    order = [0, 1, 2, 3, 5, 6, 7, 8, 10, 11, 12, 13, 15, 14, 4, 9]  # every batch holds image-only rows
    trainer = Trainer(model=model, data_collator=trainer_collator(toy.processor), train_dataset=toy.train.select(order),
                      args=arguments(tmp_path / "run", per_device_train_batch_size=4, learning_rate=1e-2,
                                     max_steps=4))
    trainer.train()
    base_after = model.get_base_model().state_dict()
    assert all(torch.equal(value, base_after[k]) for k, value in base_before.items())  # the backbone is frozen
    trainer.save_model(str(tmp_path / "saved"))
    folder = tmp_path / "saved" / "toy"
    assert (folder / "adapter_config.json").is_file() and not (folder / "aesformer_adapter.json").exists()
    model.eval()
    images = batches(toy, [0, 5, 10], 3, include_comments=False)[0]["pixel_values"]
    with torch.no_grad():
        expected = model(images).distribution
        base = model(images, adapter="base").distribution
    assert not torch.allclose(expected, base)  # the adapter learned something
    for source in (folder, tmp_path / "saved"):  # the adapter folder, or the folder Trainer saved into
        reloaded = load_adapters(AesformerModel.from_pretrained(toy.model_dir), source).eval()
        assert list(reloaded.peft_config) == ["toy"]
        with torch.no_grad():
            torch.testing.assert_close(reloaded(images).distribution, expected, atol=1e-6, rtol=0)


def test_a_folder_with_swins_final_norm_loads_quietly(toy, tmp_path, caplog):
    weights = load_file(str(toy.model_dir / "model.safetensors"))
    assert not any(key.startswith("vision_model.layernorm.") for key in weights)
    width = AesformerConfig.from_pretrained(toy.model_dir).vision_width
    weights.update({"vision_model.layernorm.weight": torch.ones(width), "vision_model.layernorm.bias": torch.zeros(width)})
    folder = tmp_path / "old"
    AesformerConfig.from_pretrained(toy.model_dir).save_pretrained(folder)
    save_file(weights, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with caplog.at_level(logging.WARNING):
        model, info = AesformerModel.from_pretrained(folder, output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


def test_a_tokenizer_that_does_not_fit_the_model_is_reported(toy, tmp_path, caplog):
    from transformers import AutoProcessor, BertTokenizer, pipeline

    from modeling_aesformer import AesformerImageProcessor, AesformerProcessor

    folder = tmp_path / "model"
    model = AesformerModel.from_pretrained(toy.model_dir)
    model.save_pretrained(folder)
    wrong = BertTokenizer(vocab_file=str(toy.vocab))  # transformers 5.x builds 5 tokens from this
    assert len(wrong) != 512
    AesformerProcessor(AesformerImageProcessor(size={"height": 32, "width": 32}), wrong).save_pretrained(folder)
    with caplog.at_level(logging.WARNING):
        processor = AutoProcessor.from_pretrained(folder)
    assert f"tokenizer has {len(wrong)} tokens but the model's text encoder expects a vocabulary of 512" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        pipeline("image-aesthetics", model=model, processor=processor)
    assert "image-aesthetics pipeline: the tokenizer has" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert toy.processor.warn_on_vocab_size(512) and not processor.warn_on_vocab_size(512, "training")
        pipeline("image-aesthetics", model=model, processor=toy.processor)
    assert caplog.text.count("tokenizer has") == 1 and "training:" in caplog.text
