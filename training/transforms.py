"""Training and evaluation image transforms for Aesformer (Pillow only, reproducible).

The paper trains with ``Resize((256, 256), bicubic) -> RandomHorizontalFlip -> RandomCrop(224)`` and evaluates with
``Resize((224, 224), bicubic)``. `TrainTransform` applies Resize -> RandomCrop -> RandomHorizontalFlip (the same
distribution of outputs: the crop offset and the flip are independent draws). Its randomness comes ONLY from
``numpy.random.default_rng([seed, epoch, index])``, so a sample's augmentation is the same in every run, process
and worker, and a training run resumed at any step reproduces the uninterrupted run.

Both transforms work on PIL images and return PIL images; the `AesformerImageProcessor` then rescales and
normalises. Make the crop size equal the image processor's ``size``: the processor's own resize is then a no-op
(otherwise it squashes the crop again). Sizes are arguments, so tiny test models can use e.g. ``resize=37, crop=32``;
`TrainTransform.for_image_processor` derives them from a processor.

These transforms are NOT part of the processor that ships with a model (``processing_aesformer.py``): augmentation
is training code.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image


TRAIN_RESIZE_RATIO = 256 / 224  # the paper: resize to 256, random crop 224


def train_resize(crop: int, ratio: float = TRAIN_RESIZE_RATIO) -> int:
    """The side training images are resized to before a random crop of side `crop`: `crop · ratio`, rounded (256
    for 224 as in the paper, 37 for a tiny model's 32); never below `crop`."""
    return max(int(crop), int(round(crop * ratio)))


def _size_pair(size: Any, name: str) -> tuple[int, int]:
    """int -> (size, size); (height, width) pair -> itself; checked positive ints."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        pair = (int(size), int(size))
    elif isinstance(size, dict) and set(size) == {"height", "width"}:
        pair = (size["height"], size["width"])
    elif isinstance(size, (tuple, list)) and len(size) == 2:
        pair = tuple(size)
    else:
        raise ValueError(f"{name} must be an int or a (height, width) pair, got {size!r}.")
    for value in pair:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must hold positive ints, got {size!r}.")
    return int(pair[0]), int(pair[1])


def _check_seed_part(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{name} must be a non-negative int, got {value!r}.")
    return int(value)


class TrainTransform:
    """
    Training augmentation: Resize to ``resize`` (bicubic, aspect ratio squashed) -> random crop of ``crop`` ->
    random horizontal flip (probability 0.5).

    Call it as ``transform(image, index, epoch)``: ``index`` identifies the sample (a non-negative int, e.g. its
    dataset index or `aesformer_training.collator.stable_index` of its id) and ``epoch`` the epoch. All random draws
    come from ``numpy.random.default_rng([seed, epoch, index])``: the crop's top offset, then its left offset, then
    the flip.

    Args:
        resize (`int` or `(height, width)`, defaults to 256): the size the image is squashed to first.
        crop (`int` or `(height, width)`, defaults to 224): the crop size (must fit inside `resize`); this is the
            output size, and should equal the image processor's ``size``.
        flip (`bool`, defaults to `True`): whether to flip horizontally with probability 0.5.
        seed (`int`, defaults to 42): the base seed.
    """

    def __init__(self, resize=256, crop=224, flip: bool = True, seed: int = 42):
        self.resize = _size_pair(resize, "resize")
        self.crop = _size_pair(crop, "crop")
        if self.crop[0] > self.resize[0] or self.crop[1] > self.resize[1]:
            raise ValueError(f"crop {self.crop} must fit inside resize {self.resize} (height, width).")
        self.flip = bool(flip)
        self.seed = _check_seed_part(seed, "seed")

    @classmethod
    def for_image_processor(cls, image_processor, seed: int = 42, flip: bool = True,
                            resize_ratio: float = TRAIN_RESIZE_RATIO):
        """A TrainTransform whose crop is the image processor's ``size`` and whose resize is ``crop · resize_ratio``
        (rounded; 256 for 224 as in the paper, 37 for a tiny model's 32)."""
        size = getattr(image_processor, "image_processor", image_processor).size
        crop = _size_pair(size, "image_processor.size")
        resize = tuple(train_resize(c, resize_ratio) for c in crop)
        return cls(resize=resize, crop=crop, flip=flip, seed=seed)

    @property
    def output_size(self) -> tuple[int, int]:
        """The ``(height, width)`` of the output images."""
        return self.crop

    def params(self, index: int, epoch: int) -> tuple[int, int, bool]:
        """The random draws for one sample and epoch: ``(top, left, flipped)``."""
        index = _check_seed_part(index, "index")
        epoch = _check_seed_part(epoch, "epoch")
        rng = np.random.default_rng([self.seed, epoch, index])
        top = int(rng.integers(0, self.resize[0] - self.crop[0] + 1))
        left = int(rng.integers(0, self.resize[1] - self.crop[1] + 1))
        flipped = bool(rng.random() < 0.5) if self.flip else False
        return top, left, flipped

    def __call__(self, image: PIL.Image.Image, index: int, epoch: int) -> PIL.Image.Image:
        top, left, flipped = self.params(index, epoch)
        height, width = self.resize
        if image.size != (width, height):
            image = image.resize((width, height), resample=PIL.Image.BICUBIC)
        image = image.crop((left, top, left + self.crop[1], top + self.crop[0]))
        if flipped:
            image = image.transpose(PIL.Image.FLIP_LEFT_RIGHT)
        return image

    def __repr__(self) -> str:
        return f"TrainTransform(resize={self.resize}, crop={self.crop}, flip={self.flip}, seed={self.seed})"


class EvalTransform:
    """
    Evaluation transform: the processor's deterministic resize, squashing the image to ``size`` with bicubic
    resampling. Like the original test transform ``Resize((224, 224))`` it does NOT keep the aspect ratio (a known
    cost of a few PLCC points in the literature). Applying it before the processor changes nothing: the processor
    would do the same resize itself. The ``index`` and ``epoch`` arguments are accepted and ignored, so it can stand
    wherever a `TrainTransform` can.

    Args:
        size (`int` or `(height, width)`, defaults to 224): the output size (the image processor's ``size``).
    """

    def __init__(self, size=224):
        self.size = _size_pair(size, "size")

    @property
    def output_size(self) -> tuple[int, int]:
        return self.size

    def __call__(self, image: PIL.Image.Image, index: int = 0, epoch: int = 0) -> PIL.Image.Image:
        height, width = self.size
        if image.size != (width, height):
            image = image.resize((width, height), resample=PIL.Image.BICUBIC)
        return image

    def __repr__(self) -> str:
        return f"EvalTransform(size={self.size})"


__all__ = ["TRAIN_RESIZE_RATIO", "EvalTransform", "TrainTransform", "train_resize"]
