"""The model's default image-only answer: a dataset adapter's weights folded into the model's own image-only modules.

Shipped to the Hugging Face Hub as remote code next to `modeling_aesformer.py` (standard library, torch and
transformers only; never peft): a folder whose config names a `default_adapter` answers images without comments with
that adapter when loaded with `AutoModel.from_pretrained`, with or without the `aesformer` package, and without PEFT.

A dataset adapter (`adapters/<name>/adapter_model.safetensors`, written by PEFT) holds, for the image-only modules,
either full copies (`modules_to_save`, LN tuning) or LoRA pairs. Folding copies the former over the model's modules
and adds the LoRA update `scaling * B @ A` to the wrapped weights: the folded model computes what the PeftModel with
that adapter active computes. The replaced tensors are kept on the model (`unfold_adapter` puts them back), so real
PEFT adapters can still be loaded on top of the original weights.

It is also the one home of the adapter folder layout, read by the adapters module, the pipeline, `aesformer export`
and the exported Space: `<model>/adapters/<name>/` holds PEFT's `adapter_config.json` and
`adapter_model.safetensors` plus Aesformer's `aesformer_adapter.json` (dataset, bins, score range, threshold), and
the reserved name "base" means the model's own image-only modules (no dataset adapter).
"""

import json
import math
import os
import warnings
from typing import Dict, List, Optional, Tuple

import torch
from transformers.modeling_utils import load_state_dict
from transformers.utils import cached_file

# The adapter folder layout (never at the model root, where `AutoModel` would take the folder for an adapter).
ADAPTERS_DIR = "adapters"
ADAPTER_CONFIG_FILE = "adapter_config.json"
ADAPTER_WEIGHTS_FILE = "adapter_model.safetensors"
ADAPTER_META_FILE = "aesformer_adapter.json"
# The model's own image-only modules; with "default", a name no dataset adapter may take.
BASE_ADAPTER = "base"
RESERVED_ADAPTER_NAMES = (BASE_ADAPTER, "default")
_PEFT_PREFIX = "base_model.model."
_HUB_KWARGS = ("cache_dir", "force_download", "local_files_only", "token", "revision", "proxies")
# Instance attribute (never module state) holding the tensors a fold replaced.
_STASH = "_aesformer_unfolded_weights"


class AdapterFoldError(ValueError):
    pass


def adapter_folder(model_dir, name: str) -> str:
    """`<model_dir>/adapters/<name>`."""
    return os.path.join(os.fspath(model_dir), ADAPTERS_DIR, name)


def is_adapter_folder(folder) -> bool:
    """Whether `folder` holds a saved PEFT adapter (its `adapter_config.json`)."""
    return os.path.isfile(os.path.join(os.fspath(folder), ADAPTER_CONFIG_FILE))


def adapter_folders_in(root) -> List[str]:
    """Names of the adapter folders directly in the local folder `root` (sorted; not a hidden temporary
    `.tmp_<name>` folder left by a kill)."""
    root = os.fspath(root)
    if not os.path.isdir(root):
        return []
    return sorted(name for name in os.listdir(root)
                  if not name.startswith(".") and is_adapter_folder(os.path.join(root, name)))


def saved_adapters(model_dir) -> List[str]:
    """Names of the adapters saved under `<model_dir>/adapters/` of a local folder."""
    return adapter_folders_in(os.path.join(os.fspath(model_dir), ADAPTERS_DIR))


def saved_adapters_in_files(paths) -> List[str]:
    """Names of the adapters among a repository's file paths (`adapters/<name>/adapter_config.json`), e.g. the
    `huggingface_hub.list_repo_files` of a Hub model."""
    names = set()
    for path in paths:
        parts = str(path).split("/")
        if len(parts) == 3 and parts[0] == ADAPTERS_DIR and parts[2] == ADAPTER_CONFIG_FILE \
                and not parts[1].startswith("."):
            names.add(parts[1])
    return sorted(names)


def base_model(model):
    """The AesformerModel under a PeftModel (`get_base_model`), or the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _adapter_file(source, name: str, filename: str, hub_kwargs: Optional[dict] = None) -> Optional[str]:
    """Path of `adapters/<name>/<filename>` in a local folder or a Hub repository (None when absent)."""
    source = os.fspath(source)
    if os.path.isdir(source):
        path = os.path.join(source, ADAPTERS_DIR, name, filename)
        return path if os.path.isfile(path) else None
    kwargs = {k: v for k, v in (hub_kwargs or {}).items() if k in _HUB_KWARGS and v is not None}
    try:
        return cached_file(source, f"{ADAPTERS_DIR}/{name}/{filename}", _raise_exceptions_for_missing_entries=False,
                           **kwargs)
    except Exception:  # noqa: BLE001 - offline, no such repository: reported by the caller as "not found"
        return None


def adapter_model_state(adapter_state: Dict[str, torch.Tensor], adapter_config: dict,
                        model_state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """The model tensors (by state-dict key) that make the model compute what it computes with this adapter active:
    copies for full modules, `W + scaling * B @ A` for LoRA pairs. Raises `AdapterFoldError` for what it cannot
    fold (a key the model lacks, a shape that does not fit, DoRA, per-module ranks)."""
    if adapter_config.get("use_dora") or adapter_config.get("rank_pattern") or adapter_config.get("alpha_pattern"):
        raise AdapterFoldError("DoRA and per-module LoRA ranks cannot be folded")
    folded, lora = {}, {}
    for key, tensor in adapter_state.items():
        name = key[len(_PEFT_PREFIX):] if key.startswith(_PEFT_PREFIX) else key
        name = name.replace(".ln_tuning_layers.", ".")
        for part in ("lora_A", "lora_B"):
            marker = f".{part}.weight"
            if name.endswith(marker):
                lora.setdefault(name[: -len(marker)] + ".weight", {})[part] = tensor
                break
        else:
            folded[name] = tensor
    if lora:
        rank, alpha = adapter_config.get("r"), adapter_config.get("lora_alpha")
        if not rank or alpha is None:
            raise AdapterFoldError("a LoRA adapter without r / lora_alpha in its adapter_config.json")
        scaling = alpha / (math.sqrt(rank) if adapter_config.get("use_rslora") else rank)
        for name, pair in lora.items():
            if name not in model_state or set(pair) != {"lora_A", "lora_B"}:
                raise AdapterFoldError(f"LoRA weights for {name!r} do not fit the model")
            base = model_state[name]
            delta = (pair["lora_B"].float() @ pair["lora_A"].float()) * scaling
            folded[name] = (base.float() + delta.to(base.device)).to(base.dtype)
    for name, tensor in folded.items():
        if name not in model_state:
            raise AdapterFoldError(f"adapter weight {name!r} has no place in the model")
        if tuple(model_state[name].shape) != tuple(tensor.shape):
            raise AdapterFoldError(f"adapter weight {name!r} has shape {tuple(tensor.shape)}, the model's "
                                   f"{tuple(model_state[name].shape)}")
    return folded


def fold_adapter(model, source, name: str, hub_kwargs: Optional[dict] = None) -> None:
    """Fold adapter `name` from `<source>/adapters/<name>/` into `model`'s image-only modules (see the module doc);
    `model.config.merged_adapter` then names it. An earlier fold is undone first."""
    config_path = _adapter_file(source, name, ADAPTER_CONFIG_FILE, hub_kwargs)
    weights_path = _adapter_file(source, name, ADAPTER_WEIGHTS_FILE, hub_kwargs)
    if config_path is None or weights_path is None:
        raise AdapterFoldError(f"no {ADAPTERS_DIR}/{name}/{ADAPTER_WEIGHTS_FILE} (and {ADAPTER_CONFIG_FILE}) in "
                               f"{os.fspath(source)}")
    with open(config_path, encoding="utf-8") as f:
        adapter_config = json.load(f)
    unfold_adapter(model)
    model_state = model.state_dict()
    folded = adapter_model_state(load_state_dict(weights_path), adapter_config, model_state)
    stash = {}
    with torch.no_grad():
        for key, tensor in folded.items():
            target = model_state[key]
            stash[key] = target.detach().clone()
            target.copy_(tensor.to(device=target.device, dtype=target.dtype))
    setattr(model, _STASH, stash)
    model.config.merged_adapter = name


def unfold_adapter(model) -> Optional[str]:
    """Put back the weights a `fold_adapter` replaced; returns the adapter that was folded (None if none)."""
    stash = getattr(model, _STASH, None)
    name = getattr(model.config, "merged_adapter", None)
    if not stash:
        return None
    state = model.state_dict()
    with torch.no_grad():
        for key, tensor in stash.items():
            state[key].copy_(tensor.to(device=state[key].device, dtype=state[key].dtype))
    setattr(model, _STASH, None)
    model.config.merged_adapter = None
    return name


def fold_default_adapter(model, source, hub_kwargs: Optional[dict] = None) -> Optional[str]:
    """Fold the config's `default_adapter` (if any, and not already folded); returns the adapter that answers
    images without comments now, or None for "base". A default whose files are missing or cannot be folded leaves
    the model as it is, with a warning that says so."""
    config = model.config
    name = getattr(config, "default_adapter", None)
    if not name or name == BASE_ADAPTER:
        return getattr(config, "merged_adapter", None)
    if getattr(config, "merged_adapter", None) == name:
        return name
    try:
        fold_adapter(model, source, name, hub_kwargs)
    except (AdapterFoldError, OSError) as err:
        warnings.warn(f"the model's default adapter {name!r} could not be loaded ({err}); images without comments "
                      f"are answered by its own image-only modules", stacklevel=3)
        return None
    return name


def image_only_answer(config, name: str) -> Tuple[str, bool]:
    """(name of the image-only answer, whether training or conversion produced it) for adapter `name` ("base" =
    the model's own modules, which may hold a folded adapter)."""
    if name == BASE_ADAPTER or name is None:
        merged = getattr(config, "merged_adapter", None)
        if merged:
            return merged, True
        return BASE_ADAPTER, bool(getattr(config, "image_only_trained", False))
    return name, True


__all__ = ["ADAPTERS_DIR", "ADAPTER_CONFIG_FILE", "ADAPTER_META_FILE", "ADAPTER_WEIGHTS_FILE", "AdapterFoldError",
           "BASE_ADAPTER", "RESERVED_ADAPTER_NAMES", "adapter_folder", "adapter_folders_in", "adapter_model_state",
           "fold_adapter", "fold_default_adapter", "image_only_answer", "is_adapter_folder", "saved_adapters",
           "saved_adapters_in_files", "unfold_adapter"]
