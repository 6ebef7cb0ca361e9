"""Property tests (hypothesis): the processor on arbitrary images, modes, sizes, bytes and comment strings; the
generic dataset parser on metadata.csv files full of junk rows."""

import csv
import io
import math
import os
import tempfile

import numpy as np
import PIL.Image
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aesformer_training.loaders import load_generic
from aesformer_training.reports import DROP_REASONS, DatasetLoadError
from aesformer_processing.processing_aesformer import AesformerImageProcessor, AesformerProcessor, clean_comments

from _helpers import tokenizer_for

SIZE = 16
MODES = ["1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "HSV", "LAB", "I", "I;16", "I;16B", "F",
         "La", "RGBa"]
FAST = settings(max_examples=100, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def processor(tmp_path_factory):
    folder = tmp_path_factory.mktemp("props")
    tokenizer = tokenizer_for(folder)
    return AesformerProcessor(AesformerImageProcessor(size=SIZE), tokenizer, max_length=32)


def make_image(mode, width, height, seed):
    rng = np.random.default_rng(seed)
    if mode in ("I", "I;16", "I;16B"):
        values = rng.integers(0, 65536, (height, width)).astype({"I": np.int32, "I;16": "<u2", "I;16B": ">u2"}[mode])
        image = PIL.Image.fromarray(values)
        assert image.mode == mode
        return image
    if mode == "F":
        return PIL.Image.fromarray(rng.normal(128, 200, (height, width)).astype(np.float32))
    base = PIL.Image.fromarray(rng.integers(0, 256, (height, width, 4), dtype=np.uint8), mode="RGBA")
    if mode == "P":
        return base.convert("RGB").convert("P")
    if mode == "PA":
        return base.convert("RGB").convert("P").convert("PA")
    return base.convert(mode)


comment_text = st.text(
    alphabet=st.characters(codec="utf-8"), max_size=60
) | st.sampled_from(["", " ", "\t\n", "\\n", "\u200b\u200f", "\ufeff", "\U0001F44D\u200d", "(*)", "~#:"])
comments_strategy = st.none() | comment_text | st.lists(comment_text, max_size=3)


@FAST
@given(
    items=st.lists(
        st.tuples(st.sampled_from(MODES), st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**16),
                  comments_strategy),
        min_size=1, max_size=3,
    ),
    thin=st.sampled_from([None, (1, 3000), (3000, 1)]),
)
def test_processor_never_crashes_and_routes_by_comment_text(processor, items, thin):
    images, comments = [], []
    for mode, width, height, seed, comment in items:
        if thin is not None and seed % 3 == 0:
            width, height = thin
        images.append(make_image(mode, width, height, seed))
        comments.append(comment)
    out = processor(images=images, comments=comments, return_tensors="np")
    pixels = out["pixel_values"]
    assert pixels.shape == (len(images), 3, SIZE, SIZE) and pixels.dtype == np.float32
    assert np.isfinite(pixels).all()
    has_text = [bool(clean_comments(c)) for c in comments]
    if "attention_mask" not in out:
        assert not any(has_text)
        return
    mask = out["attention_mask"]
    assert mask.shape[0] == len(images) and mask.shape[1] <= 32
    for row, text in zip(mask, has_text):
        assert (row.sum() == 0) == (not text)  # all-zero mask (image-only branch) iff no comment text
        if text:
            assert row.sum() >= 3  # [CLS], at least one real token, [SEP]
            assert row[: row.sum()].all()  # right-padded


@FAST
@given(data=st.binary(max_size=300), keep=st.floats(0, 1), fmt=st.sampled_from(["PNG", "JPEG", "GIF", "BMP",
                                                                                    "WEBP", "TIFF", None]))
def test_any_file_bytes_give_pixels_or_a_value_error_naming_the_file(data, keep, fmt):
    """Arbitrary bytes, or a real image cut anywhere: finite pixels or a ValueError naming the file, nothing else."""
    if fmt is not None:
        image = make_image("RGB", 12, 9, len(data))
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        valid = buffer.getvalue()
        data = valid[: int(len(valid) * keep)] + data[: 10 if keep < 1 else 0]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "input.bin")
        with open(path, "wb") as f:
            f.write(data)
        try:
            pixels = AesformerImageProcessor(size=8)(path, return_tensors="np")["pixel_values"]
        except ValueError as err:
            assert path in str(err)
        else:
            assert pixels.shape == (1, 3, 8, 8) and np.isfinite(pixels).all()


# ------------------------------------------------------------------------------------------------ dataset parser
cell = st.one_of(
    st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r"), max_size=12),
    st.sampled_from(["", " ", "nan", "inf", "-1", "0", "1e309", "x", '"', ",", "\n"]),
)
votes_cell = st.one_of(
    st.lists(st.integers(0, 20), min_size=5, max_size=5).map(lambda v: " ".join(map(str, v))),  # usually valid
    st.lists(st.integers(-3, 5), min_size=1, max_size=7).map(lambda v: " ".join(map(str, v))),  # wrong bins, neg.
    st.just("0 0 0 0 0"), st.just("1 2 nan 4 5"), st.just("1 2 x 4 5"), cell,
)
row_strategy = st.one_of(
    st.tuples(st.sampled_from(["a.png", "b.png", "c.png", "missing.png", "", " "]), votes_cell,
              st.sampled_from(["", "r1", "r2", "r3", "r1"]) | cell, st.sampled_from(["train", "test", "val", "x", ""]),
              cell).map(list),
    st.lists(cell, min_size=0, max_size=7),  # a row with any number of junk fields
)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(row_strategy, min_size=1, max_size=12))
def test_every_metadata_row_is_loaded_or_reported(rows):
    with tempfile.TemporaryDirectory() as folder:
        for name in ("a.png", "b.png", "c.png"):
            PIL.Image.new("RGB", (2, 2)).save(os.path.join(folder, name))
        with open(os.path.join(folder, "metadata.csv"), "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["file_name", "votes", "id", "split", "comments"])
            writer.writerows(rows)
        with open(os.path.join(folder, "dataset.json"), "w", encoding="utf-8") as f:
            f.write('{"num_bins": 5}')
        with open(os.path.join(folder, "metadata.csv"), encoding="utf-8", newline="") as f:
            records = [r for r in list(csv.reader(f))[1:] if r and any(x.strip() for x in r)]

        data, spec = load_generic(folder, on_error="skip")
        report = spec.report
        kept_ids = [i for split in data for i in data[split]["id"]]
        assert report.total_rows == len(records)  # every non-blank record is a row
        assert len(kept_ids) + report.n_dropped == report.total_rows  # ... either loaded or reported
        assert sum(report.counts().values()) == report.n_dropped
        assert set(report.counts()) <= set(DROP_REASONS)
        assert len(set(kept_ids)) == len(kept_ids)  # ids are unique; a repeated id is reported, not kept twice
        for issue in report.dropped:
            assert issue.id and issue.location.startswith("metadata.csv, line ") and issue.message
        for split in data:
            for labels in data[split]["labels"]:
                assert len(labels) == 5 and math.isclose(sum(labels), 1.0, abs_tol=1e-9)
                assert all(v >= 0 and math.isfinite(v) for v in labels)
        if report.n_dropped:
            with pytest.raises(DatasetLoadError) as info:
                load_generic(folder, on_error="fail")
            assert info.value.report.counts() == report.counts()
        else:
            load_generic(folder, on_error="fail")
