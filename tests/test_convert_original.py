"""`modeling_aesformer.convert_original`: parity with the ORIGINAL AesFormer code, key coverage, refusals.

The parity test rebuilds the original code's state dict from `shared/parity/seed-0/reference.json` (the manifest of
every key, with the exact weight rule), converts it ONCE at full size, and compares both branches of the converted
`AesformerModel` with what the original code computed. Everything else uses tiny or meta-device state dicts built
from the original key layout, written here independently of the converter's rules.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import argparse  # noqa: E402
import gc  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import re  # noqa: E402
import zlib  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import load_file  # noqa: E402

import modeling_aesformer  # noqa: E402,F401  (registers the Auto classes)
from modeling_aesformer import AesformerConfig, AesformerModel  # noqa: E402
from modeling_aesformer.convert_original import (  # noqa: E402
    ConversionError,
    convert_original_checkpoint,
    detect_config,
    plan_conversion,
)
from aesformer_cli.convert import add_subparser, run  # noqa: E402

def _parity_dir() -> Path:
    """$AESFORMER_PARITY_DIR, else `../shared/parity` from the repository root (the project layout: `shared/` beside
    the checkout), else `shared/parity` inside it, else the workplace's own copy (a CI clone may live away from
    `shared/`). Absent everywhere -> the tests FAIL, not skip."""
    if os.environ.get("AESFORMER_PARITY_DIR"):
        return Path(os.environ["AESFORMER_PARITY_DIR"])
    repo = Path(__file__).resolve().parents[1]
    candidates = [repo.parent / "shared" / "parity", repo / "shared" / "parity", Path("/work/shared/parity")]
    return next((c for c in candidates if (c / "seed-0" / "reference.json").is_file()), candidates[0])


PARITY_DIR = _parity_dir()
SEED = 0


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.getbasetemp() / "hf-home"))


# ---------------------------------------------------------------------------------------------------- original layout


def original_layout(config, neck_name="stage", momentum=True):
    """{key: (shape, dtype)} of the original code's `model.state_dict()` for an Aesformer architecture."""
    v, t = config.vision_config, config.text_config
    hidden, inner, bins, head = t.hidden_size, t.intermediate_size, config.num_score_bins, config.head_hidden_size
    layout = {}

    def add(key, *shape, dtype=torch.float32):
        layout[key] = (tuple(shape), dtype)

    def linear(prefix, n_out, n_in, bias=True):
        add(f"{prefix}.weight", n_out, n_in)
        if bias:
            add(f"{prefix}.bias", n_out)

    def norm(prefix, n):
        add(f"{prefix}.weight", n)
        add(f"{prefix}.bias", n)

    def swin(p):
        dim, res, window = v.embed_dim, v.image_size // v.patch_size, v.window_size
        add(f"{p}patch_embed.proj.weight", dim, v.num_channels, v.patch_size, v.patch_size)
        add(f"{p}patch_embed.proj.bias", dim)
        norm(f"{p}patch_embed.norm", dim)
        for s, (depth, heads) in enumerate(zip(v.depths, v.num_heads)):
            win = min(window, res)  # the original shrinks the window, and drops the shift, on a grid no larger
            for b in range(depth):
                q = f"{p}layers.{s}.blocks.{b}."
                norm(q + "norm1", dim)
                add(q + "attn.relative_position_bias_table", (2 * win - 1) ** 2, heads)
                add(q + "attn.relative_position_index", win * win, win * win, dtype=torch.int64)
                linear(q + "attn.qkv", 3 * dim, dim)
                linear(q + "attn.proj", dim, dim)
                norm(q + "norm2", dim)
                linear(q + "mlp.fc1", int(dim * v.mlp_ratio), dim)
                linear(q + "mlp.fc2", dim, int(dim * v.mlp_ratio))
                if b % 2 == 1 and res > window:
                    add(q + "attn_mask", (res // window) ** 2, window * window, window * window)
            if s < len(v.depths) - 1:
                add(f"{p}layers.{s}.downsample.reduction.weight", 2 * dim, 4 * dim)
                norm(f"{p}layers.{s}.downsample.norm", 4 * dim)
                dim, res = 2 * dim, res // 2
        norm(f"{p}norm", dim)
        linear(f"{p}head.0", 10, dim)

    def bert_layer(q):
        for name in ("query", "key", "value"):
            linear(f"{q}attention.self.{name}", hidden, hidden)
        linear(f"{q}attention.output.dense", hidden, hidden)
        norm(f"{q}attention.output.LayerNorm", hidden)
        linear(f"{q}intermediate.dense", inner, hidden)
        linear(f"{q}output.dense", hidden, inner)
        norm(f"{q}output.LayerNorm", hidden)

    def bert(p):
        add(f"{p}embeddings.word_embeddings.weight", t.vocab_size, hidden)
        add(f"{p}embeddings.position_embeddings.weight", t.max_position_embeddings, hidden)
        add(f"{p}embeddings.token_type_embeddings.weight", t.type_vocab_size, hidden)
        norm(f"{p}embeddings.LayerNorm", hidden)
        for i in range(t.num_hidden_layers):
            bert_layer(f"{p}encoder.layer.{i}.")
        linear(f"{p}pooler.dense", hidden, hidden)

    swin("feature_vit.img_model.")
    bert("feature.bert_model.")
    for i in range(config.num_fusion_layers):
        bert_layer(f"cross_encoder.{i}.")
        n = f"vlmo_neck.layers.{i}."
        for name in ("query", "key", "value"):
            linear(f"{n}sa.self.{name}", hidden, hidden)
        linear(f"{n}sa.output.dense", hidden, hidden)
        norm(f"{n}sa.output.LayerNorm", hidden)
        for expert in ("vl", "v"):
            linear(f"{n}intermediate_{expert}.dense", inner, hidden)
            linear(f"{n}output_{expert}.dense", hidden, inner)
            norm(f"{n}output_{expert}.LayerNorm", hidden)
    widths = config.stage_widths
    for k, width in enumerate(widths, start=1):
        if width != widths[-1]:
            linear(f"feature_neck.{neck_name}{k}_linear", widths[-1], width)
    for k in range(1, len(widths) + 1):
        linear(f"adapter_{k}.0", hidden // config.adapter_reduction, hidden)
        linear(f"adapter_{k}.2", hidden, hidden // config.adapter_reduction)
    for name in ("heads_vl_v", "heads_vl_l", "head_v"):
        linear(f"{name}.0", head, hidden)
        linear(f"{name}.2", bins, head)
    for name in ("norm", "norm_v", "norm_cl", "norm_cl_m"):
        norm(name, hidden)
    if config.needs_vision_projection:
        linear("proj", hidden, widths[-1])
        linear("proj_m", hidden, widths[-1])
    if momentum:
        swin("visual_encoder_m.img_model.")
        bert("text_encoder_m.bert_model.")
    add("image_queue", hidden, 1024)
    add("text_queue", hidden, 1024)
    add("queue_ptr", 1, dtype=torch.int64)
    add("temp")
    return layout


def alias_twin(key):
    """The original's `vlmo_neck.layers.i.{sa, intermediate_vl, output_vl}` ARE `cross_encoder.i.*` (shared modules)."""
    for alias, twin in (("sa", "attention"), ("intermediate_vl", "intermediate"), ("output_vl", "output")):
        m = re.fullmatch(rf"vlmo_neck\.layers\.(\d+)\.{alias}\.(.+)", key)
        if m:
            return f"cross_encoder.{m[1]}.{twin}.{m[2]}"
    return None


def tiny_original(config=None, seed=1, **layout_kwargs):
    """A small random original-format state dict (aliases share their twin's tensor, as in the original)."""
    config = config or AesformerConfig.from_preset("tiny")
    g = torch.Generator().manual_seed(seed)
    state = {}
    for key, (shape, dtype) in sorted(original_layout(config, **layout_kwargs).items()):
        if alias_twin(key):
            continue
        if dtype.is_floating_point:
            state[key] = (1.0 if key.endswith("weight") and len(shape) == 1 else 0.0) + 0.1 * torch.randn(
                shape, generator=g
            )
        else:
            state[key] = torch.zeros(shape, dtype=dtype)
    for key in original_layout(config, **layout_kwargs):
        if alias_twin(key):
            state[key] = state[alias_twin(key)]
    return state


TINY = AesformerConfig.from_preset("tiny")


# ------------------------------------------------------------------------------------------------ parity (full size)


@pytest.fixture(scope="module")
def reference():
    path = PARITY_DIR / f"seed-{SEED}" / "reference.json"
    if not path.is_file():
        pytest.fail(
            f"parity reference {path} is missing: the converter cannot be checked against the original code. "
            "Point AESFORMER_PARITY_DIR at the folder holding seed-0/reference.json.",
            pytrace=False,
        )
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["seed"] == SEED and data["manifest_counts"]["state_dict_keys"] == len(data["manifest"])
    return data


def test_parity_reference_is_present():
    """Fails (never skips) without the reference: the parity tests below then error at setup with the same reason."""
    path = PARITY_DIR / f"seed-{SEED}" / "reference.json"
    assert path.is_file(), (
        f"parity reference {path} is missing; set AESFORMER_PARITY_DIR to the folder holding seed-0/reference.json"
    )


def regenerate_original_state_dict(reference):
    """The README's exact weight rule; every parameter's sum is checked against the manifest."""
    seed, state, wrong = reference["seed"], {}, []
    for entry in reference["manifest"]:
        if entry["kind"] != "param" or entry["alias_of"] is not None:
            continue
        key, shape = entry["key"], entry["shape"]
        generator_seed = (zlib.crc32(key.encode("utf-8")) + seed) % 2**31
        g = torch.Generator().manual_seed(generator_seed)
        if key == "temp":
            value = torch.tensor(0.07)
        else:
            assert entry["seed"] == generator_seed, key
            if key.endswith("weight") and len(shape) == 1:
                value = 1 + 0.1 * torch.randn(shape, generator=g)
            else:  # biases and everything else: same scale
                value = 0.02 * torch.randn(shape, generator=g)
        total = value.sum(dtype=torch.float64).item()
        if not math.isclose(total, entry["sum"], rel_tol=1e-9, abs_tol=1e-9):
            wrong.append(f"{key}: {total} vs manifest {entry['sum']}")
        state[key] = value
    assert not wrong, "regenerated tensors differ from the manifest:\n" + "\n".join(wrong)
    for entry in reference["manifest"]:
        if entry["alias_of"] is not None:
            state[entry["key"]] = state[entry["alias_of"]]  # the very same tensor, as in the original
        elif entry["kind"] != "param":  # buffers: the converter needs none of their values
            state[entry["key"]] = torch.zeros(entry["shape"], dtype=getattr(torch, entry["dtype"]))
    assert len(state) == len(reference["manifest"])
    return state


def regenerate_inputs(reference):
    spec = reference["inputs"]
    batch, length = spec["batch"], spec["text_len"]
    pixel_values = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(SEED + 1))
    flat = pixel_values.flatten()
    assert math.isclose(pixel_values.sum(dtype=torch.float64).item(), spec["pixel_values"]["sum"], rel_tol=1e-9)
    assert math.isclose(
        pixel_values.double().pow(2).sum().item(), spec["pixel_values"]["sum_of_squares"], rel_tol=1e-9
    )
    assert flat[:5].tolist() == spec["pixel_values"]["first5"] and flat[-5:].tolist() == spec["pixel_values"]["last5"]
    g = torch.Generator().manual_seed(SEED + 2)
    input_ids, attention_mask = [], []
    for i in range(batch):
        n = max(3, length // (i + 1))
        body = torch.randint(1000, 28001, (n - 2,), generator=g).tolist()
        input_ids.append([101] + body + [102] + [0] * (length - n))
        attention_mask.append([1] * n + [0] * (length - n))
    assert input_ids == spec["input_ids"] and attention_mask == spec["attention_mask"]
    input_ids = torch.tensor(input_ids)
    return pixel_values, input_ids, torch.tensor(attention_mask), torch.zeros_like(input_ids)


@pytest.fixture(scope="module")
def converted(reference, tmp_path_factory):
    """The ONE full-size conversion: a `{"model": {"module." + key: ...}, "epoch": ...}` file on disk, with the
    `embeddings.position_ids` buffer that old transformers versions saved."""
    root = tmp_path_factory.mktemp("parity")
    state = regenerate_original_state_dict(reference)
    state["feature.bert_model.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)
    original_keys = set(state)
    checkpoint = root / "aesformer_t_seed0.pth"
    torch.save({"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 7}, checkpoint)
    del state
    gc.collect()
    report = convert_original_checkpoint(checkpoint, root / "aesformer-t")
    gc.collect()
    yield SimpleNamespace(checkpoint=checkpoint, output=root / "aesformer-t", report=report, keys=original_keys)
    checkpoint.unlink()


@pytest.fixture(scope="module")
def outputs(reference, converted):
    from transformers import AutoModel

    model = AutoModel.from_pretrained(converted.output, trust_remote_code=False).eval()
    assert type(model) is AesformerModel
    pixel_values, input_ids, attention_mask, token_type_ids = regenerate_inputs(reference)
    captured = {}

    def keep(name, output=False):
        def hook(module, args, result=None):
            captured[name] = (result if output else args[0]).detach().clone()

        return hook

    handles = [model.vl_image_norm.register_forward_pre_hook(keep("miaa.neck_image_tokens"))]
    handles.append(model.vision_norm.register_forward_pre_hook(keep("viaa.neck_output_tokens")))
    for k, bottleneck in enumerate(model.multi_scale_adapter.bottlenecks, start=1):
        handles.append(bottleneck.up.register_forward_hook(keep(f"viaa.adapter_{k}_delta", output=True)))
    with torch.no_grad():
        # the answer and every head's tensors (AesformerHeadOutputs)
        with_comments = model.forward_heads(pixel_values, input_ids=input_ids, attention_mask=attention_mask,
                                            token_type_ids=token_type_ids)
        handles.append(model.fusion_layers[0].register_forward_pre_hook(keep("viaa.neck_input_tokens")))
        image_only = model.forward_heads(pixel_values)
        stages = model.get_image_features(pixel_values, output_hidden_states=True).hidden_states[1:]
        for k, stage in enumerate(stages, start=1):
            captured[f"swin_stage{k}"] = stage
        captured["miaa.bert_last_hidden_state"] = model.get_text_features(
            input_ids, attention_mask, token_type_ids).last_hidden_state
    for handle in handles:
        handle.remove()
    yield SimpleNamespace(with_comments=with_comments, image_only=image_only, intermediates=captured)
    del model, with_comments, image_only, captured
    gc.collect()


def assert_matches(name, actual, expected, atol, rtol):
    expected = torch.tensor(expected, dtype=torch.float32)
    assert actual is not None and actual.shape == expected.shape, name
    diff = (actual - expected).abs().max().item()
    print(f"{name}: max abs diff {diff:.3e} (atol {atol:g}, rtol {rtol:g})")
    torch.testing.assert_close(actual, expected, atol=atol, rtol=rtol, msg=lambda m: f"{name}: {m}")


def test_with_comments_branch_matches_original(reference, outputs):
    out, ref = outputs.with_comments, reference["outputs"]["miaa"]
    assert out.output.used_comments.all()
    assert_matches("vl_image logits vs img_logits", out.logits["vl_image"], ref["img_logits"], 1e-4, 1e-3)
    assert_matches("vl_text logits vs text_logits", out.logits["vl_text"], ref["text_logits"], 1e-4, 1e-3)
    assert_matches("vl_image embeds vs pooled_image_feature", out.embeds["vl_image"], ref["pooled_image_feature"],
                   1e-4, 1e-3)
    assert_matches("vl_text embeds vs text_cls", out.embeds["vl_text"], ref["text_cls"], 1e-4, 1e-3)
    assert_matches("vl_image distribution vs img_out", out.distributions["vl_image"], ref["img_out"], 1e-5, 0)
    assert_matches("vl_text distribution vs text_out", out.distributions["vl_text"], ref["text_out"], 1e-5, 0)
    mixed = 0.5 * torch.tensor(ref["img_out"]) + 0.5 * torch.tensor(ref["text_out"])
    assert_matches("distribution vs mean of the two VL heads", out.output.distribution, mixed.tolist(), 1e-5, 0)


def test_image_only_branch_matches_original(reference, outputs):
    out, ref = outputs.image_only, reference["outputs"]["viaa"]
    assert not out.output.used_comments.any() and "vl_image" not in out.logits
    assert_matches("vision logits vs logits", out.logits["vision"], ref["logits"], 1e-4, 1e-3)
    assert_matches("vision embeds vs pooled_feature", out.embeds["vision"], ref["pooled_feature"], 1e-4, 1e-3)
    assert_matches("vision distribution vs out", out.distributions["vision"], ref["out"], 1e-5, 0)
    assert_matches("distribution vs out", out.output.distribution, ref["out"], 1e-5, 0)


def test_intermediates_match_reference_debug_stats(reference, outputs):
    """Localises a mismatch: Swin stages, BERT, fusion inputs/outputs, adapter deltas (shape, sum, |sum|, std)."""
    wrong = []
    for name, actual in sorted(outputs.intermediates.items()):
        branch, _, stat = name.rpartition(".")
        expected = reference["debug"][branch or "miaa"][stat]
        x = actual.double()
        if list(x.shape) != expected["shape"]:
            wrong.append(f"{name}: shape {list(x.shape)} vs {expected['shape']}")
            continue
        tolerance = 1e-5 * expected["abs_sum"]
        total, abs_total = x.sum().item(), x.abs().sum().item()
        if abs(total - expected["sum"]) > tolerance or abs(abs_total - expected["abs_sum"]) > tolerance:
            wrong.append(f"{name}: sum {total} / |sum| {abs_total} vs "
                         f"{expected['sum']} / {expected['abs_sum']}")
        if not math.isclose(x.std().item(), expected["std"], rel_tol=1e-5):
            wrong.append(f"{name}: std {x.std().item()} vs {expected['std']}")
    assert len(outputs.intermediates) == 4 + 1 + 1 + 4 + 2
    assert not wrong, "intermediates differ from the original's:\n" + "\n".join(wrong)


def test_every_original_key_is_converted_or_deliberately_dropped(converted):
    report = converted.report
    assert report.accounted_keys == converted.keys
    consumed, duplicates = set(report.consumed), set(report.duplicates)
    dropped = {k for keys in report.dropped.values() for k in keys}
    assert not (consumed & duplicates or consumed & dropped or duplicates & dropped)
    counts = {group.split(" (")[0]: n for group, n in report.dropped_counts.items()}
    assert counts == {
        "momentum Swin": 190, "momentum BERT": 199, "contrastive norm": 2, "momentum contrastive norm": 2,
        "ITC feature queues": 3, "ITC temperature": 1, "Swin classifier head": 2, "Swin final norm": 2,
        "Swin buffers": 17, "BERT pooler": 2, "BERT buffers": 1,
    }
    assert len(duplicates) == 32 and all(k.startswith("vlmo_neck.layers.") for k in duplicates)
    with torch.device("meta"):
        model = AesformerModel(AesformerConfig.from_preset("aesformer-t"))
    assert set(report.mapping) == {name for name, _ in model.named_parameters()}  # every parameter converted
    assert set(report.mapping) | set(report.defaults) == set(model.state_dict())
    assert not any(key in model.state_dict() and key in dict(model.named_parameters()) for key in report.defaults)
    assert report.variant == "aesformer-t" and report.vocab_size == 28996 and report.num_parameters == 161_089_944
    assert any("'model'" in note for note in report.notes) and any("module." in note for note in report.notes)


def test_converted_folder_and_model_card(converted):
    files = {p.name for p in converted.output.iterdir()}
    assert {"model.safetensors", "config.json", "configuration_aesformer.py", "modeling_aesformer.py",
            "README.md"} <= files
    assert not {"tokenizer.json", "vocab.txt", "processor_config.json"} & files
    config = json.loads((converted.output / "config.json").read_text())
    assert config["model_type"] == "aesformer" and config["text_config"]["vocab_size"] == 28996
    assert config["auto_map"]["AutoModel"].endswith("AesformerModel")
    card = (converted.output / "README.md").read_text()
    assert converted.checkpoint.name in card and re.fullmatch(r"[0-9a-f]{64}", converted.report.sha256)
    assert converted.report.sha256 in card and "no licence statement" in card.lower()
    assert not converted.report.tokenizer_saved
    assert any("no tokenizer" in note and "--tokenizer" in note for note in converted.report.notes)
    assert "no tokenizer" in converted.report.summary()


def test_generated_layout_is_the_original_layout(reference):
    """Guards the helper the tiny and Aesformer-B tests rely on: it reproduces the manifest of the original T."""
    manifest = {e["key"]: (tuple(e["shape"]), getattr(torch, e["dtype"])) for e in reference["manifest"]}
    assert original_layout(AesformerConfig.from_preset("aesformer-t")) == manifest


# ---------------------------------------------------------------------------------------------- coverage, detection


def meta_state_dict(layout):
    return {k: torch.empty(shape, dtype=dtype, device="meta") for k, (shape, dtype) in layout.items()}


def test_aesformer_b_layout_has_complete_coverage():
    b = AesformerConfig.from_preset("aesformer-b")
    layout = original_layout(b, neck_name="stages")
    assert {"proj.weight", "proj_m.weight", "feature_neck.stages1_linear.weight"} <= set(layout)
    plan = plan_conversion(meta_state_dict(layout))
    mapping, dropped, unplaced, missing = plan
    assert not unplaced and not missing and not plan.shape_mismatches, "\n".join(plan.problems())
    assert plan.variant == "aesformer-b"
    v = plan.config.vision_config
    assert (v.embed_dim, list(v.depths), list(v.num_heads), v.window_size) == (128, [2, 2, 18, 2], [4, 8, 16, 32], 7)
    assert plan.config.needs_vision_projection and plan.config.text_config.vocab_size == 28996
    with torch.device("meta"):
        model = AesformerModel(b)
    expected = model.state_dict()
    assert set(mapping) == {name for name, _ in model.named_parameters()}
    assert set(mapping) | set(plan.defaults) == set(expected)
    assert str(mapping["vision_projection.weight"]) == "proj.weight"
    assert str(mapping["multi_scale_adapter.stage_projections.0.weight"]) == "feature_neck.stages1_linear.weight"
    assert expected["multi_scale_adapter.stage_projections.0.weight"].shape == (1024, 256)
    accounted = set(plan.consumed) | set(plan.duplicates) | {k for keys in dropped.values() for k in keys}
    assert accounted == set(layout)
    assert any(group.startswith("momentum projection") and keys == ["proj_m.bias", "proj_m.weight"]
               for group, keys in dropped.items())


def test_detection_reads_the_architecture_from_shapes():
    variant, config = detect_config(meta_state_dict(original_layout(TINY)))
    v, t = config.vision_config, config.text_config
    assert variant == "aesformer-t"
    assert (v.embed_dim, v.patch_size, list(v.depths), list(v.num_heads), v.window_size, v.mlp_ratio) == (
        8, 2, [1, 1, 1, 1], [1, 1, 2, 2], 2, 2.0)
    assert (t.vocab_size, t.hidden_size, t.num_hidden_layers, t.intermediate_size, t.max_position_embeddings) == (
        512, 64, 2, 128, 128)
    assert (config.num_fusion_layers, config.num_score_bins, config.head_hidden_size) == (2, 10, 32)
    three = AesformerConfig.from_preset("tiny", num_fusion_layers=3, num_score_bins=7)
    _, config = detect_config(meta_state_dict(original_layout(three)))
    assert (config.num_fusion_layers, config.num_score_bins) == (3, 7)


# ------------------------------------------------------------------------------------------------- tiny conversions


def test_tiny_conversion_places_every_tensor(tmp_path):
    from transformers import AutoModel

    original = tiny_original()
    report = convert_original_checkpoint(original, tmp_path / "out", config=TINY)
    assert report.source == "<in-memory state dict>" and report.sha256 is None
    # transformers 5.x writes Swin's legacy names into model.safetensors and renames them on load: compare the
    # LOADED model's weights.
    model = AutoModel.from_pretrained(tmp_path / "out", trust_remote_code=False).eval()
    weights = model.state_dict()
    assert set(weights) == set(report.mapping) | set(report.defaults)
    fresh = AesformerModel(TINY).state_dict()
    for key in report.defaults:  # model buffers the original has no counterpart of: as a fresh model has them
        assert torch.equal(weights[key], fresh[key]), key
    for target, placement in report.mapping.items():
        assert torch.equal(weights[target], placement.take(original[placement.source])), target
    # Independent spot checks of the rules (q, k, v in that order; V-FFN; neck; adapters; heads; norms).
    qkv = original["feature_vit.img_model.layers.2.blocks.0.attn.qkv.weight"]
    block = "vision_model.encoder.layers.2.blocks.0.attention."
    for i, name in enumerate(("q_proj", "k_proj", "v_proj")):
        assert torch.equal(weights[f"{block}{name}.weight"], qkv[i * 32:(i + 1) * 32])
    pairs = {
        "fusion_layers.1.vision_ffn.intermediate.weight": "vlmo_neck.layers.1.intermediate_v.dense.weight",
        "fusion_layers.1.vl_ffn.layer_norm.bias": "cross_encoder.1.output.LayerNorm.bias",
        "fusion_layers.0.attention.output.weight": "cross_encoder.0.attention.output.dense.weight",
        "multi_scale_adapter.stage_projections.1.weight": "feature_neck.stage2_linear.weight",
        "multi_scale_adapter.bottlenecks.3.up.bias": "adapter_4.2.bias",
        "vl_text_head.out_proj.weight": "heads_vl_l.2.weight",
        "vl_image_norm.weight": "norm.weight",
        "vision_norm.bias": "norm_v.bias",
        "vision_model.encoder.layers.1.downsample.norm.weight": "feature_vit.img_model.layers.1.downsample.norm.weight",
        "text_model.encoder.layer.1.output.dense.weight": "feature.bert_model.encoder.layer.1.output.dense.weight",
    }
    for target, source in pairs.items():
        assert torch.equal(weights[target], original[source]), target
    with torch.no_grad():
        out = model(torch.randn(2, 3, 32, 32), input_ids=torch.tensor([[2, 7, 3], [2, 9, 0]]),
                    attention_mask=torch.tensor([[1, 1, 1], [0, 0, 0]]))
    assert out.used_comments.tolist() == [True, False] and torch.isfinite(out.distribution).all()


VARIANTS = {
    "module_prefix": lambda sd: {f"module.{k}": v for k, v in sd.items()},
    "model_wrapper": lambda sd: {"model": sd, "epoch": 3, "best_srcc": 0.5},
    "state_dict_wrapper_and_prefix": lambda sd: {"state_dict": {f"module.{k}": v for k, v in sd.items()}},
    "position_ids": lambda sd: {**sd, "feature.bert_model.embeddings.position_ids": torch.arange(128)[None]},
    "stages_names": lambda sd: {re.sub(r"feature_neck\.stage(\d)", r"feature_neck.stages\1", k): v
                                for k, v in sd.items()},
}


@pytest.fixture(scope="module")
def tiny_flat(tmp_path_factory):
    original = tiny_original()
    out = tmp_path_factory.mktemp("tiny-flat")
    torch.save(original, out / "flat.pth")
    convert_original_checkpoint(out / "flat.pth", out / "model", config=TINY)
    return original, load_file(out / "model" / "model.safetensors")


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_checkpoint_variants_convert_identically(variant, tiny_flat, tmp_path):
    original, expected = tiny_flat
    torch.save(VARIANTS[variant](dict(original)), tmp_path / "variant.pth")
    report = convert_original_checkpoint(tmp_path / "variant.pth", tmp_path / "model", config=TINY)
    weights = load_file(tmp_path / "model" / "model.safetensors")
    assert set(weights) == set(expected)
    assert all(torch.equal(weights[k], expected[k]) for k in expected), variant
    if variant == "position_ids":
        assert report.dropped_counts["BERT buffers (embeddings.position_ids)"] == 1
    if "prefix" in variant:
        assert any("module." in note for note in report.notes)


def test_alias_only_checkpoint_is_accepted(tiny_flat, tmp_path):
    original, expected = tiny_flat
    # Keep only the vlmo_neck aliases of the shared modules (drop their cross_encoder twins).
    aliases_only = {k: v for k, v in original.items() if not any(alias_twin(a) == k for a in original)}
    assert len(aliases_only) == len(original) - 32
    convert_original_checkpoint(aliases_only, tmp_path / "model", config=TINY)
    weights = load_file(tmp_path / "model" / "model.safetensors")
    assert all(torch.equal(weights[k], expected[k]) for k in expected)


# --------------------------------------------------------------------------------------------------------- refusals


def refuse(state_dict, tmp_path, **kwargs):
    output = tmp_path / "refused"
    with pytest.raises(ConversionError) as info:
        convert_original_checkpoint(state_dict, output, config=TINY, **kwargs)
    assert not output.exists(), "a refused conversion must not write anything"
    return str(info.value)


def test_conversion_error_is_a_value_error():
    assert issubclass(ConversionError, ValueError)


def test_missing_key_is_refused_and_named(tmp_path):
    state = tiny_original()
    del state["feature_vit.img_model.layers.0.blocks.0.norm1.weight"]
    del state["adapter_3.2.bias"]
    message = refuse(state, tmp_path)
    assert "vision_model.encoder.layers.0.blocks.0.layernorm_before.weight" in message
    assert "multi_scale_adapter.bottlenecks.2.up.bias" in message
    assert "2 model key(s) would be left missing" in message


def test_unknown_or_renamed_key_is_refused_and_named(tmp_path):
    state = tiny_original()
    state["feature_vit.img_model.layers.0.blocks.0.norm_1.weight"] = state.pop(
        "feature_vit.img_model.layers.0.blocks.0.norm1.weight")
    state["extra_head.weight"] = torch.zeros(3)
    message = refuse(state, tmp_path)
    assert "feature_vit.img_model.layers.0.blocks.0.norm_1.weight" in message
    assert "extra_head.weight" in message and "2 checkpoint key(s) could not be placed" in message
    assert "vision_model.encoder.layers.0.blocks.0.layernorm_before.weight" in message  # and what is now missing


def test_key_outside_the_model_is_refused(tmp_path):
    state = tiny_original()
    state["adapter_9.0.weight"] = torch.zeros(16, 64)  # a rule matches, but the model has only 4 scales
    message = refuse(state, tmp_path)
    assert "adapter_9.0.weight" in message and "multi_scale_adapter.bottlenecks.8.down.weight" in message


def test_shape_mismatch_is_refused_and_named(tmp_path):
    state = tiny_original()
    state["norm_v.weight"] = torch.ones(65)
    state["feature_vit.img_model.layers.1.blocks.0.attn.qkv.bias"] = torch.zeros(47)
    message = refuse(state, tmp_path)
    assert "norm_v.weight -> vision_norm.weight: checkpoint [65] vs model [64]" in message
    assert "feature_vit.img_model.layers.1.blocks.0.attn.qkv.bias" in message


def test_alias_that_differs_from_its_twin_is_refused(tmp_path):
    state = tiny_original()
    state["vlmo_neck.layers.1.sa.self.query.weight"] = state["cross_encoder.1.attention.self.query.weight"] + 1
    message = refuse(state, tmp_path)
    assert "vlmo_neck.layers.1.sa.self.query.weight" in message
    assert "cross_encoder.1.attention.self.query.weight" in message


def test_not_a_state_dict_is_refused(tmp_path):
    torch.save({"epoch": 3, "optimizer": {"lr": 1e-4}}, tmp_path / "bad.pth")
    with pytest.raises(ConversionError, match="neither a flat state dict"):
        convert_original_checkpoint(tmp_path / "bad.pth", tmp_path / "out")
    torch.save({"model": tiny_original(), "args": argparse.Namespace(lr=1)}, tmp_path / "pickled.pth")
    with pytest.raises(ConversionError, match="weights_only=True"):
        convert_original_checkpoint(tmp_path / "pickled.pth", tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        convert_original_checkpoint(tmp_path / "absent.pth", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# -------------------------------------------------------------------------------------------------------- tokenizer


def save_tokenizer(folder, size):
    from transformers import BertTokenizer

    folder.mkdir()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = ["nice", "photo", "light", "dark", "sharp", "##s", "."]
    tokens = specials + words + [f"[unused{i}]" for i in range(size - len(specials) - len(words))]
    (folder / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    tokenizer = BertTokenizer(vocab=str(folder / "vocab.txt"), do_lower_case=False)  # not vocab_file= (5.x trap)
    assert len(tokenizer) == size
    tokenizer.save_pretrained(folder)
    return folder


def test_tokenizer_vocab_mismatch_is_refused(tmp_path):
    tokenizer_dir = save_tokenizer(tmp_path / "tok", 300)
    message = refuse(tiny_original(), tmp_path, tokenizer_dir=tokenizer_dir)
    assert "300" in message and "512" in message and "bert-base-cased" in message


def test_matching_tokenizer_is_saved_with_the_processor(tmp_path):
    from transformers import AutoModel, AutoProcessor

    from aesformer_processing import AesformerProcessor

    tokenizer_dir = save_tokenizer(tmp_path / "tok", 512)
    report = convert_original_checkpoint(tiny_original(), tmp_path / "out", tokenizer_dir=tokenizer_dir, config=TINY)
    assert report.tokenizer_saved and not any("no tokenizer" in note for note in report.notes)
    processor = AutoProcessor.from_pretrained(tmp_path / "out")
    assert isinstance(processor, AesformerProcessor) and len(processor.tokenizer) == 512
    model = AutoModel.from_pretrained(tmp_path / "out", trust_remote_code=False).eval()
    ids = processor.tokenizer(["nice photo"], return_tensors="pt")
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32), **ids)
    assert out.used_comments.all()


# -------------------------------------------------------------------------------------------------------------- CLI


def test_cli_subcommand(tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="aesformer")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    checkpoint = tmp_path / "aesformer_tiny.pth"
    torch.save({"model": tiny_original()}, checkpoint)
    args = parser.parse_args(["convert-original", str(checkpoint), "--output", str(tmp_path / "out")])
    assert args.func is run and args.tokenizer is None
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert "momentum BERT" in printed and "--tokenizer" in printed
    card = (tmp_path / "out" / "README.md").read_text()
    assert hashlib.sha256(checkpoint.read_bytes()).hexdigest() in card and "aesformer_tiny.pth" in card

    broken = tiny_original()
    broken["feature_neck.stage3_linear.weight"] = torch.zeros(1)
    torch.save(broken, tmp_path / "broken.pth")
    args = parser.parse_args(["convert-original", str(tmp_path / "broken.pth"), "--output", str(tmp_path / "b")])
    assert run(args) == 2  # a reported error (cli/common.py)
    assert "feature_neck.stage3_linear.weight" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()


def test_package_cli_dispatches_to_the_converter(tmp_path, capsys):
    from aesformer_cli import main as cli

    code = cli.main(["convert-original", str(tmp_path / "absent.pth"), "--output", str(tmp_path / "out")])
    assert code == 2 and "absent.pth" in capsys.readouterr().err
