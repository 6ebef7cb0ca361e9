"""Dataset adapters: the paper's stage-2 multi-scale adapters as ordinary PEFT adapters, one per dataset.

One frozen backbone carries an adapter per dataset (AVA, Photo.net, JAS, your own). Each adapter owns a copy of
exactly what the paper trains in stage 2 — `multi_scale_adapter` (stage projections + 4 bottlenecks), the
`vision_ffn` of every fusion layer, `vision_norm` and `vision_head` — built with public PEFT API only:

- `faithful`: `LNTuningConfig(target_modules=["vision_norm"], modules_to_save=[multi_scale_adapter, vision_ffn,
  vision_head])` trains exactly the paper's stage-2 parameters;
- `lora`: LoRA (rank 16) on the two linears of each `vision_ffn`, with the adapter, the V-FFN LayerNorms, the
  vision norm and the head as modules to save: about a third of the trainable parameters.

Adapters change only the image-only branch; with comments the model's own VL heads answer (the output's
`used_comments` says which). The base model's own image-only modules are the default adapter, called "base";
disabling adapters returns to it.

On disk (never at the model root, where `AutoModel` would take the folder for an adapter):
`<model>/adapters/<name>/{adapter_config.json, adapter_model.safetensors, aesformer_adapter.json}` (the layout's one
home is the shipped `adapter_weights_aesformer`). The last file carries what PEFT cannot: dataset, number of bins,
score range, threshold. Every adapter head keeps the base head's width (a Photo.net adapter uses the first 7 of 10
outputs, recorded in the head's buffers), so plain `PeftModel.from_pretrained` / `load_adapter` load them too — no
resize step.
"""

import json
import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import torch

from .adapter_weights_aesformer import (ADAPTER_CONFIG_FILE, ADAPTER_META_FILE, ADAPTER_WEIGHTS_FILE, ADAPTERS_DIR,
                                        BASE_ADAPTER, RESERVED_ADAPTER_NAMES, adapter_folders_in, base_model,
                                        is_adapter_folder, saved_adapters)
from .configuration_aesformer import default_score_threshold
from .file_modes import follow_umask

ADAPTER_PRESETS = ("faithful", "lora")
_ADAPTER_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def check_adapter_name(name) -> str:
    """Returns `name` when it can name a dataset adapter: letters, digits, ``-`` and ``_`` only (it becomes the
    folder ``adapters/<name>`` and a module name), not a reserved name. Raises `ValueError` otherwise."""
    if not isinstance(name, str) or not _ADAPTER_NAME.match(name):
        raise ValueError(f"adapter name {name!r} is not valid: use letters, digits, '-' and '_' only (it becomes "
                         "the folder adapters/<name>)")
    if name in RESERVED_ADAPTER_NAMES:
        raise ValueError(f"adapter name {name!r} is reserved; pick another (e.g. the dataset's name)")
    return name

# What the paper trains in stage 2 (the multi-scale adapters, the fusion's vision FFN, the vision head); PEFT matches
# these names by suffix.
STAGE2_MODULES = ["multi_scale_adapter", "vision_ffn", "vision_head"]


def adapter_config(preset: str = "faithful", lora_rank: int = 16, lora_alpha: Optional[int] = None,
                   lora_dropout: float = 0.0):
    """The PEFT config of a dataset adapter preset ("faithful" or "lora")."""
    if preset == "faithful":
        from peft import LNTuningConfig

        return LNTuningConfig(target_modules=["vision_norm"], modules_to_save=list(STAGE2_MODULES))
    if preset == "lora":
        from peft import LoraConfig

        return LoraConfig(
            r=lora_rank,
            lora_alpha=lora_alpha if lora_alpha is not None else 2 * lora_rank,
            lora_dropout=lora_dropout,
            target_modules=r".*fusion_layers\.\d+\.vision_ffn\.(intermediate|output)",
            modules_to_save=["multi_scale_adapter", "vision_ffn.layer_norm", "vision_norm", "vision_head"],
        )
    raise ValueError(f"unknown adapter preset {preset!r}; choose one of {ADAPTER_PRESETS}")


@contextmanager
def _quiet_peft():
    """Silence two harmless warnings PEFT triggers on this model: LN tuning asks every target for in/out features
    (a LayerNorm has none), and PEFT reads transformers' deprecated `is_gradient_checkpointing`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Unsupported layer type")
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        yield


def _head_copy(model, name: str):
    head = base_model(model).vision_head
    if not hasattr(head, "modules_to_save") or name not in head.modules_to_save:
        raise ValueError(f"adapter {name!r} has no vision_head copy")
    return head.modules_to_save[name]


def add_dataset_adapter(
    model,
    name: str,
    preset: str = "faithful",
    num_score_bins: Optional[int] = None,
    score_range: Optional[Sequence[float]] = None,
    threshold: Optional[float] = None,
    dataset: Optional[str] = None,
    **preset_kwargs,
):
    """Add a dataset adapter `name` and make it active. `model` is an `AesformerModel` (a `PeftModel` is returned)
    or a `PeftModel` that already carries adapters (the same one is returned).

    `num_score_bins` (≤ the base head's bins) defaults to the base head's, `score_range` to `(1, num_score_bins)`,
    `threshold` to `default_score_threshold(score_range, dataset or name)`: a documented dataset's own (AVA and
    Photo.net 5.0, JAS 0.5), else the midpoint of the range.
    """
    from peft import PeftModel, get_peft_model

    check_adapter_name(name)
    config = adapter_config(preset, **preset_kwargs)
    with _quiet_peft():
        if isinstance(model, PeftModel):
            if name in model.peft_config:
                raise ValueError(f"adapter {name!r} already exists; delete it first")
            model.add_adapter(name, config)
        else:
            model = get_peft_model(model, config, adapter_name=name)
    base_config = base_model(model).config
    bins = num_score_bins or base_config.num_score_bins
    score_range = score_range if score_range is not None else (1, bins)
    if threshold is None:
        threshold = default_score_threshold(score_range, dataset or name)
    _head_copy(model, name).set_scale(bins, score_range, threshold)
    model.set_adapter(name)
    meta = _adapter_meta(model, name)
    meta.update(dataset=dataset or name, preset=preset)
    _metadata(model)[name] = meta
    return model


def _metadata(model) -> dict:
    base = base_model(model)
    if not hasattr(base, "_aesformer_adapter_meta"):
        base._aesformer_adapter_meta = {}
    return base._aesformer_adapter_meta


def _adapter_meta(model, name: str) -> dict:
    head = _head_copy(model, name)
    k = int(head.num_active_bins)
    return {
        "name": name,
        "num_score_bins": k,
        "score_range": [float(head.bin_values[0]), float(head.bin_values[k - 1])],
        "threshold": float(head.threshold),
    }


def adapter_info(model, name: str) -> dict:
    """Dataset, bins, score range, threshold and preset of adapter `name` ("base" = the model's own scale)."""
    if name == BASE_ADAPTER:
        head = base_model(model).vision_head
        head = getattr(head, "original_module", head)
        k = int(head.num_active_bins)
        return {"name": BASE_ADAPTER, "num_score_bins": k, "threshold": float(head.threshold),
                "score_range": [float(head.bin_values[0]), float(head.bin_values[k - 1])]}
    return {**_metadata(model).get(name, {}), **_adapter_meta(model, name)}


def save_adapters(model, model_dir: Union[str, os.PathLike], names: Optional[Iterable[str]] = None) -> list:
    """Write each adapter to `<model_dir>/adapters/<name>/` through PEFT (never an adapter_config.json at the model
    root), plus its `aesformer_adapter.json`. Returns the folders written."""
    root = Path(model_dir) / ADAPTERS_DIR
    names = list(names) if names is not None else list(model.peft_config)
    folders = []
    for name in names:
        check_adapter_name(name)
        model.save_pretrained(str(root), selected_adapters=[name])  # PEFT writes root/<name>/ for a named adapter
        folder = root / name
        if not is_adapter_folder(folder):
            raise RuntimeError(f"PEFT did not write {folder / ADAPTER_CONFIG_FILE}")
        (folder / ADAPTER_META_FILE).write_text(json.dumps(adapter_info(model, name), indent=2) + "\n")
        follow_umask(folder)
        folders.append(folder)
    return folders


def list_adapters(model_dir: Union[str, os.PathLike]) -> list:
    """Names of the adapters saved under `<model_dir>/adapters/`."""
    return saved_adapters(model_dir)


def _read_meta(source: str, subfolder: Optional[str]) -> dict:
    """The adapter's `aesformer_adapter.json`, or {} for a plain PEFT folder without it (e.g. written by
    `Trainer.save_model` / `PeftModel.save_pretrained`): bins, score range and threshold are in the head's buffers
    anyway; the file only adds the dataset name and preset."""
    if os.path.isdir(source):
        path = os.path.join(source, subfolder or "", ADAPTER_META_FILE)
        if not os.path.isfile(path):
            return {}
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import EntryNotFoundError

        try:
            path = hf_hub_download(source, ADAPTER_META_FILE, subfolder=subfolder)
        except EntryNotFoundError:
            return {}
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _require_safetensors(source: str, subfolder: Optional[str]) -> None:
    """A local adapter folder must hold `adapter_model.safetensors`: PEFT would otherwise fall back to a pickled
    `adapter_model.bin` (loaded with weights_only=True, but still a pickle), which Aesformer never loads. A Hub id is
    left to PEFT, which prefers the safetensors file too."""
    folder = os.path.join(source, subfolder or "")
    if not os.path.isdir(folder):
        return
    if not os.path.isfile(os.path.join(folder, ADAPTER_WEIGHTS_FILE)):
        found = sorted(n for n in os.listdir(folder) if n.startswith("adapter_model"))
        raise ValueError(
            f"adapter folder {folder} has no {ADAPTER_WEIGHTS_FILE} (found {found or 'no weights'}): Aesformer loads "
            "adapter weights only from safetensors, never from a pickle. If you trust a .bin file, convert it "
            "yourself: `safetensors.torch.save_file(torch.load(path, weights_only=True), ...)`."
        )


def load_adapters(
    model,
    source: Union[str, os.PathLike],
    names: Optional[Iterable[str]] = None,
    is_trainable: bool = False,
    subfolder: Optional[str] = None,
):
    """Load dataset adapters into `model` (an `AesformerModel` or a `PeftModel`); returns the `PeftModel`.

    `source` is a model folder holding `adapters/<name>/` (all of them, or `names`), a single adapter folder, a
    folder of adapter folders (`<source>/<name>/`, as `PeftModel.save_pretrained` and `Trainer.save_model` write
    named adapters), or a Hub id with `subfolder="adapters/<name>"`. A plain PEFT adapter folder (no
    `aesformer_adapter.json`) loads too: its scale is in the head's buffers. The model's default adapter (config
    `default_adapter`) is active when it is among those loaded, else the first loaded. A default adapter that
    `from_pretrained` folded into the image-only modules is unfolded first: PEFT adapters go on top of the model's
    own weights.
    """
    from peft import PeftModel

    from .adapter_weights_aesformer import unfold_adapter

    unfold_adapter(base_model(model))
    source = str(source)
    if subfolder is not None or is_adapter_folder(source):
        entries = [(names and list(names)[0]) or Path(subfolder or source).name, source, subfolder]
        entries = [tuple(entries)]
    else:
        root = os.path.join(source, ADAPTERS_DIR)
        if not os.path.isdir(root) and os.path.isdir(source):  # adapter folders directly under `source`
            root = source
        available = adapter_folders_in(root)
        wanted = list(names) if names is not None else available
        missing = [n for n in wanted if n not in available]
        if missing or not wanted:
            raise FileNotFoundError(f"adapters {missing or wanted} not found under {root}; available: {available}")
        entries = [(n, os.path.join(root, n), None) for n in wanted]

    first = None
    for name, folder, sub in entries:
        check_adapter_name(name)
        _require_safetensors(folder, sub)
        meta = _read_meta(folder, sub)
        kwargs = {"adapter_name": name, "is_trainable": is_trainable}
        if sub is not None:
            kwargs["subfolder"] = sub
        with _quiet_peft():
            if isinstance(model, PeftModel):
                model.load_adapter(folder, **kwargs)
            else:
                model = PeftModel.from_pretrained(model, folder, **kwargs)
        loaded = _adapter_meta(model, name)
        meta = meta or {"dataset": name}
        if loaded["num_score_bins"] != meta.get("num_score_bins", loaded["num_score_bins"]):
            raise ValueError(f"adapter {name!r}: {ADAPTER_META_FILE} says {meta['num_score_bins']} bins but its "
                             f"weights carry {loaded['num_score_bins']}")
        _metadata(model)[name] = {**meta, **loaded}
        first = first or name
    default = getattr(base_model(model).config, "default_adapter", None)
    model.set_adapter(default if default in model.peft_config else first)
    return model


def set_default_adapter(model_dir: Union[str, os.PathLike], name: Optional[str]) -> Optional[str]:
    """Make adapter `name` (saved under `<model_dir>/adapters/<name>/`) the one that answers images without comments
    when none is named, by writing `default_adapter` into `<model_dir>/config.json` (atomically); `None` or "base"
    = the model's own image-only modules. Returns the previous default."""
    model_dir = Path(model_dir)
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{model_dir} is not a model folder (no config.json)")
    name = None if name in (None, "", BASE_ADAPTER) else str(name)
    if name is not None and name not in list_adapters(model_dir):
        raise ValueError(f"no adapter {name!r} under {model_dir / ADAPTERS_DIR}; available: "
                         f"{list_adapters(model_dir) or 'none (train one with `aesformer adapt`)'}")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    previous = config.get("default_adapter")
    config["default_adapter"] = name
    tmp = config_path.with_name(f".{config_path.name}.tmp")
    tmp.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, config_path)
    return previous


__all__ = [
    "ADAPTER_PRESETS",
    "add_dataset_adapter",
    "adapter_config",
    "check_adapter_name",
    "adapter_info",
    "list_adapters",
    "load_adapters",
    "save_adapters",
    "set_default_adapter",
]
