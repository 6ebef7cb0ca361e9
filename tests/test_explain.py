"""`modeling_aesformer.explanation` (with the attention maps it reads): overlays, the explanation figure; and
`aesformer explain` (`aesformer_cli.explain`)."""

import argparse
import ast
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from modeling_aesformer import AesformerConfig, AesformerImageProcessor, AesformerModel, AesformerProcessor
from aesformer_cli import explain as explain_command
from modeling_aesformer import explanation as ex
from modeling_aesformer.attention_maps_aesformer import (attention_rollout, branch_attentions, comment_attention,
                                                         image_attention_map, merge_wordpieces, normalize_maps)
from modeling_aesformer.toy import draw_scene

from _helpers import import_statements

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GRID, SCALES = 2, 4  # the tiny preset at 32x32: last Swin stage 2x2, 4 stages
TINY_SIZE = (57, 31)  # a non-square photo (width, height)


def random_attention(layers, batch, heads, length, seed=0, mask=None):
    """Softmax attention like the model's: one [batch, heads, L, L] tensor per layer; masked keys get zero."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(layers):
        scores = torch.randn(batch, heads, length, length, generator=g)
        if mask is not None:
            scores = scores.masked_fill(~mask[:, None, None, :], torch.finfo(scores.dtype).min)
        out.append(scores.softmax(-1))
    return tuple(out)


@pytest.fixture(scope="module")
def tiny_model():
    torch.manual_seed(0)
    return AesformerModel(AesformerConfig.from_preset("tiny")).eval()


@pytest.fixture
def processor(tiny_tokenizer):
    # max_length = the tiny text encoder's 128 positions.
    return AesformerProcessor(AesformerImageProcessor(size={"height": 32, "width": 32}), tiny_tokenizer,
                              max_length=128)


def assert_png(path):
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size[0] > 100 and image.size[1] > 100


# ------------------------------------------------------------------------------------------------- image-only maps
@pytest.mark.parametrize("method", ["rollout", "mean"])
def test_image_attention_map_shape_and_range(method):
    attentions = random_attention(layers=2, batch=3, heads=2, length=SCALES * GRID * GRID)
    maps = image_attention_map(attentions, GRID, SCALES, method=method)
    assert maps.shape == (3, GRID, GRID)
    assert np.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    np.testing.assert_allclose(maps.reshape(3, -1).max(axis=1), 1.0)  # "max": the top cell is 1
    shares = image_attention_map(attentions, GRID, SCALES, method=method, normalize="sum")
    np.testing.assert_allclose(shares.sum(axis=(1, 2)), 1.0, rtol=1e-5)
    stretched = image_attention_map(attentions, GRID, SCALES, method=method, normalize="minmax")
    np.testing.assert_allclose(stretched.reshape(3, -1).min(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(stretched.reshape(3, -1).max(axis=1), 1.0)


def test_rollout_of_identity_attention_is_uniform():
    tokens = SCALES * GRID * GRID
    identity = tuple(torch.eye(tokens).expand(2, 3, tokens, tokens).clone() for _ in range(2))
    np.testing.assert_allclose(attention_rollout(identity), np.broadcast_to(np.eye(tokens), (2, tokens, tokens)))
    for normalize, expected in (("max", 1.0), ("minmax", 1.0), ("sum", 1.0 / GRID**2)):
        for method in ("rollout", "mean"):
            maps = image_attention_map(identity, GRID, SCALES, method=method, normalize=normalize)
            assert np.isfinite(maps).all(), (normalize, method)  # min-max of a flat map must not be 0/0
            np.testing.assert_allclose(maps, expected, rtol=1e-6, err_msg=f"{normalize} {method}")


def test_rollout_matches_the_definition():
    attentions = random_attention(layers=3, batch=2, heads=4, length=8, seed=3)
    expected = torch.eye(8).expand(2, 8, 8).double()
    for a in attentions:
        a_hat = a.double().mean(1) + torch.eye(8, dtype=torch.float64)
        expected = (a_hat / a_hat.sum(-1, keepdim=True)) @ expected
    rollout = attention_rollout(attentions)
    np.testing.assert_allclose(rollout, expected.numpy(), atol=1e-12)
    np.testing.assert_allclose(rollout.sum(-1), 1.0)


@pytest.mark.parametrize("scale", range(SCALES))
def test_map_puts_the_attended_token_on_its_cell_for_every_scale(scale):
    grid = (2, 3)  # non-square: checks the row-major placement
    cells = grid[0] * grid[1]
    tokens = SCALES * cells
    target_cell = 4  # row 1, column 1
    attention = torch.full((1, 2, tokens, tokens), 0.1 / (tokens - 1))
    attention[..., scale * cells + target_cell] = 0.9  # every query looks at cell 4 of this scale
    maps = image_attention_map((attention, attention), grid, SCALES, normalize="minmax")
    assert maps.shape == (1, 2, 3)
    assert np.unravel_index(maps[0].argmax(), grid) == (1, 1)
    assert maps[0, 1, 1] == 1.0 and np.sort(maps[0].ravel())[-2] < 0.5


def test_image_attention_map_rejects_a_wrong_grid():
    with pytest.raises(ValueError, match="tokens"):
        image_attention_map(random_attention(2, 1, 2, 16), grid=3, num_scales=4)


# --------------------------------------------------------------------------------------------- with-comments maps
def test_comment_attention_padding_block_gets_zero_and_real_tokens_sum_to_one():
    num_image, text = GRID * GRID, 6
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0]])
    key_mask = torch.cat([torch.ones(2, num_image, dtype=torch.bool), mask.bool()], 1)
    attentions = random_attention(2, 2, 2, num_image + text, seed=1, mask=key_mask)
    found = comment_attention(attentions, mask, num_image, GRID)
    words = found["word_weights"]
    assert words.shape == (2, text)
    assert (words[1, 3:] == 0).all()  # the padding block: exactly zero
    assert (words[mask.numpy() == 1] > 0).all()
    np.testing.assert_allclose(words.sum(1), 1.0, rtol=1e-5)
    for key in ("region_map", "cls_region_map"):
        assert found[key].shape == (2, GRID, GRID)
        assert found[key].min() >= 0 and found[key].max() <= 1
    # Even attention that (wrongly) reaches the padding does not leak into the word weights.
    uniform = tuple(torch.full((2, 2, num_image + text, num_image + text), 1.0 / (num_image + text)) for _ in range(2))
    leaked = comment_attention(uniform, mask, num_image, GRID)["word_weights"]
    assert (leaked[1, 3:] == 0).all()
    np.testing.assert_allclose(leaked[1, :3], 1 / 3, rtol=1e-6)


def test_comment_attention_region_map_ignores_padding_queries():
    num_image, text = GRID * GRID, 4
    mask = torch.tensor([[1, 1, 0, 0]])
    length = num_image + text
    attention = torch.zeros(1, 1, length, length)
    attention[..., : num_image + 2, 0] = 1.0  # image tokens, [CLS] and the word look at image cell 0
    attention[..., num_image + 2 :, 3] = 1.0  # the padding queries look at cell 3: must not count
    found = comment_attention((attention,), mask, num_image, GRID, normalize="sum")
    np.testing.assert_allclose(found["region_map"][0], [[1, 0], [0, 0]])
    np.testing.assert_allclose(found["cls_region_map"][0], [[1, 0], [0, 0]])


def comment_attention_of(out, mask):
    return comment_attention(branch_attentions(out.attentions, out.used_comments, True), mask, GRID * GRID, GRID)


def test_comment_attention_on_the_model(tiny_model, processor):
    images = [draw_scene(i, TINY_SIZE) for i in range(3)]
    comments = ["lovely soft light and a well placed subject", None, "too dark"]
    inputs = processor(images=images, comments=comments, return_tensors="pt")
    with torch.no_grad():
        out = tiny_model(**inputs, output_attentions=True)
    mask = inputs["attention_mask"]
    num_image = GRID * GRID
    padding = ~mask[2].bool()  # the short comment is padded to the long one's length
    assert padding.any()
    for layer in out.attentions:  # the model: padded keys receive exactly zero
        assert (layer[2, :, :, num_image:num_image + mask.shape[1]][..., padding] == 0).all()
    with_comments = branch_attentions(out.attentions, out.used_comments, True)
    assert [a.shape[0] for a in with_comments] == [2, 2]
    found = comment_attention(with_comments, mask, num_image, GRID)  # the whole batch's mask
    assert found["word_weights"].shape == (2, mask.shape[1])
    assert (found["word_weights"][1][padding.numpy()] == 0).all()
    np.testing.assert_allclose(found["word_weights"].sum(1), 1.0, rtol=1e-5)
    maps = image_attention_map(branch_attentions(out.attentions, out.used_comments, False), GRID, SCALES)
    assert maps.shape == (1, GRID, GRID) and 0 <= maps.min() and maps.max() <= 1
    # the mixed batch pads its shorter rows; each branch's maps equal those of its samples scored alone
    with torch.no_grad():
        image_alone = tiny_model(inputs["pixel_values"][1:2], output_attentions=True)
        comments_alone = tiny_model(**{k: v[[0, 2]] for k, v in inputs.items()}, output_attentions=True)
    np.testing.assert_allclose(maps, image_attention_map(image_alone.attentions, GRID, SCALES), atol=1e-5)
    alone = comment_attention(comments_alone.attentions, mask[[0, 2]], num_image, GRID)
    for key in ("word_weights", "region_map", "cls_region_map"):
        np.testing.assert_allclose(found[key], alone[key], atol=1e-5)
    # short comments: the image-only row (4 scales x 4 tokens) is the longer one, the comment rows are padded
    short = processor(images=images, comments=["too dark", None, "nice"], return_tensors="pt")
    with torch.no_grad():
        mixed = tiny_model(**short, output_attentions=True)
        alone_short = tiny_model(**{k: v[[0, 2]] for k, v in short.items()}, output_attentions=True)
    assert mixed.attentions[0].shape[-1] == SCALES * num_image > alone_short.attentions[0].shape[-1]
    found = comment_attention_of(mixed, short["attention_mask"])
    alone = comment_attention_of(alone_short, short["attention_mask"][[0, 2]])
    for key in ("word_weights", "region_map", "cls_region_map"):
        np.testing.assert_allclose(found[key], alone[key], atol=1e-5)
    with pytest.raises(ValueError, match="no sample of this batch took the image-only branch"):
        branch_attentions(comments_alone.attentions, comments_alone.used_comments, False)


def test_comment_attention_rejects_a_mask_that_does_not_fit():
    attentions = random_attention(1, 1, 1, GRID * GRID + 3)
    with pytest.raises(ValueError, match="past"):
        comment_attention(attentions, torch.ones(1, 5), GRID * GRID, GRID)


def test_merge_wordpieces():
    tokens = [("[CLS]", 0.1), ("x", 0.1), ("##y", 0.2), ("##z", 0.1), ("dark", 0.3), ("[SEP]", 0.2)]
    words = merge_wordpieces(tokens, ["[CLS]", "[SEP]", "[PAD]"])
    assert [w for w, _ in words] == ["xyz", "dark"]
    np.testing.assert_allclose([p for _, p in words], [0.4 / 0.7, 0.3 / 0.7])


# ------------------------------------------------------------------------------------------------------ rendering
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_overlay_has_exactly_the_input_size(mode):
    image = draw_scene(0, TINY_SIZE).convert(mode)
    heat = np.array([[0.0, 1.0], [0.5, 0.25]])
    out = ex.overlay(image, heat, alpha=0.5)
    assert out.size == image.size == TINY_SIZE and out.mode == "RGB"
    assert np.array_equal(np.asarray(ex.overlay(image, heat, alpha=0.0)), np.asarray(image.convert("RGB")))
    top = ex.overlay(image, np.ones((2, 2)), alpha=1.0)
    assert (np.asarray(top) == ex.heat_colors(np.array(1.0))).all()
    big = ex.upsample(heat, TINY_SIZE)
    assert big.shape == (TINY_SIZE[1], TINY_SIZE[0]) and big.min() >= 0 and big.max() <= 1
    with pytest.raises(ValueError):
        ex.overlay(image, np.zeros((2, 2, 2)))


def test_heat_colors_without_matplotlib():
    colours = ex.heat_colors(np.linspace(-1, 2, 7))
    assert colours.shape == (7, 3) and colours.dtype == np.uint8
    assert (colours[0] == colours[2]).all() and (colours[-1] == colours[-3]).all()  # clipped to [0, 1]


# --------------------------------------------------------------------------------------------------- explain + plot
def test_explain_image_only_and_figure(tiny_model, processor, tmp_path):
    image = draw_scene(1, TINY_SIZE)
    e = ex.explain(tiny_model, processor, image)
    assert e.branch == "image_only" and e.words is None
    assert e.heatmap.shape == (GRID, GRID) and 0 <= e.heatmap.min() and e.heatmap.max() <= 1
    assert e.overlay.size == TINY_SIZE
    np.testing.assert_allclose(e.distribution.sum(), 1.0, rtol=1e-5)
    np.testing.assert_allclose(float(e.bin_values @ e.distribution), e.score, rtol=1e-5)
    assert e.label == ("high" if e.score > e.threshold else "low") and e.std > 0 and e.contrast >= 1
    with torch.no_grad():
        plain = tiny_model(**processor(images=image, return_tensors="pt"))
    np.testing.assert_allclose(e.score, float(plain.score[0]), rtol=1e-5)  # eager path = SDPA path
    path = ex.plot_explanation(e, tmp_path / "figures" / "image_only.png")
    assert_png(path)


def test_explain_runs_in_eval_mode_and_restores_every_module_flag(tiny_model, processor):
    model = AesformerModel(tiny_model.config)
    model.load_state_dict(tiny_model.state_dict())
    model.train()
    model.vision_model.eval()  # a mixed state, like a PeftModel wrapper in train mode over an eval model
    before = {name: m.training for name, m in model.named_modules()}
    image = draw_scene(6, TINY_SIZE)
    first, second = (ex.explain(model, processor, image, comments="too dark") for _ in range(2))
    assert first.score == second.score  # no dropout during the pass
    assert {name: m.training for name, m in model.named_modules()} == before


def test_explain_with_comments_merges_wordpieces_and_plots(tiny_model, processor, tmp_path):
    e = ex.explain(tiny_model, processor, draw_scene(2, TINY_SIZE), comments=["too dark", "xyzzy horizon"])
    assert e.branch == "with_comments"
    assert [w for w, _ in e.words] == ["too", "dark", "xyzzy", "horizon"]  # x ##y ##z ##z ##y merged
    np.testing.assert_allclose(sum(p for _, p in e.words), 1.0, rtol=1e-5)
    assert e.tokens[0][0] == "[CLS]" and e.tokens[-1][0] == "[SEP]"
    assert e.heatmap.shape == (GRID, GRID) and 0 <= e.heatmap.min() and e.heatmap.max() <= 1
    assert e.overlay.size == TINY_SIZE
    assert_png(ex.plot_explanation(e, tmp_path / "with_comments.png"))


def test_plot_without_matplotlib_says_what_to_install(tiny_model, processor, tmp_path, monkeypatch):
    e = ex.explain(tiny_model, processor, draw_scene(3, TINY_SIZE))
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now raises ImportError
    with pytest.raises(ImportError, match=r"aesformer\[demo\]"):
        ex.plot_explanation(e, tmp_path / "x.png")
    assert e.overlay.size == TINY_SIZE  # everything else works without it


def test_matplotlib_is_imported_inside_functions_only():
    # Module-level statements of explanation.py (a subprocess import check would cost seconds of transformers import).
    tree = ast.parse(Path(ex.__file__).read_text(encoding="utf-8"))
    module_level = [m for _, _, modules in import_statements(tree, module_level_only=True) for m in modules]
    assert module_level and not any(m.split(".")[0] == "matplotlib" for m in module_level), module_level
    anywhere = [m for _, _, modules in import_statements(tree) for m in modules]
    assert any(m.split(".")[0] == "matplotlib" for m in anywhere)  # the walk sees function bodies: not vacuous


# ------------------------------------------------------------------------------------------------------------ CLI
def cli(argv):
    parser = argparse.ArgumentParser(prog="aesformer")
    explain_command.add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_writes_the_png(tiny_model, processor, tmp_path, capsys):
    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    image_path = tmp_path / "photo.png"
    draw_scene(4, TINY_SIZE).save(image_path)

    out = tmp_path / "out" / "explain.png"
    assert cli(["explain", str(image_path), "--model", str(model_dir), "--output", str(out)]) == 0
    assert_png(out)
    assert "image only branch" in capsys.readouterr().out

    out_comments = tmp_path / "explain_comments.png"
    argv = ["explain", str(image_path), "--comments", "lovely light", "--comments", "too dark",
            "--model", str(model_dir), "--output", str(out_comments)]
    assert cli(argv) == 0
    assert_png(out_comments)
    assert "with comments branch" in capsys.readouterr().out

    assert cli(["explain", str(tmp_path / "missing.jpg"), "--model", str(model_dir), "--output", str(out)]) == 2
    assert "no such image" in capsys.readouterr().err


def test_cli_with_a_dataset_adapter(tiny_model, processor, tmp_path, capsys):
    pytest.importorskip("peft")
    from modeling_aesformer.adapters import add_dataset_adapter, save_adapters

    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    torch.manual_seed(1)
    adapted = add_dataset_adapter(AesformerModel.from_pretrained(model_dir), "photonet", num_score_bins=7)
    save_adapters(adapted, model_dir)
    image_path = tmp_path / "photo.jpg"
    draw_scene(5, TINY_SIZE).save(image_path)
    out = tmp_path / "adapter.png"
    argv = ["explain", str(image_path), "--model", str(model_dir), "--adapter", "photonet", "--output", str(out)]
    assert cli(argv) == 0
    assert_png(out)
    assert "adapter photonet" in capsys.readouterr().out


def test_explain_reads_the_scale_of_the_head_that_answered(tiny_model, processor, tmp_path):
    """The bin values come with the model's output: a 7-bin adapter made active through transformers' own PEFT
    integration (as `pipeline(..., load_adapters=True)` does) is explained on ITS scale, 1..7 (the package once
    guessed the head from the adapter's name, missed it here and fell back, silently, to the config's 1..10)."""
    pytest.importorskip("peft")
    from transformers import AutoModel

    from modeling_aesformer.adapters import add_dataset_adapter, save_adapters

    model_dir = tmp_path / "model"
    tiny_model.save_pretrained(model_dir)
    torch.manual_seed(1)
    adapted = add_dataset_adapter(AesformerModel.from_pretrained(model_dir), "photonet", num_score_bins=7,
                                  score_range=(1, 7), threshold=4.0)
    save_adapters(adapted, model_dir)
    model = AutoModel.from_pretrained(model_dir, load_default_adapter=False).eval()
    model.load_adapter(str(model_dir / "adapters" / "photonet"), adapter_name="photonet")
    model.set_adapter("photonet")
    e = ex.explain(model, processor, draw_scene(4, TINY_SIZE))
    assert e.adapter == "photonet" and e.threshold == 4.0
    np.testing.assert_allclose(e.bin_values, np.arange(1, 8))
    assert len(e.distribution) == 7
    np.testing.assert_allclose(float(e.bin_values @ e.distribution), e.score, rtol=1e-5)
    spread = np.sqrt(float(e.distribution @ (e.bin_values - e.score) ** 2))
    np.testing.assert_allclose(e.std, spread, rtol=1e-5)


def test_the_uniform_scale_keeps_a_nearly_flat_map_one_colour():
    """A most/least ratio of 1.015 is not painted from blue to red: against an even share it stays mid-scale,
    while doubling a cell's share reaches the top of the scale (issue 14)."""
    flat = np.full((1, 2, 2), 0.25)
    flat[0, 0, 0] *= 1.015
    shown = normalize_maps(flat, "uniform")
    assert np.all(np.abs(shown - 0.5) < 0.02)
    assert normalize_maps(flat, "minmax").max() == 1.0  # what the old default made of it
    strong = np.array([[[0.4, 0.2], [0.2, 0.2]]])  # cell 0 gets 1.6x its even share
    assert normalize_maps(strong, "uniform")[0, 0, 0] > 0.8
    assert normalize_maps(np.array([[[0.5, 0.5 / 3], [0.5 / 3, 0.5 / 3]]]), "uniform")[0, 0, 0] == 1.0
