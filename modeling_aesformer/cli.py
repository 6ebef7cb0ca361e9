"""`aesformer` command line. Subcommands import their heavy dependencies lazily."""

import argparse
import sys


def _demo(args) -> int:
    from .demo import run_demo

    return run_demo(output_dir=args.output, quick=args.quick)


def _set_default(args) -> int:
    import json
    import os

    from .adapters import list_adapters, set_default_adapter

    try:
        if args.name is None:
            with open(os.path.join(args.model_dir, "config.json"), encoding="utf-8") as f:
                config = json.load(f)
            print(f"default adapter: {config.get('default_adapter') or 'base'} "
                  f"(image-only modules trained: {bool(config.get('image_only_trained'))}); "
                  f"adapters: {list_adapters(args.model_dir) or 'none'}")
            return 0
        previous = set_default_adapter(args.model_dir, args.name)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"default adapter of {args.model_dir}: {args.name} (was {previous or 'base'})")
    return 0


def _training_command(name):
    def run(args) -> int:
        from aesformer_training import scripts

        return {"pretrain": scripts.pretrain_main, "adapt": scripts.adapt_main, "eval": scripts.eval_main}[name](
            args.args
        )

    return run


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="aesformer", description="Image aesthetic assessment with Aesformer.")
    parser.add_argument("--version", action="version", version=f"aesformer {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="end-to-end run on embedded data, no downloads")
    demo.add_argument("--output", default="aesformer-demo", help="folder for the model, scores and figures")
    demo.add_argument("--quick", action="store_true",
                      help="800 images, a few epochs (~35 s): fits the distributions, too short to learn the ranking")
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

    from aesformer_training import synthetic

    from . import convert_original, explain, export, scoring

    scoring.add_subparser(sub)
    synthetic.add_subparser(sub)
    convert_original.add_subparser(sub)
    export.add_subparsers(sub)
    explain.add_subparser(sub)
    return parser


TRAINING_COMMANDS = ("pretrain", "adapt", "eval")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in TRAINING_COMMANDS:
        # argparse's REMAINDER does not take tokens that start with "--" right after a subcommand
        # (`aesformer pretrain --preset tiny` was "unrecognized arguments"): hand them over untouched.
        return int(_training_command(argv[0])(argparse.Namespace(args=argv[1:])) or 0)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
