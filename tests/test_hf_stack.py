"""AesformerModel as a citizen of the Hugging Face stack: Trainer checkpoints (resume, `load_best_model_at_end`) in
either Swin key layout, plain `torch.compile`, the collator under `Trainer.predict`, LoRA on every encoder, remote-code
loads without "not initialized" warnings, the processor's settings round trip."""

import logging
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import Trainer, TrainingArguments

from aesformer_training.dataset_spec import DatasetSpec
from aesformer_training.loaders import load_generic, write_generic
from modeling_aesformer import AesformerConfig, AesformerModel
from modeling_aesformer.toy import write_toy_vocab

from _helpers import toy_training_rows, trainer_collator, trainer_processor

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Batches of 4: comments only, image-only only, then two mixed batches (toy rows 0, 5, 10, 15 have no comments).
ORDER = [1, 2, 3, 4, 0, 5, 10, 15, 6, 7, 8, 0, 9, 11, 12, 5]


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf_stack")
    write_generic(folder / "data", toy_training_rows(), DatasetSpec("toy", 10, (1, 10), 5.0))
    data, _ = load_generic(folder / "data")
    vocab = write_toy_vocab(folder / "vocab.txt", 512)
    return SimpleNamespace(folder=folder, train=data["train"], processor=trainer_processor(vocab))


def tiny_model(seed=0):
    torch.manual_seed(seed)
    # No dropout: a run and its resumed twin then compute the same steps.
    no_dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    return AesformerModel(AesformerConfig.from_preset("tiny", text_config=no_dropout))


def arguments(out, **overrides):
    settings = {"report_to": [], "remove_unused_columns": False, "use_cpu": True, "seed": 0, "logging_steps": 1,
                "train_sampling_strategy": "sequential", "disable_tqdm": True, "per_device_train_batch_size": 4,
                "learning_rate": 1e-2, "lr_scheduler_type": "constant", "max_steps": 4, "save_strategy": "steps",
                "save_steps": 2}
    return TrainingArguments(str(out), **{**settings, **overrides})


def trainer(toy, out, model, **kwargs):
    extra = {k: kwargs.pop(k) for k in ("eval_dataset", "compute_metrics") if k in kwargs}
    return Trainer(model=model, data_collator=trainer_collator(toy.processor), train_dataset=toy.train.select(ORDER),
                   args=arguments(out, **kwargs), **extra)


def differing_tensors(expected: dict, actual: dict, atol=1e-6) -> list:
    assert set(expected) == set(actual)
    return [k for k, v in expected.items()
            if v.is_floating_point() and not torch.allclose(v.float(), actual[k].float(), atol=atol, rtol=1e-5)]


def state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture()
def load_warnings(caplog):
    """Trainer's missing/unexpected-key warnings after loading a checkpoint."""
    caplog.set_level(logging.WARNING, logger="transformers.trainer")

    def found():
        return [r.getMessage() for r in caplog.records
                if "missing keys" in r.getMessage() or "unexpected keys" in r.getMessage()]

    return found


def swin_keys_in_new_layout(checkpoint):
    """Rewrite a checkpoint's weights with the key names of transformers 5's Swin modules (the model's own
    `state_dict` names), as a checkpoint written by `torch.save(model.state_dict())`-style code holds them."""
    path = checkpoint / "model.safetensors"
    weights = load_file(str(path))
    own = set(tiny_model().state_dict())
    new = {}
    for key, tensor in weights.items():
        target = key if key in own else _new_swin_name(key)
        assert target in own, key
        new[target] = tensor
    save_file(new, str(path), metadata={"format": "pt"})
    return set(weights) != set(new)


def _new_swin_name(key):
    for old, new in (("attention.self.query.", "attention.q_proj."), ("attention.self.key.", "attention.k_proj."),
                     ("attention.self.value.", "attention.v_proj."),
                     ("attention.self.relative_position_bias_table",
                      "attention.relative_position_bias.relative_position_bias_table"),
                     ("attention.output.dense.", "attention.o_proj."), ("intermediate.dense.", "mlp.fc1."),
                     ("output.dense.", "mlp.fc2.")):
        if old in key:
            return key.replace(old, new, 1)
    return key


@pytest.mark.parametrize("layout", ["as saved", "new swin names"])
def test_a_run_resumed_from_a_checkpoint_ends_with_the_uninterrupted_runs_weights(toy, tmp_path, layout,
                                                                                 load_warnings):
    uninterrupted = tiny_model()
    trainer(toy, tmp_path / "whole", uninterrupted).train()
    expected = state(uninterrupted)
    checkpoint = tmp_path / "whole" / "checkpoint-2"
    saved = set(load_file(str(checkpoint / "model.safetensors")))
    if layout == "new swin names":
        assert swin_keys_in_new_layout(checkpoint)
        assert set(load_file(str(checkpoint / "model.safetensors"))) <= set(expected)
    else:  # save_pretrained writes Swin's old names (transformers 5 undoes its conversion mapping on save)
        assert any(".attention.self.query." in key for key in saved)
    resumed = tiny_model(seed=1)  # other initial weights: everything must come from the checkpoint
    assert differing_tensors(expected, state(resumed))
    trainer(toy, tmp_path / "resumed", resumed).train(resume_from_checkpoint=str(checkpoint))
    assert differing_tensors(expected, state(resumed)) == []
    assert load_warnings() == []


def test_load_best_model_at_end_restores_the_best_checkpoint(toy, tmp_path, load_warnings):
    evaluations = []

    def compute_metrics(prediction):  # the first evaluation (step 2) is the best one
        evaluations.append(len(evaluations))
        return {"order": float(len(evaluations))}

    model = tiny_model()
    run = trainer(toy, tmp_path / "run", model, eval_strategy="steps", eval_steps=2, load_best_model_at_end=True,
                  metric_for_best_model="order", greater_is_better=False, eval_dataset=toy.train.select(ORDER[:4]),
                  compute_metrics=compute_metrics)
    run.train()
    assert evaluations == [0, 1]
    assert run.state.best_model_checkpoint.endswith("checkpoint-2")
    best = AesformerModel.from_pretrained(run.state.best_model_checkpoint)
    last = AesformerModel.from_pretrained(tmp_path / "run" / "checkpoint-4")
    assert differing_tensors(state(last), state(best))  # the two checkpoints differ ...
    assert differing_tensors(state(best), state(model)) == []  # ... and the model ends with the best one
    assert load_warnings() == []


def test_plain_torch_compile_runs_mixed_batches_with_the_eager_answers():
    """`torch.compile(model, backend="eager")`, graph breaks allowed (no fullgraph=True): a batch that mixes images
    with and without comments used to fail inside `torch.cond` (a data-dependent `nonzero`). The default backend
    (inductor) traces the same graphs; it is not run here (minutes of C++ compilation)."""
    from _helpers import tiny_model as shipped_tiny_model

    model = shipped_tiny_model().eval()
    compiled = torch.compile(model, backend="eager")
    g = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(3, 3, 32, 32, generator=g)
    input_ids = torch.randint(5, 500, (3, 7), generator=g)
    for rows_without_comments in ((1,), (0, 1, 2), ()):
        attention_mask = torch.ones(3, 7, dtype=torch.long)
        attention_mask[list(rows_without_comments)] = 0
        inputs = {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}
        with torch.no_grad():
            expected, out = model(**inputs), compiled(**inputs)
        assert out.used_comments.tolist() == expected.used_comments.tolist()
        for name in ("score", "distribution", "std"):
            torch.testing.assert_close(getattr(out, name), getattr(expected, name), rtol=1e-5, atol=1e-5)


def test_trainer_predict_rows_line_up_with_the_dataset_when_an_image_does_not_decode(toy, tmp_path, caplog):
    from aesformer_training.collator import AestheticCollator

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not an image")
    rows = toy.train.select(range(8)).map(lambda row, i: {"image": str(broken) if i == 3 else row["image"]},
                                          with_indices=True)
    collator = AestheticCollator(toy.processor, model_inputs_only=True)
    bad_id = rows[3]["id"]
    # Trainer passes every key to the model: only its inputs come back; one undecodable image is refused by id
    assert set(collator(list(rows.select([0, 1])))) == {"pixel_values", "input_ids", "attention_mask",
                                                         "token_type_ids", "labels"}
    for batch in ([rows[3]], [rows[2], rows[3]]):  # all rows bad (never None), or one of several
        with pytest.raises(ValueError, match=rf"id={bad_id!r}.*broken\.jpg.*dataset\.filter\(collator\.decodes\)"):
            collator(batch)
    # the guide's filter step: the bad row is logged and dropped, then predictions line up with the filtered rows
    with caplog.at_level(logging.WARNING):
        kept = rows.filter(collator.decodes)
    assert kept["id"] == [r for r in rows["id"] if r != bad_id] and collator.skipped[0][0] == bad_id
    assert f"id={bad_id!r}" in caplog.text
    model = tiny_model().eval()
    run = Trainer(model=model, data_collator=collator, args=arguments(tmp_path / "predict", per_device_eval_batch_size=3))
    scores = run.predict(kept).predictions[1]
    assert scores.shape == (7,)
    for position in range(7):
        with torch.no_grad():
            own = model(**{k: v for k, v in collator([kept[position]]).items() if k != "labels"}).score
        assert abs(float(own[0]) - float(scores[position])) < 1e-5, position


def test_the_guides_lora_recipe_reaches_swin_bert_and_the_fusion_layers(toy, tmp_path):
    import ast
    import re
    from pathlib import Path

    from peft import LoraConfig, get_peft_model

    guide = (Path(__file__).resolve().parents[1] / "docs" / "trainer.md").read_text()
    found = re.search(r"target_modules=(\[[^\]]*\])", guide)
    assert found, "docs/trainer.md shows no target_modules"
    target_modules = ast.literal_eval(found.group(1))
    model = get_peft_model(tiny_model(), LoraConfig(r=4, target_modules=target_modules,
                                                    modules_to_save=["vl_image_head", "vl_text_head", "vision_head"]))
    lora = [name for name, _ in model.named_parameters() if "lora_A" in name]
    for part in ("vision_model", "text_model", "fusion_layers"):
        assert any(f".{part}." in name for name in lora), (part, target_modules)
    assert any(".vision_model." in name and ".attention.q_proj." in name for name in lora)
    before = {name: p.detach().clone() for name, p in model.named_parameters() if "lora_B" in name}
    trainer(toy, tmp_path / "lora", model, max_steps=1, save_strategy="no").train()
    changed = {name for name, p in model.named_parameters() if name in before and not torch.equal(p, before[name])}
    for part in ("vision_model", "text_model", "fusion_layers"):  # the vision encoder's LoRA layers train
        assert any(f".{part}." in name for name in changed), part
    assert type(model.merge_and_unload()) is AesformerModel


def test_push_token_commit_message_private_and_unreachable_hub(tmp_path, monkeypatch, capsys):
    import argparse

    import httpx
    from huggingface_hub import HfApi

    from aesformer_cli import export as export_command

    hub = tmp_path / "hub"
    hub.mkdir()
    (hub / "config.json").write_text("{}")
    (hub / "model.safetensors").write_bytes(b"weights")
    calls = {}

    def push(*argv):
        parser = argparse.ArgumentParser(prog="aesformer")
        export_command.add_subparsers(parser.add_subparsers(dest="command", required=True))
        return export_command.run(parser.parse_args(["push", str(hub), "--repo-id", "someone/model", *argv]))

    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **k: calls.update(token=self.token, create=k))
    monkeypatch.setattr(HfApi, "repo_info", lambda self, repo_id, **k: SimpleNamespace(private=False))
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **k: calls.update(upload=k) or SimpleNamespace(
        commit_url="https://huggingface.co/someone/model/commit/1"))
    assert push("--token", "hf_secret", "--commit-message", "first weights", "--private") == 0
    assert calls["token"] == "hf_secret" and calls["upload"]["commit_message"] == "first weights"
    assert calls["create"]["private"] is True
    assert "--private not applied: someone/model already exists and is public" in capsys.readouterr().out

    def unreachable(self, repo_id, **kwargs):
        raise httpx.ConnectError("[Errno 111] Connection refused")

    monkeypatch.setattr(HfApi, "create_repo", unreachable)
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.example.org")
    monkeypatch.setattr("huggingface_hub.constants.ENDPOINT", "https://hub.example.org")
    assert push() == 2  # a reported error, as the other push errors
    err = capsys.readouterr().err
    assert "cannot reach the Hugging Face Hub at https://hub.example.org" in err and "Connection refused" in err


def test_transformers_native_adapter_api_answers_as_load_adapters(tmp_path):
    """`model.load_adapter` / `set_adapter` of transformers itself (no PeftModel) on a dataset adapter folder.
    transformers >= 5.24 asks for peft >= 0.22 there; the package's `load_adapters` works with either."""
    import peft
    import transformers
    from packaging.version import Version

    from modeling_aesformer.adapters import load_adapters

    from _helpers import tiny_model_folder

    if Version(transformers.__version__) >= Version("5.24") and Version(peft.__version__) < Version("0.22"):
        pytest.skip(f"transformers {transformers.__version__}'s adapter API needs peft >= 0.22 "
                    f"(installed: {peft.__version__}); load_adapters is tested elsewhere")
    folder = tiny_model_folder(tmp_path / "model", adapters_scale=0.05)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    reference = load_adapters(AesformerModel.from_pretrained(folder, load_default_adapter=False), folder).eval()
    native = AesformerModel.from_pretrained(folder, load_default_adapter=False).eval()
    with torch.no_grad():
        base = native(images).distribution
    native.load_adapter(str(folder / "adapters" / "ava"), adapter_name="ava")
    native.set_adapter("ava")
    reference.set_adapter("ava")
    with torch.no_grad():
        expected, answer = reference(images).distribution, native(images).distribution
    assert not torch.allclose(expected, base)  # the adapter changes the answer
    torch.testing.assert_close(answer, expected, atol=1e-6, rtol=1e-5)
