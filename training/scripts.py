"""Command lines of the two training stages: `training/pretrain.py` and `training/adapt.py` are thin wrappers
around `pretrain_main` / `adapt_main`, so `accelerate launch training/<stage>.py ...`, `aesformer pretrain|adapt ...`
and the tests run the same code."""

import logging
import sys
from pathlib import Path

from .cli_utils import ArgumentParser
from .loop import ADAPT, PRETRAIN, TrainConfig, train

DATA_FORMATS = ("generic", "ava", "photonet", "jas")


def add_data_arguments(parser):
    group = parser.add_argument_group("data")
    group.add_argument("--data", required=True,
                       help="generic: the dataset folder (metadata.csv); ava: AVA.txt; photonet: the vote file; "
                            "jas: the score CSV")
    group.add_argument("--data-format", choices=DATA_FORMATS, default="generic")
    group.add_argument("--image-dir", help="folder of the images (ava, photonet, jas)")
    group.add_argument("--test-list", help="official test ids, one per line (ava: generic_test.jpgl)")
    group.add_argument("--comments", help="comments file (ava/photonet: CSV index,label,comment or CSV/JSONL)")
    group.add_argument("--on-bad-rows", choices=("skip", "fail"), default="skip",
                       help="malformed rows: skip and report them (default) or stop")


def add_training_arguments(parser, stage):
    defaults = TrainConfig(stage=stage, output_dir="")
    group = parser.add_argument_group("training (defaults: the paper's recipe)")
    group.add_argument("--output-dir", required=True)
    group.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    group.add_argument("--min-learning-rate", type=float, default=defaults.min_learning_rate)
    group.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up (not in the paper's recipe)")
    group.add_argument("--batch-size", type=int, default=defaults.batch_size, help="per process")
    group.add_argument("--eval-batch-size", type=int)
    group.add_argument("--epochs", type=int, default=defaults.epochs)
    group.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    group.add_argument("--weight-decay", type=float, default=defaults.weight_decay)
    group.add_argument("--max-grad-norm", type=float, help="clip the gradient norm (not in the paper's recipe)")
    group.add_argument("--gradient-accumulation-steps", type=int, default=1)
    group.add_argument("--seed", type=int, default=defaults.seed)
    group.add_argument("--save-steps", type=int, help="also save the training state every N steps")
    group.add_argument("--save-total-limit", type=int, default=defaults.save_total_limit)
    group.add_argument("--resume-from-checkpoint", help="'latest' or a checkpoint folder")
    group.add_argument("--num-workers", type=int, default=0, help="DataLoader workers (image decoding)")
    group.add_argument("--selection-metric", default=defaults.selection_metric,
                       help="validation metric that selects the saved weights")
    group.add_argument("--report-to", help="an accelerate tracker, e.g. tensorboard")


def load_data(args):
    from aesformer_processing import data

    common = {"seed": args.seed, "on_error": args.on_bad_rows}
    if args.data_format == "generic":
        return data.load_generic(args.data, **common)
    if not args.image_dir and args.data_format != "jas":
        raise SystemExit(f"--image-dir is required for --data-format {args.data_format}")
    if args.data_format == "ava":
        return data.load_ava(args.data, args.image_dir, test_list=args.test_list, comments=args.comments, **common)
    if args.data_format == "photonet":
        return data.load_photonet(args.data, args.image_dir, test_list=args.test_list, comments=args.comments,
                                  **common)
    return data.load_jas(args.data, image_dir=args.image_dir, **common)


def _config(args, stage, **extra):
    fields = TrainConfig.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return TrainConfig(stage=stage, **values, **extra)


def pretrain_main(argv=None):
    parser = ArgumentParser(prog="aesformer pretrain",
                            description="Aesformer stage 1: train with comments (EMD of both VL heads + 0.5·ITC).")
    source = parser.add_argument_group("model (one of)")
    source.add_argument("--model", help="a saved Aesformer model folder (with its processor)")
    source.add_argument("--vision-model", help="a pretrained Swin folder or Hub id (with --text-model)")
    source.add_argument("--text-model", help="a pretrained BERT folder or Hub id (its tokenizer is used)")
    source.add_argument("--preset", help="a fresh, randomly initialised model from a preset (with --tokenizer)")
    source.add_argument("--tokenizer", help="tokenizer folder (required with --preset)")
    source.add_argument("--image-size", type=int, help="model input size for --preset")
    add_data_arguments(parser)
    add_training_arguments(parser, PRETRAIN)
    group = parser.add_argument_group("stage 1")
    group.add_argument("--itc-weight", type=float, default=0.5)
    group.add_argument("--queue-size", type=int, default=1024)
    group.add_argument("--momentum", type=float, default=0.995)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from accelerate.utils import set_seed

    # torch seeds each process at random: the fresh weights (all of them with --preset, the heads and fusion layers
    # from --vision-model/--text-model) must come from --seed, or two runs with one seed start apart.
    set_seed(args.seed)
    model, processor = build_stage1_model(args)
    data, spec = load_data(args)
    report = train(model, processor, data, spec, _config(args, PRETRAIN))
    print(f"stage 1 done: model in {Path(args.output_dir) / 'model'}; test {_short(report['test'])}")
    return 0


def build_stage1_model(args):
    from transformers import AutoProcessor, AutoTokenizer

    from modeling_aesformer import AesformerConfig, AesformerImageProcessor, AesformerModel, AesformerProcessor

    if args.model:
        model = AesformerModel.from_pretrained(args.model, use_safetensors=True)  # never a pickled .bin
        return model, AutoProcessor.from_pretrained(args.model)
    if args.vision_model and args.text_model:
        model = AesformerModel.from_vision_text_pretrained(args.vision_model, args.text_model)
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer or args.text_model)
    elif args.preset:
        if not args.tokenizer:
            raise SystemExit("--preset needs --tokenizer")
        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        overrides = {"vision_config": {"image_size": args.image_size}} if args.image_size else {}
        config = AesformerConfig.from_preset(args.preset, **overrides)
        config.text_config.vocab_size = len(tokenizer)
        model = AesformerModel(config)
    else:
        raise SystemExit("give --model, or --vision-model with --text-model, or --preset with --tokenizer")
    size = model.config.vision_config.image_size
    max_length = min(512, model.config.text_config.max_position_embeddings)  # tiny: 128 positions
    processor = AesformerProcessor(AesformerImageProcessor(size={"height": size, "width": size}), tokenizer,
                                   max_length=max_length)
    processor.check_vocab_size(model.config.text_config.vocab_size)
    return model, processor


def adapt_main(argv=None):
    parser = ArgumentParser(prog="aesformer adapt",
                            description="Aesformer stage 2: train a dataset adapter on the frozen backbone "
                                        "(image only; EMD + 10·MSE). Saves <model>/adapters/<name>/.")
    parser.add_argument("--model", required=True, help="the stage-1 model folder; the adapter is saved into it")
    parser.add_argument("--adapter-name", help="default: the dataset's name")
    parser.add_argument("--adapter-preset", choices=("faithful", "lora"), default="faithful")
    add_data_arguments(parser)
    add_training_arguments(parser, ADAPT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from transformers import AutoProcessor

    from modeling_aesformer import AesformerModel

    model = AesformerModel.from_pretrained(args.model, use_safetensors=True)  # never a pickled .bin
    processor = AutoProcessor.from_pretrained(args.model)
    data, spec = load_data(args)
    report = train(model, processor, data, spec, _config(args, ADAPT), model_dir=args.model)
    name = args.adapter_name or spec.name
    print(f"stage 2 done: adapter in {Path(args.model) / 'adapters' / name}; test {_short(report['test'])}")
    return 0


def eval_main(argv=None):
    parser = ArgumentParser(prog="aesformer eval",
                            description="Evaluate an Aesformer model (both branches) on a dataset split.")
    parser.add_argument("--model", required=True, help="model folder (its adapters/ are loaded for --adapter)")
    parser.add_argument("--adapter", help="dataset adapter for the image-only branch ('base' = none)")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=42, help="seed of the split when the data has no split column")
    parser.add_argument("--output", help="write the metrics as JSON here")
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    import json

    from transformers import AutoProcessor

    from modeling_aesformer import AesformerModel
    from modeling_aesformer.adapters import load_adapters

    from .loop import evaluate_branches

    model = AesformerModel.from_pretrained(args.model, use_safetensors=True).eval()  # never a pickled .bin
    processor = AutoProcessor.from_pretrained(args.model)
    if args.adapter and args.adapter != "base":
        model = load_adapters(model, args.model, names=[args.adapter]).eval()
    data, spec = load_data(args)
    results = evaluate_branches(model, processor, data[args.split], spec, adapter=args.adapter,
                                batch_size=args.batch_size, num_workers=args.num_workers)
    print(format_table(results))
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2) + "\n")
    return 0


def format_table(results, columns=("n", "accuracy", "plcc", "srcc", "emd_r1", "emd_r2")):
    """A plain-text table: one row per branch/model, one column per metric."""
    width = max([22, *(len(str(name)) + 2 for name in results)])
    lines = [f"{'':<{width}}" + "".join(f"{c:>10}" for c in columns)]
    for name, metrics in results.items():
        if "skipped" in metrics:
            lines.append(f"{name:<{width}}(skipped: {metrics['skipped']})")
            continue
        cells = []
        for c in columns:
            value = metrics.get(c)
            cells.append(f"{value:>10}" if isinstance(value, int) else f"{value:>10.4f}" if value is not None
                         else f"{'-':>10}")
        lines.append(f"{name:<{width}}" + "".join(cells))
    return "\n".join(lines)


def _short(metrics):
    return ", ".join(f"{k}={metrics[k]:.4f}" for k in ("srcc", "plcc", "accuracy", "emd_r1") if k in metrics)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pretrain_main())
