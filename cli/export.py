"""`aesformer export` and `aesformer push`: the flags and calls around `modeling_aesformer.export`.

    aesformer export MODEL_DIR --output HUB_DIR [--card-data card.json] [--results results.json] [--overwrite]
                     [--space SPACE_DIR --model-repo USER/NAME] [--onnx]
    aesformer push HUB_DIR --repo-id USER/NAME [--private] [--revision BRANCH] [--yes] [--repo-type space]
                   [--token TOKEN] [--commit-message TEXT]
"""

import json
import os
from pathlib import Path

from .common import CommandError, command_entry

PAGE_SOURCE = Path(__file__).resolve().parent / "app_page.py"  # the page a Space serves (`export --space`)


def _load_json_arg(value):
    """`--card-data`: a path to a JSON file, or an inline JSON object."""
    if not value:
        return {}
    if os.path.isfile(value):
        with open(value, encoding="utf-8") as f:
            data = json.load(f)
    else:
        try:
            data = json.loads(value)
        except json.JSONDecodeError as err:
            raise CommandError(f"--card-data is neither a JSON file nor a JSON object: {err}") from err
    if not isinstance(data, dict):
        raise CommandError("--card-data must hold a JSON object")
    return data


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
    export.add_argument("--onnx", action="store_true",
                        help="also write onnx/model.onnx (the image-only branch with the default adapter: one input "
                        "pixel_values, dynamic batch), onnx/model_<adapter>.onnx for each other adapter and "
                        "onnx/model_with_comments.onnx (the with-comments branch: pixel_values, input_ids, "
                        "attention_mask, token_type_ids; dynamic batch and comment length), for "
                        "`aesformer score --backend onnxruntime|openvino` and ONNX users (needs onnx, onnxscript)")
    export.set_defaults(func=run_export)

    push = subparsers.add_parser(
        "push", help="upload an exported folder to the Hugging Face Hub (one commit)",
        description="Create the repository if needed and upload HUB_DIR in one commit; prints the commit URL. "
        "Converted third-party weights need --yes.",
    )
    push.add_argument("hub_dir", metavar="HUB_DIR", help="a folder written by `aesformer export`")
    push.add_argument("--repo-id", required=True, help="USER/NAME or ORG/NAME")
    push.add_argument("--private", action="store_true",
                      help="create the repository as private (an existing public one is reported, not changed)")
    push.add_argument("--revision", default=None, help="branch to commit to (created if missing)")
    push.add_argument("--yes", action="store_true", help="confirm uploading converted third-party weights")
    push.add_argument("--repo-type", choices=("model", "space"), default="model",
                      help="model (default: a folder from `export --output`) or space (`export --space`)")
    push.add_argument("--token", default=None,
                      help="Hugging Face token (default: HF_TOKEN or the one saved by `hf auth login`)")
    push.add_argument("--commit-message", default=None, help="the commit's message")
    push.set_defaults(func=run_push)


@command_entry
def run_export(args) -> int:
    """Entry point of `aesformer export`: 0 on success, 2 on an error (one line on stderr)."""
    from modeling_aesformer.export import check_export_target, check_space_target, export_model, write_space

    from modeling_aesformer.loading import load_model

    if (args.space is None) != (args.model_repo is None):
        raise CommandError("--space SPACE_DIR and --model-repo USER/NAME go together")
    if args.space is not None:
        check_space_target(args.space, args.model_repo, args.overwrite)  # before anything is written
    results = None
    if args.results:
        with open(args.results, encoding="utf-8") as f:
            results = json.load(f)
    card_data = _load_json_arg(args.card_data)
    check_export_target(args.model_dir, args.output, args.overwrite)  # before the model loads
    onnx_tmp = export_onnx_first(args) if args.onnx else None  # before anything is written
    model, processor, _ = load_model(args.model_dir, default_adapter=False, images_only_ok=True,
                                     fit_max_length=False, flag="MODEL_DIR", prefix="[export] warning: ")
    export_model(args.model_dir, args.output, card_data=card_data, results=results, overwrite=args.overwrite,
                 model=model, processor=processor)
    if onnx_tmp is not None:
        onnx_dir = Path(args.output) / "onnx"
        os.replace(onnx_tmp, onnx_dir)
        print(f"[export] wrote {onnx_dir}: {', '.join(sorted(os.listdir(onnx_dir)))}")
    if args.space is not None:
        write_space(args.space, args.model_repo, PAGE_SOURCE, with_adapters=(Path(args.output) / "adapters").is_dir(),
                    overwrite=args.overwrite)
    return 0


def export_onnx_first(args) -> Path:
    """`--onnx`: the ONNX files, exported before the Hub folder is written (a failure leaves nothing behind) into a
    temporary sibling of it, from the model loaded as the exported folder is (default adapter folded, every adapter
    loaded). Returns that temporary folder."""
    import atexit
    import importlib.util
    import shutil

    from modeling_aesformer.loading import load_model
    from modeling_aesformer.onnx_backend import export_onnx_folder
    from modeling_aesformer.pipeline_aesformer import ALL_ADAPTERS, resolve_adapters

    if importlib.util.find_spec("onnxscript") is None or importlib.util.find_spec("onnx") is None:
        raise CommandError("--onnx needs onnx and onnxscript: pip install 'aesformer[onnx]'")
    model, _, _ = load_model(args.model_dir, ALL_ADAPTERS, images_only_ok=True, fit_max_length=False,
                             flag="MODEL_DIR", prefix="[export] warning: ")
    names, _ = resolve_adapters(model, ALL_ADAPTERS)
    output = Path(args.output)
    tmp = output.parent / f".{output.name}.onnx-{os.getpid()}"
    atexit.register(shutil.rmtree, tmp, True)  # gone once moved into HUB_DIR; removed if the export fails
    print(f"[export] exporting the image-only branch ({', '.join(names)}) and the with-comments branch to ONNX")
    export_onnx_folder(model, tmp, names)
    return tmp


@command_entry
def run_push(args) -> int:
    """Entry point of `aesformer push`: 0 on success, 2 on an error (one line on stderr)."""
    from modeling_aesformer.export import push_folder

    push_folder(args.hub_dir, args.repo_id, private=args.private, revision=args.revision, yes=args.yes,
                repo_type=args.repo_type, token=args.token, commit_message=args.commit_message)
    return 0


def run(args) -> int:
    """Entry point for either subcommand (dispatches on the parsed arguments)."""
    return args.func(args)


__all__ = ["add_subparsers", "run", "run_export", "run_push"]
