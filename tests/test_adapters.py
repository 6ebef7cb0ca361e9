"""Dataset adapters: adding, saving, listing and loading them (also in a process that cannot import the package),
their parameters, and threads calling one model with different adapters."""

import json
import os
import pickle
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
from transformers import AutoModel

from modeling_aesformer import AesformerConfig, AesformerModel
from modeling_aesformer.adapters import (
    add_dataset_adapter,
    adapter_info,
    list_adapters,
    load_adapters,
    save_adapters,
)

from _helpers import blocked_imports_preamble, run_threads, trainable_parameters

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def base_model():
    torch.manual_seed(0)
    return AesformerModel(AesformerConfig.from_preset("tiny")).eval()


def perturb(model, name, scale=0.05, seed=1):
    """Make adapter `name` differ from the base (a freshly added adapter is a copy of the base modules)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, param in model.named_parameters():
            if f".{name}." in key:
                param.add_(scale * torch.randn(param.shape, generator=g))


def two_adapters(preset="faithful"):
    model = add_dataset_adapter(base_model(), "ava", preset=preset, dataset="AVA")
    model = add_dataset_adapter(model, "photonet", preset=preset, num_score_bins=7, dataset="Photo.net")
    perturb(model, "ava", seed=1)
    perturb(model, "photonet", seed=2)
    return model.eval()


def images(n=3, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def stage2_parameter_count(model):
    parts = [model.multi_scale_adapter, model.vision_norm, model.vision_head]
    parts += [layer.vision_ffn for layer in model.fusion_layers]
    return sum(p.numel() for part in parts for p in part.parameters())


def test_presets_train_the_stage2_parameters():
    expected = stage2_parameter_count(base_model())
    faithful = add_dataset_adapter(base_model(), "ava", preset="faithful")
    trainable, total, fraction = trainable_parameters(faithful)
    assert trainable == expected  # exactly what the paper trains in stage 2
    names = [n for n, p in faithful.named_parameters() if p.requires_grad]
    assert all(".ava." in n for n in names)
    assert not any(k in n for n in names for k in ("vision_model", "text_model", "vl_ffn", "attention", "vl_"))
    lora = add_dataset_adapter(base_model(), "ava", preset="lora", lora_rank=4)
    lora_trainable, _, lora_fraction = trainable_parameters(lora)
    assert 0 < lora_trainable < trainable and lora_fraction < fraction
    with pytest.raises(ValueError, match="unknown adapter preset 'qlora'"):
        add_dataset_adapter(base_model(), "x", preset="qlora")
    with pytest.raises(ValueError, match="reserved"):
        add_dataset_adapter(base_model(), "base")


@pytest.mark.parametrize("preset", ["faithful", "lora"])
def test_switching_disabling_and_one_call_for_several_adapters(preset):
    model = two_adapters(preset)
    x = images()
    base = base_model()(x).distribution
    model.set_adapter("ava")
    ava = model(x)
    model.set_adapter("photonet")
    photonet = model(x)
    assert ava.distribution.shape == (3, 10) and photonet.distribution.shape == (3, 7)
    assert ((photonet.score >= 1) & (photonet.score <= 7)).all()
    torch.testing.assert_close(photonet.score, photonet.distribution @ torch.arange(1, 8.0))
    assert not torch.allclose(ava.distribution, base, atol=1e-4)
    with model.disable_adapter():
        torch.testing.assert_close(model(x).distribution, base, atol=0, rtol=0)

    both = model.forward_adapters(x, adapters=["ava", "photonet", "base"])
    torch.testing.assert_close(both["ava"].distribution, ava.distribution, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(both["photonet"].distribution, photonet.distribution, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(both["base"].distribution, base, atol=1e-6, rtol=1e-5)
    assert model.active_adapter == "photonet"  # the one-call path restores the active adapter
    with pytest.raises(ValueError, match="unknown adapter 'jas'"):
        model.forward_adapters(x, adapters=["jas"])
    with pytest.raises(ValueError, match="unknown adapter 'jas'"):
        model(x, adapter="jas")
    torch.testing.assert_close(model(x, adapter="ava").distribution, ava.distribution, atol=0, rtol=0)
    assert model.active_adapter == "photonet"
    with pytest.raises(TypeError, match="forward_adapters"):  # the old several-adapters call says where it went
        model(x, adapters=["ava"])


def test_adapters_change_only_the_image_only_branch():
    model = two_adapters()
    x = images(2)
    ids = torch.randint(5, 500, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    mask[1] = 0
    outs = model.forward_adapters(x, input_ids=ids, attention_mask=mask, adapters=["ava", "photonet"])
    heads = {name: model.forward_heads(x, input_ids=ids, attention_mask=mask, adapter=name) for name in outs}
    torch.testing.assert_close(heads["ava"].logits["vl_text"][0], heads["photonet"].logits["vl_text"][0])
    assert heads["ava"].logits["vision"].shape == (2, 10) and heads["photonet"].logits["vision"].shape == (2, 7)
    for name, out in outs.items():  # each entry equals a forward with that adapter alone
        alone = model(x, input_ids=ids, attention_mask=mask, adapter=name)
        for field in ("distribution", "score", "std", "threshold", "bin_values", "used_comments"):
            torch.testing.assert_close(out[field], alone[field], atol=0, rtol=0, equal_nan=True)
        torch.testing.assert_close(heads[name].output.distribution, alone.distribution, atol=0, rtol=0)
    assert outs["ava"].used_comments.tolist() == [True, False]
    # mixed scales in one batch: the comment row answers on 10 bins, the photonet row on 7 (zero-padded)
    assert outs["photonet"].distribution.shape == (2, 10)
    assert (outs["photonet"].distribution[1, 7:] == 0).all()
    torch.testing.assert_close(outs["photonet"].distribution[1, :7].sum(), torch.tensor(1.0))
    # ...and each row carries the scale it was answered on: NaN past the 7-bin head's last bin, and its spread
    for name, out in outs.items():
        assert out.bin_values.shape == out.distribution.shape and out.std.shape == (2,)
        torch.testing.assert_close(out.bin_values[0], torch.arange(1, 11.0))  # the with-comments heads
        values = torch.nan_to_num(out.bin_values)
        torch.testing.assert_close(out.score, (out.distribution * values).sum(-1))
        spread = (out.distribution * (values - out.score[:, None]) ** 2).sum(-1).sqrt()
        torch.testing.assert_close(out.std, spread)
    torch.testing.assert_close(outs["ava"].bin_values[1], torch.arange(1, 11.0))
    assert outs["photonet"].bin_values[1, :7].tolist() == list(range(1, 8))
    assert torch.isnan(outs["photonet"].bin_values[1, 7:]).all()
    assert outs["photonet"].bin_values.isfinite().sum(-1).tolist() == [10, 7]


def test_stage2_training_touches_only_the_adapter():
    model = add_dataset_adapter(base_model(), "ava")
    model.train()
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW([p for _, p in trainable], lr=1e-3)
    labels = torch.softmax(torch.randn(4, 10), -1)
    for step in range(3):
        loss = model(images(4, seed=step), labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            for name, param in trainable:
                assert param.grad is not None and param.grad.abs().sum() > 0, name
        optimizer.step()
    for name, param in model.named_parameters():
        if name in frozen:
            assert torch.equal(param, frozen[name]), name  # bit-identical
    # the frozen fusion attention lies between the loss and the adapter, so gradients went through it
    attention = model.get_base_model().fusion_layers[0].attention.query.weight
    assert not attention.requires_grad


LOAD_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    BLOCK = sys.argv[3] == "block"  # then the script starts with blocked_imports_preamble
    from transformers import AutoModel
    from peft import PeftModel
    folder, out = sys.argv[1], sys.argv[2]
    if BLOCK:
        # no Aesformer package: the exported folder's remote code + plain PEFT
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        model = PeftModel.from_pretrained(model, folder + "/adapters/ava", adapter_name="ava")
        model.load_adapter(folder + "/adapters/photonet", adapter_name="photonet")
    else:
        import modeling_aesformer
        from modeling_aesformer.adapters import load_adapters
        model = load_adapters(AutoModel.from_pretrained(folder).eval(), folder)
    model.eval()
    x = torch.load(folder + "/x.pt", weights_only=True)
    result = {}
    for name in ("ava", "photonet"):
        model.set_adapter(name)
        result[name] = model(x).distribution
    result["multi"] = model.forward_adapters(x, adapters=["photonet", "ava"])["photonet"].distribution
    torch.save(result, out)
    print(type(model.get_base_model()).__module__)
    """
)


@pytest.mark.parametrize("mode", ["package", "block"])
def test_save_and_reload_in_a_new_process(tmp_path, mode):
    model = two_adapters()
    folder = tmp_path / "model"
    model.get_base_model().save_pretrained(folder)
    written = save_adapters(model, folder)
    assert [p.name for p in written] == ["ava", "photonet"] and list_adapters(folder) == ["ava", "photonet"]
    assert not (folder / "adapter_config.json").exists()  # never at the model root
    for name in ("ava", "photonet"):
        files = sorted(os.listdir(folder / "adapters" / name))
        assert files == ["adapter_config.json", "adapter_model.safetensors", "aesformer_adapter.json"]
    meta = json.loads((folder / "adapters" / "photonet" / "aesformer_adapter.json").read_text())
    assert meta["num_score_bins"] == 7 and meta["score_range"] == [1.0, 7.0] and meta["dataset"] == "Photo.net"

    x = images()
    torch.save(x, folder / "x.pt")
    script = tmp_path / "load.py"
    script.write_text((blocked_imports_preamble(REPO) if mode == "block" else "") + LOAD_SCRIPT)
    out = tmp_path / "out.pt"
    run = subprocess.run([sys.executable, str(script), str(folder), str(out), mode], capture_output=True,
                         text=True, timeout=300, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert run.returncode == 0, run.stderr[-3000:]
    if mode == "block":
        assert run.stdout.strip().startswith("transformers_modules")
    loaded = torch.load(out, weights_only=True)
    for name in ("ava", "photonet"):
        model.set_adapter(name)
        # another process: float tolerances (threads may sum in another order), not bitwise equality
        torch.testing.assert_close(loaded[name], model(x).distribution, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(loaded["multi"], loaded["photonet"], atol=1e-6, rtol=1e-5)


def test_load_one_adapter_from_a_subfolder_and_delete(tmp_path):
    model = two_adapters()
    model.get_base_model().save_pretrained(tmp_path)
    save_adapters(model, tmp_path)
    reloaded = load_adapters(AesformerModel.from_pretrained(tmp_path).eval(), tmp_path, subfolder="adapters/photonet")
    assert list(reloaded.peft_config) == ["photonet"]
    info = adapter_info(reloaded, "photonet")
    assert info["num_score_bins"] == 7 and info["dataset"] == "Photo.net"
    model.set_adapter("photonet")
    torch.testing.assert_close(reloaded(images()).distribution, model(images()).distribution, atol=0, rtol=0)
    with pytest.raises(FileNotFoundError, match="jas"):
        load_adapters(AesformerModel.from_pretrained(tmp_path), tmp_path, names=["jas"])
    model.delete_adapter("ava")
    assert list(model.peft_config) == ["photonet"]
    with pytest.raises(ValueError, match="unknown adapter 'ava'"):
        model.forward_adapters(images(), adapters=["ava"])


def test_an_adapter_without_a_threshold_gets_one_on_its_own_scale():
    """The default threshold follows the scale: on 0..1 its midpoint (not the base model's 5.0, which would make every
    label "low"); a documented dataset keeps its own (Photo.net: 5.0 on 1..7); an undocumented 1..7 scale: 4.0."""
    model = add_dataset_adapter(base_model(), "unit", num_score_bins=5, score_range=(0, 1))
    model = add_dataset_adapter(model, "photonet", num_score_bins=7, dataset="Photo.net")
    model = add_dataset_adapter(model, "seven", num_score_bins=7)
    expected = {"unit": 0.5, "photonet": 5.0, "seven": 4.0}
    for name, threshold in expected.items():
        assert adapter_info(model, name)["threshold"] == pytest.approx(threshold), name
    pixels = torch.rand(2, 3, 32, 32)
    out = model(pixel_values=pixels, adapter="unit")
    assert float(out.threshold[0]) == pytest.approx(0.5)
    assert float(out.score.min()) >= 0.0 and float(out.score.max()) <= 1.0


@pytest.mark.usefixtures("one_torch_thread")
def test_threads_calling_one_model_with_different_adapters_get_the_sequential_results(model_dir_with_adapters):
    """The model itself serialises its adapter switching, per instance (no module-level lock): direct calls with
    `adapter=`, `forward_adapters` and calls with the active adapter, from threads, give the sequential answers."""
    import copy

    from modeling_aesformer.adapters import load_adapters

    model_dir = model_dir_with_adapters
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

    run_threads(work, len(calls))
    assert not errors, errors
    for k, want in enumerate(sequential):
        assert all(torch.equal(got, want) for got in results[k]), k
    base = model.get_base_model()
    copied = copy.deepcopy(base)  # the lock is the instance's own: a copy gets a fresh one
    assert copied._adapter_lock is not base._adapter_lock
    assert pickle.loads(pickle.dumps(base))._adapter_lock is not base._adapter_lock
