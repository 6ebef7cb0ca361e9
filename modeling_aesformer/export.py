"""The Hub folder of a model (weights, remote code, processor, model card), its upload, and the Space that serves it.

[`export_model`] reloads the model and processor with the installed package and writes, into a temporary folder that
is renamed to the target only when complete:

- `model.safetensors` and `config.json` (with `auto_map` and `custom_pipelines`);
- the processor: `processor_config.json` / image processor and tokenizer files;
- the flat remote-code files `configuration_aesformer.py`, `modeling_aesformer.py`, `processing_aesformer.py`,
  `pipeline_aesformer.py`, `adapter_weights_aesformer.py`, `attention_maps_aesformer.py` (they import only torch,
  transformers, numpy, Pillow and each other);
- `adapters/<name>/` copied from the model folder;
- `requirements.txt` (the supported range for users of the folder, see `HUB_REQUIREMENTS`);
- `README.md`: the model card, rendered from the Jinja template `templates/model_card.md` (the one copy; the
  repository's `model_card.md` points to it) through `huggingface_hub.ModelCard`.

Converted third-party weights (made by `aesformer convert-original`) are recognised by the `conversion` entry of
config.json, or by the README stub the converter writes; the card then says that the original code and weights
state no licence, and [`push_folder`] refuses to upload them without `yes=True` (`--yes`).

[`write_space`] writes a Gradio Space folder (`templates/space_app.py` + the page) that serves a Hub model without
this package. The commands are `aesformer export` / `aesformer push` (`aesformer_cli.export`). This module is package
code (not shipped to the Hub).
"""

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, List, Optional, Union

from .adapter_weights_aesformer import ADAPTER_CONFIG_FILE, ADAPTER_META_FILE, ADAPTERS_DIR, is_adapter_folder

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE = TEMPLATES / "model_card.md"
SPACE_TEMPLATE = TEMPLATES / "space_app.py"
ORIGINAL_SOURCE = "https://github.com/AiArt-HDU/aesformer"
SHIPPED_FILES = (
    "configuration_aesformer.py",
    "modeling_aesformer.py",
    "processing_aesformer.py",
    "pipeline_aesformer.py",
    "adapter_weights_aesformer.py",
    "attention_maps_aesformer.py",
)
# Also written to requirements.txt at the repository root (a test keeps both the same).
HUB_REQUIREMENTS = [
    "transformers>=4.57,<6",
    "torch>=2.4",
    "numpy>=1.26",
    "pillow>=10.0",
    "safetensors>=0.4.3",
]
OPTIONAL_REQUIREMENTS = ["peft>=0.21"]
DEFAULT_TAGS = ["aesformer", "image-aesthetics", "image-aesthetic-assessment", "aesthetics", "iaa"]
CONVERTED_TAG = "converted-weights"
_CONVERTED_README_MARKERS = ("aesformer convert-original", "converted from the original AesFormer checkpoint")
_METRIC_NAMES = {
    "srcc": "SRCC", "plcc": "PLCC", "accuracy": "Accuracy", "acc": "Accuracy", "mae": "MAE", "rmse": "RMSE",
    "mse": "MSE", "emd": "EMD", "emd_1": "EMD (r=1)", "emd_2": "EMD (r=2)", "emd1": "EMD (r=1)", "emd2": "EMD (r=2)",
    "emd_r1": "EMD (r=1)", "emd_r2": "EMD (r=2)", "krcc": "KRCC", "loss": "Loss",
}
_COUNT_KEYS = ("n", "num_samples", "num_images", "count")


GRADIO_REQUIREMENT = "gradio>=6.31,<7"
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class ExportError(ValueError):
    """A model folder, target folder or upload that export or push refuses (the message says what to fix)."""


# ------------------------------------------------------------------------------------------------------------ helpers
def requirements_text() -> str:
    lines = ["# Runtime requirements of this Aesformer folder (trust_remote_code=True, no aesformer package)."]
    lines += HUB_REQUIREMENTS
    lines += ["# only for the dataset adapters in adapters/<name>/:"] + [f"# {r}" for r in OPTIONAL_REQUIREMENTS]
    return "\n".join(lines) + "\n"


def _read_json(path: Union[str, Path]) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def detect_conversion(model_dir: Union[str, Path], config_dict: Optional[dict] = None) -> Optional[dict]:
    """What marks converted third-party weights in a model folder, or None.

    1. `config.json` has a `conversion` object (`{"source": ..., "checkpoint": ..., "sha256": ...}`);
    2. or the folder's README.md is the stub `aesformer convert-original` writes (its source file and sha256 are
       read from it)."""
    model_dir = Path(model_dir)
    if config_dict is None and (model_dir / "config.json").is_file():
        config_dict = _read_json(model_dir / "config.json")
    conversion = (config_dict or {}).get("conversion")
    if isinstance(conversion, dict):
        return {"source": conversion.get("source") or ORIGINAL_SOURCE, "checkpoint": conversion.get("checkpoint"),
                "sha256": conversion.get("sha256")}
    readme = model_dir / "README.md"
    if readme.is_file():
        text = readme.read_text(encoding="utf-8", errors="replace")
        if any(marker in text for marker in _CONVERTED_README_MARKERS):
            checkpoint = re.search(r"Source checkpoint file: `([^`]*)`", text)
            sha = re.search(r"Source sha256: `([0-9a-f]{64})`", text)
            return {"source": ORIGINAL_SOURCE, "checkpoint": checkpoint.group(1) if checkpoint else None,
                    "sha256": sha.group(1) if sha else None}
    return None


def _metric_title(key: str) -> str:
    return _METRIC_NAMES.get(key.lower(), key)


def parse_results(results: Any) -> List[dict]:
    """Metrics of a training results JSON: the training loop's `results.json` (`{"dataset", "test": {...}}`), a
    plain `{metric: value}` object, or a list of either. Returns `[{"dataset", "split", "adapter", "metrics":
    {name: float}}]`; non-numeric entries are ignored."""
    if results is None:
        return []
    if isinstance(results, dict) and isinstance(results.get("results"), list):
        results = results["results"]
    entries = results if isinstance(results, list) else [results]
    parsed = []
    for entry in entries:
        if not isinstance(entry, dict):
            continue
        config = entry.get("config") if isinstance(entry.get("config"), dict) else {}
        for split in ("test", "validation", "eval", "metrics"):
            if isinstance(entry.get(split), dict):
                metrics, split_name = entry[split], ("test" if split == "metrics" else split)
                break
        else:
            metrics, split_name = entry, entry.get("split", "test")
        numbers = {str(k): float(v) for k, v in metrics.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in _COUNT_KEYS}
        if not numbers:
            continue
        count = next((int(metrics[k]) for k in _COUNT_KEYS if isinstance(metrics.get(k), (int, float))), None)
        parsed.append({
            "count": count,
            "dataset": str(entry.get("dataset") or config.get("dataset") or "AVA"),
            "split": split_name,
            "adapter": entry.get("adapter") or config.get("adapter_name"),
            "stage": entry.get("stage"),
            "metrics": numbers,
        })
    return parsed


def _read_adapters(model_dir: Path) -> List[dict]:
    root = model_dir / ADAPTERS_DIR
    if not root.is_dir():
        return []
    adapters = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not is_adapter_folder(folder):
            raise ExportError(f"{folder} has no {ADAPTER_CONFIG_FILE}: not a PEFT adapter folder")
        meta_path = folder / ADAPTER_META_FILE
        meta = _read_json(meta_path) if meta_path.is_file() else {}
        adapters.append({
            "name": folder.name,
            "dataset": meta.get("dataset", folder.name),
            "num_score_bins": meta.get("num_score_bins", "?"),
            "score_range": [_fmt(x) for x in meta.get("score_range", ["?", "?"])],
            "threshold": _fmt(meta.get("threshold", "?")),
        })
    return adapters


def _fmt(x) -> str:
    if isinstance(x, float):
        return f"{x:g}"
    return str(x)


def _param_count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n:,}"


# --------------------------------------------------------------------------------------------------------- the card
_GENERIC_FOLDER_NAMES = {"model", "models", "hub", "output", "outputs", "runs", "final", "best", "checkpoint",
                         "stage1", "stage2", "stage-1", "stage-2", "."}


def default_model_name(model_dir: Path) -> str:
    """The card's name when none is given: the model folder's name, or the nearest parent's when the folder has a
    generic name (`aesformer-demo/stage1/model` -> "aesformer-demo")."""
    for folder in [model_dir.resolve(), *model_dir.resolve().parents]:
        if folder.name and folder.name.lower() not in _GENERIC_FOLDER_NAMES:
            return folder.name
    return "aesformer"


def find_training_results(model_dir: Path) -> List[dict]:
    """Training results saved beside the model: stage 1's `results.json` in the folder above a `<run>/model`
    folder, and each adapter's `adapters/<name>/results.json` (written by `aesformer adapt`)."""
    found = []
    for path in [model_dir / "results.json", model_dir.parent / "results.json",
                 *sorted((model_dir / ADAPTERS_DIR).glob("*/results.json"))]:
        if path.is_file():
            try:
                data = _read_json(path)
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict) and data.get("stage") in ("pretrain", "adapt"):
                found.append(data)
    return found


def _training_data_kind(names: List[str], hub_datasets: List[str]) -> str:
    """"synthetic" when any name says so (the card then warns that the scores mean nothing); "ava" (the AVA
    text: DPChallenge voters, copyright) only when the user's Hub dataset ids name AVA, never from an adapter's name."""
    if any("synthetic" in n.lower() for n in names):
        return "synthetic"
    if any(n.lower().rpartition("/")[2].startswith("ava") for n in hub_datasets):
        return "ava"
    return "other"


def _comment_limit(model, processor) -> Optional[str]:
    """What the processor really keeps of the comments, for the card (None: no tokenizer)."""
    if processor is None or getattr(processor, "tokenizer", None) is None:
        return None
    from .configuration_aesformer import comment_max_length

    tokens = comment_max_length(model.config, getattr(processor, "max_length", 512))
    words = getattr(processor, "max_comment_words", None)
    return (f"the first {words} words of the comments, cut to {tokens} tokens ([CLS] and [SEP] included)"
            if words else f"the first {tokens} tokens of the comments ([CLS] and [SEP] included)")


def build_model_card(model, model_dir: Path, card_data: Optional[dict] = None, results: Any = None,
                     adapters: Optional[List[dict]] = None, conversion: Optional[dict] = None, processor=None):
    """Render `templates/model_card.md` into a `huggingface_hub.ModelCard`."""
    from huggingface_hub import EvalResult, ModelCard, ModelCardData

    card_data = dict(card_data or {})
    config = model.config
    adapters = adapters if adapters is not None else _read_adapters(model_dir)
    if conversion is None and card_data.get("converted_from"):
        conversion = {"source": card_data["converted_from"], "checkpoint": None, "sha256": None}
    template_keys = {k: card_data.pop(k) for k in ("description", "repo_id") if k in card_data}
    card_data.pop("converted_from", None)
    repo_id = template_keys.get("repo_id")
    model_name = str(card_data.pop("model_name", None) or (repo_id or "").rpartition("/")[2]
                     or default_model_name(model_dir))
    repo_id = repo_id or f"your-name/{model_name}"

    parsed = parse_results(results)
    eval_results = []
    for entry in parsed:
        dataset = entry["dataset"]
        for key, value in entry["metrics"].items():
            eval_results.append(EvalResult(
                task_type="image-classification", task_name="Image aesthetic assessment",
                dataset_type=re.sub(r"[^a-z0-9_.-]+", "-", dataset.lower()).strip("-") or "dataset",
                dataset_name=dataset, dataset_split=entry["split"], metric_type=key.lower(),
                metric_name=_metric_title(key) + (f" ({entry['adapter']} adapter)" if entry["adapter"] else ""),
                metric_value=round(value, 6),
            ))

    tags = list(dict.fromkeys(DEFAULT_TAGS + list(card_data.pop("tags", []) or [])
                              + ([CONVERTED_TAG] if conversion else [])))
    # `datasets` (Hub dataset ids), `license` and `base_model` come only from the user (`--card-data`): an adapter's
    # or a results file's dataset name is a label of the run, not a Hub id, and nothing states a licence by default.
    datasets = card_data.pop("datasets", None)
    record_names = list(dict.fromkeys(n for n in [e["dataset"] for e in parsed] + [a["dataset"] for a in adapters]
                                      if n))
    if conversion:
        license_fields = {"license": "other", "license_name": "no-license-stated",
                          "license_link": conversion["source"]}
        for key in ("license", "license_name", "license_link"):
            card_data.pop(key, None)
    else:
        license_fields = {"license": card_data.pop("license", None)}
        for key in ("license_name", "license_link"):
            if key in card_data:
                license_fields[key] = card_data.pop(key)
    extra = {}
    if conversion:
        extra["converted_from"] = conversion["source"]
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag=card_data.pop("pipeline_tag", None),  # no Hub task is a score; custom: `image-aesthetics`
        tags=tags,
        datasets=datasets,
        model_name=model_name,
        eval_results=eval_results or None,
        **license_fields,
        **extra,
        **card_data,
    )
    vision = config.vision_config
    size = getattr(vision, "image_size", 224)
    low, high = [float(x) for x in config.score_range]
    results_view = []
    for entry in parsed:
        title = f"{entry['dataset']} {entry['split']} split"
        title += f" ({entry['count']:,} images)" if entry["count"] else ""
        if entry["adapter"]:
            title += f", `{entry['adapter']}` adapter"
        results_view.append({"title": title, "metrics": [
            {"name": _metric_title(k), "value": f"{v:.4f}"} for k, v in entry["metrics"].items()]})
    description = template_keys.get("description") or (
        "An Aesformer image-aesthetics model converted from the original AesFormer checkpoint."
        if conversion else "An Aesformer image-aesthetics model.")
    return ModelCard.from_template(
        data,
        template_path=str(TEMPLATE),
        model_name=model_name,
        description=description,
        repo_id=repo_id,
        vision_embed_dim=vision.embed_dim,
        vision_depths=list(vision.depths),
        text_layers=config.text_config.num_hidden_layers,
        hidden_size=config.hidden_size,
        fusion_layers=config.num_fusion_layers,
        num_parameters=_param_count(sum(p.numel() for p in model.parameters())),
        image_size=f"{size}×{size}",
        num_bins=config.num_score_bins,
        score_low=_fmt(low),
        score_high=_fmt(high),
        threshold=_fmt(float(config.score_threshold)),
        adapters=adapters,
        results=results_view,
        converted=conversion,
        training_data=_training_data_kind(record_names + list(datasets or []), list(datasets or [])),
        dataset_names=", ".join(datasets or record_names) or "the training data",
        license=license_fields.get("license"),
        comment_limit=_comment_limit(model, processor),
        default_adapter=getattr(config, "default_adapter", None),
        requirements_line=", ".join(f"`{r}`" for r in HUB_REQUIREMENTS[:2]),
    )


# ------------------------------------------------------------------------------------------------------- the export
def check_export_target(model_dir: Union[str, Path], output_dir: Union[str, Path], overwrite: bool = False) -> None:
    """`ExportError` unless `model_dir` is a model folder (adapters in `adapters/<name>/`, none at its root) and
    `output_dir` is another folder that is empty, missing, or may be replaced (`overwrite`). Nothing is loaded."""
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir} is not a model folder (no config.json)")
    if output_dir.resolve() == model_dir.resolve():
        raise ExportError("--output must differ from MODEL_DIR")
    if output_dir.exists() and not overwrite and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ExportError(f"{output_dir} exists and is not empty; pass --overwrite to replace it")
    if (model_dir / ADAPTER_CONFIG_FILE).is_file():
        raise ExportError(f"{model_dir} has an {ADAPTER_CONFIG_FILE} at its root: adapters belong in "
                          f"{ADAPTERS_DIR}/<name>/")


def export_model(model_dir: Union[str, Path], output_dir: Union[str, Path], card_data: Optional[dict] = None,
                 results: Any = None, overwrite: bool = False, log=print, model=None, processor=None) -> Path:
    """Write the Hub folder for `model_dir` into `output_dir` (atomically: a temporary sibling folder renamed at
    the end). Returns `output_dir`.

    `card_data`: model card metadata (plus `repo_id` and `description` for the card's text); `results`: training
    results (see [`parse_results`]; default: those saved beside the model, [`find_training_results`]).
    `model`/`processor`: already loaded from `model_dir` as the Hub folder keeps them (default: loaded here by
    `modeling_aesformer.loading.load_model`: the weights from safetensors, the model's own image-only weights with
    its `default_adapter` NOT folded in — the exported folder folds it in when loaded — and the processor as saved,
    the image processor alone for a folder without a tokenizer)."""
    from transformers import pipeline

    from .file_modes import follow_umask, write_folder_atomically

    check_export_target(model_dir, output_dir, overwrite)
    model_dir, output_dir = Path(model_dir), Path(output_dir)
    config_dict = _read_json(model_dir / "config.json")
    conversion = detect_conversion(model_dir, config_dict)
    adapters = _read_adapters(model_dir)
    if model is None or processor is None:
        from .loading import load_model

        model, processor, _ = load_model(model_dir, default_adapter=False, images_only_ok=True, fit_max_length=False,
                                         flag="MODEL_DIR", log=log, prefix="[export] warning: ")
    if conversion is not None:
        model.config.conversion = {k: v for k, v in conversion.items() if v is not None}

    def write(tmp):
        from transformers import ProcessorMixin

        kwargs = {"processor": processor} if isinstance(processor, ProcessorMixin) else {"image_processor": processor}
        pipe = pipeline("image-aesthetics", model=model, **kwargs)
        pipe.save_pretrained(str(tmp))  # model + config (custom_pipelines) + pipeline_aesformer.py
        processor.save_pretrained(str(tmp))  # processor config + processing_aesformer.py + tokenizer files
        if adapters:
            shutil.copytree(model_dir / ADAPTERS_DIR, tmp / ADAPTERS_DIR)
        (tmp / "requirements.txt").write_text(requirements_text(), encoding="utf-8")
        card = build_model_card(model, model_dir, card_data, results, adapters, conversion, processor=processor)
        card.save(str(tmp / "README.md"))
        _check_folder(tmp)
        follow_umask(tmp)  # transformers wrote model.safetensors 0600

    if results is None:
        results = find_training_results(model_dir) or None
    write_folder_atomically(write, output_dir)
    log(f"[export] wrote {output_dir} ({len(list_files(output_dir))} files)"
        + (" — CONVERTED third-party weights: no licence stated by the original authors" if conversion else ""))
    return output_dir


def _check_folder(folder: Path) -> None:
    missing = [name for name in ("config.json", "model.safetensors", "README.md", "requirements.txt")
               + SHIPPED_FILES if not (folder / name).is_file()]
    config = _read_json(folder / "config.json") if (folder / "config.json").is_file() else {}
    if "AutoModel" not in config.get("auto_map", {}):
        missing.append("config.json: auto_map.AutoModel")
    if "image-aesthetics" not in config.get("custom_pipelines", {}):
        missing.append("config.json: custom_pipelines.image-aesthetics")
    if (folder / ADAPTER_CONFIG_FILE).exists():
        missing.append(f"an {ADAPTER_CONFIG_FILE} at the folder root (must not exist)")
    if missing:
        raise ExportError(f"the exported folder is incomplete: {missing}")


def list_files(folder: Union[str, Path]) -> List[str]:
    """Relative paths (POSIX) of every file under `folder`, sorted."""
    folder = Path(folder)
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# --------------------------------------------------------------------------------------------------------- the push
def is_converted_folder(hub_dir: Union[str, Path]) -> Optional[dict]:
    hub_dir = Path(hub_dir)
    found = detect_conversion(hub_dir)
    if found:
        return found
    readme = hub_dir / "README.md"
    if readme.is_file():
        from huggingface_hub import ModelCard

        meta = ModelCard.load(str(readme)).data.to_dict()
        if meta.get("converted_from") or CONVERTED_TAG in (meta.get("tags") or []):
            return {"source": meta.get("converted_from") or ORIGINAL_SOURCE}
    return None


def _connection_errors() -> tuple:
    """The exceptions of a Hub that cannot be reached (no network, wrong endpoint, offline mode)."""
    errors = [ConnectionError, TimeoutError]
    try:
        import httpx

        errors.append(httpx.TransportError)
    except ImportError:
        pass
    try:
        from huggingface_hub.errors import OfflineModeIsEnabled

        errors.append(OfflineModeIsEnabled)
    except ImportError:
        pass
    return tuple(errors)


def push_folder(hub_dir: Union[str, Path], repo_id: str, private: bool = False, revision: Optional[str] = None,
                yes: bool = False, token=None, commit_message: Optional[str] = None, log=print,
                repo_type: str = "model"):
    """Upload an exported folder: one `create_repo`, one `upload_folder` commit. Returns the `CommitInfo`.
    `repo_type="space"`: a Space folder written by `export --space`."""
    from huggingface_hub import HfApi

    hub_dir = Path(hub_dir)
    if repo_type == "space":
        readme = hub_dir / "README.md"
        if not (hub_dir / "app.py").is_file() or not readme.is_file() or \
                "sdk: gradio" not in readme.read_text(encoding="utf-8"):
            raise ExportError(f"{hub_dir} is not a Space folder (run `aesformer export ... --space {hub_dir}`)")
    else:
        if not (hub_dir / "config.json").is_file() or not (hub_dir / "model.safetensors").is_file():
            raise ExportError(f"{hub_dir} is not an exported folder (run `aesformer export` first)")
        conversion = is_converted_folder(hub_dir)
        if conversion:
            log(f"[push] WARNING: {hub_dir} holds weights converted from {conversion['source']}, whose code and "
                "weights state NO licence. Publishing them may not be allowed; ask the original authors first.")
            if not yes:
                raise ExportError("refusing to upload converted third-party weights without --yes")
    api = HfApi(token=token)
    space_kwargs = {"space_sdk": "gradio"} if repo_type == "space" else {}
    try:
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type=repo_type, **space_kwargs)
        repo_id = getattr(repo, "repo_id", None) or repo_id
        if private and not getattr(api.repo_info(repo_id, repo_type=repo_type), "private", True):
            # create_repo leaves an existing repository's visibility as it is
            log(f"[push] WARNING: --private not applied: {repo_id} already exists and is public (change its "
                "visibility in its settings on the Hub)")
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type=repo_type)
        what = "Space" if repo_type == "space" else "model"
        info = api.upload_folder(repo_id=repo_id, folder_path=str(hub_dir), repo_type=repo_type, revision=revision,
                                 commit_message=commit_message or f"Upload Aesformer {what} (aesformer push)")
    except _connection_errors() as err:
        raise ExportError(f"cannot reach the Hugging Face Hub at {api.endpoint} ({type(err).__name__}: {err}); "
                          "check the network, HF_ENDPOINT and HF_HUB_OFFLINE") from err
    log(f"[push] committed {len(list_files(hub_dir))} files: {info.commit_url}")
    return info


# ------------------------------------------------------------------------------------------------------- the Space
def space_readme(model_repo: str, title: Optional[str] = None) -> str:
    """The Space's README.md: the front matter Spaces read (`sdk: gradio`, its version, the model) and a usage note."""
    name = title or model_repo.rpartition("/")[2]
    return (
        "---\n"
        f"title: {name}\n"
        "emoji: 📷\n"
        "colorFrom: blue\n"
        "colorTo: gray\n"
        "sdk: gradio\n"
        f"sdk_version: {_gradio_version()}\n"
        "app_file: app.py\n"
        "pinned: false\n"
        "models:\n"
        f"  - {model_repo}\n"
        "---\n\n"
        f"# {name}\n\n"
        f"Drop a photo, see its aesthetic score and why: the Aesformer model "
        f"[{model_repo}](https://huggingface.co/{model_repo}), loaded with `trust_remote_code=True` (the model "
        "repository's own code; this Space does not install the aesformer package).\n\n"
        "Programmatic use:\n\n"
        "```python\n"
        "from gradio_client import Client, handle_file\n\n"
        "client = Client(\"USER/SPACE\")\n"
        "client.predict(image=handle_file(\"photo.jpg\"), comments=\"\", adapter=\"base\", api_name=\"/score\")\n"
        "```\n"
    )


def _gradio_version() -> str:
    try:
        from importlib.metadata import version

        return version("gradio")
    except Exception:  # noqa: BLE001 - not installed here: the lower bound of the requirement
        return GRADIO_REQUIREMENT.split(">=")[1].split(",")[0] + ".0"


def check_space_target(space_dir: Union[str, os.PathLike], model_repo: str, overwrite: bool = False) -> Path:
    """`ExportError` for a bad `--model-repo` or a non-empty SPACE_DIR without --overwrite (checked before
    anything is written)."""
    if not _REPO_ID.match(model_repo or ""):
        raise ExportError(f"--model-repo must be USER/NAME (the Hub model repository), got {model_repo!r}")
    space_dir = Path(space_dir)
    if space_dir.exists() and not overwrite and (not space_dir.is_dir() or any(space_dir.iterdir())):
        raise ExportError(f"{space_dir} exists and is not empty; pass --overwrite to replace it")
    return space_dir


def write_space(space_dir: Union[str, os.PathLike], model_repo: str, page_source: Union[str, os.PathLike],
                with_adapters: bool = False, overwrite: bool = False, log=print) -> Path:
    """Write a Hugging Face Space folder serving the Hub model `model_repo`: `app.py` (`templates/space_app.py`),
    `app_page.py` (a copy of `page_source`, the page module: `aesformer_cli/app_page.py`), `requirements.txt` and
    `README.md` (front matter `sdk: gradio`). Written to a temporary sibling, then renamed."""
    from .file_modes import write_folder_atomically

    space_dir = check_space_target(space_dir, model_repo, overwrite)

    def write(tmp):
        app = SPACE_TEMPLATE.read_text(encoding="utf-8").replace("USER/MODEL", model_repo)
        (tmp / "app.py").write_text(app, encoding="utf-8")
        shutil.copyfile(page_source, tmp / "app_page.py")
        # gradio itself comes from the Space's `sdk_version` (README.md): listing it here too can clash.
        requirements = ["# gradio: sdk_version in README.md"] + HUB_REQUIREMENTS + (
            OPTIONAL_REQUIREMENTS if with_adapters else [])
        (tmp / "requirements.txt").write_text("\n".join(requirements) + "\n", encoding="utf-8")
        (tmp / "README.md").write_text(space_readme(model_repo), encoding="utf-8")

    write_folder_atomically(write, space_dir)
    log(f"[export] wrote the Space folder {space_dir} (model {model_repo}); upload it with "
        f"`aesformer push {space_dir} --repo-id USER/SPACE --repo-type space`")
    return space_dir


__all__ = [
    "ExportError",
    "HUB_REQUIREMENTS",
    "SHIPPED_FILES",
    "build_model_card",
    "check_export_target",
    "check_space_target",
    "detect_conversion",
    "export_model",
    "find_training_results",
    "list_files",
    "parse_results",
    "push_folder",
    "space_readme",
    "write_space",
]
