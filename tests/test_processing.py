"""Tests of the Aesformer image processor, processor and comment cleaning (public API only): hostile image files
(truncated, not images, decompression bombs, odd modes), Pillow's guards left on, hostile comments, a tokenizer
shared by processors across threads."""

import numpy as np
import PIL.Image
import PIL.ImageFile
import pytest
import torch
from transformers import BertTokenizer

from aesformer_processing.processing_aesformer import AesformerImageProcessor, AesformerProcessor, clean_comments
from modeling_aesformer import AesformerConfig, AesformerModel

from _helpers import BLUE, HOSTILE, PIL_DEFAULT_MAX_IMAGE_PIXELS, RED, REPO_ROOT as REPO, WHITE, bomb_png, \
    project_sources, run_threads, tokenizer_for


MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
WORDS = (
    "the a an and of to is in it this that great nice good bad photo image shot colours colors light dark sharp "
    "focus composition lovely beautiful boring too much not very well done love like dislike sky sea tree"
).split()


# ---------------------------------------------------------------------------------------------------------------
# fixtures and helpers
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
    tokens = SPECIAL_TOKENS + WORDS + [f"w{i}" for i in range(300)] + ["##s", "##ing", "!", ".", ",", "/", "8", "10"]
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizer(vocab_file):
    tok = BertTokenizer(vocab=str(vocab_file), do_lower_case=False)
    n_lines = len(vocab_file.read_text(encoding="utf-8").splitlines())
    assert len(tok) == n_lines  # guards against the transformers 5.x `vocab_file=` trap
    assert tok.pad_token_id == 0
    return tok


@pytest.fixture(scope="module")
def processor(tokenizer):
    return AesformerProcessor(image_processor=AesformerImageProcessor(), tokenizer=tokenizer)


@pytest.fixture(scope="module")
def image_processor():
    return AesformerImageProcessor()


def solid(mode, color, size=(40, 30)):
    return PIL.Image.new(mode, size, color)


def to_uint8_rgb(pixel_values):
    """Undoes rescale + ImageNet normalisation: [B,3,H,W] -> [B,H,W,3] values in 0..255 (floats)."""
    pv = np.asarray(pixel_values, dtype=np.float32)
    return (pv.transpose(0, 2, 3, 1) * STD + MEAN) * 255.0


def raw(image_processor, images, **kwargs):
    """Processes without resizing and returns the un-normalised 0..255 RGB values."""
    return to_uint8_rgb(image_processor(images, do_resize=False, **kwargs)["pixel_values"])


def textured(size=(40, 30), seed=0):
    rng = np.random.default_rng(seed)
    width, height = size
    return PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), mode="RGB")


# ---------------------------------------------------------------------------------------------------------------
# tokenizer trap
# ---------------------------------------------------------------------------------------------------------------


def test_tokenizer_vocab_file_trap(vocab_file, tokenizer):
    trapped = BertTokenizer(vocab_file=str(vocab_file))
    assert len(trapped) == 5  # transformers 5.x ignores `vocab_file=` here
    processor = AesformerProcessor(tokenizer=trapped)
    with pytest.raises(ValueError, match=rf"5 tokens.*{len(tokenizer)}"):
        processor.check_vocab_size(len(tokenizer))


def test_tokenizer_from_pretrained_dir_keeps_vocab(vocab_file, tokenizer):
    loaded = BertTokenizer.from_pretrained(str(vocab_file.parent))
    assert len(loaded) == len(tokenizer)


# ---------------------------------------------------------------------------------------------------------------
# image processor: shapes, dtypes, normalisation
# ---------------------------------------------------------------------------------------------------------------


def test_default_attributes(image_processor):
    assert image_processor.size == {"height": 224, "width": 224}
    assert image_processor.resample == int(PIL.Image.BICUBIC)
    assert isinstance(image_processor.resample, int)
    assert image_processor.rescale_factor == pytest.approx(1 / 255)
    assert image_processor.image_mean == pytest.approx([0.485, 0.456, 0.406])
    assert image_processor.image_std == pytest.approx([0.229, 0.224, 0.225])
    assert list(image_processor.matte_color) == [255, 255, 255]
    assert image_processor.model_input_names == ["pixel_values"]


def test_single_image_numpy_output(image_processor):
    out = image_processor(textured())
    assert list(out.keys()) == ["pixel_values"]
    pv = out["pixel_values"]
    assert isinstance(pv, np.ndarray)
    assert pv.shape == (1, 3, 224, 224)
    assert pv.dtype == np.float32


def test_batch_torch_output(image_processor):
    pv = image_processor([textured(), textured(seed=1)], return_tensors="pt")["pixel_values"]
    assert isinstance(pv, torch.Tensor)
    assert pv.shape == (2, 3, 224, 224)
    assert pv.dtype == torch.float32


def test_size_override_and_squash(image_processor):
    pv = image_processor(textured((40, 30)), size={"height": 20, "width": 50})["pixel_values"]
    assert pv.shape == (1, 3, 20, 50)
    assert image_processor(textured(), size=16)["pixel_values"].shape == (1, 3, 16, 16)


def test_constant_colour_normalisation(image_processor):
    color = (128, 64, 32)
    pv = image_processor(solid("RGB", color), return_tensors="np")["pixel_values"]
    expected = (np.array(color, dtype=np.float32) / 255.0 - MEAN) / STD
    np.testing.assert_allclose(pv[0].reshape(3, -1), np.repeat(expected[:, None], 224 * 224, axis=1), atol=1e-5)


def test_resize_is_pil_bicubic_squash(image_processor):
    image = textured((40, 30))
    pv = image_processor(image)["pixel_values"]
    reference = np.asarray(image.resize((224, 224), resample=PIL.Image.BICUBIC), dtype=np.float32)
    np.testing.assert_allclose(to_uint8_rgb(pv)[0], reference, atol=1e-3)


def test_no_rescale_no_normalize(image_processor):
    pv = image_processor(solid("RGB", (10, 20, 30)), do_rescale=False, do_normalize=False)["pixel_values"]
    np.testing.assert_array_equal(pv[0, :, 0, 0], [10, 20, 30])


def test_mixed_sizes_batch(image_processor):
    sizes = [(40, 30), (17, 53), (224, 224), (300, 10)]
    images = [textured(size, seed=i) for i, size in enumerate(sizes)]
    batch = image_processor(images)["pixel_values"]
    assert batch.shape == (4, 3, 224, 224)
    for i, image in enumerate(images):
        np.testing.assert_array_equal(batch[i], image_processor(image)["pixel_values"][0])


def test_mixed_sizes_without_resize_error(image_processor):
    with pytest.raises(ValueError, match="different sizes"):
        image_processor([textured((40, 30)), textured((30, 40))], do_resize=False)


# ---------------------------------------------------------------------------------------------------------------
# image processor: PIL modes
# ---------------------------------------------------------------------------------------------------------------


def test_rgba_over_matte(image_processor):
    array = np.zeros((30, 40, 4), dtype=np.uint8)
    array[:, :20] = (10, 200, 30, 0)  # fully transparent: colour must be ignored
    array[:, 20:] = (200, 10, 30, 255)  # opaque
    image = PIL.Image.fromarray(array, mode="RGBA")
    rgb = raw(image_processor, image)[0]
    np.testing.assert_allclose(rgb[:, :20], np.broadcast_to([255, 255, 255], (30, 20, 3)), atol=1e-3)
    np.testing.assert_allclose(rgb[:, 20:], np.broadcast_to([200, 10, 30], (30, 20, 3)), atol=1e-3)
    rgb = raw(image_processor, image, matte_color=(0, 128, 255))[0]
    np.testing.assert_allclose(rgb[0, 0], [0, 128, 255], atol=1e-3)
    custom = AesformerImageProcessor(matte_color=(1, 2, 3))
    np.testing.assert_allclose(raw(custom, image)[0, 0, 0], [1, 2, 3], atol=1e-3)


def test_rgba_half_alpha_blends(image_processor):
    image = solid("RGBA", (0, 0, 0, 128))
    rgb = raw(image_processor, image)[0, 0, 0]
    assert np.all(np.abs(rgb - 127) <= 1)


def test_la_mode(image_processor):
    array = np.zeros((30, 40, 2), dtype=np.uint8)
    array[:, :20] = (100, 0)
    array[:, 20:] = (100, 255)
    rgb = raw(image_processor, PIL.Image.fromarray(array, mode="LA"))[0]
    np.testing.assert_allclose(rgb[0, 0], [255, 255, 255], atol=1e-3)
    np.testing.assert_allclose(rgb[0, 39], [100, 100, 100], atol=1e-3)


def _palette_image():
    image = PIL.Image.new("P", (40, 30), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 6))
    for x in range(20, 40):
        for y in range(30):
            image.putpixel((x, y), 1)
    image.info["transparency"] = 0
    return image


def test_p_with_transparency(image_processor, tmp_path):
    image = _palette_image()
    rgb = raw(image_processor, image)[0]
    np.testing.assert_allclose(rgb[0, 0], [255, 255, 255], atol=1e-3)  # index 0 (red) is transparent
    np.testing.assert_allclose(rgb[0, 39], [0, 255, 0], atol=1e-3)
    path = tmp_path / "palette.png"
    image.save(path, transparency=0)
    assert PIL.Image.open(path).mode == "P"
    np.testing.assert_allclose(raw(image_processor, path)[0], rgb, atol=1e-3)


def test_p_without_transparency(image_processor):
    image = _palette_image()
    del image.info["transparency"]
    np.testing.assert_allclose(raw(image_processor, image)[0, 0, 0], [255, 0, 0], atol=1e-3)


def test_cmyk(image_processor):
    rgb = raw(image_processor, solid("CMYK", (0, 255, 255, 0)))[0, 0, 0]
    np.testing.assert_allclose(rgb, [255, 0, 0], atol=1e-3)


def test_16_bit_png_scaled_not_clipped(image_processor, tmp_path):
    array = np.zeros((30, 40), dtype=np.uint16)
    array[:, 10:20] = 65535
    array[:, 20:30] = 257 * 100
    array[:, 30:] = 32768
    path = tmp_path / "grey16.png"
    PIL.Image.fromarray(array).save(path)
    assert PIL.Image.open(path).mode.startswith("I;16")
    rgb = raw(image_processor, str(path))[0]
    np.testing.assert_allclose(rgb[0, 0], [0, 0, 0], atol=1e-3)
    np.testing.assert_allclose(rgb[0, 15], [255, 255, 255], atol=1e-3)
    np.testing.assert_allclose(rgb[0, 25], [100, 100, 100], atol=1e-3)
    np.testing.assert_allclose(rgb[0, 35], [128, 128, 128], atol=1e-3)


def test_16_bit_big_endian_and_mode_i(image_processor):
    array = np.full((30, 40), 65535, dtype=np.uint16)
    array[:, :20] = 257 * 50
    expected = [50, 255]
    big = PIL.Image.fromarray(array.astype(">u2"))
    assert big.mode == "I;16B"
    as_i = PIL.Image.fromarray(array.astype(np.int32))
    assert as_i.mode == "I"
    for image in (big, as_i, array):  # PIL I;16B, PIL I, and a numpy uint16 array
        rgb = raw(image_processor, image)[0]
        assert rgb[0, 0, 0] == pytest.approx(expected[0], abs=1e-3)
        assert rgb[0, 39, 0] == pytest.approx(expected[1], abs=1e-3)


def test_mode_f_clipped_to_0_255(image_processor):
    array = np.array([[-5.0, 0.0, 127.6, 300.0]], dtype=np.float32).repeat(3, axis=0)
    rgb = raw(image_processor, PIL.Image.fromarray(array, mode="F"))[0, 0, :, 0]
    np.testing.assert_allclose(rgb, [0, 0, 128, 255], atol=1e-3)


def test_mode_1_and_l(image_processor):
    one = PIL.Image.new("1", (40, 30), 0)
    one.paste(1, (20, 0, 40, 30))
    rgb = raw(image_processor, one)[0]
    np.testing.assert_allclose(rgb[0, 0], [0, 0, 0], atol=1e-3)
    np.testing.assert_allclose(rgb[0, 39], [255, 255, 255], atol=1e-3)
    np.testing.assert_allclose(raw(image_processor, solid("L", 77))[0, 5, 5], [77, 77, 77], atol=1e-3)


def test_ycbcr_and_hsv(image_processor):
    red = solid("RGB", (255, 0, 0))
    np.testing.assert_allclose(raw(image_processor, red.convert("YCbCr"))[0, 0, 0], [255, 0, 0], atol=2)
    np.testing.assert_allclose(raw(image_processor, solid("HSV", (85, 255, 255)))[0, 0, 0], [0, 255, 0], atol=2)


def test_animated_gif_first_frame(image_processor, tmp_path):
    frames = [solid("RGB", (255, 0, 0)), solid("RGB", (0, 0, 255))]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    with PIL.Image.open(path) as image:
        assert image.n_frames == 2
        image.seek(1)
        rgb = raw(image_processor, image)[0, 0, 0]
        assert image.tell() == 1  # the caller's frame position is left alone
    np.testing.assert_allclose(rgb, [255, 0, 0], atol=2)
    np.testing.assert_allclose(raw(image_processor, path)[0, 0, 0], [255, 0, 0], atol=2)


def test_exif_orientation(image_processor, tmp_path):
    image = textured((40, 30))
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif.tobytes(), quality=100, subsampling=0)

    with PIL.Image.open(path) as stored:
        assert stored.getexif().get(0x0112) == 6
        # manual rotation, then a copy without any metadata
        manual = PIL.Image.fromarray(np.asarray(stored.transpose(PIL.Image.Transpose.ROTATE_270)))
        unrotated = PIL.Image.fromarray(np.asarray(stored))
    assert manual.size == (30, 40)

    not_resized = image_processor(path, do_resize=False)["pixel_values"]
    assert not_resized.shape == (1, 3, 40, 30)  # height 40, width 30: rotated

    from_file = image_processor(path)["pixel_values"]
    np.testing.assert_array_equal(from_file, image_processor(manual)["pixel_values"])
    assert not np.allclose(from_file, image_processor(unrotated)["pixel_values"])
    with PIL.Image.open(path) as opened:  # a PIL image carrying the EXIF tag is rotated too
        np.testing.assert_array_equal(image_processor(opened)["pixel_values"], from_file)


# ---------------------------------------------------------------------------------------------------------------
# image processor: other input types and errors
# ---------------------------------------------------------------------------------------------------------------


def test_path_inputs(image_processor, tmp_path):
    image = textured()
    path = tmp_path / "photo.png"
    image.save(path)
    expected = image_processor(image)["pixel_values"]
    np.testing.assert_array_equal(image_processor(str(path))["pixel_values"], expected)
    np.testing.assert_array_equal(image_processor(path)["pixel_values"], expected)
    batch = image_processor([path, str(path), image])["pixel_values"]
    for row in batch:
        np.testing.assert_array_equal(row, expected[0])


def test_numpy_and_torch_inputs(image_processor):
    image = textured()
    expected = image_processor(image)["pixel_values"][0]
    hwc = np.asarray(image)
    np.testing.assert_array_equal(image_processor(hwc)["pixel_values"][0], expected)
    np.testing.assert_array_equal(image_processor(hwc.astype(np.float32) / 255.0)["pixel_values"][0], expected)
    chw = torch.from_numpy(hwc.copy()).permute(2, 0, 1)
    np.testing.assert_array_equal(image_processor(chw)["pixel_values"][0], expected)
    np.testing.assert_array_equal(image_processor(chw.float() / 255.0)["pixel_values"][0], expected)
    batch = image_processor(np.stack([hwc, hwc]))["pixel_values"]
    assert batch.shape == (2, 3, 224, 224)
    grey = np.full((30, 40), 90, dtype=np.uint8)
    np.testing.assert_allclose(raw(image_processor, grey)[0, 0, 0], [90, 90, 90], atol=1e-3)


def test_bad_type_names_index(image_processor):
    with pytest.raises(TypeError, match=r"images\[1\].*int"):
        image_processor([textured(), 42])
    with pytest.raises(TypeError, match=r"images\[0\]"):
        image_processor([[textured()]])


def test_missing_file_names_index_and_path(image_processor, tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(ValueError, match=r"images\[2\].*missing\.jpg"):
        image_processor([textured(), textured(), str(missing)])


def test_unreadable_file_names_index_and_path(image_processor, tmp_path):
    bad = tmp_path / "not_an_image.png"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match=r"images\[1\].*not_an_image\.png"):
        image_processor([textured(), bad])


def test_bad_array_names_index(image_processor):
    with pytest.raises(ValueError, match=r"images\[1\]"):
        image_processor([textured(), np.zeros((30, 40, 7), dtype=np.uint8)])
    with pytest.raises(ValueError, match=r"images\[0\]"):
        image_processor([np.full((30, 40), 1000, dtype=np.int32)])


def test_empty_batch_error(image_processor):
    with pytest.raises(ValueError):
        image_processor([])


def test_invalid_settings():
    with pytest.raises(ValueError):
        AesformerImageProcessor(matte_color=(0, 0, 300))
    with pytest.raises(ValueError):
        AesformerImageProcessor(size={"shortest_edge": 224})
    with pytest.raises(ValueError):
        AesformerImageProcessor(image_std=(0.2, 0.0, 0.2))


# ---------------------------------------------------------------------------------------------------------------
# image processor: serialisation
# ---------------------------------------------------------------------------------------------------------------


def test_image_processor_round_trip(tmp_path):
    original = AesformerImageProcessor(
        size={"height": 48, "width": 64},
        resample=PIL.Image.BILINEAR,
        image_mean=(0.5, 0.5, 0.5),
        image_std=(0.25, 0.5, 0.75),
        matte_color=(1, 2, 3),
    )
    original.save_pretrained(tmp_path)
    loaded = AesformerImageProcessor.from_pretrained(tmp_path)
    assert loaded.to_dict() == original.to_dict()
    for key in ("size", "resample", "image_mean", "image_std", "matte_color", "rescale_factor", "do_resize"):
        assert key in loaded.to_dict()
    assert AesformerImageProcessor.from_dict(original.to_dict()).to_dict() == original.to_dict()
    images = [solid("RGBA", (9, 9, 9, 0)), textured()]
    np.testing.assert_array_equal(loaded(images)["pixel_values"], original(images)["pixel_values"])
    overridden = AesformerImageProcessor.from_pretrained(
        tmp_path, size={"height": 8, "width": 8}, matte_color=[4, 5, 6]
    )
    assert overridden.size == {"height": 8, "width": 8}
    assert list(overridden.matte_color) == [4, 5, 6]


# ---------------------------------------------------------------------------------------------------------------
# comment cleaning
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("char", list("[('\")*#:~]"))
def test_clean_strips_each_character(char):
    assert clean_comments(f"nice{char}shot {char}{char}") == "nice shot"


def test_clean_literal_and_real_newlines():
    assert clean_comments("nice\\nshot\\n\\n") == "nice shot"
    assert clean_comments("nice\nshot\r\n\tok") == "nice shot ok"


def test_clean_whitespace_and_control_characters():
    assert clean_comments("  a   b \t\t c  ") == "a b c"
    assert clean_comments("ab\x00c\x07d\x1b e\x7f") == "abcd e"


def test_clean_keeps_case_and_other_punctuation():
    assert clean_comments("Great SHOT, Well done!") == "Great SHOT, Well done!"


def test_clean_word_limit():
    text = " ".join(f"w{i}" for i in range(250))
    assert clean_comments(text).split() == [f"w{i}" for i in range(200)]
    assert clean_comments(text, max_words=3) == "w0 w1 w2"
    assert clean_comments(text, max_words=None) == text


def test_clean_list_joined_and_empty():
    assert clean_comments(["Great shot", "Too dark"]) == "Great shot Too dark"
    assert clean_comments(("a", "", "b")) == "a b"
    for empty in (None, "", "   ", "\\n", "**", [], ["", "  "]):
        assert clean_comments(empty) == ""


def test_clean_type_errors():
    with pytest.raises(TypeError, match=r"comments\[1\]"):
        clean_comments(["ok", 3])
    with pytest.raises(TypeError):
        clean_comments(12)


# ---------------------------------------------------------------------------------------------------------------
# processor
# ---------------------------------------------------------------------------------------------------------------


def test_processor_single_image_with_comment(processor, tokenizer):
    out = processor(images=textured(), comments="Great shot: nice colours")
    assert set(out.keys()) == {"pixel_values", "input_ids", "attention_mask", "token_type_ids"}
    assert set(out.keys()) <= set(processor.model_input_names)
    assert out["pixel_values"].shape == (1, 3, 224, 224)
    expected = tokenizer("Great shot nice colours")["input_ids"]
    assert out["input_ids"].dtype == torch.int64
    assert out["attention_mask"].dtype == torch.int64
    assert out["token_type_ids"].dtype == torch.int64
    assert out["input_ids"][0].tolist() == expected
    assert out["input_ids"][0, 0].item() == tokenizer.cls_token_id
    assert out["input_ids"][0, -1].item() == tokenizer.sep_token_id
    assert out["attention_mask"].tolist() == [[1] * len(expected)]


def test_processor_list_of_comments_is_joined(processor):
    joined = processor(images=textured(), comments="Great shot Too dark")
    as_list = processor(images=textured(), comments=["Great shot", "Too dark"])
    assert torch.equal(joined["input_ids"], as_list["input_ids"])


@pytest.mark.parametrize("empty", [None, "", "   ", [], ["", " "], "\\n"])
def test_processor_no_comments_omits_text_keys(processor, empty):
    out = processor(images=textured(), comments=empty)
    assert list(out.keys()) == ["pixel_values"]
    out = processor(images=[textured(), textured(seed=1)], comments=[empty, empty])
    assert list(out.keys()) == ["pixel_values"]
    assert list(processor(images=[textured()]).keys()) == ["pixel_values"]


def test_processor_mixed_batch_rows(processor, tokenizer):
    comments = ["Great shot", None, "", "   ", ["nice", "colours light"]]
    images = [textured(seed=i) for i in range(5)]
    out = processor(images=images, comments=comments, return_tensors="np")
    ids, mask, types = out["input_ids"], out["attention_mask"], out["token_type_ids"]
    assert isinstance(ids, np.ndarray) and ids.dtype == np.int64
    long_row = tokenizer("nice colours light")["input_ids"]
    assert ids.shape == mask.shape == types.shape == (5, len(long_row))
    for row in (1, 2, 3):  # no comments: all pad ids, all-zero mask
        assert (ids[row] == tokenizer.pad_token_id).all()
        assert (mask[row] == 0).all()
        assert (types[row] == 0).all()
    short_row = tokenizer("Great shot")["input_ids"]
    assert ids[0, : len(short_row)].tolist() == short_row
    assert mask[0].tolist() == [1] * len(short_row) + [0] * (len(long_row) - len(short_row))
    assert ids[4].tolist() == long_row
    assert mask[4].all()
    np.testing.assert_array_equal(out["pixel_values"], processor.image_processor(images)["pixel_values"])


def test_processor_token_truncation(tokenizer):
    proc = AesformerProcessor(tokenizer=tokenizer, max_length=8)
    long_text = " ".join(f"w{i}" for i in range(20))
    out = proc(images=[textured(), textured()], comments=[long_text, "nice"])
    assert out["input_ids"].shape == (2, 8)
    assert out["input_ids"][0, -1].item() == tokenizer.sep_token_id
    assert out["attention_mask"][0].tolist() == [1] * 8
    assert proc.clean_and_check(long_text) == (long_text, True)
    assert proc.clean_and_check("nice shot") == ("nice shot", False)
    assert proc.clean_and_check(None) == ("", False)


def test_clean_and_check_word_truncation(tokenizer):
    proc = AesformerProcessor(tokenizer=tokenizer, max_comment_words=3)
    assert proc.clean_and_check(["a b", "c d"]) == ("a b c", True)
    assert proc.clean_and_check("a b c") == ("a b c", False)
    out = proc(images=textured(), comments="a b c d e")
    assert out["input_ids"][0].tolist() == tokenizer("a b c")["input_ids"]


def test_processor_padding_options(tokenizer):
    proc = AesformerProcessor(tokenizer=tokenizer, max_length=16)
    out = proc(images=[textured(), textured()], comments=["nice", None], padding="max_length")
    assert out["input_ids"].shape == (2, 16)
    out = proc(images=[textured(), textured()], comments=["nice", None], pad_to_multiple_of=8)
    assert out["input_ids"].shape == (2, 8)
    with pytest.raises(ValueError):
        proc(images=textured(), comments="nice", padding=False)


def test_processor_length_mismatch(processor):
    with pytest.raises(ValueError, match=r"3 images.*2 comment"):
        processor(images=[textured(), textured(), textured()], comments=["a", "b"])


def test_processor_bad_comment_types(processor):
    with pytest.raises(TypeError, match=r"comments\[1\]"):
        processor(images=[textured(), textured()], comments=["ok", 5])
    with pytest.raises(TypeError):
        processor(images=[textured(), textured()], comments="one string for two images")
    with pytest.raises(ValueError):
        processor(images=None, comments="nice")


def test_processor_image_kwargs_and_bad_image(processor):
    out = processor(images=textured(), comments="nice", size={"height": 32, "width": 32})
    assert out["pixel_values"].shape == (1, 3, 32, 32)
    with pytest.raises(TypeError, match=r"images\[1\]"):
        processor(images=[textured(), object()], comments=["a", "b"])


def test_check_vocab_size(processor, tokenizer):
    processor.check_vocab_size(len(tokenizer))
    with pytest.raises(ValueError) as info:
        processor.check_vocab_size(28996)
    assert str(len(tokenizer)) in str(info.value) and "28996" in str(info.value)


def test_model_input_names_and_decode(processor, tokenizer):
    assert processor.model_input_names[0] == "pixel_values"
    assert set(processor.model_input_names) == {"pixel_values", "input_ids", "attention_mask", "token_type_ids"}
    ids = processor(images=textured(), comments="great photo")["input_ids"]
    assert processor.decode(ids[0], skip_special_tokens=True) == "great photo"
    assert processor.batch_decode(ids, skip_special_tokens=True) == ["great photo"]


def test_processor_defaults_and_required_tokenizer(tokenizer):
    proc = AesformerProcessor(tokenizer=tokenizer)
    assert isinstance(proc.image_processor, AesformerImageProcessor)
    assert proc.max_comment_words == 200 and proc.max_length == 512
    with pytest.raises(ValueError):
        AesformerProcessor(image_processor=AesformerImageProcessor())
    with pytest.raises(ValueError):
        AesformerProcessor(tokenizer=tokenizer, max_length=0)


def test_processor_round_trip(tokenizer, tmp_path):
    original = AesformerProcessor(
        image_processor=AesformerImageProcessor(size={"height": 64, "width": 48}, matte_color=(0, 0, 0)),
        tokenizer=tokenizer,
        max_comment_words=50,
        max_length=12,
    )
    original.save_pretrained(tmp_path)
    loaded = AesformerProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded.image_processor, AesformerImageProcessor)
    assert loaded.image_processor.to_dict() == original.image_processor.to_dict()
    assert len(loaded.tokenizer) == len(tokenizer)
    assert loaded.max_comment_words == 50 and loaded.max_length == 12
    images = [solid("RGBA", (5, 5, 5, 0)), textured()]
    comments = [" ".join(f"w{i}" for i in range(30)), None]
    a, b = original(images=images, comments=comments), loaded(images=images, comments=comments)
    assert set(a.keys()) == set(b.keys())
    for key in a:
        assert torch.equal(a[key], b[key]), key
    loaded.check_vocab_size(len(tokenizer))


def test_the_tokenizer_lock_lives_on_the_tokenizer_and_never_reaches_copies_pickles_or_saved_files(
        tiny_tokenizer, tmp_path):
    """Processors sharing one tokenizer share its call lock (the threads test below checks what it is for); the lock
    is created on the tokenizer instance, never saved with it, and a copy or pickle of a processor still works (fresh
    lock)."""
    import copy
    import pickle

    processors = [AesformerProcessor(AesformerImageProcessor(size=8), tiny_tokenizer, max_length=m) for m in (8, 12)]
    image = PIL.Image.new("RGB", (4, 4))
    expected = [p(images=[image], comments=["lovely light " * 20])["input_ids"] for p in processors]
    lock = vars(tiny_tokenizer)["_aesformer_call_lock"]
    for processor, ids in zip(processors, expected):
        for other in (copy.deepcopy(processor), pickle.loads(pickle.dumps(processor))):
            assert torch.equal(other(images=[image], comments=["lovely light " * 20])["input_ids"], ids)
            assert vars(other.tokenizer)["_aesformer_call_lock"] is not lock
    assert vars(tiny_tokenizer)["_aesformer_call_lock"] is lock  # one lock per tokenizer, kept
    processors[0].save_pretrained(tmp_path / "saved")
    saved = "".join(path.read_text() for path in (tmp_path / "saved").glob("*.json"))
    assert "tokenizer" in saved and "_aesformer_call_lock" not in saved


def test_pad_encodings_equals_the_processor_batch(processor, tokenizer):
    """Single-image encodings stacked by `pad_encodings` are the batch the processor makes of the same images:
    comment tokens padded on the right, the row of an image without comments all padding with a zero mask."""
    images = [textured(seed=i) for i in range(3)]
    comments = ["Great shot, lovely light", None, "nice"]
    singles = [processor(images=[image], comments=[text], return_tensors="pt") for image, text in zip(images, comments)]
    padded = processor.pad_encodings([{k: v[0] for k, v in one.items()} for one in singles])
    batch = processor(images=images, comments=comments, return_tensors="pt")
    assert sorted(padded) == sorted(batch)
    for key in batch:
        assert torch.equal(padded[key], batch[key]), key
    assert padded["input_ids"][1].tolist() == [tokenizer.pad_token_id] * padded["input_ids"].shape[1]
    # image-only encodings: no text keys, unless asked for (one pad column, for callers batching by keys)
    alone = [{"pixel_values": one["pixel_values"][0]} for one in singles[1:2]]
    assert sorted(processor.pad_encodings(alone)) == ["pixel_values"]
    forced = processor.pad_encodings(alone, with_text=True)
    assert forced["input_ids"].tolist() == [[tokenizer.pad_token_id]] and forced["attention_mask"].tolist() == [[0]]
    with pytest.raises(ValueError, match="at least one"):
        processor.pad_encodings([])


def decoded_rgb(path, **kwargs):
    """The decoded 0..255 RGB pixels of a file ([H, W, 3]) through the shipped image processor, no resize."""
    processor = AesformerImageProcessor(**kwargs)
    out = processor(str(path), do_resize=False, do_rescale=False, do_normalize=False, return_tensors="np")
    return out["pixel_values"][0].transpose(1, 2, 0)


@pytest.mark.usefixtures("one_torch_thread")
def test_each_hostile_file_is_scored_correctly_or_refused_with_its_reason(hostile_dir):
    processor = AesformerImageProcessor(size=32)
    for name, reason in HOSTILE.items():
        path = hostile_dir / name
        if reason is None:
            pixels = processor(str(path), return_tensors="np")["pixel_values"]
            assert pixels.shape == (1, 3, 32, 32) and np.isfinite(pixels).all(), name
        else:
            with pytest.raises(ValueError) as info:
                processor(str(path))
            message = str(info.value)
            assert str(path) in message and reason in message, (name, message)

    # "correctly": the pixels the model sees
    np.testing.assert_allclose(decoded_rgb(hostile_dir / "animated.gif")[0, 0], RED, atol=2)  # first frame
    np.testing.assert_allclose(decoded_rgb(hostile_dir / "animated.webp")[0, 0], RED, atol=2)
    np.testing.assert_allclose(decoded_rgb(hostile_dir / "cmyk.jpg")[8, 12], RED, atol=6)
    grey = decoded_rgb(hostile_dir / "gray16.png")
    assert grey[0, 0, 0] == 0 and grey[0, -1, 0] == 255 and 120 < grey[0, 16, 0] < 136  # scaled, not clipped
    palette = decoded_rgb(hostile_dir / "palette_transparent.png")
    np.testing.assert_allclose(palette[0, 0], WHITE)  # transparent -> the white matte
    np.testing.assert_allclose(palette[0, 15], RED)
    rotated = decoded_rgb(hostile_dir / "exif_rotated.jpg")
    assert rotated.shape == (40, 20, 3)  # displayed upright: 20 wide, 40 high
    np.testing.assert_allclose(rotated[20, 2], BLUE, atol=8)  # the stored bottom (blue) is now on the left
    np.testing.assert_allclose(rotated[20, 17], RED, atol=8)
    np.testing.assert_allclose(decoded_rgb(hostile_dir / "one_by_one.png")[0, 0], (10, 200, 30))
    thin = AesformerImageProcessor()(str(hostile_dir / "thin_1x20000.png"), return_tensors="np")["pixel_values"]
    assert thin.shape == (1, 3, 224, 224) and np.isfinite(thin).all()


@pytest.mark.usefixtures("one_torch_thread")
def test_bomb_is_refused_from_its_header_before_any_decoding(hostile_dir, tmp_path, monkeypatch):
    loads = []
    original_load = PIL.ImageFile.ImageFile.load

    def spy(self):
        loads.append(self.size)
        return original_load(self)

    monkeypatch.setattr(PIL.ImageFile.ImageFile, "load", spy)
    # a mid-sized bomb under Pillow's own limit: the processor's configurable limit refuses it
    mid = tmp_path / "mid_bomb.png"
    mid.write_bytes(bomb_png(5000, 5000))  # 25 M pixels declared, ~60 bytes of file
    processor = AesformerImageProcessor(size=32, max_image_pixels=1_000_000)
    with pytest.raises(ValueError,
                       match=r"mid_bomb\.png.*DecompressionBombError.*5000x5000.*max_image_pixels=1,000,000"):
        processor(str(mid))
    assert loads == []  # refused from the header: no decoder ran
    # ... per call too, and the setting survives save/load
    with pytest.raises(ValueError, match="DecompressionBomb"):
        AesformerImageProcessor(size=32)(str(mid), max_image_pixels=1_000_000)
    processor.save_pretrained(tmp_path / "proc")
    assert AesformerImageProcessor.from_pretrained(tmp_path / "proc").max_image_pixels == 1_000_000
    assert AesformerImageProcessor().max_image_pixels == 178_956_970
    for bad in (0, -5, 1.5, True, "many"):
        with pytest.raises(ValueError, match="max_image_pixels"):
            AesformerImageProcessor(max_image_pixels=bad)
    # the 400 M-pixel bomb is refused by default, even where other code switched Pillow's own guard off
    monkeypatch.setattr(PIL.Image, "MAX_IMAGE_PIXELS", None)
    with pytest.raises(ValueError, match=r"bomb\.png.*20000x20000.*max_image_pixels=178,956,970"):
        AesformerImageProcessor(size=32)(str(hostile_dir / "bomb.png"))
    # an already opened (lazy) PIL image is checked the same way, before it is decoded
    with PIL.Image.open(mid) as lazy:
        with pytest.raises(ValueError, match="DecompressionBombError"):
            processor(lazy)
    assert loads == []


def test_pillow_guards_are_never_disabled():
    """No project file turns Pillow's decompression-bomb or truncation guard off, and using the package leaves the
    process-wide limit as Pillow ships it."""
    import ast

    offenders = []
    for path in project_sources():  # the four packages and bench/
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                for target in targets:
                    name = getattr(target, "attr", getattr(target, "id", ""))
                    if name == "LOAD_TRUNCATED_IMAGES" or (
                            name == "MAX_IMAGE_PIXELS" and isinstance(node.value, ast.Constant)):
                        offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders
    assert PIL.Image.MAX_IMAGE_PIXELS == PIL_DEFAULT_MAX_IMAGE_PIXELS
    assert PIL.ImageFile.LOAD_TRUNCATED_IMAGES is False


@pytest.mark.usefixtures("one_torch_thread")
def test_comment_edge_cases_in_the_processor(tmp_path):
    processor = AesformerProcessor(AesformerImageProcessor(size=32), tokenizer_for(tmp_path), max_length=64)
    image = PIL.Image.new("RGB", (8, 8))
    long_comment = " ".join(["lovely light"] * 3000)  # 6000 words
    comments = [
        None, "", " \t\r\n  ", "\\n\\n", "\u200b\u200f\u2066\ufeff\u200d",  # no comment text at all
        "great\x00 shot\x07\x1b colour\x7f",  # control characters
        "\u05e6\u05d9\u05dc\u05d5\u05dd \u05d9\u05e4\u05d4 \u200fgreat light",  # right-to-left
        "\U0001F44D\U0001F3FD great colour \U0001F468\u200d\U0001F469\u200d\U0001F467 \u2764\ufe0f",  # emoji
        long_comment,
    ]
    out = processor(images=[image] * len(comments), comments=comments, return_tensors="pt")
    mask = out["attention_mask"]
    assert mask.shape == (len(comments), 64)  # the long comment is truncated at max_length tokens
    assert [int(row.sum()) for row in mask[:5]] == [0] * 5  # image-only branch
    assert all(int(row.sum()) >= 3 for row in mask[5:])  # [CLS], at least one token, [SEP]
    words = processor.tokenizer.convert_ids_to_tokens(out["input_ids"][5][mask[5].bool()].tolist())
    assert words == ["[CLS]", "great", "shot", "colour", "[SEP]"]  # control characters removed
    assert processor.clean_and_check(long_comment) == (" ".join(["lovely light"] * 100), True)  # said so
    assert processor.clean_and_check(comments[7])[1] is False
    assert processor.clean_and_check(comments[4]) == ("", False)
    model = AesformerModel(AesformerConfig.from_preset("tiny")).eval()
    with torch.inference_mode():
        used = model(**out).used_comments.tolist()
    assert used == [False] * 5 + [True] * 4


@pytest.mark.usefixtures("one_torch_thread")
def test_processors_sharing_one_tokenizer_across_threads_keep_their_own_truncation(tmp_path):
    """The fast tokenizer keeps truncation settings as state: two processors with different `max_length` over one
    tokenizer, in threads, must still truncate at their own length."""
    tokenizer = tokenizer_for(tmp_path)
    processors = [AesformerProcessor(AesformerImageProcessor(size=8), tokenizer, max_length=m)
                  for m in (16, 24, 32, 40)]
    image, text = PIL.Image.new("RGB", (4, 4)), " ".join(["lovely light"] * 50)
    wrong, errors = [], []

    def work(k):
        try:
            for _ in range(150):
                length = processors[k](images=[image], comments=[text])["input_ids"].shape[1]
                if length != processors[k].max_length:
                    wrong.append((processors[k].max_length, length))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(repr(err))

    run_threads(work, len(processors))
    assert not errors and not wrong, (errors[:3], wrong[:5])
