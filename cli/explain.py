"""`aesformer explain IMAGE [--comments TEXT] --model DIR [--adapter NAME] --output PNG`: one image's score and the
figure that explains it, from `modeling_aesformer.explanation` (the method: docs/explain.md)."""

import argparse
import os
import sys

from .common import CommandError, command_entry
from .precision import add_dtype_argument, chosen_dtype


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Register `explain IMAGE [--comments TEXT] --model DIR [--adapter NAME] --output PNG`."""
    parser = subparsers.add_parser(
        "explain",
        help="score one image and write a figure explaining the score (attention heat map, distribution, words)",
        description=(
            "Score IMAGE with the model in DIR (with its comments, if given) and write one PNG figure: the photo with "
            "the fusion layers' attention as a heat map, the predicted score distribution with score, std and "
            "label, and the comment with the words the image attends to highlighted. Needs matplotlib "
            '(pip install "aesformer[demo]"). The method: docs/explain.md.'
        ),
    )
    parser.add_argument("image", help="the image file")
    parser.add_argument(
        "--comments", action="append", default=None, metavar="TEXT",
        help="the image's comments (repeat for several; they are joined); without it the image-only branch answers",
    )
    parser.add_argument("--model", required=True, metavar="DIR", help="the model folder (weights and processor)")
    parser.add_argument(
        "--adapter", default=None, metavar="NAME",
        help="dataset adapter for the image-only branch, loaded from DIR/adapters/NAME ('base' = the model's own; "
        "default: the model's default adapter, see `aesformer set-default`)",
    )
    parser.add_argument("--output", required=True, metavar="PNG", help="where to write the figure")
    parser.add_argument("--alpha", type=float, default=0.5, help="opacity of the heat map (0..1, default 0.5)")
    add_dtype_argument(parser)
    parser.set_defaults(func=run)
    return parser


@command_entry
def run(args) -> int:
    """Entry point of `aesformer explain`: 0 on success, 2 on an error (one line on stderr)."""
    from modeling_aesformer.explanation import explain, plot_explanation, require_matplotlib

    try:
        require_matplotlib()
        if not os.path.isfile(args.image):
            raise FileNotFoundError(f"no such image file: {args.image}")
        from modeling_aesformer.loading import load_model

        # the model's default adapter (config `default_adapter`) is folded in unless another one is named
        model, processor, _ = load_model(args.model, [args.adapter] if args.adapter else None,
                                         default_adapter=args.adapter is None, dtype=chosen_dtype(args, "cpu"))
        if not args.comments:
            from modeling_aesformer.adapter_weights_aesformer import BASE_ADAPTER
            from modeling_aesformer.pipeline_aesformer import untrained_answer_message

            # an adapter named with --adapter was asked for: only the default answer is warned about
            warning = None if args.adapter else untrained_answer_message(model, [BASE_ADAPTER],
                                                                         how_to_name="--adapter NAME")
            if warning:
                print(f"warning: {warning}", file=sys.stderr)
        explanation = explain(model, processor, args.image, comments=args.comments, adapter=args.adapter,
                              alpha=args.alpha)
        written = plot_explanation(explanation, args.output)
    except TypeError as error:  # e.g. comments that are not text: an input problem, one line
        raise CommandError(str(error)) from error
    e = explanation
    print(f"{args.image}: score {e.score:.3f} ± {e.std:.3f} ({e.label}: threshold {e.threshold:g}), "
          f"{e.branch.replace('_', ' ')} branch"
          + (f", adapter {e.adapter}" if e.adapter else "") + (" (UNTRAINED head)" if e.trained is False else ""))
    if e.words:
        top = sorted(e.words, key=lambda item: -item[1])[:5]
        print("most attended words: " + ", ".join(f"{w} ({p:.2f})" for w, p in top))
    print(f"figure written to {written}")
    return 0


__all__ = ["add_subparser", "run"]
