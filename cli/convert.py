"""`aesformer convert-original`: the command around `modeling_aesformer.convert_original`."""

from __future__ import annotations

import argparse

from .common import command_entry


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Register `convert-original CHECKPOINT --output DIR [--tokenizer DIR]` on an argparse subparsers object."""
    parser = subparsers.add_parser(
        "convert-original",
        help="convert a checkpoint of the original AesFormer code into a model folder",
        description=(
            "Convert a checkpoint of the original AesFormer code (AiArt-HDU/aesformer) into an AesformerModel folder "
            "(model.safetensors, config, remote code, README). Training-only state is dropped and reported; any key "
            "that does not fit makes the conversion fail with the full list."
        ),
    )
    parser.add_argument("checkpoint", help="the original .pth file (loaded with torch.load(weights_only=True))")
    parser.add_argument("--output", required=True, help="folder to write the converted model into")
    parser.add_argument(
        "--tokenizer", default=None, metavar="DIR",
        help="folder of the BERT tokenizer the checkpoint was trained with (bert-base-cased for Aesformer-T); "
        "saves the processor into the model folder",
    )
    parser.set_defaults(func=run)
    return parser


@command_entry
def run(args) -> int:
    """Entry point of the `convert-original` subcommand: 0 on success, 2 when the conversion is refused (a
    `ConversionError` is a ``ValueError``: one line on stderr)."""
    from modeling_aesformer.convert_original import convert_original_checkpoint

    report = convert_original_checkpoint(args.checkpoint, args.output, tokenizer_dir=args.tokenizer)
    print(report.summary())
    return 0
