"""Command lines of the training stages and of evaluation: `aesformer pretrain|adapt` parse the flags of
`aesformer_training.arguments` with the command line's parser, run the stage (`aesformer_training.stages`) and print
what it did; `accelerate launch training/<stage>.py ...` runs the same stage through `aesformer_training.arguments.
launch`. `aesformer eval` evaluates a model on a dataset split."""

import logging
import os
import sys
from pathlib import Path

# light imports (the standard library only): `aesformer pretrain --help` answers before torch loads
from aesformer_training.arguments import (ADAPT_DESCRIPTION, PRETRAIN_DESCRIPTION, add_adapt_arguments,
                                          add_data_arguments, add_pretrain_arguments, check_splits,
                                          end_process_group, load_data, run_adapt, run_pretrain)
from aesformer_training.stages import summary

from .common import DEBUG_FLAG, DEBUG_HELP, ArgumentParser, CommandError


def _stage_main(prog, description, add_arguments, run, argv):
    parser = ArgumentParser(prog=prog, description=description)
    add_arguments(parser)
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run(args)
    finally:
        end_process_group()
    if result.main_process:  # the other processes of a distributed run trained, but finished nothing
        print("\n".join(summary(result)))
    return 0


def pretrain_main(argv=None):
    return _stage_main("aesformer pretrain", PRETRAIN_DESCRIPTION, add_pretrain_arguments, run_pretrain, argv)


def adapt_main(argv=None):
    return _stage_main("aesformer adapt", ADAPT_DESCRIPTION, add_adapt_arguments, run_adapt, argv)


def eval_main(argv=None):
    from aesformer_cli.precision import add_dtype_argument

    parser = ArgumentParser(prog="aesformer eval",
                            description="Evaluate an Aesformer model (both branches) on a dataset split. Exact by "
                                        "default: fp32 weights and fully decoded images (see --dtype, --fast-decode); "
                                        "what was used is written to the results.")
    parser.add_argument("--model", required=True, help="model folder (its adapters/ are loaded for --adapter)")
    parser.add_argument("--adapter", help="dataset adapter for the image-only branch ('base' = none; default: the "
                                          "model's default adapter, see `aesformer set-default`, or the one saved "
                                          "adapter on the dataset's scale when the default is on another)")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=42, help="seed of the split when the data has no split column")
    parser.add_argument("--output", help="write the metrics and the protocol as JSON here (its folder is created); "
                                         "the per-image predictions go beside it, <stem>.predictions.csv")
    parser.add_argument("--predictions", metavar="PATH",
                        help="write the per-image predictions (CSV, one row per image and branch) here instead")
    parser.add_argument("--fast-decode", action="store_true",
                        help="decode large JPEGs at a reduced size (Pillow's draft mode, as `aesformer score` does "
                             "by default): faster, scores move by a few hundredths (default: full decode)")
    add_dtype_argument(parser, default="fp32")
    add_data_arguments(parser)
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import json

    from modeling_aesformer.adapter_weights_aesformer import BASE_ADAPTER
    from modeling_aesformer.loading import check_model_source

    # Inputs first: a run that can evaluate nothing stops before loading the model or writing --output.
    check_model_source(args.model, "--model")  # FileNotFoundError: a one-line error, status 2 (run_command)
    if args.adapter and args.adapter != BASE_ADAPTER:
        from modeling_aesformer.adapters import check_adapter_name, list_adapters

        try:
            check_adapter_name(args.adapter)
        except ValueError as err:
            raise CommandError(f"--adapter: {err}") from None
        if os.path.isdir(args.model) and args.adapter not in list_adapters(args.model):
            raise CommandError(f"--adapter {args.adapter}: the model folder {args.model} has no such adapter "
                               f"(available: {', '.join(list_adapters(args.model)) or 'none'}; 'base' = none)")
    data, spec = load_data(args)
    check_splits(args, data, spec, (args.split,))
    from aesformer_cli.precision import chosen_dtype

    from aesformer_training.prediction import (PAIRED_BRANCH, evaluate_branches, fitting_adapter,
                                               write_predictions)
    from aesformer_training.arguments import data_protocol
    from modeling_aesformer.loading import load_model

    adapter = args.adapter
    if os.path.isdir(args.model):
        try:
            adapter, note = fitting_adapter(args.model, spec, args.adapter)
        except ValueError as err:
            raise CommandError(str(err)) from None
        if note:
            print(note)
    predictions_path = args.predictions or (
        str(Path(args.output).with_suffix("")) + ".predictions.csv" if args.output else None)
    said = []
    dtype = chosen_dtype(args, "cpu", log=lambda line: (print(line), said.append(line)))
    # without --adapter the model's default adapter is folded in (see from_pretrained); evaluation runs on the CPU
    model, processor, _ = load_model(args.model, [adapter] if adapter else None,
                                     default_adapter=adapter is None, dtype=dtype)
    from modeling_aesformer.pipeline_aesformer import untrained_answer_message

    # an adapter named with --adapter was asked for: only the default (or the one picked to fit the data) is warned about
    warning = None if args.adapter else untrained_answer_message(model, [adapter or BASE_ADAPTER],
                                                                 how_to_name="--adapter NAME")
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    predictions, warnings, skipped = [], [], []
    results = evaluate_branches(model, processor, data[args.split], spec, adapter=adapter,
                                batch_size=args.batch_size, num_workers=args.num_workers,
                                branches=("with_comments", "image_only", PAIRED_BRANCH),
                                reduced_decode=args.fast_decode, predictions=predictions, warnings=warnings,
                                skipped=skipped)
    from modeling_aesformer.adapter_weights_aesformer import base_model, image_only_answer

    name, trained = image_only_answer(base_model(model).config, adapter or BASE_ADAPTER)
    for branch in ("image_only", PAIRED_BRANCH):
        if "skipped" not in results.get(branch, {"skipped": ""}):
            results[branch].update(adapter=name, trained=trained)
    if "skipped" not in results.get("image_only", {"skipped": ""}):
        print(f"image-only branch answered by adapter {name!r}" + ("" if trained else " (UNTRAINED head)"))
    decode = "reduced (JPEG draft mode, --fast-decode)" if args.fast_decode else "full"
    print(f"decode: {decode}; split {args.split!r}: {spec.report.split_rule if spec.report else 'as given'}")
    print(format_table(results, columns=("n", "accuracy", "majority", "threshold", "plcc", "srcc", "emd_r1",
                                         "emd_r2")))
    for image_id, reason in skipped:
        print(f"warning: image {image_id!r} could not be read and is left out of the metrics: {reason}",
              file=sys.stderr)
    for line in warnings:
        print(f"warning: degenerate predictions: {line}", file=sys.stderr)
    if all("skipped" in metrics for metrics in results.values()):
        reasons = "; ".join(f"{branch}: {metrics['skipped']}" for branch, metrics in results.items())
        raise CommandError(f"nothing could be evaluated on the {args.split} split ({reasons})"
                           + (f"; --output {args.output} was not written" if args.output else ""))
    report_csv = str(Path(args.output).with_suffix("")) + ".dataset_report.csv" if args.output else None
    results["protocol"] = {
        "model": args.model, "split": args.split, "image_only_adapter": name,
        "thresholds": {branch: metrics["threshold"] for branch, metrics in results.items() if "threshold" in metrics},
        "precision": {"dtype": str(dtype).replace("torch.", ""), "asked": args.dtype,
                      "chosen": said[-1].split("precision: ", 1)[-1] if said else args.dtype},
        "decode": decode, **data_protocol(args, spec),
        "predictions": predictions_path, "dataset_report_csv": report_csv,
        "skipped_images": [list(item) for item in skipped], "warnings": warnings,
    }
    if predictions_path:
        Path(predictions_path).parent.mkdir(parents=True, exist_ok=True)
        write_predictions(predictions_path, predictions)
        print(f"per-image predictions ({len(predictions):,} rows) in {predictions_path}")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        if spec.report is not None:
            spec.report.write_csv(report_csv)
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
        print(f"results and protocol in {args.output}")
    return 0


def format_table(results, columns=("n", "accuracy", "plcc", "srcc", "emd_r1", "emd_r2")):
    """A plain-text table: one row per branch/model, one column per metric (`majority`: the majority-class
    baseline accuracy)."""
    keys = {"majority": "majority_baseline_accuracy"}
    width = max([22, *(len(str(name)) + 2 for name in results)])
    lines = [f"{'':<{width}}" + "".join(f"{c:>10}" for c in columns)]
    for name, metrics in results.items():
        if "skipped" in metrics:
            lines.append(f"{name:<{width}}(skipped: {metrics['skipped']})")
            continue
        cells = []
        for c in columns:
            value = metrics.get(keys.get(c, c))
            cells.append(f"{value:>10}" if isinstance(value, int) else f"{value:>10.4f}" if value is not None
                         else f"{'-':>10}")
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)


__all__ = ["adapt_main", "eval_main", "format_table", "pretrain_main"]
