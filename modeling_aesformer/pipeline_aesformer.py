"""`pipeline("image-aesthetics")`: aesthetic score, spread, high/low label and distribution for each image.

Shipped to the Hugging Face Hub as remote code next to the model files (an exported folder's config.json names it
in `custom_pipelines`): it imports only the standard library, torch, numpy, Pillow and transformers, never the
`aesformer` package, so it also runs where the package is not installed.

With the package installed, `import modeling_aesformer` registers the task:

    >>> import modeling_aesformer
    >>> from transformers import AutoModel, pipeline
    >>> scorer = pipeline("image-aesthetics", model=AutoModel.from_pretrained("path/to/model"))
    >>> scorer("photo.jpg")
    {'score': 5.62, 'std': 1.41, 'label': 'high', 'threshold': 5.0, 'distribution': [...], 'branch': 'image_only',
     'adapter': 'ava', 'trained': True, 'num_bins': 10, 'score_range': [1.0, 10.0], 'warnings': []}

Without the package (e.g. a Hub folder), trust the folder's code:

    >>> scorer = pipeline("image-aesthetics", model="path/or/hub-id", trust_remote_code=True)
"""

import io
import logging
import os
import urllib.request
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import PIL.Image
import torch
import torch.nn.functional as F
import torch.utils.data
from transformers import AutoImageProcessor, AutoModel, AutoProcessor
from transformers.pipelines import PIPELINE_REGISTRY, Pipeline

from .adapter_weights_aesformer import (ADAPTERS_DIR, BASE_ADAPTER, base_model, image_only_answer, saved_adapters,
                                        unfold_adapter)
from .attention_maps_aesformer import (
    branch_attentions,
    comment_attention,
    image_attention_map,
    token_grid,
    word_attention,
)

logger = logging.getLogger(__name__)

TASK = "image-aesthetics"
ALL_ADAPTERS = "all"
_COMMENT_KEYS = ("comments", "comment", "text")
_USER_AGENT = "aesformer-pipeline"

__all__ = ["AesformerAestheticsPipeline", "register_pipeline", "TASK"]


# ----------------------------------------------------------------------------------------------------- model helpers
def known_adapters(model) -> List[str]:
    """Dataset adapters the model carries ("base", the model's own image-only modules, is not listed)."""
    config = getattr(model, "peft_config", None) or getattr(base_model(model), "peft_config", None) or {}
    return [str(name) for name in config]


def default_adapter(model) -> str:
    """The adapter a call without `adapter=` uses: the active PEFT adapter, or "base"."""
    names = known_adapters(model)
    if not names:
        return BASE_ADAPTER
    # PeftModel: properties; transformers' own adapter integration: an `active_adapters()` method (5.x; 4.x also
    # had `active_adapter()`)
    for attribute in ("active_adapters", "active_adapter"):
        active = getattr(model, attribute, None)
        if callable(active):
            try:
                active = active()
            except Exception:  # noqa: BLE001 - no active adapter
                active = None
        if isinstance(active, (list, tuple)):
            active = active[0] if active else None
        if active in names:
            return active
    return BASE_ADAPTER


def resolve_adapters(model, adapter: Union[None, str, Sequence[str]]) -> Tuple[List[str], bool]:
    """(adapter names to run, whether the caller asked for several). `None` = the default adapter; "all" = "base"
    followed by every dataset adapter of the model; unknown names raise `ValueError`. An adapter folded into the
    model's own image-only modules (config `merged_adapter`, see `adapter_weights_aesformer`) runs as "base"."""
    known = known_adapters(model)
    merged = getattr(base_model(model).config, "merged_adapter", None)
    if merged in known:
        merged = None  # also loaded as a PEFT adapter: run that one
    if adapter is None:
        return [default_adapter(model)], False
    if isinstance(adapter, str):
        if adapter == ALL_ADAPTERS:
            return [BASE_ADAPTER] + known, True
        names, multi = [adapter], False
    else:
        names, multi = [str(a) for a in adapter], True
        if ALL_ADAPTERS in names:
            raise ValueError('adapter="all" cannot be combined with other names; pass "all" alone')
        if not names:
            raise ValueError("adapter is an empty list: pass at least one name, or 'all'")
        if len(set(names)) != len(names):
            raise ValueError(f"adapter lists a name twice: {names}")
    unknown = [n for n in names if n != BASE_ADAPTER and n not in known and n != merged]
    if unknown:
        raise ValueError(
            f"unknown adapter(s) {unknown}; this model has {[BASE_ADAPTER] + known}. Dataset adapters saved under "
            "<model>/adapters/ must be loaded into the model first (see the model card)."
        )
    if merged and merged in names:
        if BASE_ADAPTER in names:
            raise ValueError(f"adapter {merged!r} is folded into the model's image-only modules: it IS 'base' here")
        names = [BASE_ADAPTER if n == merged else n for n in names]
    return names, multi


def summarize_outputs(outputs: Dict[str, Any], names: Sequence[str]) -> Dict[str, torch.Tensor]:
    """Turn the model's `{adapter: AesformerOutput}` into batch-first tensors (A = len(names) adapters):
    `score`, `std`, `threshold` [B, A], `distribution` [B, A, W] (zero-padded), `bin_values` [B, A, W] (NaN-padded),
    `num_bins` [B, A] (the answering head's bins; a row's distribution is `distribution[i, a, :num_bins[i, a]]`),
    `score_low`, `score_high` [B, A] (the values of its first and last bin) and `used_comments` [B]. The scale of
    each row is the one the model's output carries (`AesformerOutput.bin_values`, `std`)."""
    used = outputs[names[0]].used_comments.bool()
    width = max(outputs[name].distribution.shape[-1] for name in names)
    scores, stds, thresholds, dists, values, bins, lows, highs = [], [], [], [], [], [], [], []
    for name in names:
        out = outputs[name]
        padding = width - out.distribution.shape[-1]
        scale = F.pad(out.bin_values.float(), (0, padding), value=float("nan"))
        num_bins = scale.isfinite().sum(-1)
        scores.append(out.score.float())
        stds.append(out.std.float())
        thresholds.append(out.threshold.float())
        dists.append(F.pad(out.distribution.float(), (0, padding)))
        values.append(scale)
        bins.append(num_bins)
        lows.append(scale[:, 0])
        highs.append(scale.gather(1, (num_bins - 1).clamp_min(0).view(-1, 1)).squeeze(1))
    return {
        "score": torch.stack(scores, 1),
        "std": torch.stack(stds, 1),
        "threshold": torch.stack(thresholds, 1),
        "distribution": torch.stack(dists, 1),
        "bin_values": torch.stack(values, 1),
        "num_bins": torch.stack(bins, 1),
        "score_low": torch.stack(lows, 1),
        "score_high": torch.stack(highs, 1),
        "used_comments": used,
    }


def format_results(summary: Dict[str, Any], row: int, names: Sequence[str], threshold=None,
                   return_distribution: bool = True, config=None, return_bin_values: bool = False) -> List[dict]:
    """One result dict per adapter for sample `row` of a `summarize_outputs` dict. With the model's `config`, an
    image-only row names the adapter that answered (a folded one by its name) and says whether training or
    conversion produced it (`trained`; None for rows with comments). `return_bin_values` adds `bin_values`, the
    score each bin of the answering head stands for."""
    results = []
    used = bool(summary["used_comments"][row])
    for a, name in enumerate(names):
        score = float(summary["score"][row, a])
        if isinstance(threshold, dict):
            limit = threshold.get(name, None)
        else:
            limit = threshold
        limit = float(summary["threshold"][row, a]) if limit is None else float(limit)
        result = {
            "score": score,
            "std": float(summary["std"][row, a]),
            "label": "high" if score > limit else "low",
            "threshold": limit,  # the label's rule, stated with every answer
        }
        if return_distribution:
            k = int(summary["num_bins"][row, a])
            result["distribution"] = [float(p) for p in summary["distribution"][row, a, :k]]
        if return_bin_values:
            result["bin_values"] = [float(v) for v in summary["bin_values"][row, a, : int(summary["num_bins"][row, a])]]
        result["branch"] = "with_comments" if used else "image_only"
        result["adapter"], trained = image_only_answer(config, name) if config is not None else (name, None)
        result["trained"] = None if used else trained
        if used:
            result["adapter"] = None  # the with-comments heads answered: no dataset adapter took part
        # the scale the score is on, so that rows of a 10-bin and a 7-bin head cannot be confused
        result["num_bins"] = int(summary["num_bins"][row, a])
        if "score_low" in summary:
            result["score_range"] = [float(summary["score_low"][row, a]), float(summary["score_high"][row, a])]
        results.append(result)
    return results


def small_image_warning(width: int, height: int, input_size: Optional[Dict[str, int]]) -> Optional[str]:
    """The note for an image whose shorter side is below the model's input side (it is upscaled to fit, so its
    score rests on less detail than the model was trained to see); None otherwise or when the input size is not
    fixed."""
    if not input_size or "height" not in input_size or "width" not in input_size:
        return None
    side = min(int(input_size["height"]), int(input_size["width"]))
    if min(width, height) >= side:
        return None
    return (f"small image: {width}x{height} pixels, below the model's {side}-pixel input side; upscaled, so the "
            "score rests on little detail")


def available_adapters(model) -> List[str]:
    """Dataset adapters loaded into the model and saved in its folder's `adapters/` (for messages)."""
    names = list(known_adapters(model))
    source = getattr(base_model(model), "name_or_path", None)
    if source and os.path.isdir(source):
        names += [n for n in saved_adapters(source) if n not in names]
    return names


def untrained_answer_message(model, names: Sequence[str], how_to_name: str = "adapter=...") -> Optional[str]:
    """A warning, once per model object, when one of the image-only answers `names` comes from a head that no
    training or conversion produced; None otherwise (or when already said for this model). `how_to_name`: how the
    reader names an adapter (`adapter=...` in Python, `--adapter NAME` on the command line)."""
    base = base_model(model)
    untrained = [n for n in names if not image_only_answer(base.config, n)[1]]
    if not untrained or getattr(base, "_aesformer_untrained_warned", False):
        return None
    base._aesformer_untrained_warned = True
    available = available_adapters(model)
    source = getattr(base, "name_or_path", None) or "MODEL_DIR"
    return (
        f"images without comments are answered by the image-only head {untrained[0]!r}, which no training or "
        "conversion produced (a model built from a config, or after stage 1, which trains only the with-comments "
        "heads): its scores carry no meaning. "
        + (f"Dataset adapters available: {available} (name one with {how_to_name}, or make one the default with "
           f"`aesformer set-default {source} NAME`). " if available else "This model has no dataset adapter. ")
        + f"Train one with stage 2: `aesformer adapt --model {source} --data DATASET --output-dir RUN_DIR`."
    )


# ---------------------------------------------------------------------------------------------- attention maps
def attention_summary(model, outputs, names, model_inputs) -> Dict[str, torch.Tensor]:
    """Batch-first maps (`attention_maps_aesformer`, max-normalised: 1 = the most attended cell):
    `attention_map` [B, A, H, W] (image-only rows: the adapter's attention rollout; rows with comments: the comment
    -> image region map), `word_weights` [B, L] (zero for image-only rows and padding)."""
    config = base_model(model).config
    grid = token_grid(config, tuple(model_inputs["pixel_values"].shape[-2:]))
    first = outputs[names[0]]
    used = first.used_comments.bool()
    batch, device = used.shape[0], used.device
    maps = torch.zeros(batch, len(names), grid[0], grid[1], device=device)
    mask = model_inputs.get("attention_mask")
    ids = model_inputs.get("input_ids")
    word_weights = torch.zeros(batch, mask.shape[1] if mask is not None else 1, device=device)
    if used.any():
        found = comment_attention(branch_attentions(first.attentions, used, True), mask[used], grid[0] * grid[1],
                                  grid, normalize="max")
        maps[used] = torch.from_numpy(found["region_map"])[:, None].to(device)
        words = torch.from_numpy(found["word_weights"]).to(device)
        word_weights[used, : words.shape[1]] = words
    if (~used).any():
        for a, name in enumerate(names):
            rollout = image_attention_map(branch_attentions(outputs[name].attentions, used, False), grid,
                                          len(config.vision_config.depths), normalize="max")
            maps[~used, a] = torch.from_numpy(rollout).to(device)
    summary = {"attention_map": maps, "word_weights": word_weights}
    if ids is not None:
        summary.update(input_ids=ids, attention_mask=mask)
    return summary


# ------------------------------------------------------------------------------------------------------ image inputs
def _fetch_url(url: str, timeout: Optional[float]) -> PIL.Image.Image:
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - http(s) only, checked
        data = response.read()
    # Not decoded here: the image processor checks the header size (`max_image_pixels`) before decoding.
    return PIL.Image.open(io.BytesIO(data))


def load_aesthetics_image(image: Any, timeout: Optional[float] = None):
    """A path (kept as a path: the processor reads it, EXIF and transparency included), a PIL image / array (kept),
    or an http(s) URL (downloaded, then a PIL image). Raises `ValueError` for a string that is neither."""
    if isinstance(image, os.PathLike):
        image = os.fspath(image)
    if isinstance(image, str):
        if image.startswith(("http://", "https://")):
            try:
                return _fetch_url(image, timeout)
            except Exception as err:  # network error, timeout, not an image
                raise ValueError(f"cannot load image from {image}: {type(err).__name__}: {err}") from err
        if not os.path.isfile(image):
            raise ValueError(f"image {image!r} is neither an existing file nor an http(s) URL")
        return image
    return image


def _image_size(image: Any) -> Optional[List[int]]:
    """[width, height] of a path (from its header; the processor has just read it), a PIL image or an HWC array."""
    if isinstance(image, str):
        with PIL.Image.open(image) as opened:
            return list(opened.size)
    if isinstance(image, PIL.Image.Image):
        return list(image.size)
    shape = getattr(image, "shape", None)
    return [int(shape[1]), int(shape[0])] if shape is not None and len(shape) >= 2 else None


def _split_input(item: Any) -> Tuple[Any, Any]:
    """(image, comments) of one pipeline input: an image, or a dict with "image" and optional "comments"."""
    if isinstance(item, dict):
        if "image" not in item:
            raise ValueError(f"a dict input needs an 'image' key (and optionally 'comments'); got {sorted(item)}")
        present = [k for k in _COMMENT_KEYS if k in item]
        if len(present) > 1:
            raise ValueError(f"pass the comments under one key only, got {present}")
        return item["image"], (item[present[0]] if present else None)
    return item, None


class _quiet_adapter_loading:
    """Silence what loading several dataset adapters always reports although the result is right: PEFT's LN-tuning
    asks a LayerNorm for in/out features ("Unsupported layer type"), PEFT warns that a second adapter joins the
    first ("Already found a `peft_config`"), and transformers' load report lists every OTHER adapter's LN-tuning
    weights as MISSING (each adapter file holds only its own). Errors still surface."""

    def __enter__(self):
        from transformers.utils import logging as hf_logging

        self._warnings = warnings.catch_warnings()
        self._warnings.__enter__()
        warnings.filterwarnings("ignore", message="Unsupported layer type")
        warnings.filterwarnings("ignore", message="Already found a `peft_config` attribute")
        self._verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        return self

    def __exit__(self, *exc):
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity(self._verbosity)
        return self._warnings.__exit__(*exc)


class _Numbered:
    """One item of a list input with its position, so that an error names it (`inputs[3]`)."""

    __slots__ = ("index", "item")

    def __init__(self, index: int, item: Any):
        self.index, self.item = index, item


def _describe(image: Any) -> str:
    if isinstance(image, (str, os.PathLike)):
        return repr(os.fspath(image))
    if isinstance(image, PIL.Image.Image):
        return f"<PIL image {image.mode} {image.size[0]}x{image.size[1]}>"
    return f"<{type(image).__name__}>"


class _RowsDataset(torch.utils.data.Dataset):
    """A `datasets.Dataset` seen as a torch Dataset of row dicts, so the base class batches it (with workers)."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]


def _wrap_hf_dataset(inputs):
    """`datasets.Dataset` -> torch Dataset of rows; `datasets.IterableDataset` -> generator of rows (duck-typed:
    this file does not import `datasets`). Rows are dicts with "image" and optional "comments"; other columns are
    ignored."""
    module = type(inputs).__module__ or ""
    if not module.startswith("datasets.") or not hasattr(inputs, "column_names"):
        return inputs
    if hasattr(inputs, "__len__") and hasattr(inputs, "__getitem__"):
        return _RowsDataset(inputs)
    return (row for row in inputs)


# --------------------------------------------------------------------------------------------------------- pipeline
class AesformerAestheticsPipeline(Pipeline):
    """
    Image aesthetics with an Aesformer model: for each image, the mean score of the predicted score distribution,
    its standard deviation, a high/low label, the distribution itself, which branch answered, and which adapter.

    Inputs (each one image; pass a list, a `datasets.Dataset` or a generator for several):

    - a local path, an http(s) URL, a PIL image (or an HWC numpy array);
    - a dict `{"image": <any of the above>, "comments": str | list[str] | None}`: with comments, the with-comments
      branch answers; without, the image-only branch (routing is per image, so one batch can mix both).

    Output, per image and adapter, a dict:

    - `score` (float): mean of the distribution on the answering head's scale (1..10 for AVA-style heads; a dataset
      adapter may bring its own bins and range);
    - `std` (float): standard deviation of the predicted distribution (spread of opinion);
    - `label` ("high" | "low"): "high" iff `score > threshold`;
    - `distribution` (list of float, with `return_distribution=True`, the default): probability of each bin;
    - `branch` ("with_comments" | "image_only") and `adapter` (the image-only head that answered: a dataset adapter,
      or "base" = the model's own; None with comments, where the with-comments heads answer);
    - `trained` (image only): False when no training or conversion produced the head that answered (e.g. "base"
      after stage 1; a warning, once per model, names the adapters to use instead); None with comments;
    - `threshold` (float): the threshold `label` was decided by (the answering head's own unless `threshold=`);
    - `num_bins` and `score_range` (`[first bin, last bin]`): the scale of the head that answered;
    - `warnings` (list of str): notes about the answer, e.g. an image smaller than the model's input side (it is
      upscaled); empty when there are none.

    Without `adapter=`, images without comments are answered by the model's default adapter (config
    `default_adapter`: `from_pretrained` folds it into the model, or it is the active PEFT adapter).

    A bad input (unreadable or truncated file, not an image, larger than the image processor's `max_image_pixels`,
    ...) raises a `ValueError` naming it (`inputs[3] 'b.jpg': ...` for an item of a list), as transformers'
    image-classification pipeline raises for an image it cannot load: no partial list is returned. To score an
    archive where some files are broken, use `aesformer score`, which records an error row and goes on.

    A single input gives one dict; a list gives a list. With `adapter=[...]` or `adapter="all"` each image gives a
    LIST of dicts, one per adapter in that order ("all" = "base" then every loaded dataset adapter), computed in
    one forward pass (the Swin and comment work is shared).

    Options (at construction or per call): `adapter` (name | list | "all"; default: the model's active adapter),
    `threshold` (float, or a dict adapter -> float; default: the answering head's own), `return_distribution`
    (bool), `return_bin_values` (bool: adds `bin_values`, the score each bin of the answering head stands for),
    `return_attention` (bool: adds `attention_map`, a `[H, W]` array over the last Swin stage's grid in
    [0, 1] — attention rollout over the multi-scale tokens without comments, the comment tokens' attention to each
    image region with them — and, with comments, `word_attention`: `[(word, weight), ...]`), `timeout` (seconds,
    for URLs), and the usual `batch_size`, `num_workers` (`device` at construction only). Batching does not change
    the results.

    Dataset adapters (`adapters/<name>/` in a model folder) must be in the model before they can be named: pass a
    `PeftModel` (`modeling_aesformer.adapters.load_adapters(model, folder)` with the package), or ask this pipeline
    to load them with `load_adapters=True` / `pipe.load_adapters()` (transformers' PEFT integration, no package
    needed; it changes the model object in place).

    The processor comes from the `pipeline()` factory; when it gives none (a model object was passed), the pipeline
    loads it with `AutoProcessor.from_pretrained(model.name_or_path)`.
    """

    _load_processor = None  # optional: the factory tries AutoProcessor; __init__ falls back to the model's folder
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = False

    def __init__(self, *args, load_adapters: Union[None, bool, Sequence[str]] = None, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None and self.image_processor is None:
            self.processor, self.image_processor = self._processor_from_model_folder()
        if self.processor is not None:
            if self.tokenizer is None:
                self.tokenizer = getattr(self.processor, "tokenizer", None)
            if self.image_processor is None:
                self.image_processor = getattr(self.processor, "image_processor", None)
        if self.processor is None and self.image_processor is None:
            raise ValueError(
                "the image-aesthetics pipeline needs the model's processor: pass `processor=AutoProcessor."
                "from_pretrained(folder)`, or load the model from a folder that holds its processor files."
            )
        self._warn_on_vocab_size()
        if load_adapters:
            self.load_adapters(None if load_adapters is True else list(load_adapters))

    def _warn_on_vocab_size(self) -> None:
        """A tokenizer that does not fit the model turns comments into ids it was not trained with, silently (a
        5-token vocabulary makes every word [UNK]): say so once, when the two are paired."""
        text_config = getattr(getattr(self.model, "config", None), "text_config", None)
        vocab_size = getattr(text_config, "vocab_size", None)
        if self.tokenizer is None or vocab_size is None or len(self.tokenizer) == vocab_size:
            return
        logger.warning(
            "image-aesthetics pipeline: the tokenizer has %d tokens but the model's text encoder expects a "
            "vocabulary of %d: this tokenizer does not belong to this model, and comments will not be read as the "
            "model was trained to (in transformers 5.x, `BertTokenizer(vocab_file=...)` silently builds a 5-token "
            "vocabulary; use `BertTokenizer(vocab=...)` or `from_pretrained`).",
            len(self.tokenizer), vocab_size,
        )

    def load_adapters(self, names: Optional[Sequence[str]] = None, source: Optional[str] = None) -> List[str]:
        """Load the dataset adapters saved under `<source>/adapters/<name>/` (default: the model's own folder or
        Hub repository) INTO `self.model`, with transformers' PEFT integration (`model.load_adapter`; needs
        `peft`). Explicit on purpose: it changes the model object in place (and such a model's `save_pretrained`
        then writes only an adapter). With the `aesformer` package prefer
        `modeling_aesformer.adapters.load_adapters(model, folder)` and pass the returned PeftModel.

        `names`: which adapters (default: every one in a local folder; required for a Hub repository).
        Returns the names loaded."""
        model = self.model
        if callable(getattr(model, "get_base_model", None)):
            raise ValueError("this pipeline's model is a PeftModel: add adapters with its own `load_adapter`")
        source = source or getattr(model, "name_or_path", None)
        if not source:
            raise ValueError("the model has no folder to load adapters from: pass `source=`")
        # PEFT adapters go on top of the model's own image-only weights, not on a folded default adapter.
        unfold_adapter(model)
        with _quiet_adapter_loading():
            loaded = self._load_adapter_files(model, source, names)
        # as `modeling_aesformer.adapters.load_adapters`: the model's default adapter is active when loaded, else the
        # first loaded (PEFT would leave the last one active: the answer would depend on the loading order)
        default = getattr(model.config, "default_adapter", None)
        if loaded:
            model.set_adapter(default if default in loaded else loaded[0])
        return loaded

    @staticmethod
    def _load_adapter_files(model, source, names):
        loaded = []
        if os.path.isdir(source):
            root = os.path.join(source, ADAPTERS_DIR)
            available = saved_adapters(source)
            missing = [n for n in (names or []) if n not in available]
            if missing or not available:
                raise ValueError(f"adapters {missing or '(any)'} not found under {root}; available: {available}")
            for name in names or available:
                model.load_adapter(os.path.join(root, name), adapter_name=name)
                loaded.append(name)
        else:
            if not names:
                raise ValueError("for a Hub repository, name the adapters to load: load_adapters(names=[...])")
            for name in names:
                model.load_adapter(source, adapter_name=name, adapter_kwargs={"subfolder": f"{ADAPTERS_DIR}/{name}"})
                loaded.append(name)
        return loaded

    def _processor_from_model_folder(self):
        """(processor, image processor) from the model's folder: the full processor, or, for a folder without a
        tokenizer, its image processor alone (images without comments only)."""
        base = base_model(self.model)
        source = getattr(base, "name_or_path", None) or getattr(base.config, "_name_or_path", None)
        if not source:
            return None, None
        kwargs = {}
        if type(base).__module__.startswith("transformers_modules"):
            # The model's own code already came from that folder (trusted by the caller); so does its processor.
            kwargs["trust_remote_code"] = True
        try:
            return AutoProcessor.from_pretrained(source, **kwargs), None
        except Exception as err:  # noqa: BLE001 - e.g. no tokenizer in the folder
            logger.info("no processor in %s (%s); trying its image processor", source, err)
        try:
            return None, AutoImageProcessor.from_pretrained(source, **kwargs)
        except Exception as err:  # noqa: BLE001 - reported, then the caller gets a clear error
            logger.warning("could not load a processor from %s: %s", source, err)
            return None, None

    # -------------------------------------------------------------------------------------------- parameters
    def _sanitize_parameters(self, adapter=None, threshold=None, return_distribution=None, timeout=None,
                             return_attention=None, return_bin_values=None):
        preprocess_params, forward_params, postprocess_params = {}, {}, {}
        if return_bin_values is not None:
            postprocess_params["return_bin_values"] = bool(return_bin_values)
        if return_attention is not None:
            forward_params["return_attention"] = bool(return_attention)
            postprocess_params["return_attention"] = bool(return_attention)
        if timeout is not None:
            preprocess_params["timeout"] = timeout
        if adapter is not None:
            resolve_adapters(self.model, adapter)  # fail early on unknown names
            forward_params["adapter"] = adapter
            postprocess_params["adapter"] = adapter
        if threshold is not None:
            values = threshold.values() if isinstance(threshold, dict) else [threshold]
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
                raise ValueError(f"threshold must be a number (or a dict adapter name -> number), got {threshold!r}")
            postprocess_params["threshold"] = threshold
        if return_distribution is not None:
            postprocess_params["return_distribution"] = return_distribution
        return preprocess_params, forward_params, postprocess_params

    def __call__(self, inputs=None, **kwargs):
        """Score one input or several; see the class docstring for inputs, options and outputs."""
        if "images" in kwargs:
            if inputs is not None:
                raise ValueError("pass the images either as the first argument or as `images=`, not both")
            inputs = kwargs.pop("images")
        if inputs is None:
            raise ValueError("the image-aesthetics pipeline needs inputs: an image, a dict, or a list of them")
        if isinstance(inputs, tuple):
            inputs = list(inputs)
        if isinstance(inputs, list):
            inputs = [_Numbered(i, item) for i, item in enumerate(inputs)]
        inputs = _wrap_hf_dataset(inputs)
        return super().__call__(inputs, **kwargs)

    # -------------------------------------------------------------------------------------------- steps
    def preprocess(self, inputs, timeout=None):
        where = "input"
        if isinstance(inputs, _Numbered):
            where, inputs = f"inputs[{inputs.index}]", inputs.item
        image = inputs.get("image") if isinstance(inputs, dict) else inputs
        try:
            return self._preprocess_one(inputs, timeout)
        except (ValueError, TypeError, OSError) as err:
            text = str(err)
            text = text[len("images[0]: "):] if text.startswith("images[0]: ") else text
            error = TypeError if isinstance(err, TypeError) else ValueError
            raise error(f"{where} {_describe(image)}: {text}") from err

    def _preprocess_one(self, inputs, timeout):
        image, comments = _split_input(inputs)
        image = load_aesthetics_image(image, timeout=timeout)
        if self.processor is not None and getattr(self.processor, "tokenizer", None) is not None:
            encoded = self.processor(images=[image], comments=[comments], return_tensors="pt")
            # Padded as every batch is, so the base class can batch any mix: an image without comments gets the
            # pad-only row with an all-zero mask.
            model_inputs = self.processor.pad_encodings([{k: v[0] for k, v in encoded.items()}], with_text=True)
        else:
            if comments:
                raise ValueError("this pipeline has no tokenizer (image processor only): comments are not supported")
            model_inputs = self.image_processor(images=[image], return_tensors="pt")
        model_inputs = dict(model_inputs)
        model_inputs["pixel_values"] = model_inputs["pixel_values"].to(self.dtype or torch.float32)
        size = _image_size(image)
        if size is not None:
            model_inputs["image_size"] = torch.tensor([size])  # [1, 2] (width, height): for `warnings`
        return model_inputs

    def _forward(self, model_inputs, adapter=None, return_attention=False):
        names, _ = resolve_adapters(self.model, adapter)
        model_inputs = dict(model_inputs)
        image_size = model_inputs.pop("image_size", None)
        # The eager attention path (with weights) runs only when maps are asked for. Threads sharing this pipeline
        # need no lock here: the model serialises its own adapter switching (per model instance).
        outputs = self.model.forward_adapters(**model_inputs, adapters=list(names), output_attentions=return_attention)
        summary = summarize_outputs(outputs, names)
        if image_size is not None:
            summary["image_size"] = image_size
        if return_attention:
            summary.update(attention_summary(self.model, outputs, names, model_inputs))
        return summary

    def postprocess(self, model_outputs, adapter=None, threshold=None, return_distribution=True,
                    return_attention=False, return_bin_values=False):
        names, multi = resolve_adapters(self.model, adapter)
        config = base_model(self.model).config
        results = format_results(model_outputs, 0, names, threshold, return_distribution, config=config,
                                 return_bin_values=return_bin_values)
        notes = []
        image_processor = getattr(self.processor, "image_processor", None) or self.image_processor
        if "image_size" in model_outputs and image_processor is not None:
            width, height = (int(v) for v in model_outputs["image_size"][0])
            note = small_image_warning(width, height, getattr(image_processor, "size", None))
            notes = [note] if note else []
        for result in results:
            result["warnings"] = list(notes)
        if not bool(model_outputs["used_comments"][0]):
            message = untrained_answer_message(self.model, names)
            if message:
                warnings.warn(message, UserWarning, stacklevel=2)
        if return_attention:
            with_comments = bool(model_outputs["used_comments"][0])
            words = None
            if with_comments and self.tokenizer is not None:
                real = model_outputs["attention_mask"][0].bool()
                words = word_attention(self.tokenizer, model_outputs["input_ids"][0][real],
                                       model_outputs["word_weights"][0][real])
            for a, result in enumerate(results):
                result["attention_map"] = model_outputs["attention_map"][0, a].float().numpy()  # [H_grid, W_grid]
                if with_comments:
                    result["word_attention"] = words  # [(word, weight), ...], weights sum to 1
        return results if multi else results[0]


def register_pipeline(task: str = TASK) -> type:
    """Register `AesformerAestheticsPipeline` for `pipeline(task)` (idempotent). `import modeling_aesformer` calls
    this for you."""
    entry = PIPELINE_REGISTRY.supported_tasks.get(task)
    if entry is None or entry.get("impl") is not AesformerAestheticsPipeline:
        PIPELINE_REGISTRY.register_pipeline(
            task, pipeline_class=AesformerAestheticsPipeline, pt_model=AutoModel, type="image"
        )
    return AesformerAestheticsPipeline
