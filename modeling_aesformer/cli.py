"""`aesformer` command line. Subcommands import their heavy dependencies lazily."""

import argparse
import sys


def _demo(args) -> int:
    from .demo import run_demo

    return run_demo(output_dir=args.output, quick=args.quick)


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
    parser.add_argument("--debug", action="store_true", help="on an error, show the full traceback")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="end-to-end run on embedded data, no downloads")
    demo.add_argument("--output", default="aesformer-demo", help="folder for the model, scores and figures")
    demo.add_argument("--quick", action="store_true",
                      help="800 images, a few epochs (~35 s): fits the distributions, too short to learn the ranking")
    demo.set_defaults(func=_demo)

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
    from . import app

    app.add_subparser(sub)
    return parser


TRAINING_COMMANDS = ("pretrain", "adapt", "eval")


def main(argv=None) -> int:
    from aesformer_training.cli_utils import run_command

    # Errors become one message, not a traceback; `--debug` (anywhere) shows the traceback.
    return run_command(_main, argv)


def _main(argv) -> int:
    if argv and argv[0] in TRAINING_COMMANDS:
        # argparse's REMAINDER does not take tokens that start with "--" right after a subcommand
        # (`aesformer pretrain --preset tiny` was "unrecognized arguments"): hand them over untouched.
        return int(_training_command(argv[0])(argparse.Namespace(args=argv[1:])) or 0)
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
