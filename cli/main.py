"""`aesformer` command line. Subcommands import their heavy dependencies lazily, and only the module of the command
being run is imported to build the parser: `aesformer --help` and `aesformer <command> --help` answer before torch
and transformers load (see bench/bench_cli_help.py)."""

import argparse
import importlib
import os
import sys

from .common import ArgumentParser, command_entry

# Commands defined in other modules: (module, its function that registers them, help shown in `aesformer --help`).
# Only the module of the command being run is imported.
LAZY_COMMANDS = {
    "score": ("aesformer_cli.score", "add_subparser",
              "score images (files, folders, globs, list files) into a CSV/JSONL file"),
    "make-dataset": ("aesformer_cli.make_dataset", "add_subparser",
                     "write the synthetic aesthetic dataset (generic format) used by the demo"),
    "convert-original": ("aesformer_cli.convert", "add_subparser",
                         "convert a checkpoint of the original AesFormer code into a model folder"),
    "export": ("aesformer_cli.export", "add_subparsers",
               "write a self-contained Hugging Face Hub folder (weights, code, processor, model card)"),
    "push": ("aesformer_cli.export", "add_subparsers",
             "upload an exported folder to the Hugging Face Hub (one commit)"),
    "explain": ("aesformer_cli.explain", "add_subparser",
                "score one image and write a figure explaining the score (attention heat map, distribution, words)"),
    "serve": ("aesformer_cli.serve", "add_subparser",
              "a web page (and a `score` API) to score photos with one model"),
}
ALL_COMMANDS = object()  # build_parser(): every command's real parser


QUICK_NOTE = ("NOTE: --quick is a smoke run (800 images, a few epochs): it checks that every step works and fits the "
              "vote distributions (EMD), but it is too short to learn the ranking, so its SRCC/PLCC (near 0) and its "
              "scatter plot show nothing about the method. Run `aesformer demo` without --quick (the README gives its "
              "measured time) for the numbers in the README.")


def _demo(args) -> int:
    from aesformer_training.demo import run_demo

    from .train import format_table

    table = run_demo(output_dir=args.output, quick=args.quick, log=lambda message: print(message, flush=True))
    print(f"\n{format_table(table)}\n")
    if args.quick:
        print(f"{QUICK_NOTE}\n")
    return 0


@command_entry
def _set_default(args) -> int:
    import json

    from modeling_aesformer.adapter_weights_aesformer import BASE_ADAPTER
    from modeling_aesformer.adapters import list_adapters, set_default_adapter

    if args.name is None:
        with open(os.path.join(args.model_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        print(f"default adapter: {config.get('default_adapter') or BASE_ADAPTER} "
              f"(image-only modules trained: {bool(config.get('image_only_trained'))}); "
              f"adapters: {list_adapters(args.model_dir) or 'none'}")
        return 0
    previous = set_default_adapter(args.model_dir, args.name)
    print(f"default adapter of {args.model_dir}: {args.name} (was {previous or BASE_ADAPTER})")
    return 0


def _training_command(name):
    def run(args) -> int:
        from . import train

        return {"pretrain": train.pretrain_main, "adapt": train.adapt_main, "eval": train.eval_main}[name](
            args.args
        )

    return run


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("aesformer")
    except PackageNotFoundError:
        return "unknown"


def build_parser(chosen=ALL_COMMANDS) -> argparse.ArgumentParser:
    """The `aesformer` parser. `chosen`: the command about to run (only its module is imported; the others get a
    placeholder that only lists them), None for the listing alone, or every command's real parser (default)."""
    parser = ArgumentParser(prog="aesformer", description="Image aesthetic assessment with Aesformer.")
    parser.add_argument("--version", action="version", version=f"aesformer {_version()}")
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    parser.add_argument("--verbose", action="store_true",
                        help="show transformers' progress bars (loading weights, writing shards); also accepted "
                        "after the command")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="end-to-end run on embedded data, no downloads")
    demo.add_argument("--output", default="aesformer-demo", help="folder for the model, scores and figures")
    demo.add_argument("--quick", action="store_true",
                      help="a short smoke run (800 images, a few epochs): fits the distributions, too short to learn "
                      "the ranking")
    demo.set_defaults(func=_demo)

    default = sub.add_parser(
        "set-default", help="choose the adapter that answers images without comments",
        description="Make a dataset adapter of MODEL_DIR (adapters/NAME/) the model's default answer for images "
        "without comments, in every entry point (AutoModel.from_pretrained, pipeline, score, explain, eval, "
        "export). NAME 'base' = the model's own image-only modules. Without NAME: show the current default.")
    default.add_argument("model_dir", metavar="MODEL_DIR")
    default.add_argument("name", nargs="?", metavar="NAME")
    default.set_defaults(func=_set_default)

    # The training commands own their (long) argument lists: everything after the command goes to them.
    for name, help_text in (("pretrain", "stage 1: train with comments (= training/pretrain.py)"),
                            ("adapt", "stage 2: train a dataset adapter (= training/adapt.py)"),
                            ("eval", "evaluate both branches on a dataset split")):
        command = sub.add_parser(name, help=help_text, add_help=False)
        command.add_argument("args", nargs=argparse.REMAINDER)
        command.set_defaults(func=_training_command(name))

    for name, (module, register, help_text) in LAZY_COMMANDS.items():
        if name in sub.choices:
            continue  # registered by another command's module (export also defines push)
        if chosen is ALL_COMMANDS or LAZY_COMMANDS.get(chosen, (None,))[0] == module:
            getattr(importlib.import_module(module), register)(sub)
        else:
            sub.add_parser(name, help=help_text, add_help=False)  # listed only; never parsed
    return parser


def _command(argv):
    """The command named in `argv` (its first token that is not an option), or None."""
    for token in argv:
        if not token.startswith("-"):
            return token
    return None


TRAINING_COMMANDS = ("pretrain", "adapt", "eval")


def main(argv=None) -> int:
    from .common import run_command

    # Errors become one message, not a traceback; `--debug` (anywhere) shows the traceback.
    return run_command(_main, argv)


def _main(argv) -> int:
    argv = list(argv)
    if "--verbose" in argv:
        argv = [a for a in argv if a != "--verbose"]
    else:  # transformers' "Loading weights" / "Writing model shards" bars: noise for a command-line user
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if argv and argv[0] in TRAINING_COMMANDS:
        # argparse's REMAINDER does not take tokens that start with "--" right after a subcommand
        # (`aesformer pretrain --preset tiny` was "unrecognized arguments"): hand them over untouched.
        return int(_training_command(argv[0])(argparse.Namespace(args=argv[1:])) or 0)
    args = build_parser(_command(argv)).parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
