"""AesformerModel as a first-class transformers model (issue 15): `device_map` offload, `get_*_features` outputs,
hidden states, `config.output_attentions`, export and compile of the whole model (mixed batches included), ONNX of
the image-only branch. (No module-level mutable state in the shipped files: tests/test_layers.py.)"""

import pytest
import torch

from modeling_aesformer import AesformerModel
from _helpers import tiny_model, tokenizer_for


def mixed_inputs(batch=3, length=7, seed=0):
    """Images with comments, one with padding, and the last without comments (image-only branch)."""
    g = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch, 3, 32, 32, generator=g)
    input_ids = torch.randint(5, 500, (batch, length), generator=g)
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    attention_mask[0, length - 2:] = 0
    attention_mask[-1] = 0
    return {"pixel_values": pixel_values, "input_ids": input_ids, "attention_mask": attention_mask}


@pytest.fixture(scope="module")
def exported():
    """(model, the whole model exported with torch.export at static shapes from a mixed batch of 3)."""
    model = tiny_model()
    return model, torch.export.export(model, (), kwargs=mixed_inputs(), strict=False)


def test_a_traced_forward_leaves_later_eager_forwards_untouched(exported):
    """A failed or successful torch.export attempt used to leave FakeTensors in a global cache, after which every
    ordinary forward of every model instance returned FakeTensors."""
    model, _ = exported
    other = tiny_model()
    inputs = mixed_inputs()
    with torch.no_grad():
        before = other(**inputs).score  # `exported` has already traced `model` in this process
    with torch.no_grad():
        after = other(**inputs).score
        again = model(**inputs).score
    assert type(after) is torch.Tensor and type(again) is torch.Tensor
    torch.testing.assert_close(after, before, rtol=0, atol=0)
    torch.testing.assert_close(again, before, rtol=0, atol=0)


def test_fast_path_equals_transformers_modules_and_skips_hooked_encoders():
    model = tiny_model()
    inputs = mixed_inputs()
    with torch.no_grad():
        fast, fast_stages = model(**inputs), model.get_image_features(inputs["pixel_values"], output_hidden_states=True)
        assert model.__dict__["_derived_tensors"].entries  # the fast path ran (see test_fast_path.py)
        model.fast_vision_path = False
        plain = model(**inputs)
        plain_stages = model.get_image_features(inputs["pixel_values"], output_hidden_states=True)
    for a, b in zip(fast_stages.hidden_states, plain_stages.hidden_states):
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
    assert default.hidden_states is None and default.attentions is None
    # the fusion stack: input + 2 layers; rows with comments 4 image + 7 comment tokens, the image-only row 4 x 4
    assert [tuple(h.shape) for h in out.hidden_states] == [(3, 16, 64)] * 3
    assert (out.hidden_states[-1][:2, 11:] == 0).all() and (out.hidden_states[-1][:2, :11] != 0).any()
    # the hidden states are the tensors the answer comes from: the heads read the last one
    pooled = model.vision_norm(out.hidden_states[-1][2:]).mean(dim=1)
    torch.testing.assert_close(model.vision_head(pooled)[0].softmax(-1), default.distribution[2:], rtol=1e-5,
                               atol=1e-6)
    torch.testing.assert_close(out.distribution, default.distribution)

    model = tiny_model(output_attentions=True, output_hidden_states=True)
    with torch.no_grad():
        configured = model(**inputs)
    assert len(configured.hidden_states) == 3 and len(configured.attentions) == 2
    assert configured.attentions[0].shape == (3, 2, 16, 16)
    with torch.no_grad():
        overridden = model(**inputs, output_attentions=False, output_hidden_states=False)
    assert overridden.attentions is None and overridden.hidden_states is None


# ------------------------------------------------------------------------------------------------ 7. export, compile
def _with_mask(inputs, rows_without_comments):
    inputs = {k: v.clone() for k, v in inputs.items()}
    inputs["attention_mask"][:] = 1
    inputs["attention_mask"][list(rows_without_comments)] = 0
    return inputs


def _assert_same_answer(out, expected):
    for name in ("score", "distribution", "threshold", "std", "bin_values"):
        torch.testing.assert_close(getattr(out, name), getattr(expected, name), rtol=1e-5, atol=1e-5, equal_nan=True)
    assert out.used_comments.tolist() == expected.used_comments.tolist()


@pytest.mark.parametrize("rows_without_comments", [(2,), (), (0, 1, 2), (1,)])
def test_export_static_shapes_routes_any_mix(exported, rows_without_comments):
    model, program = exported
    inputs = _with_mask(mixed_inputs(seed=1), rows_without_comments)
    with torch.no_grad():
        expected = model(**inputs)
    _assert_same_answer(program.module()(**inputs), expected)


def _unbacked_batch_inputs(graph_module, parameter_suffix, target):
    """Batch sizes of the `target` ops that read a parameter ending in `parameter_suffix`, in any (sub)graph."""
    sizes = []
    for module in graph_module.modules():
        graph = getattr(module, "graph", None)
        if graph is None:
            continue
        for node in graph.nodes:
            if node.op == "call_function" and target in str(node.target) and any(
                getattr(arg, "name", "").endswith(parameter_suffix) for arg in node.args
            ):
                sizes.append(str(node.meta["val"].shape[0]))
    return sizes


def test_export_runs_each_branch_on_its_own_rows_only(exported):
    """Routing by data-dependent row counts (unbacked sizes), not by computing both branches for every sample."""
    _, program = exported
    graph = program.graph_module
    text = _unbacked_batch_inputs(graph, "word_embeddings_weight", "embedding")
    vision_expert = _unbacked_batch_inputs(graph, "fusion_layers_0_vision_ffn_intermediate_weight", "linear")
    comment_expert = _unbacked_batch_inputs(graph, "fusion_layers_0_vl_ffn_intermediate_weight", "linear")
    for sizes in (text, vision_expert, comment_expert):
        assert sizes and all(size.startswith("u") for size in sizes), sizes  # not the batch of 3


@pytest.mark.parametrize("example_rows_without_comments", [(2,), (0, 1, 2), ()])
def test_export_dynamic_batch(example_rows_without_comments):
    """One whole-model program with a dynamic batch (and comment length) answers any mix of rows, whatever mix it
    was exported from, labels (loss) and token_type_ids included."""
    from torch.export import Dim

    def with_extras(inputs):
        batch = inputs["input_ids"].shape[0]
        votes = torch.rand(batch, 10, generator=torch.Generator().manual_seed(batch)) + 0.1
        return {**inputs, "token_type_ids": torch.zeros_like(inputs["input_ids"]), "labels": votes}

    model = tiny_model()
    batch, length = Dim("batch", min=1, max=64), Dim("length", min=2, max=64)
    text = {0: batch, 1: length}
    program = torch.export.export(
        model, (), kwargs=with_extras(_with_mask(mixed_inputs(), example_rows_without_comments)), strict=False,
        dynamic_shapes={"pixel_values": {0: batch}, "input_ids": text, "attention_mask": text, "token_type_ids": text,
                        "labels": {0: batch}},
    )
    for size, rows, words in ((5, (1, 3), 9), (1, (), 7), (2, (0, 1), 5), (4, (0,), 3)):
        inputs = with_extras(_with_mask(mixed_inputs(batch=size, length=words, seed=2), rows))
        with torch.no_grad():
            expected = model(**inputs)
        out = program.module()(**inputs)
        _assert_same_answer(out, expected)
        torch.testing.assert_close(out.loss, expected.loss, rtol=1e-5, atol=1e-6)


def test_compile_fullgraph_mixed_batches():
    model = tiny_model()
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    for rows in ((2,), (0, 1, 2)):
        inputs = _with_mask(mixed_inputs(seed=3), rows)
        with torch.no_grad():
            _assert_same_answer(compiled(**inputs), model(**inputs))


def test_onnx_export_of_the_image_only_branch_runs_in_onnxruntime(tmp_path):
    pytest.importorskip("onnxscript")
    onnxruntime = pytest.importorskip("onnxruntime")
    from torch.export import Dim

    class ImageOnlyScore(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, pixel_values):
            out = self.model(pixel_values)
            return out.score, out.distribution

    model = tiny_model()
    # transformers' SDPA attention in Swin does not survive the ONNX exporter's decomposition (a view of the
    # attention output with the wrong strides); the eager attention exports.
    model.set_attn_implementation("eager")
    wrapper = ImageOnlyScore(model).eval()
    path = tmp_path / "image_only.onnx"
    torch.onnx.export(wrapper, (torch.randn(2, 3, 32, 32),), str(path), dynamo=True,
                      dynamic_shapes={"pixel_values": {0: Dim("batch", min=1, max=64)}})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in (2, 5):
        pixel_values = torch.randn(size, 3, 32, 32, generator=torch.Generator().manual_seed(size))
        with torch.no_grad():
            score, distribution = wrapper(pixel_values)
        got_score, got_distribution = session.run(None, {session.get_inputs()[0].name: pixel_values.numpy()})
        assert abs(got_score - score.numpy()).max() <= 1e-4
        assert abs(got_distribution - distribution.numpy()).max() <= 1e-4


# ------------------------------------------------------------------------------------------------ 8. + 9. processors


def test_image_processor_accepts_the_standard_images_kwargs():
    import numpy as np

    from aesformer_processing import AesformerImageProcessor
    from aesformer_processing.processing_aesformer import AesformerImageProcessorKwargs

    processor = AesformerImageProcessor(size={"height": 8, "width": 8})
    assert processor.valid_kwargs is AesformerImageProcessorKwargs
    chw = np.random.default_rng(0).integers(0, 255, (3, 12, 10), dtype=np.uint8)
    out = processor(chw, do_convert_rgb=True, input_data_format="channels_first", data_format="channels_last",
                    device="cpu", return_tensors="pt", disable_grouping=True, default_to_square=True)
    assert tuple(out["pixel_values"].shape) == (1, 8, 8, 3)
    hwc = processor(chw.transpose(1, 2, 0), input_data_format="channels_last", return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(hwc, out["pixel_values"].permute(0, 3, 1, 2))
    with pytest.raises(ValueError, match="do_center_crop"):
        processor(chw, do_center_crop=True)
    with pytest.raises(ValueError, match="data_format"):
        processor(chw, data_format="channels_middle")


def test_processor_kwargs_routing_and_the_old_call_forms(tmp_path):
    from PIL import Image

    from aesformer_processing import AesformerImageProcessor, AesformerProcessor

    processor = AesformerProcessor(AesformerImageProcessor(size={"height": 16, "width": 16}),
                                   tokenizer_for(tmp_path), max_length=64)
    images = [Image.new("RGB", (20, 20), (200, 10, 10)), Image.new("RGB", (20, 20), (10, 200, 10))]
    long_comment = " ".join(["great light"] * 40)
    # max_length goes to the tokenizer, size to the image processor (flat kwargs routed by name)
    out = processor(images=images, text=[long_comment, None], max_length=16, size=12)
    assert out["input_ids"].shape[1] == 16 and out["pixel_values"].shape[-1] == 12
    assert out["attention_mask"][1].sum() == 0
    # the structured forms
    nested = processor(images=images, text=[long_comment, None], text_kwargs={"max_length": 10},
                       images_kwargs={"size": {"height": 8, "width": 8}}, common_kwargs={"return_tensors": "np"})
    assert nested["input_ids"].shape[1] == 10 and nested["pixel_values"].shape[-2:] == (8, 8)
    assert type(nested["pixel_values"]).__module__ == "numpy"
    # the processor's own default (64) and the old keyword `comments=`, positional images
    default = processor(images, comments=[long_comment, None])
    assert default["input_ids"].shape[1] == 64
    padded = processor(images, comments=["nice", None], padding="max_length", pad_to_multiple_of=8)
    assert padded["input_ids"].shape[1] == 64
    with pytest.raises(ValueError, match="not both"):
        processor(images, text=["a", None], comments=["a", None])
    # saved and reloaded with its max_length
    processor.save_pretrained(tmp_path / "processor")
    assert AesformerProcessor.from_pretrained(tmp_path / "processor").max_length == 64


# ------------------------------------------------------------------------------------------------ packaging
@pytest.mark.parametrize("command", ["pretrain", "adapt", "eval", "score", "demo"])
def test_every_command_help_shows_its_own_name(command, capsys):
    from aesformer_cli.main import main

    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: aesformer {command} ")
