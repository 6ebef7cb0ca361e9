"""`AestheticCollator`: dataset rows (image path, labels, comments) -> a training or evaluation batch for the model;
an image that cannot be decoded is logged and skipped (the package's own loops), or, for `transformers.Trainer`
(``model_inputs_only=True``), refused with its id: filter such rows out first with `AestheticCollator.decodes`."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import PIL.Image

logger = logging.getLogger(__name__)


def stable_index(sample_id: str, seed: int = 0) -> int:
    """A stable non-negative 63-bit integer for a sample id (SHA-256 of ``"<seed>:<id>"``): the same in every
    process, run and Python version (unlike `hash`)."""
    digest = hashlib.sha256(f"{seed}:{sample_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") >> 1


class AestheticCollator:
    """
    Turns a list of dataset rows into a model batch.

    For each row the image file is decoded through the processor's image processor (EXIF orientation, every Pillow
    mode to 8-bit RGB, transparency over the matte colour; no resize), the training `transform` is applied when
    given, and the `AesformerProcessor` makes ``pixel_values`` and, when at least one row of the batch has comments
    (and `include_comments` is set), ``input_ids`` / ``attention_mask`` / ``token_type_ids`` (an all-zero mask row
    for a row without comments: that sample goes to the image-only branch).

    Returns a dict with those tensors, ``labels`` (float32 ``[B, bins]``), ``ids`` (list of str, the rows that made
    it into the batch) and ``skipped`` (list of ``(id, reason)`` of this batch's rows whose image could not be
    decoded; usually empty). Pass only the tensor keys to the model (pop ``ids`` and ``skipped``).

    An image that fails to decode is logged (a warning with the id, path and reason) and SKIPPED: the batch is
    smaller. `skipped` keeps the running list of ``(id, reason)`` for all batches. When every image of a batch fails,
    the collator returns ``None``: the training loop must skip ``None`` batches. With ``DataLoader(num_workers>0)``
    each worker has its own copy of the collator, so count skips from the batches' ``skipped`` lists, not from
    ``collator.skipped``.

    For `transformers.Trainer` pass ``model_inputs_only=True``: the batch then holds only the model's inputs and
    ``labels`` (Trainer passes every key to the model), and an image that fails to decode raises a ``ValueError``
    naming its id and path instead of being skipped (a skipped row would shift every later row of
    `Trainer.predict`'s output against the dataset; ``None`` is never returned). Drop such rows before training or
    predicting with ``dataset.filter(collator.decodes)``: the rows then line up with the filtered dataset.

    Augmentation randomness: `transform` is called as ``transform(image, index, epoch)``. ``index`` is the row's
    ``index`` field when the rows have one (e.g. added with ``dataset.map(lambda r, i: {"index": i},
    with_indices=True)``), else `stable_index(id, seed)`; ``epoch`` is `epoch` (update it with `set_epoch` before
    each epoch's DataLoader iterator is created; persistent workers would keep the old value). So the augmentation
    of a sample depends only on (transform seed, collator seed, epoch, sample) and a resumed run reproduces it.

    Args:
        processor: an `AesformerProcessor` (or an `AesformerImageProcessor` with ``include_comments=False``).
        transform: ``(PIL image, index, epoch) -> PIL image``, e.g. `aesformer_training.transforms.TrainTransform`;
            ``None`` for evaluation (the processor's deterministic resize).
        epoch: the current epoch.
        seed: mixed into the sample index of rows without an ``index`` field.
        include_comments: ``False`` drops all comments (stage 2 trains the image-only branch).
        model_inputs_only: ``True`` for `transformers.Trainer` (see above).
    """

    def __init__(
        self,
        processor,
        transform: Callable[[PIL.Image.Image, int, int], PIL.Image.Image] | None = None,
        epoch: int = 0,
        seed: int = 42,
        include_comments: bool = True,
        model_inputs_only: bool = False,
    ):
        self.processor = processor
        self.image_processor = getattr(processor, "image_processor", processor)
        if include_comments and getattr(processor, "tokenizer", None) is None:
            raise ValueError(
                "include_comments=True needs an AesformerProcessor (with a tokenizer); pass include_comments=False "
                "to use an image processor alone."
            )
        self.transform = transform
        self.epoch = int(epoch)
        self.seed = int(seed)
        self.include_comments = bool(include_comments)
        self.model_inputs_only = bool(model_inputs_only)
        self.skipped: list[tuple[str, str]] = []
        self._checked_size = False

    def set_epoch(self, epoch: int) -> None:
        """Sets the epoch passed to the transform."""
        self.epoch = int(epoch)

    def decodes(self, row: Mapping[str, Any]) -> bool:
        """Whether the row's image decodes (for ``dataset.filter(collator.decodes)`` before Trainer); a row that does
        not is logged with its id, path and reason, and added to `skipped`."""
        try:
            self._decode(row["image"])
        except Exception as err:  # unreadable, truncated, not an image, decompression bomb, ...
            self._log_skip(row, f"{type(err).__name__}: {err}")
            return False
        return True

    def _log_skip(self, row, reason: str) -> None:
        self.skipped.append((str(row["id"]), reason))
        logger.warning("skipping image id=%r path=%r: %s (%d skipped so far)",
                       str(row["id"]), row["image"], reason, len(self.skipped))

    def _decode(self, path: str) -> PIL.Image.Image:
        array = self.image_processor(
            path, do_resize=False, do_rescale=False, do_normalize=False, return_tensors="np"
        )["pixel_values"][0]
        return PIL.Image.fromarray(np.rint(array).clip(0, 255).astype(np.uint8).transpose(1, 2, 0), mode="RGB")

    def _check_transform_size(self) -> None:
        self._checked_size = True
        output_size = getattr(self.transform, "output_size", None)
        size = getattr(self.image_processor, "size", None)
        if output_size is not None and isinstance(size, dict):
            if tuple(output_size) != (size.get("height"), size.get("width")):
                logger.warning(
                    "the transform outputs %s images but the image processor resizes to %sx%s: the crops are "
                    "resized (squashed) again; make the crop size equal the processor size.",
                    "x".join(map(str, output_size)), size.get("height"), size.get("width"),
                )

    def __call__(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        import torch

        if self.transform is not None and not self._checked_size:
            self._check_transform_size()
        images, kept, skipped = [], [], []
        for row in rows:
            sample_id = str(row["id"])
            try:
                image = self._decode(row["image"])
            except Exception as err:  # unreadable, truncated, not an image, decompression bomb, ...
                reason = f"{type(err).__name__}: {err}"
                if self.model_inputs_only:
                    raise ValueError(
                        f"image id={sample_id!r} path={row['image']!r} cannot be decoded ({reason}); under Trainer a "
                        "skipped row would misalign the predictions with the dataset: drop such rows first with "
                        "dataset.filter(collator.decodes)"
                    ) from err
                skipped.append((sample_id, reason))
                self._log_skip(row, reason)
                continue
            if self.transform is not None:
                index = row.get("index")
                index = stable_index(sample_id, self.seed) if index is None else int(index)
                image = self.transform(image, index, self.epoch)
            images.append(image)
            kept.append(row)
        if not kept:
            logger.warning("every image of a batch of %d failed to decode: returning None", len(rows))
            return None
        n_bins = {len(row["labels"]) for row in kept}
        if len(n_bins) != 1:
            raise ValueError(f"the rows of a batch have labels of different lengths {sorted(n_bins)}.")
        if self.include_comments:
            comments = [row.get("comments") or None for row in kept]
            encoded = self.processor(images=images, comments=comments, return_tensors="pt")
        else:
            encoded = self.image_processor(images, return_tensors="pt")
        batch = dict(encoded.items())
        batch["labels"] = torch.tensor([list(row["labels"]) for row in kept], dtype=torch.float32)
        if self.model_inputs_only:
            return batch
        batch["ids"] = [str(row["id"]) for row in kept]
        batch["skipped"] = skipped
        return batch


__all__ = ["stable_index", "AestheticCollator"]
