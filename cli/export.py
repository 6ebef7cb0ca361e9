"""`aesformer export` and `aesformer push`: a self-contained Hub folder with a real model card, and its upload.

    aesformer export MODEL_DIR --output HUB_DIR [--card-data card.json] [--results results.json] [--overwrite]
    aesformer push HUB_DIR --repo-id USER/NAME [--private] [--revision BRANCH] [--yes]

`export` reloads the model and processor with the installed package and writes, into a temporary folder that is
renamed to HUB_DIR only when complete:

- `model.safetensors` and `config.json` (with `auto_map` and `custom_pipelines`);
- the processor: `processor_config.json` / image processor and tokenizer files;
- the flat remote-code files `configuration_aesformer.py`, `modeling_aesformer.py`, `processing_aesformer.py`,
  `pipeline_aesformer.py`, `adapter_weights_aesformer.py`, `attention_maps_aesformer.py` (they import only torch,
  transformers, numpy, Pillow and each other);
- `adapters/<name>/` copied from the model folder;
- `requirements.txt` (the supported range for users of the folder, see `HUB_REQUIREMENTS`);
- `README.md`: the model card, rendered from the Jinja template `templates/model_card.md` (the packaged copy of the
  repository's `model_card.md`) through `huggingface_hub.ModelCard`.

Converted third-party weights (made by `aesformer convert-original`) are recognised by the `conversion` entry of
config.json, or by the README stub the converter writes; the card then says that the original code and weights
state no licence, and `push` refuses to upload them without `--yes`.
"""

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from .common import CommandError, command_entry

TEMPLATE = Path(__file__).resolve().parent / "templates" / "model_card.md"
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


class ExportError(CommandError, RuntimeError):
    pass


# ------------------------------------------------------------------------------------------------------------ helpers
def requirements_text() -> str:
    lines = ["# Runtime requirements of this Aesformer folder (trust_remote_code=True, no aesformer package)."]
    lines += HUB_REQUIREMENTS
    lines += ["# only for the dataset adapters in adapters/<name>/:"] + [f"# {r}" for r in OPTIONAL_REQUIREMENTS]
    return "\n".join(lines) + "\n"


def _read_json(path: Union[str, Path]) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _load_json_arg(value: Optional[str]) -> Dict[str, Any]:
    """`--card-data`: a path to a JSON file, or an inline JSON object."""
    if not value:
        return {}
    if os.path.isfile(value):
        data = _read_json(value)
    else:
        try:
            data = json.loads(value)
        except json.JSONDecodeError as err:
            raise ExportError(f"--card-data is neither a JSON file nor a JSON object: {err}") from err
    if not isinstance(data, dict):
        raise ExportError("--card-data must hold a JSON object")
    return data


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
    from modeling_aesformer.adapter_weights_aesformer import (ADAPTER_CONFIG_FILE, ADAPTER_META_FILE, ADAPTERS_DIR,
                                                              is_adapter_folder)

    root = model_dir / ADAPTERS_DIR
    if not root.is_dir():
        return []
    adapters = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
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
                 *sorted((model_dir / "adapters").glob("*/results.json"))]:
        if path.is_file():
            try:
                data = _read_json(path)
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict) and data.get("stage") in ("pretrain", "adapt"):
                found.append(data)
    return found


def _training_data_kind(names: List[str]) -> str:
    lowered = [n.lower() for n in names]
    if any("synthetic" in n for n in lowered):
        return "synthetic"
    if any(n == "ava" or n.startswith("ava") for n in lowered):
        return "ava"
    return "other"


def _comment_limit(model, processor) -> Optional[str]:
    """What the processor really keeps of the comments, for the card (None: no tokenizer)."""
    if processor is None or getattr(processor, "tokenizer", None) is None:
        return None
    from modeling_aesformer.configuration_aesformer import comment_max_length

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
    datasets = card_data.pop("datasets", None)
    if datasets is None:
        names = [e["dataset"] for e in parsed] + [a["dataset"] for a in adapters]
        datasets = list(dict.fromkeys(n for n in names if n)) or None
    if conversion:
        license_fields = {"license": "other", "license_name": "no-license-stated",
                          "license_link": conversion["source"]}
        for key in ("license", "license_name", "license_link"):
            card_data.pop(key, None)
    else:
        license_fields = {"license": card_data.pop("license", "apache-2.0")}
        for key in ("license_name", "license_link"):
            if key in card_data:
                license_fields[key] = card_data.pop(key)
    extra = {}
    if conversion:
        extra["converted_from"] = conversion["source"]
    data = ModelCardData(
        library_name="transformers",
        pipeline_tag="image-classification",
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
        title = f"{entry['dataset']} {entry['split']} split" + (f" ({entry['count']:,} images)" if entry["count"] else "")
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
        training_data=_training_data_kind([e["dataset"] for e in parsed] + [a["dataset"] for a in adapters]
                                          + list(datasets or [])),
        dataset_names=", ".join(datasets or []) or "the training data",
        comment_limit=_comment_limit(model, processor),
        default_adapter=getattr(config, "default_adapter", None),
        requirements_line=", ".join(f"`{r}`" for r in HUB_REQUIREMENTS[:2]),
    )


# ------------------------------------------------------------------------------------------------------- the export
def export_model(model_dir: Union[str, Path], output_dir: Union[str, Path], card_data: Optional[dict] = None,
                 results: Any = None, overwrite: bool = False, log=print) -> Path:
    """Write the Hub folder for `model_dir` into `output_dir` (atomically: a temporary sibling folder renamed at
    the end). Returns `output_dir`."""
    from transformers import pipeline

    from modeling_aesformer.file_modes import follow_umask, write_folder_atomically

    from .loading import load_model

    model_dir, output_dir = Path(model_dir), Path(output_dir)
    if not (model_dir / "config.json").is_file():
        raise ExportError(f"{model_dir} is not a model folder (no config.json)")
    if output_dir.resolve() == model_dir.resolve():
        raise ExportError("--output must differ from MODEL_DIR")
    if output_dir.exists() and not overwrite and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise ExportError(f"{output_dir} exists and is not empty; pass --overwrite to replace it")
    if (model_dir / "adapter_config.json").is_file():
        raise ExportError(f"{model_dir} has an adapter_config.json at its root: adapters belong in adapters/<name>/")

    config_dict = _read_json(model_dir / "config.json")
    conversion = detect_conversion(model_dir, config_dict)
    adapters = _read_adapters(model_dir)
    # never a pickled .bin. The folder keeps the model's own image-only weights: its config's default_adapter is
    # folded in when the exported folder is loaded (by the package or by the folder's own code, no PEFT needed).
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
            shutil.copytree(model_dir / "adapters", tmp / "adapters")
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
    if (folder / "adapter_config.json").exists():
        missing.append("an adapter_config.json at the folder root (must not exist)")
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
        api = HfApi(token=token)
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="space", space_sdk="gradio")
        repo_id = getattr(repo, "repo_id", None) or repo_id
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="space")
        info = api.upload_folder(repo_id=repo_id, folder_path=str(hub_dir), repo_type="space", revision=revision,
                                 commit_message=commit_message or "Upload Aesformer Space (aesformer push)")
        log(f"[push] committed {len(list_files(hub_dir))} files: {info.commit_url}")
        return info
    if not (hub_dir / "config.json").is_file() or not (hub_dir / "model.safetensors").is_file():
        raise ExportError(f"{hub_dir} is not an exported folder (run `aesformer export` first)")
    conversion = is_converted_folder(hub_dir)
    if conversion:
        log(f"[push] WARNING: {hub_dir} holds weights converted from {conversion['source']}, whose code and "
            "weights state NO licence. Publishing them may not be allowed; ask the original authors first.")
        if not yes:
            raise ExportError("refusing to upload converted third-party weights without --yes")
    api = HfApi(token=token)
    repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
    repo_id = getattr(repo, "repo_id", None) or repo_id
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True, repo_type="model")
    info = api.upload_folder(
        repo_id=repo_id, folder_path=str(hub_dir), repo_type="model", revision=revision,
        commit_message=commit_message or "Upload Aesformer model (aesformer push)",
    )
    log(f"[push] committed {len(list_files(hub_dir))} files: {info.commit_url}")
    return info


# ---------------------------------------------------------------------------------------------------------- the CLI
def add_subparsers(subparsers) -> None:
    """Register `export` and `push` on an argparse subparsers object."""
    export = subparsers.add_parser(
        "export", help="write a self-contained Hugging Face Hub folder (weights, code, processor, model card)",
        description="Build a Hub-ready folder from a model folder: model.safetensors, config with auto_map and "
        "custom_pipelines, processor and tokenizer files, the flat remote-code files, adapters/, requirements.txt "
        "and a README.md model card. The folder is written to a temporary sibling and renamed when complete.",
    )
    export.add_argument("model_dir", metavar="MODEL_DIR", help="a model folder (save_pretrained / training output)")
    export.add_argument("--output", required=True, metavar="HUB_DIR", help="folder to write")
    export.add_argument("--card-data", default=None, metavar="JSON",
                        help="JSON file or inline object: model card metadata (license, datasets, tags, language, "
                        "base_model, model_name, ...) plus 'repo_id' and 'description' for the card text")
    export.add_argument("--results", default=None, metavar="results.json",
                        help="training results JSON; its metrics go into the card's model-index")
    export.add_argument("--overwrite", action="store_true", help="replace HUB_DIR (and SPACE_DIR) if it exists")
    export.add_argument("--space", default=None, metavar="SPACE_DIR",
                        help="also write a Gradio Space folder (app.py, requirements.txt, README.md) that serves "
                        "the model from the Hub repository --model-repo, without this package")
    export.add_argument("--model-repo", default=None, metavar="USER/NAME",
                        help="the Hub model repository the Space loads (where HUB_DIR is pushed); needs --space")
    export.set_defaults(func=run_export)

    push = subparsers.add_parser(
        "push", help="upload an exported folder to the Hugging Face Hub (one commit)",
        description="Create the repository if needed and upload HUB_DIR in one commit; prints the commit URL. "
        "Converted third-party weights need --yes.",
    )
    push.add_argument("hub_dir", metavar="HUB_DIR", help="a folder written by `aesformer export`")
    push.add_argument("--repo-id", required=True, help="USER/NAME or ORG/NAME")
    push.add_argument("--private", action="store_true", help="create the repository as private")
    push.add_argument("--revision", default=None, help="branch to commit to (created if missing)")
    push.add_argument("--yes", action="store_true", help="confirm uploading converted third-party weights")
    push.add_argument("--repo-type", choices=("model", "space"), default="model",
                      help="model (default: a folder from `export --output`) or space (`export --space`)")
    push.set_defaults(func=run_push)


@command_entry
def run_export(args) -> int:
    """Entry point of `aesformer export`: 0 on success, 2 on an error (one line on stderr)."""
    if (args.space is None) != (args.model_repo is None):
            raise ExportError("--space SPACE_DIR and --model-repo USER/NAME go together")
    if args.space is not None:
        from .serve import check_space_target

        check_space_target(args.space, args.model_repo, args.overwrite)  # before anything is written
    results = _read_json(args.results) if args.results else None
    export_model(args.model_dir, args.output, card_data=_load_json_arg(args.card_data), results=results,
                 overwrite=args.overwrite)
    if args.space is not None:
        from .serve import write_space

        write_space(args.space, args.model_repo, with_adapters=(Path(args.output) / "adapters").is_dir(),
                    overwrite=args.overwrite)
    return 0


@command_entry
def run_push(args) -> int:
    """Entry point of `aesformer push`: 0 on success, 2 on an error (one line on stderr)."""
    push_folder(args.hub_dir, args.repo_id, private=args.private, revision=args.revision, yes=args.yes,
                repo_type=args.repo_type)
    return 0


def run(args) -> int:
    """Entry point for either subcommand (dispatches on the parsed arguments)."""
    return args.func(args)


__all__ = [
    "ExportError",
    "HUB_REQUIREMENTS",
    "SHIPPED_FILES",
    "add_subparsers",
    "build_model_card",
    "detect_conversion",
    "export_model",
    "list_files",
    "parse_results",
    "push_folder",
    "run",
    "run_export",
    "run_push",
]
