"""AesformerModel as a first-class transformers model (issue 15): no module-level mutable state in the shipped
files, `device_map` offload, `get_*_features` outputs, hidden states, `config.output_attentions`, export and compile
of the whole model (mixed batches included), ONNX of the image-only branch."""

import ast
import os

import pytest
import torch

from modeling_aesformer import AesformerConfig, AesformerModel

SHIPPED = [
    "modeling_aesformer/configuration_aesformer.py",
    "modeling_aesformer/modeling_aesformer.py",
    "modeling_aesformer/pipeline_aesformer.py",
    "processing/processing_aesformer.py",
]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_model(**overrides):
    torch.manual_seed(0)
    return AesformerModel(AesformerConfig.from_preset("tiny", **overrides)).eval()


def mixed_inputs(batch=3, length=7, seed=0):
    """Images with comments, one with padding, and the last without comments (image-only branch)."""
    g = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch, 3, 32, 32, generator=g)
    input_ids = torch.randint(5, 500, (batch, length), generator=g)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[0, length - 2:] = 0
    attention_mask[-1] = 0
    return {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}


# ------------------------------------------------------------------------------------------------ 1. no global state
_MUTABLE_CALLS = {"dict", "list", "set", "defaultdict", "OrderedDict", "WeakKeyDictionary", "WeakValueDictionary",
                  "deque", "Counter"}


def _module_level_mutables(path):
    tree = ast.parse(open(path, encoding="utf-8").read())
    found = []
    for node in tree.body:
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names = [t.id for t in targets if isinstance(t, ast.Name)]
            if names == ["__all__"]:
                continue
            value = node.value
            mutable = isinstance(value, (ast.Dict, ast.List, ast.Set, ast.DictComp, ast.ListComp, ast.SetComp))
            if isinstance(value, ast.Call):
                func = value.func
                name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
                mutable = name in _MUTABLE_CALLS
            if mutable:
                found.append(f"{os.path.basename(path)}:{node.lineno} {names}")
        elif isinstance(node, ast.Global):
            found.append(f"{os.path.basename(path)}:{node.lineno} global")
    for node in ast.walk(tree):
        if isinstance(node, ast.Global):
            found.append(f"{os.path.basename(path)}:{node.lineno} global {node.names}")
    return found


def test_shipped_files_hold_no_module_level_mutable_state():
    found = [item for path in SHIPPED for item in _module_level_mutables(os.path.join(REPO, path))]
    assert found == []


def test_a_traced_forward_leaves_later_eager_forwards_untouched():
    """A failed or successful torch.export attempt used to leave FakeTensors in a global cache, after which every
    ordinary forward of every model instance returned FakeTensors."""
    model, other = tiny_model(), tiny_model()
    inputs = mixed_inputs()
    with torch.no_grad():
        before = other(**inputs).score
    torch.export.export(model, (), kwargs=inputs, strict=False)
    with torch.no_grad():
        after = other(**inputs).score
        again = model(**inputs).score
    assert type(after) is torch.Tensor and type(again) is torch.Tensor
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    torch.testing.assert_close(again, before, rtol=0, atol=0)


def test_fast_path_equals_transformers_modules_and_skips_hooked_encoders():
    model = tiny_model()
    assert AesformerModel.fast_vision_stages is not None  # installed by the package
    inputs = mixed_inputs()
    with torch.no_grad():
        fast = model(**inputs, output_hidden_states=True)
        model.fast_vision_path = False
        plain = model(**inputs, output_hidden_states=True)
    for a, b in zip(fast.vision_hidden_states, plain.vision_hidden_states):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fast.distribution, plain.distribution, rtol=1e-5, atol=1e-6)
    # A forward hook on any Swin module must fire: the fast path (which reads weights directly) steps aside.
    model.fast_vision_path = True
    seen = []
    handle = model.vision_model.encoder.layers[0].blocks[0].attention.register_forward_hook(
        lambda *args: seen.append(1))
    with torch.no_grad():
        hooked = model(**inputs)
    handle.remove()
    assert seen == [1]
    torch.testing.assert_close(hooked.distribution, plain.distribution, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ 2. offload
def test_device_map_offload_forward(tmp_path):
    pytest.importorskip("accelerate")
    model = tiny_model()
    model.save_pretrained(tmp_path / "model")
    inputs = mixed_inputs()
    with torch.no_grad():
        expected = model(**inputs)
    offloaded = AesformerModel.from_pretrained(
        tmp_path / "model", device_map="auto", max_memory={"cpu": "300KB"}, offload_folder=tmp_path / "offload"
    ).eval()
    assert "disk" in set(offloaded.hf_device_map.values())  # really offloaded
    for context in (torch.no_grad, torch.inference_mode):
        with context():
            out = offloaded(**inputs)
        torch.testing.assert_close(out.distribution, expected.distribution, rtol=1e-5, atol=1e-6)
        assert out.used_comments.tolist() == [True, True, False]


# ------------------------------------------------------------------------------------------------ 4. features
def test_get_features_return_base_model_outputs_with_pooling():
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    model = tiny_model()
    model.set_attn_implementation("eager")  # the towers' SDPA kernels do not return attention weights
    inputs = mixed_inputs()
    with torch.no_grad():
        image = model.get_image_features(inputs["pixel_values"], output_hidden_states=True, output_attentions=True)
        text = model.get_text_features(inputs["input_ids"], inputs["attention_mask"], output_hidden_states=True,
                                       output_attentions=True)
        image_tuple = model.get_image_features(inputs["pixel_values"], return_dict=False)
    assert isinstance(image, BaseModelOutputWithPooling) and isinstance(text, BaseModelOutputWithPooling)
    assert image.pooler_output.shape == (3, 64) and image.last_hidden_state.shape == (3, 4, 64)
    assert len(image.hidden_states) == 5 and len(image.attentions) == 4  # embedding + 4 stages; 4 blocks
    assert text.pooler_output.shape == (3, 64) and len(text.hidden_states) == 3 and len(text.attentions) == 2
    torch.testing.assert_close(text.pooler_output, text.last_hidden_state[:, 0])
    assert isinstance(image_tuple, tuple)
    torch.testing.assert_close(image_tuple[0], image.last_hidden_state)


# ------------------------------------------------------------------------------------------------ 5. + 6.
def test_hidden_states_and_attentions_from_call_or_config():
    model = tiny_model()
    inputs = mixed_inputs()
    with torch.no_grad():
        default = model(**inputs)
        out = model(**inputs, output_hidden_states=True)
    assert default.vision_hidden_states is None and default.text_hidden_states is None
    assert default.vision_attentions is None
    assert [tuple(h.shape) for h in out.vision_hidden_states] == [(3, 256, 8), (3, 64, 16), (3, 16, 32),
                                                                  (3, 4, 64), (3, 4, 64)]
    assert len(out.text_hidden_states) == 3 and out.text_hidden_states[0].shape[0] == 3
    assert torch.isnan(out.text_hidden_states[-1][2]).all() and not torch.isnan(out.text_hidden_states[-1][:2]).any()
    torch.testing.assert_close(out.distribution, default.distribution)

    model = tiny_model(output_attentions=True, output_hidden_states=True)
    with torch.no_grad():
        configured = model(**inputs)
    assert configured.vision_hidden_states is not None and configured.text_hidden_states is not None
    assert len(configured.vision_attentions) == 2 and len(configured.vision_language_attentions) == 2
    with torch.no_grad():
        overridden = model(**inputs, output_attentions=False, output_hidden_states=False)
    assert overridden.vision_attentions is None and overridden.vision_hidden_states is None
