"""`aesformer make-dataset`: write the synthetic dataset of `aesformer_training.synthetic` (flags from its config)."""

from __future__ import annotations

import argparse
import dataclasses

from aesformer_training.synthetic import PHOTO_SUBJECTS, SyntheticConfig

from .common import add_argument, command_entry

_CLI_SKIP = {"size", "seed", "num_bins", "image_size", "split_fractions", "photos", "write_attributes", "threshold"}


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Registers `make-dataset --size N --seed S --output DIR [...]` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "make-dataset",
        help="write the synthetic aesthetic dataset (generic format) used by the demo",
        description="Write a deterministic synthetic image-aesthetics dataset with vote histograms and comments in "
                    "the generic format (metadata.csv + dataset.json + images/). See docs/synthetic-data.md.",
    )
    defaults = SyntheticConfig()
    parser.add_argument("--output", required=True, help="folder to write the dataset into")
    add_argument(parser, "--size", type=int, default=defaults.size, help="number of images (default 1000)")
    add_argument(parser, "--seed", type=int, default=defaults.seed, help="random seed (default 0)")
    add_argument(parser, "--num-bins", type=int, default=defaults.num_bins,
                 help="vote bins / score scale 1..B (default 10)")
    add_argument(parser, "--image-size", type=int, default=defaults.image_size,
                 help="side of the saved square images in pixels (default 96)")
    add_argument(parser, "--split-fractions", type=float, nargs=3, metavar=("TRAIN", "VALIDATION", "TEST"),
                 default=list(defaults.split_fractions),
                 help="split fractions, assigned by source (default 0.8 0.1 0.1)")
    parser.add_argument("--photos", default=None,
                        help="comma-separated photographs to use, or 'none' (default: all that load: "
                             + ", ".join(PHOTO_SUBJECTS) + ")")
    parser.add_argument("--threshold", type=float, default=None,
                        help="binary threshold for dataset.json (default: the midpoint of 1..B, 5.5 for 10 bins; a "
                             "dataset --name ava, photonet or jas: its documented threshold)")
    add_argument(parser, "--write-attributes", action="store_true",
                 help="also write attributes.csv with the hidden attributes and true scores")
    parser.add_argument("--quiet", action="store_true", help="print nothing but errors")
    for f in dataclasses.fields(SyntheticConfig):
        if f.name in _CLI_SKIP:
            continue
        kwargs = {"dest": f.name, "default": f.default, "help": f"{f.metadata['help']} (default {f.default})"}
        if "choices" in f.metadata:
            kwargs["choices"] = f.metadata["choices"]
        kwargs["type"] = type(f.default)
        add_argument(parser, f"--{f.name}", **kwargs)
    parser.set_defaults(func=run)
    return parser


def _format_summary(summary: dict) -> str:
    lines = [f"synthetic dataset written to {summary['output_dir']}",
             f"  images: {summary['size']} ({', '.join(f'{k} {v}' for k, v in summary['split_counts'].items())}); "
             f"sources per split: {', '.join(f'{k} {v}' for k, v in summary['split_sources'].items())}",
             f"  mean score: {summary['score_mean']:.3f} +- {summary['score_std']:.3f} on 1..{summary['num_bins']}; "
             f"mean vote std {summary['vote_std_mean']:.3f}; high (> threshold) {summary['high_fraction']:.1%}",
             f"  comments: {summary['comment_fraction']:.1%} of images, {summary['mean_comments']:.2f} per image",
             f"  scene sources: {summary['scene_sources']}; photos: {', '.join(summary['photos']) or 'none'} "
             f"({summary['photo_note']})",
             f"  time: {summary['seconds']:.2f} s ({summary['images_per_second']} images/s)"]
    return "\n".join(lines)


@command_entry
def run(args) -> int:
    """Entry point of the `make-dataset` subcommand: 0 on success, 2 on invalid settings (one line on stderr)."""
    knobs = {f.name: getattr(args, f.name) for f in dataclasses.fields(SyntheticConfig)
             if f.name not in ("size", "seed", "num_bins", "image_size", "photos") and hasattr(args, f.name)}
    photos = getattr(args, "photos", None)
    if photos is not None:
        names = [p.strip() for p in photos.split(",") if p.strip()]
        if names == ["none"]:
            knobs["photo_fraction"] = 0.0
        else:
            knobs["photos"] = tuple(names)
    from aesformer_training.synthetic import make_dataset

    summary = make_dataset(args.output, size=args.size, seed=args.seed, num_bins=args.num_bins,
                           image_size=args.image_size, verbose=not getattr(args, "quiet", False), **knobs)
    if not getattr(args, "quiet", False):
        print(_format_summary(summary))
    return 0
