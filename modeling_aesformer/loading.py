"""Loading a model as the commands and the training stages do: where a model reference points (an existing model
folder or a well-formed Hugging Face Hub id, checked before anything loads, so a mistyped folder gets "no model folder
at ..." instead of the Hub's repo-id error), and `load_model`, the one function that loads a model, its processor and
its dataset adapters. A failure raises `ModelSourceError` (no such folder or Hub id; a `FileNotFoundError`) or
`ModelLoadError` (found but not loadable, a missing adapter; a `ValueError`), with one line naming the item and the
command-line flag that gave it (`flag`)."""

from __future__ import annotations

import os
import re

class ModelSourceError(FileNotFoundError):
    """A model reference that is neither a model folder nor a well-formed Hub id; the message names the flag."""


class ModelLoadError(ValueError):
    """A model folder or Hub model that cannot be loaded as asked (weights, processor, a named adapter, peft); the
    message names the flag."""


# owner/name or name: letters, digits, "-", "_", "."; no "--" or ".."; at most 96 characters (the Hub's own rule).
_HUB_ID = re.compile(r"^(?:[A-Za-z0-9][A-Za-z0-9._-]*/)?[A-Za-z0-9][A-Za-z0-9._-]*$")


def is_hub_id(reference: str) -> bool:
    """True when `reference` is a well-formed Hub model id (``name`` or ``owner/name``)."""
    return (bool(_HUB_ID.match(reference)) and len(reference) <= 96 and "--" not in reference
            and ".." not in reference and not reference.endswith((".", "-")))


def check_model_source(reference: str | os.PathLike, flag: str = "--model", require_config: bool = True) -> str:
    """
    Returns `reference` when it is an existing folder (with a ``config.json`` unless `require_config` is false, e.g.
    for a tokenizer folder) or a well-formed Hub id.

    Raises:
        ModelSourceError (a `FileNotFoundError`): neither (``"--model runs/s1/modle: no model folder at
            /abs/runs/s1/modle"``), or a folder without ``config.json``.
    """
    reference = os.fspath(reference)
    if os.path.isdir(reference):
        if require_config and not os.path.isfile(os.path.join(reference, "config.json")):
            raise ModelSourceError(f"{flag} {reference}: the folder holds no config.json, so it is not a saved model "
                                    "(a stage-1 run saves its model to <output-dir>/model)")
        return reference
    if os.path.exists(reference) or not is_hub_id(reference):
        what = "model" if require_config else "tokenizer" if "token" in flag else ""
        raise ModelSourceError(f"{flag} {reference}: no {what + ' ' if what else ''}folder at "
                                f"{os.path.abspath(reference)} (and it is not a Hugging Face Hub id)")
    return reference


def describe_load_error(reference: str, error: BaseException, flag: str = "--model") -> str:
    """The message for a model that could not be loaded from `reference` (a Hub id that is not cached or reachable)."""
    first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if os.path.isdir(reference):
        return f"{flag} {reference}: cannot load the model from this folder: {first_line}"
    return (f"{flag} {reference}: no model folder at {os.path.abspath(reference)}, and the Hub model {reference!r} "
            f"could not be loaded ({first_line})")


def _weight_files(model_dir) -> list:
    return sorted(name for name in os.listdir(model_dir) if name.endswith(".safetensors"))


def check_loading_info(info: dict, reference, model_dir, flag: str = "--model") -> None:
    """Strict loading: weights in the files that the model does not use, or weights the model needs that the files
    lack (a config.json whose layer counts disagree with the weights), are a `ModelLoadError` naming the files and
    examples of the weights (`from_pretrained` itself only reports them and initialises the missing ones)."""
    unused, lacking = list(info.get("unexpected_keys") or []), list(info.get("missing_keys") or [])
    mismatched = list(info.get("mismatched_keys") or [])
    if not (unused or lacking or mismatched):
        return
    parts = []
    for what, keys in (("weights the model does not use", unused), ("weights the model needs that they lack",
                                                                        lacking)):
        if keys:
            parts.append(f"{len(keys)} {what} (e.g. {', '.join(sorted(keys)[:3])})")
    if mismatched:
        parts.append(f"{len(mismatched)} weights of another shape (e.g. {mismatched[0]})")
    raise ModelLoadError(f"{flag} {reference}: the weights in {', '.join(_weight_files(model_dir)) or model_dir} do "
                         f"not fit its config.json: {'; '.join(parts)}. The config's layer counts or sizes disagree "
                         "with the saved weights: restore the config.json saved with them")


def describe_mismatch(reference, model_dir, flag: str = "--model") -> str:
    """The message for weights whose shapes disagree with config.json: the weight files, an example weight with both
    shapes, and the config field(s) holding the model's size that the weights contradict."""
    import json

    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModel

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        expected = {name: tuple(p.shape) for name, p in AutoModel.from_config(config).state_dict().items()}
    found = []
    for name in _weight_files(model_dir):
        with safe_open(os.path.join(model_dir, name), "pt") as handle:
            for key in handle.keys():
                shape = tuple(handle.get_slice(key).get_shape())
                if key in expected and expected[key] != shape:
                    found.append((name, key, shape, expected[key]))
    if not found:
        return f"{flag} {reference}: the weights do not fit its config.json (shapes differ)"
    values = {}  # config field -> value, nested configs as "text_config.hidden_size"

    def walk(prefix, data):
        for key, value in data.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            elif isinstance(value, int) and not isinstance(value, bool):
                values[f"{prefix}{key}"] = value

    with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as handle:
        walk("", json.load(handle))
    fields = {}
    for _, _, saved, wanted in found:
        for have, want in zip(saved, wanted):
            if have != want:
                for field, value in values.items():
                    if value == want:
                        fields.setdefault(field, (value, have))
    file, key, saved, wanted = found[0]
    named = "; ".join(f"{field} = {value} (the weights have {have})" for field, (value, have) in
                      list(fields.items())[:3])
    return (f"{flag} {reference}: {len(found)} weights in {file} have another shape than its config.json gives "
            f"(e.g. {key}: {list(saved)} saved, {list(wanted)} from the config)"
            + (f"; config field {named}" if named else "") + ": restore the config.json saved with the weights")


def load_model(reference: str | os.PathLike, adapters=None, *, default_adapter: bool = True, dtype=None,
               device=None, flag: str = "--model", images_only_ok: bool = False, fit_max_length: bool = True,
               peft_required: bool = False, log=print, prefix: str = ""):
    """
    The model, its processor and its dataset adapters, as a command loads them (weights from safetensors only).

    Args:
        reference (`str` or `os.PathLike`):
            A model folder or a Hugging Face Hub id (checked first with `check_model_source`; a Hub id is fetched into
            the cache, or found there offline).
        adapters (`list[str]`, `"all"` or `None`):
            The dataset adapters to load from the folder's ``adapters/``: these names (``"base"``, the model's own
            image-only modules, needs nothing loaded; the others need peft), ``"all"`` (every one saved; without peft
            a warning unless `peft_required`, and only the default adapter and ``"base"`` answer), or `None` (none).
        default_adapter (`bool`):
            Fold the config's ``default_adapter`` into the model (`from_pretrained`'s ``load_default_adapter``);
            never when ``"base"`` is among `adapters`.
        dtype (`torch.dtype`, *optional*): the weights' dtype (default: as saved, fp32).
        device (*optional*): where to move the model (default: stays on the CPU).
        flag (`str`): the command-line flag named in messages.
        images_only_ok (`bool`):
            A folder without a tokenizer gets its image processor (or a default one of the model's image size) and a
            warning: comments are then rejected. Otherwise that is an error.
        fit_max_length (`bool`):
            Lower the processor's ``max_length`` to the text encoder's position table when it is longer (with a
            note). Training and export save the processor again: they keep it as the folder has it.
        peft_required (`bool`): with ``adapters="all"``, a missing peft is an error (the command was asked for
            adapters by name), not a warning.
        log, prefix: where notes and warnings go, and the tag they start with (``"[score] "``).

    Returns:
        `(model, processor, model_dir)`: the model in eval mode, its processor, the local folder it came from.

    Raises:
        `ModelSourceError`: no such folder or Hub id (one line naming `flag`).
        `ModelLoadError`: a folder or Hub model that cannot be loaded, a named adapter the folder does not have,
            adapters that need peft (one line naming `flag`).
    """
    from transformers import AutoImageProcessor, AutoModel, AutoProcessor  # Auto classes: registered by this package

    from .adapter_weights_aesformer import BASE_ADAPTER, saved_adapters
    from .configuration_aesformer import comment_max_length
    from .pipeline_aesformer import ALL_ADAPTERS

    reference = os.fspath(reference)
    model_dir = check_model_source(reference, flag)
    if not os.path.isdir(reference):
        from huggingface_hub import snapshot_download

        try:
            model_dir = snapshot_download(reference)
        except Exception as err:  # noqa: BLE001 - offline, unknown repo, no access: one message naming the flag
            raise ModelLoadError(describe_load_error(reference, err, flag)) from None
    names = adapters if isinstance(adapters, str) else list(adapters or [])
    dtype_kwargs = {} if dtype is None else {"dtype": dtype}
    try:
        # never a pickled .bin; the default adapter is folded in, unless "base" (the model's own modules) is asked for
        model, info = AutoModel.from_pretrained(model_dir, use_safetensors=True,
                                                load_default_adapter=default_adapter and BASE_ADAPTER not in names,
                                                output_loading_info=True, **dtype_kwargs)
    except OSError as err:
        raise ModelLoadError(describe_load_error(reference, err, flag)) from None
    except RuntimeError as err:
        if "mismatched" not in str(err):
            raise
        raise ModelLoadError(describe_mismatch(reference, model_dir, flag)) from None
    check_loading_info(info, reference, model_dir, flag)
    model.eval()
    try:
        processor = AutoProcessor.from_pretrained(model_dir)
    except Exception as err:  # noqa: BLE001 - a folder without tokenizer: images only, where the command allows it
        if not images_only_ok:
            if isinstance(err, OSError):
                raise ModelLoadError(describe_load_error(reference, err, flag)) from None
            raise
        log(f"{prefix}no tokenizer in {model_dir} ({type(err).__name__}); comments will be rejected")
        try:
            processor = AutoImageProcessor.from_pretrained(model_dir)
        except Exception:  # noqa: BLE001 - no image processor saved either: the default one, at the model's size
            from aesformer_processing import AesformerImageProcessor

            size = model.config.vision_config.image_size
            processor = AesformerImageProcessor(size={"height": size, "width": size})
    fitted = comment_max_length(model.config, processor.max_length) if fit_max_length and getattr(
        processor, "tokenizer", None) is not None else None
    if fitted is not None and fitted < processor.max_length:
        # a longer comment would not fit the text encoder's position table: truncate at what it can take
        log(f"{prefix}the processor's max_length {processor.max_length} exceeds the text encoder's {fitted} "
            f"positions: comments are truncated at {fitted} tokens")
        processor.max_length = fitted
    wanted = [name for name in ([] if names == ALL_ADAPTERS else names) if name != BASE_ADAPTER]
    if wanted or names == ALL_ADAPTERS:
        from .adapters import load_adapters

        saved = saved_adapters(model_dir)
        for name in wanted:
            if name not in saved:
                raise ModelLoadError(f"--adapter {name}: the model folder {reference} has no such adapter "
                                   f"(available: {', '.join(saved) or 'none'}; 'base' = none)")
        if saved:
            try:
                model = load_adapters(model, model_dir, names=None if names == ALL_ADAPTERS else wanted).eval()
            except ImportError as err:
                if wanted or peft_required:
                    raise ModelLoadError(f"the model's dataset adapters need peft: {err}") from err
                log(f"{prefix}peft is not installed: only the model's default adapter (folded into the model, no "
                    "peft needed) and 'base' can answer; other adapters are ignored")
    if device is not None:
        model = model.to(device)
    return model, processor, model_dir


__all__ = ["ModelLoadError", "ModelSourceError", "check_loading_info", "check_model_source", "describe_load_error",
           "describe_mismatch", "is_hub_id", "load_model"]
