import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from modeling_aesformer import AesformerConfig, AesformerModel, AesformerOutput, earth_movers_distance
from _helpers import blocked_imports_preamble, tiny_model


def tiny_inputs(batch=4, length=9, seed=0):
    g = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(batch, 3, 32, 32, generator=g)
    input_ids = torch.randint(5, 500, (batch, length), generator=g)
    input_ids[:, 0] = 2
    attention_mask = torch.ones(batch, length, dtype=torch.long)
    return pixel_values, input_ids, attention_mask


def test_config_defaults_are_aesformer_t_and_round_trip(tmp_path):
    config = AesformerConfig()
    assert config.model_type == "aesformer"
    assert config.vision_config.embed_dim == 96 and list(config.vision_config.depths) == [2, 2, 6, 2]
    assert config.text_config.vocab_size == 28996 and config.hidden_size == 768
    assert config.stage_widths == [192, 384, 768, 768] and not config.needs_vision_projection
    assert (config.num_fusion_layers, config.num_score_bins, config.head_hidden_size) == (2, 10, 256)
    assert AesformerConfig.from_preset("aesformer-b").needs_vision_projection
    tiny = AesformerConfig.from_preset("tiny", num_score_bins=7, text_config={"num_hidden_layers": 3})
    assert tiny.text_config.hidden_size <= 64 and tiny.num_score_bins == 7 and tiny.text_config.num_hidden_layers == 3
    tiny.save_pretrained(tmp_path)
    reloaded = AesformerConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == tiny.to_dict()
    with pytest.raises(ValueError, match="Unknown Aesformer preset 'huge'"):
        AesformerConfig.from_preset("huge")


def test_aesformer_t_parameter_count_matches_the_original():
    # Spec §1: 161.09 M for inference without BERT's unused pooler (161.68 M with it).
    with torch.device("meta"):
        model = AesformerModel(AesformerConfig())
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - 161.09e6) / 161.09e6 < 0.005, n
    pooler = 768 * 768 + 768
    assert abs(n + pooler - 161.68e6) / 161.68e6 < 0.005


def test_shapes_and_per_sample_routing():
    model = tiny_model()
    pixel_values, input_ids, attention_mask = tiny_inputs()
    attention_mask[1] = 0  # sample 1 has no comments
    attention_mask[3, 5:] = 0
    out = model(pixel_values, input_ids=input_ids, attention_mask=attention_mask)
    assert out.distribution.shape == (4, 10) and out.score.shape == (4,)
    assert out.used_comments.dtype == torch.uint8 and out.used_comments.tolist() == [1, 0, 1, 1]
    assert list(out.keys()) == ["distribution", "score", "threshold", "used_comments", "bin_values", "std"]
    torch.testing.assert_close(out.distribution.sum(-1), torch.ones(4))
    assert ((out.score >= 1) & (out.score <= 10)).all()
    # each head is filled exactly for the samples that used it (the per-head tensors: forward_heads)
    heads = model.forward_heads(pixel_values, input_ids=input_ids, attention_mask=attention_mask)
    for name in AesformerOutput.__dataclass_fields__:
        if isinstance(out.get(name), torch.Tensor):
            torch.testing.assert_close(heads.output[name], out[name], rtol=0, atol=0, equal_nan=True)
    logits, dists = heads.logits, heads.distributions
    assert torch.isnan(logits["vl_image"][1]).all() and not torch.isnan(logits["vl_image"][[0, 2, 3]]).any()
    assert not torch.isnan(logits["vision"][1]).any() and torch.isnan(logits["vision"][[0, 2, 3]]).all()
    mix = model.config.comment_head_mix
    expected = mix * dists["vl_image"][0] + (1 - mix) * dists["vl_text"][0]
    torch.testing.assert_close(out.distribution[0], expected)
    torch.testing.assert_close(out.distribution[1], logits["vision"][1].softmax(-1))
    torch.testing.assert_close(out.score, out.distribution @ torch.arange(1, 11.0))
    assert heads.embeds["vl_image"].shape == (4, 64) and heads.embeds["vision"].shape == (4, 64)
    assert heads.unimodal_image_embeds.shape == (4, 4, 64) and heads.unimodal_text_embeds.shape == (4, 64)
    assert torch.isnan(heads.unimodal_text_embeds[1]).all()
    # no text at all -> every sample image-only, no VL head
    image_only = model.forward_heads(pixel_values)
    assert not image_only.output.used_comments.any() and "vl_text" not in image_only.logits
    assert image_only.unimodal_text_embeds is None


def test_a_sample_does_not_depend_on_its_batch():
    model = tiny_model()
    pixel_values, input_ids, attention_mask = tiny_inputs(batch=5, length=12)
    attention_mask[2] = 0
    attention_mask[4, 3:] = 0
    batch_out = model(pixel_values, input_ids=input_ids, attention_mask=attention_mask)
    for i in range(5):
        n = int(attention_mask[i].sum()) or 1
        alone = model(pixel_values[i : i + 1], input_ids=input_ids[i : i + 1, :n],
                      attention_mask=attention_mask[i : i + 1, :n])
        torch.testing.assert_close(alone.distribution[0], batch_out.distribution[i], atol=1e-6, rtol=1e-5)
    # the image-only sample gives the same answer with no text inputs at all
    alone = model(pixel_values[2:3])
    torch.testing.assert_close(alone.distribution[0], batch_out.distribution[2], atol=1e-6, rtol=1e-5)


def test_labels_give_emd_loss_and_training_reduces_it():
    model = tiny_model()
    model.train()
    pixel_values, input_ids, attention_mask = tiny_inputs(batch=6)
    attention_mask[::2] = 0
    counts = torch.zeros(6, 10)
    counts[:, 6] = 30  # vote counts, normalised by the model
    counts[:, 7] = 10
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss = model(pixel_values, input_ids=input_ids, attention_mask=attention_mask, labels=counts).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], losses
    # the loss is the per-sample sum of the used heads' EMD, batch mean
    model.eval()
    out = model(pixel_values, input_ids=input_ids, attention_mask=attention_mask, labels=counts)
    target = counts / counts.sum(-1, keepdim=True)
    vl = [1, 3, 5]
    per_sample = torch.zeros(6)
    dists = model.forward_heads(pixel_values, input_ids=input_ids, attention_mask=attention_mask).distributions
    per_sample[vl] = earth_movers_distance(dists["vl_image"][vl], target[vl]) + earth_movers_distance(
        dists["vl_text"][vl], target[vl]
    )
    per_sample[[0, 2, 4]] = earth_movers_distance(dists["vision"][[0, 2, 4]], target[[0, 2, 4]])
    torch.testing.assert_close(out.loss, per_sample.mean())
    with pytest.raises(ValueError, match=r"rows \[0\] have no votes"):
        model(pixel_values[:1], labels=torch.zeros(1, 10))


def test_emd_values():
    p = torch.tensor([[0.0, 1.0, 0.0]])
    t = torch.tensor([[1.0, 0.0, 0.0]])
    # CDF difference [-1, 0, 0]
    torch.testing.assert_close(earth_movers_distance(p, t, r=1), torch.tensor([1 / 3]))
    torch.testing.assert_close(earth_movers_distance(p, t, r=2), torch.tensor([(1 / 3) ** 0.5]))
    assert earth_movers_distance(t, t).item() == 0


def test_attentions_returned_on_request_and_padding_gets_none():
    model = tiny_model()
    pixel_values, input_ids, attention_mask = tiny_inputs(batch=3, length=14)
    attention_mask[0, 5:] = 0
    attention_mask[2] = 0
    out = model(pixel_values, input_ids=input_ids, attention_mask=attention_mask, output_attentions=True,
                output_hidden_states=True)
    assert len(out.attentions) == model.config.num_fusion_layers
    assert len(out.hidden_states) == model.config.num_fusion_layers + 1
    image_tokens = 2 * 2  # tiny: last Swin stage is a 2x2 grid
    length = image_tokens + 14  # longer than the image-only rows' 4 scales x 4 tokens
    weights = out.attentions[0]
    assert weights.shape == (3, 2, length, length)
    assert all(h.shape == (3, length, 64) for h in out.hidden_states)
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))
    assert (weights[0, :, :, image_tokens + 5:] == 0).all()  # padded comment tokens are never attended to
    # the image-only row: its 16 multi-scale tokens, then padding (never attended to, zero hidden states)
    assert (weights[2, :, :, 4 * image_tokens:] == 0).all()
    assert all((h[2, 4 * image_tokens:] == 0).all() and (h[2, :4 * image_tokens] != 0).any() for h in out.hidden_states)
    # the eager path (with weights), as one padded batch, and the per-branch SDPA path agree
    plain = model(pixel_values, input_ids=input_ids, attention_mask=attention_mask)
    torch.testing.assert_close(plain.distribution, out.distribution, atol=1e-6, rtol=1e-5)
    assert plain.attentions is None and plain.hidden_states is None
    # each branch alone gives the same attention as its rows of the mixed batch
    alone = model(pixel_values[2:], output_attentions=True)
    torch.testing.assert_close(alone.attentions[0], weights[2:, :, :4 * image_tokens, :4 * image_tokens],
                               atol=1e-6, rtol=1e-5)
    comments = model(pixel_values[:2], input_ids=input_ids[:2], attention_mask=attention_mask[:2],
                     output_attentions=True)
    torch.testing.assert_close(comments.attentions[-1], out.attentions[-1][:2], atol=1e-6, rtol=1e-5)


def test_vision_projection_for_swin_b_shaped_configs():
    model = tiny_model(vision_config={"embed_dim": 12})  # last stage 96 wide, fusion 64
    assert model.vision_projection is not None and model.vision_projection.in_features == 96
    pixel_values, input_ids, attention_mask = tiny_inputs(batch=2)
    attention_mask[1] = 0
    out = model(pixel_values, input_ids=input_ids, attention_mask=attention_mask)
    assert out.used_comments.tolist() == [True, False] and not torch.isnan(out.distribution).any()


def test_image_features_are_the_swin_stage_outputs():
    model = tiny_model()
    pixel_values, input_ids, attention_mask = tiny_inputs(batch=2)
    features = model.get_image_features(pixel_values, output_hidden_states=True)
    stages = features.hidden_states
    assert [tuple(s.shape) for s in stages] == [(2, 256, 8), (2, 64, 16), (2, 16, 32), (2, 4, 64), (2, 4, 64)]
    hidden = model.vision_model(pixel_values, output_hidden_states=True).hidden_states
    for stage, expected in zip(stages, hidden[:5]):
        torch.testing.assert_close(stage, expected)
    torch.testing.assert_close(features.last_hidden_state, hidden[4])
    torch.testing.assert_close(features.pooler_output, hidden[4].mean(dim=1))
    assert model.get_image_features(pixel_values).hidden_states is None
    text = model.get_text_features(input_ids, attention_mask)
    assert text.last_hidden_state.shape == (2, 9, 64)
    torch.testing.assert_close(text.pooler_output, text.last_hidden_state[:, 0])


def test_adapter_init_and_gradient_checkpointing():
    model = tiny_model()
    down = model.multi_scale_adapter.bottlenecks[0].down
    assert 0.005 < down.weight.std().item() < 0.015 and down.bias.abs().max().item() == 0
    model.activation_checkpointing_enable()
    model.train()
    pixel_values, input_ids, attention_mask = tiny_inputs(batch=2)
    attention_mask[1] = 0
    out = model(pixel_values, input_ids=input_ids, attention_mask=attention_mask, labels=torch.rand(2, 10))
    out.loss.backward()
    assert model.fusion_layers[0].vision_ffn.output.weight.grad is not None
    assert model.fusion_layers[0].vl_ffn.output.weight.grad is not None


def test_from_vision_text_pretrained_copies_the_last_text_layers(tmp_path):
    from transformers import BertConfig, BertModel, SwinConfig, SwinModel

    preset = json.loads(AesformerConfig.from_preset("tiny").to_json_string())
    torch.manual_seed(1)
    swin = SwinModel(SwinConfig(**{k: v for k, v in preset["vision_config"].items() if k in SwinConfig().to_dict()}))
    with torch.no_grad():
        swin.layernorm.weight.normal_()
    swin.save_pretrained(tmp_path / "swin")
    bert = BertModel(BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=3, num_attention_heads=2,
                                intermediate_size=128))
    bert.save_pretrained(tmp_path / "bert")
    model = AesformerModel.from_vision_text_pretrained(tmp_path / "swin", tmp_path / "bert", head_hidden_size=32)
    assert model.config.num_fusion_layers == 2 and model.config.text_config.num_hidden_layers == 3
    last = bert.encoder.layer[2]
    fusion = model.fusion_layers[1]
    torch.testing.assert_close(fusion.attention.query.weight, last.attention.self.query.weight)
    torch.testing.assert_close(fusion.vl_ffn.intermediate.weight, last.intermediate.dense.weight)
    torch.testing.assert_close(fusion.vision_ffn.output.weight, last.output.dense.weight)
    assert fusion.vision_ffn.output.weight.data_ptr() != fusion.vl_ffn.output.weight.data_ptr()
    # Swin's final norm seeds the two image norms; the model does not keep it (it would never get a gradient)
    torch.testing.assert_close(model.vision_norm.weight, swin.layernorm.weight)
    torch.testing.assert_close(model.vl_image_norm.weight, swin.layernorm.weight)
    assert not any(key.startswith("vision_model.layernorm.") for key in model.state_dict())
    torch.testing.assert_close(model.text_model.embeddings.word_embeddings.weight,
                               bert.embeddings.word_embeddings.weight)


def test_save_and_load_are_exact(tmp_path):
    import safetensors

    from transformers import AutoConfig, AutoModel

    model = tiny_model()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not (tmp_path / "pytorch_model.bin").exists()
    with safetensors.safe_open(tmp_path / "model.safetensors", "pt") as f:
        # transformers writes Swin under its legacy names; every tensor is there once
        assert len(f.keys()) == len(model.state_dict())
    assert AutoConfig.from_pretrained(tmp_path).model_type == "aesformer"
    reloaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(reloaded) is AesformerModel
    for key, value in model.state_dict().items():
        assert torch.equal(value, reloaded.state_dict()[key]), key
    pixel_values, input_ids, attention_mask = tiny_inputs()
    attention_mask[0] = 0
    a = model(pixel_values, input_ids=input_ids, attention_mask=attention_mask)
    b = reloaded(pixel_values, input_ids=input_ids, attention_mask=attention_mask)
    assert torch.equal(a.distribution, b.distribution) and torch.equal(a.score, b.score)
    assert ((b.score >= 1) & (b.score <= 10)).all()


REMOTE_SCRIPT = textwrap.dedent(  # after blocked_imports_preamble: no Aesformer package in that process
    """
    import sys
    import torch
    from transformers import AutoModel, AutoProcessor
    folder = sys.argv[1]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert type(model).__module__.startswith("transformers_modules"), type(model).__module__
    data = torch.load(folder + "/inputs.pt", weights_only=True)
    inputs = processor(images=[img.numpy() for img in data["images"]], comments=data["comments"],
                       return_tensors="pt")
    out = model(**inputs)
    torch.save({"distribution": out.distribution, "input_ids": inputs["input_ids"]}, folder + "/remote.pt")
    print(type(model).__name__, type(processor).__name__)
    """
)


def test_remote_code_round_trip_in_a_clean_process(tmp_path, tiny_tokenizer):
    from modeling_aesformer import AesformerImageProcessor, AesformerProcessor

    model = tiny_model()
    processor = AesformerProcessor(AesformerImageProcessor(size={"height": 32, "width": 32}), tiny_tokenizer)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    shipped = sorted(p.name for p in tmp_path.glob("*.py"))
    assert shipped == ["adapter_weights_aesformer.py", "configuration_aesformer.py", "modeling_aesformer.py",
                       "processing_aesformer.py"]
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"]["AutoModel"] == "modeling_aesformer.AesformerModel"

    g = torch.Generator().manual_seed(0)
    images = [(torch.rand(20 + 3 * i, 24, 3, generator=g) * 255).to(torch.uint8) for i in range(3)]
    comments = ["great colour and light", None, "nice sharp subject, lovely composition"]
    torch.save({"images": images, "comments": comments}, tmp_path / "inputs.pt")
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = tmp_path / "remote.py"
    script.write_text(blocked_imports_preamble(repo) + REMOTE_SCRIPT)
    env = {**os.environ, "PYTHONPATH": ""}
    run = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "AesformerModel AesformerProcessor" in run.stdout

    remote = torch.load(tmp_path / "remote.pt", weights_only=True)
    inputs = processor(images=[img.numpy() for img in images], comments=comments, return_tensors="pt")
    local = model(**inputs)
    assert torch.equal(remote["input_ids"], inputs["input_ids"])
    # two processes (OMP threads, kernel choice): equal up to float rounding, not bit for bit
    torch.testing.assert_close(remote["distribution"], local.distribution, atol=1e-6, rtol=1e-5)
    assert local.used_comments.tolist() == [True, False, True]


def test_import_registers_auto_classes_and_the_task_and_keeps_heavy_libraries_off_the_path():
    code = (
        "import sys, modeling_aesformer\n"
        "from transformers import AutoConfig\n"
        "from transformers.models.auto.modeling_auto import MODEL_MAPPING\n"
        "cfg = AutoConfig.for_model('aesformer')\n"
        "assert MODEL_MAPPING[type(cfg)].__name__ == 'AesformerModel'\n"
        # accelerate is imported by transformers.modeling_utils itself whenever it is installed
        "heavy = [m for m in ('peft', 'evaluate', 'datasets', 'torchvision') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        # the task is registered at import, plainly: no import hook, no methods replaced on classes
        "from transformers.pipelines import PIPELINE_REGISTRY\n"
        "assert 'image-aesthetics' in PIPELINE_REGISTRY.supported_tasks\n"
        "assert not [f for f in sys.meta_path if type(f).__module__.startswith(('modeling_aesformer', "
        "'aesformer'))]\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
