"""The eval fast path of the shipped modeling file: the fusion attention's q/k/v as one GEMM over a weight joined
from its three Linears, and Swin's window work done once per shape. Same results as the modules' own forwards up
to float rounding; derived tensors cached per instance and rebuilt when a weight changes; the path stands aside
for autograd, hooks and wrapped Linears; a Hub copy of the file runs it too. (Tracing: test_transformers_integration;
the hooked-encoder case: test_fast_path_equals_transformers_modules_and_skips_hooked_encoders there.)"""

import copy
import inspect
import pickle

import pytest
import torch

import modeling_aesformer.modeling_aesformer as modeling
from modeling_aesformer import AesformerModel

from _helpers import blocked_imports_preamble, run_clean_process, tiny_model

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHIFTED = {"vision_config": {"depths": [2, 2, 2, 2]}}  # every second block shifts its windows


def mixed_inputs(batch=3, length=7, size=(32, 32), seed=0):
    """Images with comments, one with padding, and the last without comments (image-only branch)."""
    g = torch.Generator().manual_seed(seed)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[0, length - 2:] = 0
    attention_mask[-1] = 0
    return {"pixel_values": torch.randn(batch, 3, *size, generator=g),
            "input_ids": torch.randint(5, 500, (batch, length), generator=g), "attention_mask": attention_mask}


def plain(model):
    """The same weights with the fast path off on every instance: the modules' own forwards."""
    other = copy.deepcopy(model)
    other.fast_vision_path = False
    for module in other.modules():
        if isinstance(module, modeling.AesformerFusionAttention):
            module.fast_qkv_path = False
    return other


def cached(module):
    return module.__dict__.get("_derived_tensors")


def attention(model, layer=0):
    return model.fusion_layers[layer].attention


@pytest.mark.parametrize("size", [(32, 32), (48, 48), (32, 48), (40, 24)])
def test_fast_path_equals_the_modules_own_forwards_for_shifted_windows_and_odd_shapes(size):
    """Shifted windows, a clamped last stage (2x2 grid), a grid the window does not divide (3x3: the block itself
    runs) and non-square images."""
    model = tiny_model(**SHIFTED)
    reference = plain(model)
    inputs = mixed_inputs(size=size)
    with torch.no_grad():
        fast = model(**inputs)
        slow = reference(**inputs)
        fast_stages = model.get_image_features(inputs["pixel_values"], output_hidden_states=True).hidden_states
        slow_stages = reference.get_image_features(inputs["pixel_values"], output_hidden_states=True).hidden_states
    assert cached(model) is not None and cached(attention(model)) is not None  # the fast path did run
    assert cached(reference) is None and cached(attention(reference)) is None
    for a, b in zip(fast_stages, slow_stages):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.distribution, slow.distribution, rtol=1e-5, atol=1e-6)


def test_derived_tensors_follow_weight_changes():
    """In-place updates (optimizer steps, load_state_dict), a replaced Parameter and a changed Swin bias table are
    all seen by the next forward."""
    model = tiny_model(**SHIFTED)
    inputs = mixed_inputs()
    g = torch.Generator().manual_seed(1)

    def check():
        with torch.no_grad():
            torch.testing.assert_close(model(**inputs).distribution, plain(model)(**inputs).distribution,
                                       rtol=1e-5, atol=1e-6)

    check()
    with torch.no_grad():
        attention(model).query.weight.mul_(1.5)  # in place
    check()
    attention(model, 1).value.weight = torch.nn.Parameter(torch.randn(64, 64, generator=g) * 0.1)  # replaced
    check()
    state = {k: v + 0.01 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
             for k, v in model.state_dict().items()}
    model.load_state_dict(state)
    check()
    table = model.vision_model.encoder.layers[0].blocks[1].attention.relative_position_bias.relative_position_bias_table
    with torch.no_grad():
        table.add_(torch.randn(table.shape, generator=g))
    check()


def test_the_cache_lives_on_the_instance_never_in_state_dict_copies_or_pickles():
    model = tiny_model(**SHIFTED)
    keys = set(model.state_dict())
    inputs = mixed_inputs()
    with torch.no_grad():
        expected = model(**inputs).distribution
    assert cached(model).entries and cached(attention(model)).entries
    assert set(model.state_dict()) == keys
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert not cached(other).entries and not cached(attention(other)).entries  # copies start empty
        with torch.no_grad():
            torch.testing.assert_close(other(**inputs).distribution, expected, rtol=1e-6, atol=1e-7)
    fresh = tiny_model(**SHIFTED)
    assert cached(fresh) is None  # nothing shared between instances


def test_autograd_and_train_mode_run_the_modules_and_get_the_same_gradients():
    model = tiny_model(**SHIFTED)
    reference = plain(model)
    inputs = mixed_inputs()
    labels = torch.rand(3, model.config.num_score_bins)
    grads = []
    for m in (model, reference):
        m(**inputs, labels=labels).loss.backward()
        grads.append({name: p.grad for name, p in m.named_parameters() if p.grad is not None})
    assert cached(attention(model)) is None  # grad mode with trainable weights: nothing derived, nothing cached
    assert grads[0].keys() == grads[1].keys() and any(".query." in name for name in grads[0])
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-4, atol=1e-6, msg=name)
    training = tiny_model(**SHIFTED).train()
    with torch.no_grad():
        training(**mixed_inputs())
    assert cached(training) is None  # Swin in train mode runs transformers' modules (drop path, checkpointing)


def test_hooked_or_wrapped_projections_are_called_as_modules():
    model = tiny_model()
    inputs = mixed_inputs()
    with torch.no_grad():
        expected = model(**inputs).distribution
    seen = []
    handle = attention(model).key.register_forward_hook(lambda *args: seen.append(1))
    with torch.no_grad():
        hooked = model(**inputs).distribution
    handle.remove()
    assert seen == [1, 1]  # once per branch (with comments, image only)
    torch.testing.assert_close(hooked, expected, rtol=1e-5, atol=1e-6)

    class Wrapped(torch.nn.Linear):  # e.g. a PEFT/LoRA layer: a subclass whose forward must run
        def forward(self, x):
            seen.append(2)
            return super().forward(x)

    wrapped = Wrapped(64, 64)
    wrapped.load_state_dict(attention(model).value.state_dict())
    attention(model).value = wrapped
    with torch.no_grad():
        torch.testing.assert_close(model(**inputs).distribution, expected, rtol=1e-5, atol=1e-6)
    assert seen.count(2) == 2


def test_no_method_of_the_model_classes_is_replaced_by_the_package():
    """The package adds nothing to the shipped classes at import: what a Hub copy defines is what runs."""
    for cls in (AesformerModel, modeling.AesformerPreTrainedModel, modeling.AesformerFusionAttention):
        for name, value in vars(cls).items():
            function = inspect.unwrap(getattr(value, "__func__", value))  # staticmethod, classmethod, decorated
            if callable(function) and not isinstance(function, type):
                assert function.__code__.co_filename == modeling.__file__, f"{cls.__name__}.{name} comes from elsewhere"


REMOTE_FAST_PATH = """
import sys
import torch
from transformers import AutoModel
model = AutoModel.from_pretrained(sys.argv[1], trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
inputs = torch.load(sys.argv[1] + "/inputs.pt", weights_only=True)
with torch.no_grad():
    out = model(**inputs)
assert model.__dict__["_derived_tensors"].entries, "Swin's fast path did not run in the Hub copy"
assert model.fusion_layers[0].attention.__dict__["_derived_tensors"].entries, "no fused q/k/v in the Hub copy"
torch.save(out.distribution, sys.argv[1] + "/remote.pt")
"""


def test_a_hub_copy_of_the_modeling_file_runs_the_same_fast_path(tmp_path):
    import os

    model = tiny_model(**SHIFTED)
    model.save_pretrained(tmp_path)
    inputs = mixed_inputs()
    torch.save(inputs, tmp_path / "inputs.pt")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    run_clean_process(blocked_imports_preamble(repo) + REMOTE_FAST_PATH, [tmp_path], tmp_path)
    with torch.no_grad():
        local = model(**inputs).distribution
    torch.testing.assert_close(torch.load(tmp_path / "remote.pt", weights_only=True), local, rtol=1e-5, atol=1e-6)


def test_weights_made_under_inference_mode_are_used_without_a_cache():
    """Inference tensors have no version counter: nothing derived from them is cached, the results stay right."""
    with torch.inference_mode():
        model = tiny_model()
        inputs = mixed_inputs()
        fast = model(**inputs).distribution
        slow = plain(model)(**inputs).distribution
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    assert all(name[0] == "window_order" for name in cached(model).entries)  # geometry only, no weights
    assert not cached(attention(model)).entries
