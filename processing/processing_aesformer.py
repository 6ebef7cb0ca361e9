# coding=utf-8
"""Image and text processing for Aesformer (image aesthetics assessment with optional user comments).

This module is shipped to the Hugging Face Hub as remote code next to the model files, so it is flat and
self-contained: it imports only the Python standard library, numpy, Pillow, transformers and (lazily, when the caller
already uses it) torch. It never imports any other file of the project.

It provides:

- [`clean_comments`]: the comment-cleaning rule used to train Aesformer (NFKC first, strip a fixed set of punctuation
  characters, drop literal ``"\\n"`` sequences, collapse whitespace, keep the first 200 words, keep case).
- [`AesformerImageProcessor`]: a deterministic numpy + Pillow image processor (EXIF orientation, every Pillow mode to
  RGB, alpha composited over a matte colour, squash resize to 224x224 with bicubic resampling, ImageNet normalisation).
  Files and PIL images larger than `max_image_pixels` are refused from their header size, before any pixel is decoded
  (decompression-bomb guard).
- [`AesformerProcessor`]: wraps the image processor and a BERT tokenizer; an image without comments gets an all-zero
  attention-mask row, which is how the model routes that sample to its image-only branch.
"""

import html
import json
import logging
import os
import re
import sys
import threading
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
from transformers import AutoTokenizer
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature
from transformers.processing_utils import ImagesKwargs, ProcessingKwargs, ProcessorMixin


logger = logging.getLogger(__name__)

IMAGENET_DEFAULT_MEAN = (0.485, 0.456, 0.406)
IMAGENET_DEFAULT_STD = (0.229, 0.224, 0.225)

# --------------------------------------------------------------------------------------------------------------------
# Comments
# --------------------------------------------------------------------------------------------------------------------

# Characters removed from comments: [ ( ' " ) * # : ~ ]
_STRIPPED_CHARACTERS_RE = re.compile(r"[\[\]()'\"*#:~]")
# ASCII control characters that are not whitespace (\t \n \v \f \r are whitespace and are collapsed instead).
_CONTROL_CHARACTERS_RE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f]")
_LITERAL_NEWLINE = "\\n"  # the two characters backslash and "n", as stored in the AVA-Comments CSV files
# Markup of scraped comments (AVA-Comments holds "[br]", "<br />" and HTML entities): a line or paragraph break ends
# a sentence; any other tag is a space. Without this, "&#39;" reaches the tokenizer as "& 39;" and "[br]" as "br".
_BREAK_MARKUP_RE = re.compile(r"\[\s*br\s*/?\s*\]|<\s*br\s*/?\s*>|<\s*/?\s*p\s*/?\s*>", re.IGNORECASE)
_OTHER_MARKUP_RE = re.compile(
    r"<\s*/?\s*[a-zA-Z][^<>]{0,200}>|\[\s*/?\s*(?:b|i|u|s|quote|url|img|code)\s*(?:=[^\]]*)?\]", re.IGNORECASE
)
_SENTENCE_ENDS = (".", "!", "?", "\u2026", ":", ";")
# Unicode "other" characters (control Cc, format Cf such as zero-width spaces, direction marks and the emoji joiner,
# surrogates Cs, private use Co, unassigned Cn) and U+FFFD: BERT's tokenizer drops them all, so they are removed here
# too; a comment made only of them is then NO comment (image-only branch) rather than an empty text.
_REPLACEMENT_CHARACTER = "\ufffd"


class _TokenizerCallLock:
    """Serialises the calls into one tokenizer. A fast tokenizer holds its truncation/padding settings as state that
    each call may change: two processors with different `max_length` sharing one tokenizer in threads would truncate
    at each other's length. Kept on the tokenizer instance (see `_tokenizer_lock`), so every processor sharing that
    tokenizer takes the same lock; a copy or pickle of the tokenizer gets a fresh one (locks do not pickle)."""

    __slots__ = ("_lock",)

    def __init__(self):
        self._lock = threading.RLock()

    def __enter__(self):
        self._lock.acquire()
        return self

    def __exit__(self, *exc_info):
        self._lock.release()

    def __reduce__(self):
        return (type(self), ())


def _tokenizer_lock(tokenizer) -> _TokenizerCallLock:
    """The lock of `tokenizer` (created on first use, in its `__dict__`: not an init argument, so never saved)."""
    state = vars(tokenizer)
    lock = state.get("_aesformer_call_lock")
    if lock is None:
        lock = state.setdefault("_aesformer_call_lock", _TokenizerCallLock())  # atomic: one lock per tokenizer
    return lock


def _drop_unicode_controls(text: str) -> str:
    if text.isascii():
        return text
    return "".join(
        c for c in text
        if c.isspace() or (c != _REPLACEMENT_CHARACTER and unicodedata.category(c)[0] != "C")
    )


def _join_comments(comments: Any) -> str:
    """Turns the accepted comment inputs into a single raw string (no cleaning)."""
    if comments is None:
        return ""
    if isinstance(comments, str):
        return comments
    if isinstance(comments, (list, tuple)):
        for index, item in enumerate(comments):
            if not isinstance(item, str):
                raise TypeError(
                    f"comments[{index}] must be a str, got {type(item).__name__}. Pass one string per comment."
                )
        return " ".join(comments)
    raise TypeError(f"comments must be a str, a list/tuple of str or None, got {type(comments).__name__}.")


def strip_markup(text: str) -> str:
    """A scraped comment as plain text: HTML entities unescaped (``&quot;`` ``&amp;`` ``&#39;``, escaped twice too),
    ``[br]``, ``<br>`` and ``<p>`` turned into sentence breaks, other tags into spaces. The first step of
    `clean_comments`; text without markup is returned unchanged."""
    for _ in range(2):  # "&amp;quot;" is a quote escaped twice
        unescaped = html.unescape(text)
        if unescaped == text:
            break
        text = unescaped
    if "<" not in text and "[" not in text:
        return text
    sentences = []
    for piece in _BREAK_MARKUP_RE.split(text):
        piece = _OTHER_MARKUP_RE.sub(" ", piece).strip()
        if piece:
            sentences.append(piece)
    return " ".join(
        sentence if sentence.endswith(_SENTENCE_ENDS) or index == len(sentences) - 1 else sentence + "."
        for index, sentence in enumerate(sentences)
    )


def has_comment_text(comments: Any) -> bool:
    """Whether `comments` (what `clean_comments` takes) keep any word after cleaning: the test of which branch answers
    an image (with comments or image only), so every count of "images with comments" uses it too."""
    return bool(_clean_comments_with_count(comments, None)[0])


def _clean_comments_with_count(comments: Any, max_words: int | None) -> tuple[str, int]:
    """Cleans comments and returns `(cleaned_text, number_of_words_before_the_word_limit)`."""
    if max_words is not None and (isinstance(max_words, bool) or not isinstance(max_words, int) or max_words < 1):
        raise ValueError(f"max_words must be a positive int or None, got {max_words!r}.")
    text = strip_markup(_join_comments(comments))
    if not text.isascii():
        # Compatibility characters become their plain form first (full-width "＊" U+FF0A is "*", "ｆｉｎｅ" is "fine",
        # the "ﬁ" ligature is "fi"), so the rules below treat them as the ASCII characters they stand for.
        text = unicodedata.normalize("NFKC", text)
    text = text.replace(_LITERAL_NEWLINE, " ")
    text = _CONTROL_CHARACTERS_RE.sub("", text)
    text = _drop_unicode_controls(text)
    text = _STRIPPED_CHARACTERS_RE.sub(" ", text)
    words = text.split()
    n_words = len(words)
    if max_words is not None:
        words = words[:max_words]
    return " ".join(words), n_words


def clean_comments(comments: str | Sequence[str] | None, max_words: int | None = 200) -> str:
    """
    Cleans the user comments of one image the way Aesformer was trained.

    The steps are, in order: join a list of comments with a single space; turn scraped markup into text
    (`strip_markup`: HTML entities unescaped, ``[br]``/``<br>``/``<p>`` as sentence breaks, other tags dropped); normalise Unicode compatibility characters
    (NFKC: full-width punctuation and letters, ligatures, ... become their plain forms); replace every literal ``"\\n"`` (the two
    characters backslash and ``n``, as stored in the AVA-Comments files) with a space; remove control characters that
    are not whitespace (ASCII ones, and the Unicode categories Cc/Cf/Cs/Co/Cn plus U+FFFD: zero-width spaces,
    direction marks, the emoji joiner, ..., which BERT's tokenizer drops anyway); replace each of the characters
    ``[ ( ' " ) * # : ~ ]`` with a space (as the original training code did, so that ``"great:shot"`` becomes
    ``"great shot"``); collapse all whitespace (real newlines and tabs included) to single spaces; keep the first
    `max_words` words. Case is kept (the text encoder is cased).

    Args:
        comments (`str`, `list[str]`, `tuple[str]` or `None`):
            The comments of ONE image: a single string, or a list/tuple of strings (one per comment) that are joined
            with a single space. `None` means "no comments".
        max_words (`int` or `None`, *optional*, defaults to 200):
            Keep only the first `max_words` whitespace-separated words. `None` keeps every word.

    Returns:
        `str`: The cleaned text; `""` when there is no comment text (`None`, empty or whitespace-only input, or input
        made only of stripped characters).

    Raises:
        `TypeError`: When `comments` is of another type, or a list item is not a `str` (the message names the
            item's index).
        `ValueError`: When `max_words` is not a positive int or `None`.

    Example:

    ```python
    >>> clean_comments(["Great *colours*!", "Nice\\\\nshot: (8/10)"])
    'Great colours ! Nice shot 8/10'
    ```
    """
    return _clean_comments_with_count(comments, max_words)[0]


# --------------------------------------------------------------------------------------------------------------------
# Image processor
# --------------------------------------------------------------------------------------------------------------------


def pad_encodings(encodings: Sequence[Any], pad_token_id: int = 0, with_text: bool | None = None) -> dict:
    """
    Stacks the encodings of single images (each a mapping with `pixel_values` `[channels, height, width]` and, for
    an image with comments, 1-D `input_ids`, `attention_mask` and optional `token_type_ids`) into one batch.

    Comment tokens are padded on the right (the model reads [CLS] in column 0) with `pad_token_id`; the row of an
    image without comments holds only the pad id and an all-zero attention mask, the processor's own convention. The
    text keys are present when any encoding has `input_ids`, or when `with_text=True` (a batch of image-only
    encodings for a caller that needs the same keys for every batch: at least one column).

    Returns:
        `dict` of torch tensors: `pixel_values` `[batch, channels, height, width]`, and `input_ids`,
        `attention_mask`, `token_type_ids` (int64 `[batch, tokens]`) when there is text.
    """
    import torch  # only callers that already hold torch tensors get here

    if not encodings:
        raise ValueError("pad_encodings needs at least one encoding")
    batch = {"pixel_values": torch.stack([item["pixel_values"] for item in encodings])}
    texts = [item.get("input_ids") for item in encodings]
    if with_text is False or (with_text is None and all(ids is None for ids in texts)):
        return batch
    length = max([int(ids.shape[0]) for ids in texts if ids is not None] + [1])
    ids_out = torch.full((len(encodings), length), int(pad_token_id), dtype=torch.long)
    mask_out = torch.zeros((len(encodings), length), dtype=torch.long)
    types_out = torch.zeros((len(encodings), length), dtype=torch.long)
    for row, item in enumerate(encodings):
        if item.get("input_ids") is None:
            continue
        n = int(item["input_ids"].shape[0])
        ids_out[row, :n] = item["input_ids"]
        mask_out[row, :n] = item["attention_mask"]
        if item.get("token_type_ids") is not None:
            types_out[row, :n] = item["token_type_ids"]
    batch.update(input_ids=ids_out, attention_mask=mask_out, token_type_ids=types_out)
    return batch


class AesformerImageProcessorKwargs(ImagesKwargs, total=False):
    """Keyword arguments accepted by [`AesformerImageProcessor`] on top of the standard image kwargs.

    Attributes:
        matte_color (`tuple[int, int, int]` or `list[int]`, *optional*):
            The RGB colour transparent pixels are composited over.
        max_image_pixels (`int` or `None`, *optional*):
            Files and PIL images with more pixels than this (read from the header, before decoding) are refused.
    """

    matte_color: tuple[int, int, int] | list[int] | None
    max_image_pixels: int | None




_VALID_RESAMPLE = frozenset(int(member) for member in PIL.Image.Resampling)
# Default decompression-bomb limit: Pillow's own hard limit (2 x PIL.Image.MAX_IMAGE_PIXELS as Pillow ships it, where
# `Image.open` raises DecompressionBombError). About 537 MB of 8-bit RGB once decoded.
DEFAULT_MAX_IMAGE_PIXELS = 178_956_970


def _normalize_max_pixels(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"max_image_pixels must be a positive int or None, got {value!r}.")
    return int(value)


def _check_image_pixels(image: PIL.Image.Image, max_pixels: int | None) -> None:
    """Refuses an image whose (header) size exceeds `max_pixels`; for a file just opened, nothing is decoded yet."""
    if max_pixels is None:
        return
    width, height = image.size
    if width * height > max_pixels:
        raise PIL.Image.DecompressionBombError(
            f"the image declares {width}x{height} = {width * height:,} pixels, more than max_image_pixels="
            f"{max_pixels:,} (decompression-bomb guard, checked before decoding); if you trust the image, raise "
            "the limit: AesformerImageProcessor(max_image_pixels=...) or preprocess(..., max_image_pixels=...)"
        )


def _get_torch_tensor_type():
    """Returns `torch.Tensor` when torch is already imported, else `None` (never imports torch itself)."""
    torch = sys.modules.get("torch")
    return getattr(torch, "Tensor", None) if torch is not None else None


def _is_torch_tensor(obj: Any) -> bool:
    tensor_type = _get_torch_tensor_type()
    return tensor_type is not None and isinstance(obj, tensor_type)


def _normalize_size(size: Any) -> dict[str, int]:
    if size is None:
        return {"height": 224, "width": 224}
    if isinstance(size, bool):
        raise ValueError(f"size must be an int, a (height, width) pair or a dict, got {size!r}.")
    if isinstance(size, int):
        height = width = size
    elif isinstance(size, (list, tuple)) and len(size) == 2:
        height, width = size
    elif isinstance(size, dict) and set(size) == {"height", "width"}:
        height, width = size["height"], size["width"]
    else:
        raise ValueError(
            f"size must be an int, a (height, width) pair or a dict {{'height': h, 'width': w}}, got {size!r}."
        )
    for name, value in (("height", height), ("width", width)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"size['{name}'] must be a positive int, got {value!r}.")
    return {"height": int(height), "width": int(width)}


def _normalize_triple(value: Any, name: str, cast: type) -> list:
    if isinstance(value, (int, float, np.number)) and not isinstance(value, bool):
        value = [value] * 3
    try:
        values = [cast(v) for v in value]
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a number or a sequence of 3 numbers, got {value!r}.") from err
    if len(values) != 3:
        raise ValueError(f"{name} must have 3 values (one per RGB channel), got {len(values)}: {value!r}.")
    return values


def _normalize_matte(matte_color: Any) -> list[int]:
    values = _normalize_triple(matte_color, "matte_color", float)
    if any(v < 0 or v > 255 or v != int(v) for v in values):
        raise ValueError(f"matte_color must hold 3 integers in 0..255, got {matte_color!r}.")
    return [int(v) for v in values]


def _normalize_resample(resample: Any) -> int:
    if isinstance(resample, bool) or not isinstance(resample, (int, np.integer)):
        raise ValueError(f"resample must be a PIL.Image.Resampling filter (an int), got {resample!r}.")
    if int(resample) not in _VALID_RESAMPLE:
        raise ValueError(
            f"resample must be one of the PIL.Image.Resampling filters {sorted(_VALID_RESAMPLE)}, got {resample!r}."
        )
    return int(resample)


def _composite_over_matte(image: PIL.Image.Image, matte_color: Sequence[int]) -> PIL.Image.Image:
    """Composites an image with an alpha channel (any mode PIL converts to RGBA) over an opaque matte colour."""
    rgba = image.convert("RGBA")
    background = PIL.Image.new("RGBA", rgba.size, (*[int(c) for c in matte_color], 255))
    return PIL.Image.alpha_composite(background, rgba).convert("RGB")


def _integer_grey_to_uint8(values: np.ndarray, bits: int) -> np.ndarray:
    """Scales unsigned integer grey values of the given bit depth to 0..255 (full scale maps to full scale)."""
    max_value = float(2**bits - 1)
    scaled = np.clip(values.astype(np.float64), 0.0, max_value) * (255.0 / max_value)
    return np.round(scaled).astype(np.uint8)


def _pil_to_rgb(image: PIL.Image.Image, matte_color: Sequence[int]) -> PIL.Image.Image:
    """
    Converts a PIL image of any mode to a fully loaded 8-bit RGB image.

    - EXIF orientation is applied (`PIL.ImageOps.exif_transpose`); animated images give their first frame (the
      frames are never counted: `n_frames` would decode every frame of a GIF).
    - Modes with transparency (RGBA, RGBa, LA, La, PA, and P/L/RGB with a `transparency` entry) are composited over
      `matte_color`.
    - 16-bit integer modes (I;16, I;16L, I;16B, I;16N) are scaled by 255/65535. Mode I (32-bit signed) is read as
      16-bit when all its values lie in 0..65535 (this is how Pillow decodes 16-bit PNG/TIFF files in some versions),
      otherwise as 31-bit non-negative values (negative values become 0).
    - Mode F (32-bit float) is ASSUMED to hold values in 0..255: values are clipped to that range and rounded.
    - Other modes (1, L, CMYK, YCbCr, HSV, LAB, RGBX, ...) use Pillow's own conversion to RGB.
    """
    try:
        current = image.tell()
    except Exception:  # noqa: BLE001 - a plugin without frame support: one frame
        current = 0
    if current != 0:  # a multi-frame image positioned on a later frame (a file just opened is on frame 0)
        try:
            image.seek(0)
            first = image.copy()
        finally:
            try:
                image.seek(current)
            except EOFError:  # pragma: no cover - defensive: some decoders cannot seek back
                pass
        # `copy` drops nothing that exif_transpose needs: the EXIF block lives in `info`/`getexif`.
        image = first

    image.load()  # decoding errors (truncated data, ...) surface here, not as an EXIF problem below
    try:
        transposed = PIL.ImageOps.exif_transpose(image)
        if transposed is not None:
            image = transposed
    except Exception as err:  # a broken EXIF block must not make the image unusable
        logger.warning("Could not apply the EXIF orientation (%s); using the image as stored.", err)

    image.load()
    mode = image.mode

    if mode == "RGBa":
        image, mode = image.convert("RGBA"), "RGBA"
    elif mode == "La":
        image, mode = image.convert("LA"), "LA"

    if mode.startswith("I;16"):
        grey = _integer_grey_to_uint8(np.asarray(image), 16)
        return PIL.Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "I":
        values = np.asarray(image).astype(np.int64)
        if values.size == 0 or (values.min() >= 0 and values.max() <= 65535):
            grey = _integer_grey_to_uint8(values, 16)
        else:
            grey = _integer_grey_to_uint8(values, 31)
        return PIL.Image.fromarray(grey, mode="L").convert("RGB")
    if mode == "F":
        values = np.nan_to_num(np.asarray(image).astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
        grey = np.round(np.clip(values, 0.0, 255.0)).astype(np.uint8)
        return PIL.Image.fromarray(grey, mode="L").convert("RGB")

    if mode in ("RGBA", "LA", "PA"):
        return _composite_over_matte(image, matte_color)
    if mode in ("P", "L", "RGB", "1") and "transparency" in image.info:
        return _composite_over_matte(image, matte_color)
    if mode == "RGB":
        return image
    try:
        return image.convert("RGB")
    except (ValueError, OSError) as err:
        raise ValueError(f"cannot convert a PIL image of mode {mode!r} to RGB: {err}") from err


def _array_to_pil(array: np.ndarray, channels_first: bool) -> PIL.Image.Image:
    """
    Converts a numpy array holding one image to a PIL image (L, LA, RGB or RGBA).

    Layouts: HW (grey), HWC or CHW with C in {1, 2, 3, 4}; `channels_first` says which layout wins when both fit.
    Dtypes: uint8 as is; bool as 0/255; uint16 scaled by 255/65535; other integer types must lie in 0..255; floating
    point values are ASSUMED to lie in [0, 1] (the torchvision / scikit-image convention), scaled by 255, clipped and
    rounded.
    """
    if array.ndim == 3:
        first_fits = array.shape[0] in (1, 2, 3, 4)
        last_fits = array.shape[-1] in (1, 2, 3, 4)
        if first_fits and (channels_first or not last_fits):
            array = np.moveaxis(array, 0, -1)
        elif not last_fits:
            raise ValueError(
                f"cannot tell the channel axis of an array of shape {tuple(array.shape)}: expected HW, HWC or CHW "
                "with 1, 2, 3 or 4 channels."
            )
        if array.shape[-1] == 1:
            array = array[..., 0]
    elif array.ndim != 2:
        raise ValueError(
            f"an image array must have 2 (HW) or 3 (HWC/CHW) dimensions, got shape {tuple(array.shape)}."
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"the image is empty (shape {tuple(array.shape)}).")

    dtype = array.dtype
    if dtype == np.bool_:
        array = array.astype(np.uint8) * 255
    elif dtype == np.uint8:
        pass
    elif np.issubdtype(dtype, np.unsignedinteger) and dtype.itemsize == 2:
        array = _integer_grey_to_uint8(array, 16)
    elif np.issubdtype(dtype, np.integer):
        if array.min() < 0 or array.max() > 255:
            raise ValueError(
                f"integer image values must lie in 0..255 for dtype {dtype} (got {array.min()}..{array.max()}); "
                "pass uint8, uint16, or floats in [0, 1]."
            )
        array = array.astype(np.uint8)
    elif np.issubdtype(dtype, np.floating):
        values = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        array = np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    else:
        raise TypeError(f"unsupported image array dtype {dtype}.")

    array = np.ascontiguousarray(array)
    if array.ndim == 2:
        return PIL.Image.fromarray(array, mode="L")
    mode = {2: "LA", 3: "RGB", 4: "RGBA"}[array.shape[-1]]
    return PIL.Image.fromarray(array, mode=mode)


def _read_image_file(path: str, matte_color: Sequence[int], max_pixels: int | None = None) -> PIL.Image.Image:
    try:
        with PIL.Image.open(path) as image:  # reads the header only
            _check_image_pixels(image, max_pixels)
            return _pil_to_rgb(image, matte_color)
    except Exception as err:  # missing file, unknown format, truncated data, decompression bomb, ...
        raise ValueError(f"cannot read image file '{path}': {type(err).__name__}: {err}") from err


def _to_rgb_image(
    image: Any, matte_color: Sequence[int], max_pixels: int | None = None, channels_first: bool | None = None
) -> PIL.Image.Image:
    """Turns one accepted image input into an 8-bit RGB PIL image (see `AesformerImageProcessor.preprocess`).
    `channels_first` (from `input_data_format`) says which layout a 3-D array or tensor has when both could fit;
    by default HWC for numpy, CHW for torch."""
    if isinstance(image, (str, os.PathLike)):
        return _read_image_file(os.fspath(image), matte_color, max_pixels)
    if isinstance(image, PIL.Image.Image):
        try:
            _check_image_pixels(image, max_pixels)
        except PIL.Image.DecompressionBombError as err:
            raise ValueError(f"DecompressionBombError: {err}") from err
        try:
            return _pil_to_rgb(image, matte_color)
        except (OSError, SyntaxError, EOFError) as err:  # a lazily opened image whose data is broken
            raise ValueError(f"cannot decode the image: {type(err).__name__}: {err}") from err
    if isinstance(image, np.ndarray):
        return _pil_to_rgb(_array_to_pil(image, channels_first=bool(channels_first)), matte_color)
    if _is_torch_tensor(image):
        torch = sys.modules["torch"]
        tensor = image.detach().cpu()
        if tensor.is_floating_point() and tensor.dtype not in (torch.float32, torch.float64):
            tensor = tensor.float()  # numpy has no bfloat16
        return _pil_to_rgb(
            _array_to_pil(tensor.numpy(), channels_first=channels_first is not False), matte_color
        )
    raise TypeError(
        f"unsupported image type {type(image).__name__}: expected a PIL image, a numpy array, a torch tensor or a "
        "file path (str or pathlib.Path)."
    )


def _channels_last(value: Any, name: str, default: bool) -> bool:
    """`ChannelDimension` (or its string value) -> whether it means channels-last."""
    if value is None:
        return default
    text = str(getattr(value, "value", value))
    if text not in ("channels_first", "channels_last"):
        raise ValueError(f"{name} must be 'channels_first' or 'channels_last', got {value!r}.")
    return text == "channels_last"


def _split_images(images: Any) -> list:
    """Returns the list of single images in `images` (one image, a list/tuple, or a 4-D array/tensor batch)."""
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError("images is an empty list: pass at least one image.")
        return list(images)
    if (isinstance(images, np.ndarray) or _is_torch_tensor(images)) and images.ndim == 4:
        if images.shape[0] == 0:
            raise ValueError("images is an empty batch: pass at least one image.")
        return [images[i] for i in range(images.shape[0])]
    return [images]


def _is_batch(images: Any) -> bool:
    return isinstance(images, (list, tuple)) or (
        (isinstance(images, np.ndarray) or _is_torch_tensor(images)) and images.ndim == 4
    )


class AesformerImageProcessor(BaseImageProcessor):
    r"""
    Constructs an Aesformer image processor (numpy + Pillow only, deterministic: no augmentation).

    Each image is turned into 8-bit RGB (EXIF orientation applied, first frame of animated images, transparency
    composited over `matte_color`, 16-bit images scaled by their bit depth), resized to `size` with Pillow (the aspect
    ratio is NOT kept, as in the original evaluation transform `Resize((224, 224), BICUBIC)`), rescaled to [0, 1] and
    normalised with the ImageNet mean and standard deviation.

    Args:
        do_resize (`bool`, *optional*, defaults to `True`):
            Whether to resize the image to `size`. Can be overridden by `do_resize` in `preprocess`.
        size (`dict[str, int]`, `int` or `tuple[int, int]`, *optional*, defaults to `{"height": 224, "width": 224}`):
            Output size after resizing. An int means a square; a pair is `(height, width)`. The image is squashed to
            exactly this size. Can be overridden by `size` in `preprocess`.
        resample (`int` or `PIL.Image.Resampling`, *optional*, defaults to `PIL.Image.BICUBIC`):
            Pillow resampling filter used for resizing (stored as an int). Can be overridden in `preprocess`.
        do_rescale (`bool`, *optional*, defaults to `True`):
            Whether to multiply the 0..255 pixel values by `rescale_factor`. Can be overridden in `preprocess`.
        rescale_factor (`float`, *optional*, defaults to `1/255`):
            Scale factor used when `do_rescale` is set. Can be overridden in `preprocess`.
        do_normalize (`bool`, *optional*, defaults to `True`):
            Whether to subtract `image_mean` and divide by `image_std` per channel. Can be overridden in `preprocess`.
        image_mean (`float` or `list[float]`, *optional*, defaults to `(0.485, 0.456, 0.406)`):
            Per-channel mean (a single float is used for all three channels). Can be overridden in `preprocess`.
        image_std (`float` or `list[float]`, *optional*, defaults to `(0.229, 0.224, 0.225)`):
            Per-channel standard deviation. Can be overridden in `preprocess`.
        matte_color (`tuple[int, int, int]`, *optional*, defaults to `(255, 255, 255)`):
            RGB colour (0..255) that transparent and semi-transparent pixels are composited over (white by default).
            Can be overridden in `preprocess`.
        max_image_pixels (`int` or `None`, *optional*, defaults to 178,956,970):
            Decompression-bomb guard: an image FILE (or PIL image) whose header declares more pixels than this is
            refused with a `ValueError` naming the file, its size and the limit, BEFORE any pixel is decoded. The
            default equals Pillow's own hard limit; it holds even where `PIL.Image.MAX_IMAGE_PIXELS` was disabled by
            other code. `None` turns this check off (Pillow's own check in `Image.open`, which this processor never
            changes, still applies: a limit above Pillow's needs `PIL.Image.MAX_IMAGE_PIXELS` raised by the caller).
            Arrays and tensors are already decoded and are not checked. Can be overridden in `preprocess`.
        kwargs (`dict[str, Any]`, *optional*):
            Passed to [`~image_processing_utils.BaseImageProcessor`] (e.g. `auto_map` when loaded from the Hub).

    Example:

    ```python
    >>> processor = AesformerImageProcessor()
    >>> inputs = processor(["photo1.jpg", "photo2.png"], return_tensors="pt")
    >>> inputs["pixel_values"].shape
    torch.Size([2, 3, 224, 224])
    ```
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = AesformerImageProcessorKwargs

    def __init__(
        self,
        do_resize: bool = True,
        size: dict[str, int] | int | tuple[int, int] | None = None,
        resample: int = PIL.Image.BICUBIC,
        do_rescale: bool = True,
        rescale_factor: float = 1 / 255,
        do_normalize: bool = True,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        matte_color: Sequence[int] = (255, 255, 255),
        max_image_pixels: int | None = DEFAULT_MAX_IMAGE_PIXELS,
        **kwargs,
    ):
        # Written by `to_dict`; recomputed from the class name on saving, so it is not an attribute.
        kwargs.pop("image_processor_type", None)
        super().__init__(**kwargs)
        self.do_resize = bool(do_resize)
        self.size = _normalize_size(size)
        self.resample = _normalize_resample(resample)
        self.do_rescale = bool(do_rescale)
        self.rescale_factor = float(rescale_factor)
        self.do_normalize = bool(do_normalize)
        self.image_mean = _normalize_triple(
            IMAGENET_DEFAULT_MEAN if image_mean is None else image_mean, "image_mean", float
        )
        self.image_std = _normalize_triple(
            IMAGENET_DEFAULT_STD if image_std is None else image_std, "image_std", float
        )
        if any(s == 0 for s in self.image_std):
            raise ValueError(f"image_std must not contain 0, got {self.image_std}.")
        self.matte_color = _normalize_matte(matte_color)
        self.max_image_pixels = _normalize_max_pixels(max_image_pixels)

    def __call__(self, images, **kwargs) -> BatchFeature:
        """Preprocesses an image or a batch of images: see [`~AesformerImageProcessor.preprocess`]."""
        return self.preprocess(images, **kwargs)

    def preprocess(
        self,
        images,
        return_tensors: str | None = None,
        do_resize: bool | None = None,
        size: dict[str, int] | int | tuple[int, int] | None = None,
        resample: int | None = None,
        do_rescale: bool | None = None,
        rescale_factor: float | None = None,
        do_normalize: bool | None = None,
        image_mean: float | Sequence[float] | None = None,
        image_std: float | Sequence[float] | None = None,
        matte_color: Sequence[int] | None = None,
        max_image_pixels: int | None = None,
        do_convert_rgb: bool | None = None,
        data_format: str | None = "channels_first",
        input_data_format: str | None = None,
        device: Any = None,
        default_to_square: bool | None = None,
        do_center_crop: bool | None = None,
        crop_size: Any = None,
        do_pad: bool | None = None,
        pad_size: Any = None,
        disable_grouping: bool | None = None,
        image_seq_length: int | None = None,
    ) -> BatchFeature:
        r"""
        Preprocesses an image or a batch of images.

        Args:
            images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor`, `str`, `pathlib.Path`, or a list of those):
                One image or a list of images (sizes may differ). Accepted items:

                - PIL images of any mode (see the class docstring; mode `F` is assumed to hold values in 0..255);
                - numpy arrays HW (grey), HWC or CHW with 1 (grey), 2 (grey + alpha), 3 (RGB) or 4 (RGBA) channels,
                  dtype uint8, uint16 (scaled by 255/65535), bool, other integers in 0..255, or floats ASSUMED to lie
                  in [0, 1]; a 4-D array is a batch;
                - torch tensors CHW (or HW / HWC), same dtype rules as numpy; a 4-D tensor is a batch;
                - paths (`str` or `os.PathLike`) of image files, opened with Pillow.
            return_tensors (`str` or [`~utils.TensorType`], *optional*):
                `"pt"` for a `torch.Tensor`, `"np"` or `None` for a `np.ndarray`.
            do_resize, size, resample, do_rescale, rescale_factor, do_normalize, image_mean, image_std, matte_color,
            max_image_pixels:
                Override the attributes of the same name for this call only (see the class docstring).
            do_convert_rgb (`bool`, *optional*):
                Every image is converted to RGB (the model takes 3 channels): `True` or `None`; `False` is refused.
            data_format (`str` or `ChannelDimension`, *optional*, defaults to `"channels_first"`):
                Layout of `pixel_values`: `"channels_first"` (`[batch, 3, H, W]`) or `"channels_last"`
                (`[batch, H, W, 3]`).
            input_data_format (`str` or `ChannelDimension`, *optional*):
                Layout of 3-D array/tensor inputs (`"channels_first"` or `"channels_last"`) when the shape does not
                say it; by default numpy arrays are read as HWC and torch tensors as CHW.
            device (`str` or `torch.device`, *optional*):
                With `return_tensors="pt"`, the device `pixel_values` is put on.
            default_to_square, do_center_crop, crop_size, do_pad, pad_size, disable_grouping, image_seq_length:
                Standard image kwargs this processor has no use for: `size` is always the exact output size (an int
                is a square), there is no crop, no padding and no grouping. The values that match this behaviour
                (`None`, `default_to_square=True`, `do_center_crop=False`, `do_pad=False`, any `disable_grouping`)
                are accepted; the others raise a `ValueError`.

        Returns:
            [`~image_processing_utils.BatchFeature`]: with `pixel_values`, float32 of shape `[batch, 3, height,
            width]` (a batch of one for a single image).

        Raises:
            `TypeError`: An item is of an unsupported type (the message names its index, e.g. `images[2]`).
            `ValueError`: An item cannot be read or converted (the message names its index, and its path for
                files), an item is larger than `max_image_pixels` (checked before decoding), or, with
                `do_resize=False`, the images do not share one size.
        """
        if do_convert_rgb is False:
            raise ValueError("do_convert_rgb=False is not supported: AesformerImageProcessor always returns RGB.")
        for name, value, allowed in (("default_to_square", default_to_square, (None, True)),
                                     ("do_center_crop", do_center_crop, (None, False)),
                                     ("do_pad", do_pad, (None, False))):
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not supported by AesformerImageProcessor (no crop, no padding; "
                                 "`size` is the exact output size).")
        for name, value in (("crop_size", crop_size), ("pad_size", pad_size), ("image_seq_length", image_seq_length)):
            if value is not None:
                raise ValueError(f"{name} is not supported by AesformerImageProcessor (got {value!r}).")
        channels_last_out = _channels_last(data_format, "data_format", default=False)
        channels_first_in = None if input_data_format is None else not _channels_last(
            input_data_format, "input_data_format", default=False)
        do_resize = self.do_resize if do_resize is None else bool(do_resize)
        size = self.size if size is None else _normalize_size(size)
        resample = self.resample if resample is None else _normalize_resample(resample)
        do_rescale = self.do_rescale if do_rescale is None else bool(do_rescale)
        rescale_factor = self.rescale_factor if rescale_factor is None else float(rescale_factor)
        do_normalize = self.do_normalize if do_normalize is None else bool(do_normalize)
        image_mean = self.image_mean if image_mean is None else _normalize_triple(image_mean, "image_mean", float)
        image_std = self.image_std if image_std is None else _normalize_triple(image_std, "image_std", float)
        if do_normalize and any(s == 0 for s in image_std):
            raise ValueError(f"image_std must not contain 0, got {image_std}.")
        matte_color = self.matte_color if matte_color is None else _normalize_matte(matte_color)
        # getattr: an instance made by older code (or `from_dict` of an older config) has no such attribute
        max_pixels = (getattr(self, "max_image_pixels", DEFAULT_MAX_IMAGE_PIXELS) if max_image_pixels is None
                      else _normalize_max_pixels(max_image_pixels))

        mean = np.asarray(image_mean, dtype=np.float32)
        std = np.asarray(image_std, dtype=np.float32)
        target = (size["width"], size["height"])  # PIL sizes are (width, height)

        arrays = []
        for index, item in enumerate(_split_images(images)):
            try:
                rgb = _to_rgb_image(item, matte_color, max_pixels, channels_first=channels_first_in)
                if do_resize and rgb.size != target:
                    rgb = rgb.resize(target, resample=resample)
            except TypeError as err:
                raise TypeError(f"images[{index}]: {err}") from err
            except (ValueError, OSError) as err:
                raise ValueError(f"images[{index}]: {err}") from err
            array = np.asarray(rgb, dtype=np.float32)
            if do_rescale:
                array = array * np.float32(rescale_factor)
            if do_normalize:
                array = (array - mean) / std
            arrays.append(np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32))

        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(
                "the images have different sizes and do_resize is False, so they cannot be stacked into one batch: "
                + ", ".join(f"images[{i}]: {a.shape[1]}x{a.shape[2]}" for i, a in enumerate(arrays))
            )
        pixel_values = np.stack(arrays, axis=0)
        if channels_last_out:
            pixel_values = np.ascontiguousarray(pixel_values.transpose(0, 2, 3, 1))
        features = BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)
        if device is not None and _is_torch_tensor(features["pixel_values"]):
            features["pixel_values"] = features["pixel_values"].to(device)
        return features


# --------------------------------------------------------------------------------------------------------------------
# Processor
# --------------------------------------------------------------------------------------------------------------------


def _model_vocab_size(pretrained_model_name_or_path, kwargs: dict) -> int | None:
    """`text_config.vocab_size` of the Aesformer model config.json beside a processor, or None (no such file)."""
    from transformers.utils import cached_file

    options = {k: kwargs[k] for k in ("cache_dir", "revision", "token", "local_files_only") if k in kwargs}
    try:
        path = cached_file(
            pretrained_model_name_or_path, "config.json", subfolder=kwargs.get("subfolder") or "",
            _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False, **options,
        )
        if path is None:
            return None
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return None
    if config.get("model_type") != "aesformer":
        return None
    vocab_size = (config.get("text_config") or {}).get("vocab_size")
    return vocab_size if isinstance(vocab_size, int) else None


class AesformerProcessorKwargs(ProcessingKwargs, total=False):
    """Keyword arguments of [`AesformerProcessor.__call__`]: `text_kwargs` go to the tokenizer (`max_length`,
    `padding`, `pad_to_multiple_of`, `truncation`, ...), `images_kwargs` to [`AesformerImageProcessor`]
    (`size`, `matte_color`, ...), `common_kwargs` (`return_tensors`) to both. Flat keyword arguments are routed by
    name."""

    images_kwargs: AesformerImageProcessorKwargs
    _defaults = {
        "text_kwargs": {"padding": "longest", "truncation": True},
        "common_kwargs": {"return_tensors": "pt"},
    }


class AesformerProcessor(ProcessorMixin):
    r"""
    Constructs an Aesformer processor, which wraps an [`AesformerImageProcessor`] and a BERT tokenizer into a single
    processor for images and their (optional) user comments.

    For each image, its comments (one string, or a list of strings that are joined) are cleaned with
    [`clean_comments`], tokenized with truncation at `max_length` tokens ([CLS] and [SEP] included) and padded to the
    longest sequence of the batch. An image WITHOUT comments gets an all-padding `input_ids` row and an ALL-ZERO
    `attention_mask` row: that is how the model knows to send this sample to its image-only branch. When no image of
    the batch has comments, the text keys are left out entirely.

    Args:
        image_processor ([`AesformerImageProcessor`], *optional*):
            The image processor. A default [`AesformerImageProcessor`] is created when it is not given.
        tokenizer ([`PreTrainedTokenizerBase`]):
            The tokenizer of the text encoder (a BERT WordPiece tokenizer, e.g. `BertTokenizer`). Required. Its
            vocabulary size must match the model's (see [`~AesformerProcessor.check_vocab_size`]).
        max_comment_words (`int`, *optional*, defaults to 200):
            Only the first `max_comment_words` words of the cleaned comments of an image are kept.
        max_length (`int`, *optional*, defaults to 512):
            Default maximum number of tokens per image, special tokens included; longer texts are truncated. Saved
            with the processor; a call's `max_length` (flat or in `text_kwargs`) overrides it.
        kwargs (`dict[str, Any]`, *optional*):
            Passed to [`~processing_utils.ProcessorMixin`] (only `chat_template` is accepted there).

    Example:

    ```python
    >>> processor = AesformerProcessor(image_processor=AesformerImageProcessor(), tokenizer=tokenizer)
    >>> inputs = processor(images=[img_a, img_b], comments=[["Lovely light.", "Too dark"], None])
    >>> inputs["attention_mask"][1].sum()  # image b has no comments -> image-only branch
    tensor(0)
    ```
    """

    # transformers 4.x (e.g. 4.57) reads the sub-processors from these class attributes; 5.x infers them from
    # `__init__`. Kept for Hub users on transformers 4.x; "Auto*" names check against the base classes.
    attributes = ["image_processor", "tokenizer"]
    image_processor_class = "AutoImageProcessor"
    tokenizer_class = "AutoTokenizer"
    valid_processor_kwargs = AesformerProcessorKwargs

    def __init__(self, image_processor=None, tokenizer=None, max_comment_words: int = 200, **kwargs):
        # `max_length` is a text kwarg (callers may override it per call), so it is not an explicit argument here;
        # `AesformerProcessor(..., max_length=64)` still sets the default (and `to_dict` saves it).
        # Given here, it wins over a `max_length` the tokenizer was created (or saved) with; a call's wins over both.
        self._max_length_given = "max_length" in kwargs
        max_length = kwargs.pop("max_length", 512)
        if image_processor is None:
            image_processor = AesformerImageProcessor()
        if tokenizer is None:
            raise ValueError(
                "AesformerProcessor needs a tokenizer (the text encoder's BERT tokenizer). For images without "
                "comments only, use AesformerImageProcessor directly."
            )
        for name, value in (("max_comment_words", max_comment_words), ("max_length", max_length)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        self.max_comment_words = max_comment_words
        self.max_length = max_length
        super().__init__(image_processor, tokenizer, **kwargs)

    def to_dict(self, *args, **kwargs) -> dict[str, Any]:
        output = super().to_dict(*args, **kwargs)  # (transformers 4.x takes `legacy_serialization`)
        output["max_length"] = self.max_length
        return output

    @classmethod
    def from_args_and_dict(cls, args, processor_dict: dict[str, Any], **kwargs):
        # The base class passes only explicit `__init__` arguments on; `max_length` is a keyword one.
        processor_dict = dict(processor_dict)
        max_length = kwargs.pop("max_length", processor_dict.pop("max_length", None))
        return cls._restore_max_length(super().from_args_and_dict(args, processor_dict, **kwargs), max_length)

    @classmethod
    def from_dict(cls, processor_dict: dict[str, Any], **kwargs):
        # transformers >= 5.24 builds processors here (`from_pretrained` no longer goes through
        # `from_args_and_dict`); the same explicit-arguments-only filter applies.
        processor_dict = dict(processor_dict)
        max_length = kwargs.pop("max_length", processor_dict.pop("max_length", None))
        return cls._restore_max_length(super().from_dict(processor_dict, **kwargs), max_length)

    @staticmethod
    def _restore_max_length(result, max_length):
        if max_length is not None:
            processor = result[0] if isinstance(result, tuple) else result
            if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
                raise ValueError(f"max_length must be a positive int, got {max_length!r}.")
            processor.max_length = max_length
            processor._max_length_given = True
        return result

    @classmethod
    def _get_arguments_from_pretrained(cls, pretrained_model_name_or_path, processor_dict=None, **kwargs):
        # The base class loads the image processor with `AutoImageProcessor`, which only knows this class once it is
        # registered (or with `trust_remote_code`). Load it with this class directly, so that `from_pretrained` works
        # both from the installed package and from the remote-code copy of this file.
        kwargs = {k: v for k, v in kwargs.items() if k not in ("max_comment_words", "max_length", "chat_template")}
        subfolder = kwargs.pop("subfolder", "")
        image_processor = AesformerImageProcessor.from_pretrained(
            pretrained_model_name_or_path, subfolder=subfolder, **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(pretrained_model_name_or_path, subfolder=subfolder, **kwargs)
        return [image_processor, tokenizer]

    def clean_and_check(self, comments: str | Sequence[str] | None, check_tokens: bool = True) -> tuple[str, bool]:
        """
        Cleans the comments of one image and says whether the model will see them truncated.

        Args:
            comments (`str`, `list[str]`, `tuple[str]` or `None`):
                The comments of ONE image (see [`clean_comments`]).
            check_tokens (`bool`, *optional*, defaults to `True`):
                Also count the tokens of the cleaned text (special tokens included) against `max_length`.

        Returns:
            `tuple[str, bool]`: The cleaned text (`""` when there are no comments) and `True` when words were dropped
            by the `max_comment_words` limit or (with `check_tokens`) tokens by the `max_length` limit.
        """
        text, n_words = _clean_comments_with_count(comments, self.max_comment_words)
        truncated = n_words > self.max_comment_words
        if check_tokens and text and not truncated:
            with _tokenizer_lock(self.tokenizer):
                n_tokens = len(self.tokenizer.tokenize(text, add_special_tokens=True))
            truncated = n_tokens > self.max_length
        return text, truncated

    def _comments_per_image(self, comments: Any, batched: bool, n_images: int) -> list:
        if not batched:
            return [comments]
        if comments is None:
            return [None] * n_images
        if not isinstance(comments, (list, tuple)):
            raise TypeError(
                f"for a batch of {n_images} images, comments must be a list with one entry (str, list of str or None) "
                f"per image, got {type(comments).__name__}."
            )
        if len(comments) != n_images:
            raise ValueError(
                f"got {n_images} images but {len(comments)} comment entries: comments must have one entry per image "
                "(use None for an image without comments)."
            )
        return list(comments)

    def __call__(self, images=None, text=None, comments=None, **kwargs) -> BatchFeature:
        r"""
        Prepares images and their optional comments for the model.

        Args:
            images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor`, `str`, `pathlib.Path`, or a list of those):
                One image or a batch (list, or 4-D array/tensor); see [`~AesformerImageProcessor.preprocess`].
            text (`str`, `list[str]`, `None`, or for a batch a list of those, *optional*):
                The comments. For a single image: its comments as one string, a list of strings (joined), or
                `None`. For a batch: a list with one such entry per image (same length as `images`). `None`, `""` or
                whitespace-only means the image has no comments.
            comments (*optional*):
                Same as `text` (the name used by the rest of this project); give one of the two.
            kwargs ([`AesformerProcessorKwargs`], *optional*):
                Routed by name, or given per modality as `text_kwargs={...}`, `images_kwargs={...}`,
                `common_kwargs={...}`:

                - tokenizer: `max_length` (default: the processor's `max_length`), `padding` (`"longest"`/`True`,
                  the default, pads to the longest comment text of the batch; `"max_length"` to `max_length`; no
                  padding is not possible: the output is rectangular), `pad_to_multiple_of`, `truncation` (default
                  `True`), `padding_side` (only `"right"`: the model reads [CLS] in column 0, so rows are padded
                  on the right even when the tokenizer's own `padding_side` is `"left"`), `add_special_tokens`;
                - image processor: see [`~AesformerImageProcessor.preprocess`] (e.g. `size`, `matte_color`);
                - `return_tensors` (default `"pt"`; `"np"` or `None` for numpy arrays).

        Returns:
            [`~image_processing_utils.BatchFeature`]: with

            - **pixel_values**: float32 `[batch, 3, height, width]`;
            - only when at least one image has comments: **input_ids**, **attention_mask** and **token_type_ids**,
              int64 `[batch, tokens]`; the row of an image without comments holds only the pad id, zeros in
              `attention_mask` and zeros in `token_type_ids`.

            Use [`~AesformerProcessor.clean_and_check`] to find out whether a comment text was truncated.
        """
        if text is not None:
            if comments is not None:
                raise ValueError("pass the comments either as `comments` or as `text`, not both.")
            comments = text
        if images is None:
            raise ValueError("AesformerProcessor needs images: every sample is an image (comments are optional).")
        merged = self._merge_kwargs(AesformerProcessorKwargs, tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs)
        text_kwargs, images_kwargs = dict(merged["text_kwargs"]), dict(merged["images_kwargs"])
        return_tensors = text_kwargs.pop("return_tensors", None)
        images_kwargs.pop("return_tensors", None)
        padding = text_kwargs.pop("padding", "longest")
        pad_to_multiple_of = text_kwargs.pop("pad_to_multiple_of", None)
        # The call's max_length; else the processor's when it was given (or saved) explicitly; else the one the
        # tokenizer was created with; else the processor's default.
        called = "max_length" in kwargs or any("max_length" in (kwargs.get(group) or {})
                                               for group in ("text_kwargs", "common_kwargs"))
        max_length = text_kwargs.pop("max_length", None)
        if max_length is None or (not called and getattr(self, "_max_length_given", True)):
            max_length = self.max_length
        padding_side = text_kwargs.pop("padding_side", None)
        if not ("padding_side" in kwargs or any("padding_side" in (kwargs.get(group) or {})
                                                for group in ("text_kwargs", "common_kwargs"))):
            padding_side = None  # the tokenizer's own setting (merged in as a default) is overridden, not an error
        if padding is True:
            padding = "longest"
        if padding not in ("longest", "max_length"):
            raise ValueError(f"padding must be 'longest' (or True) or 'max_length', got {padding!r}.")
        if pad_to_multiple_of is not None and (
            isinstance(pad_to_multiple_of, bool) or not isinstance(pad_to_multiple_of, int) or pad_to_multiple_of < 1
        ):
            raise ValueError(f"pad_to_multiple_of must be a positive int or None, got {pad_to_multiple_of!r}.")
        if isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1:
            raise ValueError(f"max_length must be a positive int, got {max_length!r}.")
        if padding_side not in (None, "right"):
            raise ValueError(
                f"padding_side={padding_side!r} is not supported: the model reads the [CLS] token in column 0, so "
                "comments are always padded on the right (use padding_side='right' or leave it out)."
            )
        # Always returned: the model routes on the attention mask and BERT takes the token types.
        text_kwargs.pop("return_attention_mask", None)
        text_kwargs.pop("return_token_type_ids", None)

        batched = _is_batch(images)
        n_images = len(_split_images(images)) if batched else 1
        per_image = self._comments_per_image(comments, batched, n_images)

        texts = []
        for index, entry in enumerate(per_image):
            try:
                cleaned, _ = self.clean_and_check(entry, check_tokens=False)
            except TypeError as err:
                where = f"comments[{index}]" if batched else "comments"
                raise TypeError(f"{where}: {err}") from err
            texts.append(cleaned)

        pixel_values = self.image_processor(images, return_tensors=None, **images_kwargs)["pixel_values"]
        data = {"pixel_values": pixel_values}

        rows = [i for i, cleaned in enumerate(texts) if cleaned]
        if rows:
            with _tokenizer_lock(self.tokenizer):
                encoded = self.tokenizer(
                    [texts[i] for i in rows],
                    max_length=max_length,
                    padding=False,
                    return_attention_mask=True,
                    return_token_type_ids=True,
                    **text_kwargs,
                )
            data.update(self._pad_rows(encoded, rows, n_images, padding, pad_to_multiple_of, max_length))

        return BatchFeature(data=data, tensor_type=return_tensors)

    def _pad_rows(self, encoded, rows: list, n_images: int, padding: str, pad_to_multiple_of: int | None,
                  max_length: int | None = None) -> dict:
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            raise ValueError("the tokenizer has no pad token: set `tokenizer.pad_token` before using the processor.")
        input_ids = encoded["input_ids"]
        token_type_ids = encoded.get("token_type_ids") or [[0] * len(ids) for ids in input_ids]
        attention_mask = encoded.get("attention_mask") or [[1] * len(ids) for ids in input_ids]

        length = max(len(ids) for ids in input_ids)
        if padding == "max_length":
            length = max(length, self.max_length if max_length is None else max_length)
        if pad_to_multiple_of is not None and length % pad_to_multiple_of:
            length += pad_to_multiple_of - length % pad_to_multiple_of

        out_ids = np.full((n_images, length), pad_id, dtype=np.int64)
        out_mask = np.zeros((n_images, length), dtype=np.int64)
        out_types = np.zeros((n_images, length), dtype=np.int64)
        # Always on the right, whatever the tokenizer's own `padding_side`: the model reads [CLS] in column 0 and
        # drops trailing columns no row uses.
        for k, row in enumerate(rows):
            n = len(input_ids[k])
            out_ids[row, :n] = input_ids[k]
            out_mask[row, :n] = attention_mask[k]
            out_types[row, :n] = token_type_ids[k]
        return {"input_ids": out_ids, "attention_mask": out_mask, "token_type_ids": out_types}

    def pad_encodings(self, encodings: Sequence[Any], with_text: bool | None = None) -> dict:
        """
        [`pad_encodings`] with this processor's pad token: stacks the encodings of single images (with and
        without comments) into one batch, comment tokens padded on the right.
        """
        pad_id = getattr(self.tokenizer, "pad_token_id", None)
        return pad_encodings(encodings, 0 if pad_id is None else pad_id, with_text=with_text)

    def check_vocab_size(self, vocab_size: int) -> None:
        """
        Checks that the tokenizer matches a text encoder with `vocab_size` word embeddings.

        Args:
            vocab_size (`int`):
                The number of rows of the model's word-embedding matrix (`config.text_config.vocab_size`).

        Raises:
            `ValueError`: When `len(self.tokenizer)` differs from `vocab_size`; the message gives both numbers.
        """
        n_tokens = len(self.tokenizer)
        if n_tokens != vocab_size:
            raise ValueError(
                f"the tokenizer has {n_tokens} tokens but the model's text encoder expects a vocabulary of "
                f"{vocab_size}: this tokenizer does not belong to this model (in transformers 5.x, "
                "`BertTokenizer(vocab_file=...)` silently builds a 5-token vocabulary; use `BertTokenizer(vocab=...)` "
                "or `from_pretrained`)."
            )

    def warn_on_vocab_size(self, vocab_size: int, context: str = "processor and model") -> bool:
        """
        Like [`~AesformerProcessor.check_vocab_size`], but logs a warning instead of raising (for places that pair
        a processor with a model: the pipeline, `from_pretrained` of a model folder, the start of training).
        A mismatched tokenizer would otherwise turn comments into ids the model was not trained with, silently
        (a 5-token vocabulary makes every word `[UNK]`).

        Returns:
            `bool`: whether the sizes agree.
        """
        try:
            self.check_vocab_size(vocab_size)
        except ValueError as err:
            logger.warning("%s: %s", context, err)
            return False
        return True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As [`~processing_utils.ProcessorMixin.from_pretrained`]; when the folder also holds a model's
        `config.json`, warns if the tokenizer does not fit that model's vocabulary."""
        processor = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        vocab_size = _model_vocab_size(pretrained_model_name_or_path, kwargs)
        if vocab_size is not None and getattr(processor, "tokenizer", None) is not None:
            processor.warn_on_vocab_size(vocab_size, f"processor loaded from {pretrained_model_name_or_path}")
        return processor

    @property
    def model_input_names(self) -> list[str]:
        """The names of the model inputs this processor can produce: `pixel_values` and the tokenizer's inputs."""
        names = list(self.image_processor.model_input_names) + list(self.tokenizer.model_input_names)
        return list(dict.fromkeys(names))

    def batch_decode(self, *args, **kwargs):
        """Forwards all arguments to the tokenizer's `batch_decode`."""
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        """Forwards all arguments to the tokenizer's `decode`."""
        return self.tokenizer.decode(*args, **kwargs)


__all__ = [
    "AesformerImageProcessor",
    "AesformerImageProcessorKwargs",
    "AesformerProcessor",
    "AesformerProcessorKwargs",
    "clean_comments",
    "has_comment_text",
    "pad_encodings",
    "strip_markup",
]
