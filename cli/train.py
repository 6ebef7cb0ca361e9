"""Command lines of the two training stages: `training/pretrain.py` and `training/adapt.py` are thin wrappers
around `pretrain_main` / `adapt_main`, so `accelerate launch training/<stage>.py ...`, `aesformer pretrain|adapt ...`
and the tests run the same code."""

import dataclasses
import logging
import os
import shutil
import sys
import typing
from pathlib import Path

from aesformer_training.train_config import ADAPT, PRETRAIN, TrainConfig

from .common import DEBUG_FLAG, DEBUG_HELP, ArgumentParser, CommandError

DATA_FORMATS = ("generic", "ava", "photonet", "jas")


def add_data_arguments(parser):
    group = parser.add_argument_group("data")
    group.add_argument("--data", required=True,
                       help="generic: the dataset folder (metadata.csv); ava: AVA.txt; photonet: the vote file; "
                            "jas: the score CSV")
    group.add_argument("--data-format", choices=DATA_FORMATS, default="generic")
    group.add_argument("--image-dir", help="folder of the images (ava, photonet, jas); not searched recursively")
    group.add_argument("--test-list", help="official test ids, one per line (ava: generic_test.jpgl)")
    group.add_argument("--comments", action="append", metavar="FILE",
                       help="comments file, any format: CSV/JSONL keyed by id, file name or path; the AVA-Comments "
                            "CSV (index,label,comment); a JSON object key -> comment(s) as DPC-Captions "
                            "(docs/data-format.md); repeat for several files")
    group.add_argument("--on-bad-rows", choices=("skip", "fail"), default="skip",
                       help="malformed rows: skip and report them (default) or stop")
    group.add_argument("--validation-fraction", type=float,
                       help="part of the ids carved out of train as validation when the data has no split of its "
                            "own (default: ava 0.05, others 0.1)")
    parser.add_argument(DEBUG_FLAG, action="store_true", help=DEBUG_HELP)


def add_training_arguments(parser, stage):
    """One flag per `TrainConfig` field (its metadata holds the help) that `stage` reads, with the field's default
    (the stage's own for the learning rate and batch size): `--learning-rate` for `learning_rate`, `--learning_rate`
    too."""
    defaults = TrainConfig(stage=stage, output_dir="")
    groups = {None: parser.add_argument_group("training (defaults: the paper's recipe)"),
              PRETRAIN: parser.add_argument_group("stage 1"), ADAPT: parser.add_argument_group("stage 2")}
    for spec in dataclasses.fields(TrainConfig):
        meta = dict(spec.metadata)
        if spec.name == "stage" or meta.pop("stage", None) not in (None, stage):
            continue
        stage_default = meta.pop("stage_default", False)
        kwargs = {"help": meta.pop("help"), **meta}
        # a field's own default, or the stage's (learning rate, batch size); `None` fields resolve in TrainConfig
        default = getattr(defaults, spec.name) if stage_default else spec.default
        if default is dataclasses.MISSING:
            default = None
        if not kwargs.get("required"):
            kwargs["default"] = list(default) if isinstance(default, tuple) else default
            if default is not None:
                kwargs["help"] += f" (default: {' '.join(map(str, default)) if isinstance(default, tuple) else default})"
        kwargs["type"] = _flag_type(spec, default)
        groups[None if spec.metadata.get("stage") is None else stage].add_argument(
            f"--{spec.name.replace('_', '-')}", **kwargs)


def _flag_type(spec, default):
    """The command-line type of a `TrainConfig` field: its annotation, `Optional[X]` as `X`, a tuple's items' type."""
    if isinstance(default, tuple):
        return type(default[0])
    kind = spec.type
    if typing.get_origin(kind) is typing.Union:
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    return kind


def check_data_arguments(args):
    """The data flags name files and folders that exist (before anything is loaded or written)."""
    generic = args.data_format == "generic"
    if not os.path.exists(args.data):
        raise CommandError(f"--data {args.data}: no such {'folder' if generic else 'file'}")
    if generic and not os.path.isdir(args.data):
        raise CommandError(f"--data {args.data}: the generic format is a folder (with metadata.csv); for "
                           f"another layout pass --data-format ({', '.join(DATA_FORMATS[1:])})")
    if generic and not os.path.isfile(os.path.join(args.data, "metadata.csv")):
        raise CommandError(f"--data {args.data}: the folder has no metadata.csv (the generic format; see "
                           "docs/data-format.md); for AVA, Photo.net or JAS files pass --data-format")
    if not generic and os.path.isdir(args.data):
        raise CommandError(f"--data {args.data}: a folder, but --data-format {args.data_format} reads a file")
    if not args.image_dir and args.data_format in ("ava", "photonet"):
        raise CommandError(f"--image-dir is required for --data-format {args.data_format}")
    if args.image_dir and not os.path.isdir(args.image_dir):
        raise CommandError(f"--image-dir {args.image_dir}: no such folder")
    if args.test_list and not os.path.isfile(args.test_list):
        raise CommandError(f"--test-list {args.test_list}: no such file")
    if args.test_list and args.data_format not in ("ava", "photonet"):
        raise CommandError(f"--test-list is read for --data-format ava and photonet, not {args.data_format}")
    for path in args.comments or ():
        if not os.path.isfile(path):
            raise CommandError(f"--comments {path}: no such file")


def _flag_of(args, text):
    """The data flag whose file a loader's message names (for the prefix of the command-line message)."""
    for flag, values in (("--comments", args.comments or ()), ("--test-list", [args.test_list]),
                         ("--image-dir", [args.image_dir]), ("--data", [args.data])):
        for value in values:
            if value and (os.path.abspath(value) in text or value in text):
                return f"{flag} {value}"
    return "--data"


def load_data(args):
    """Loads the dataset the data flags name. Every input problem becomes a `CommandError` naming its flag."""
    from aesformer_training import loaders as data
    from aesformer_training.reports import DatasetLoadError, ImagesNotFoundError
    from aesformer_training.comments import AmbiguousCommentKeysError, CommentsFileError

    check_data_arguments(args)
    common = {"seed": args.seed, "on_error": args.on_bad_rows, "comments": args.comments or None}
    fractions = {} if args.validation_fraction is None else {"validation_fraction": args.validation_fraction}
    if fractions and args.data_format == "jas":
        raise CommandError("--validation-fraction does not apply to --data-format jas (its split has fixed sizes)")
    try:
        if args.data_format == "generic":
            loaded = data.load_generic(args.data, **common, **fractions)
        elif args.data_format == "ava":
            loaded = data.load_ava(args.data, args.image_dir, test_list=args.test_list, **common, **fractions)
        elif args.data_format == "photonet":
            loaded = data.load_photonet(args.data, args.image_dir, test_list=args.test_list, **common, **fractions)
        else:
            loaded = data.load_jas(args.data, image_dir=args.image_dir, **common)
        if loaded[1].report is not None and loaded[1].report.images_not_found is not None:
            raise loaded[1].report.images_not_found
        return loaded
    except ImagesNotFoundError as err:
        if args.data_format == "generic":
            raise CommandError(err.describe("--data", as_typed=args.data)) from None
        if args.image_dir:
            raise CommandError(err.describe("--image-dir", as_typed=args.image_dir)) from None
        raise CommandError(err.describe("--image-dir")) from None
    except (AmbiguousCommentKeysError, CommentsFileError) as err:
        raise CommandError(f"--comments: {err}") from None
    except DatasetLoadError:
        raise  # its own message, with the --on-bad-rows advice (run_command)
    except (ValueError, OSError) as err:
        raise CommandError(f"{_flag_of(args, str(err))}: {err}") from None


def _has_split_column(folder):
    import csv

    with open(os.path.join(folder, "metadata.csv"), encoding="utf-8-sig", newline="") as handle:
        return "split" in [name.strip() for name in next(csv.reader(handle), [])]


def check_splits(args, data, spec, needed, with_comments=False):
    """Each split in `needed` has rows (stage 1: rows with comments); else a `CommandError` that says which split is
    empty, what was kept, and which flag to look at."""
    from aesformer_training.reports import SPLITS

    sizes = {split: len(data[split]) for split in SPLITS}
    usable = dict(sizes)
    report = spec.report
    if with_comments:
        usable = {split: sum(1 for c in data[split]["comments"] if str(c or "").strip()) for split in SPLITS}
        if sum(sizes.values()) and not sum(usable.values()):
            raise CommandError(_no_comments_message(args, report, sum(sizes.values()), data))
    kept = ", ".join(f"{split} {sizes[split]:,}" for split in SPLITS)
    for split in needed:
        if usable[split]:
            continue
        if with_comments and sizes[split]:
            raise CommandError(
                f"the {split} split has no image with comments ({sizes[split]:,} images without; with comments: "
                + ", ".join(f"{s} {usable[s]:,}" for s in SPLITS) + "): stage 1 trains and selects on images with "
                "comments; add comments for them (--comments)")
        if sum(sizes.values()) == 0:
            dropped = ", ".join(f"{r} {n:,}" for r, n in sorted(report.counts().items())) if report else ""
            raise CommandError(f"--data {args.data}: no usable row ({report.total_rows if report else 0:,} read"
                               + (f"; dropped: {dropped}" if dropped else "") + ")")
        if split == "test" and getattr(args, "test_list", None):
            advice = f"--test-list {args.test_list}: none of its ids is a kept row of --data {args.data}"
        elif args.data_format == "generic" and _has_split_column(args.data):
            advice = (f"--data {args.data}: the split column of metadata.csv puts no kept row in {split}; add some, "
                      "or remove the column for a seeded split")
        elif split == "validation" and args.data_format != "jas":
            fraction = args.validation_fraction
            advice = (f"the seeded validation split ({'the default' if fraction is None else fraction} "
                      f"--validation-fraction of the ids, dropped rows included) holds no kept row; raise "
                      "--validation-fraction")
        else:
            advice = f"--data {args.data}: {sum(sizes.values()):,} kept rows are too few to split"
        raise CommandError(f"the {split} split is empty (kept: {kept}); {advice}")
    return usable


def _no_comments_message(args, report, n_kept, data):
    comments = report.comments if report is not None else None
    if not args.comments and not comments:
        return (f"stage 1 trains on images with comments, and none of the {n_kept:,} kept images has any: pass "
                "--comments FILE (docs/data-format.md)" + (" or fill the comments column of metadata.csv"
                                                           if args.data_format == "generic" else ""))
    if comments and comments["keys"] and not comments["matched_keys"]:
        examples = ", ".join(repr(k) for k in comments["unmatched_examples"][:3])
        return (f"--comments {', '.join(args.comments)}: none of its {comments['keys']:,} keys matches one of the "
                f"{n_kept:,} kept images (keys like {examples}; images are named by their path relative to the "
                "image folder, file name or stem, e.g. " + _image_example(args, data) + ")")
    return (f"--comments {', '.join(args.comments or [])}: none of the {n_kept:,} kept images has comment text "
            f"({comments['matched_keys'] if comments else 0:,} keys matched)")


def _image_example(args, data):
    row = next(row for split in data.values() for row in split)
    root = args.data if args.data_format == "generic" else args.image_dir or os.path.dirname(args.data)
    relative = os.path.relpath(row["image"], root).replace(os.sep, "/")
    name = os.path.basename(row["image"])
    forms = dict.fromkeys([relative, name, os.path.splitext(name)[0]])
    return " or ".join(repr(form) for form in forms)


def _is_main_process():
    """After training, one process (of every launched one) copies results, sets the default adapter and prints:
    two writing one config.json through one temporary name race (the second rename finds no file)."""
    from accelerate import PartialState

    return PartialState().is_main_process


def print_report_location(report, output_dir):
    """Writes every dropped and repaired row next to results.json and says where (called by the main process)."""
    if report is None or not (report.dropped or report.repaired):
        return
    path = report.write_csv(Path(output_dir) / DATASET_REPORT_CSV)
    print(f"dataset report: {report.n_dropped:,} dropped and {report.n_repaired:,} repaired rows listed in {path}")


DATASET_REPORT_CSV = "dataset_report.csv"


def _config(args, stage, **extra):
    fields = TrainConfig.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return TrainConfig(stage=stage, **{**values, **extra})


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
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from accelerate.utils import set_seed

    # Every input is checked before anything is built or written: a run that cannot train writes nothing.
    _check_stage1_sources(args)
    data, spec = load_data(args)
    check_splits(args, data, spec, ("train", "validation", "test"), with_comments=True)
    # torch seeds each process at random: the fresh weights (all of them with --preset, the heads and fusion layers
    # from --vision-model/--text-model) must come from --seed, or two runs with one seed start apart.
    set_seed(args.seed)
    model, processor = build_stage1_model(args)
    if spec.report is not None:
        spec.report.rows_csv = DATASET_REPORT_CSV if (spec.report.dropped or spec.report.repaired) else None
    from aesformer_training.loop import train  # torch: only once the arguments are parsed and checked
    from modeling_aesformer.file_modes import follow_umask

    report = train(model, processor, data, spec, _config(args, PRETRAIN))
    if not _is_main_process():
        return 0
    print_report_location(spec.report, args.output_dir)
    follow_umask(args.output_dir)  # the model, checkpoints and results: readable as the umask allows
    print(f"stage 1 done: model in {Path(args.output_dir) / 'model'}; test {_short(report['test'])}")
    return 0


def _check_stage1_sources(args):
    from aesformer_cli.loading import check_model_source

    # check_model_source raises FileNotFoundError: a one-line error with status 2 through run_command
    if args.model:
        check_model_source(args.model, "--model")
    elif args.vision_model and args.text_model:
        check_model_source(args.vision_model, "--vision-model")
        check_model_source(args.text_model, "--text-model")
    elif not args.preset:
        raise CommandError("give --model, or --vision-model with --text-model, or --preset with --tokenizer")
    elif not args.tokenizer:
        raise CommandError("--preset needs --tokenizer")
    if args.tokenizer:
        check_model_source(args.tokenizer, "--tokenizer", require_config=False)


def _load_pretrained(load, reference, flag="--model"):
    """`load()` with a failure to load `reference` turned into one message naming `flag`."""
    from aesformer_cli.loading import describe_load_error

    try:
        return load()
    except OSError as err:
        raise CommandError(describe_load_error(reference, err, flag)) from None


def build_stage1_model(args):
    from transformers import AutoTokenizer

    from modeling_aesformer import AesformerConfig, AesformerImageProcessor, AesformerModel, AesformerProcessor

    if args.model:
        from aesformer_cli.loading import load_model

        # the model's own image-only modules, not a folded default adapter
        # (the processor is saved with the trained model: kept as it is)
        model, processor, _ = load_model(args.model, default_adapter=False, fit_max_length=False)
        mark_stage1(model.config)
        return model, processor
    if args.vision_model and args.text_model:
        model = _load_pretrained(lambda: AesformerModel.from_vision_text_pretrained(args.vision_model,
                                                                                    args.text_model),
                                 f"{args.vision_model} / {args.text_model}", "--vision-model/--text-model")
        tokenizer = _load_pretrained(lambda: AutoTokenizer.from_pretrained(args.tokenizer or args.text_model),
                                     args.tokenizer or args.text_model, "--tokenizer" if args.tokenizer else
                                     "--text-model")
    elif args.preset:
        if not args.tokenizer:
            raise CommandError("--preset needs --tokenizer")
        tokenizer = _load_pretrained(lambda: AutoTokenizer.from_pretrained(args.tokenizer), args.tokenizer,
                                     "--tokenizer")
        overrides = {"vision_config": {"image_size": args.image_size}} if args.image_size else {}
        config = AesformerConfig.from_preset(args.preset, **overrides)
        config.text_config.vocab_size = len(tokenizer)
        model = AesformerModel(config)
    else:
        raise CommandError("give --model, or --vision-model with --text-model, or --preset with --tokenizer")
    size = model.config.vision_config.image_size
    from modeling_aesformer.configuration_aesformer import comment_max_length

    max_length = comment_max_length(model.config)  # tiny: 128 positions
    processor = AesformerProcessor(AesformerImageProcessor(size={"height": size, "width": size}), tokenizer,
                                   max_length=max_length)
    processor.check_vocab_size(model.config.text_config.vocab_size)
    mark_stage1(model.config)
    return model, processor


def mark_stage1(config):
    """A stage-1 model answers images without comments with its own image-only modules, which stage 1 does not
    train (and whose inputs it changes): untrained, no default adapter (adapters belong to the old backbone)."""
    config.image_only_trained = False
    config.default_adapter = None
    config.merged_adapter = None


def adapt_main(argv=None):
    parser = ArgumentParser(prog="aesformer adapt",
                            description="Aesformer stage 2: train a dataset adapter on the frozen backbone "
                                        "(image only; EMD + 10·MSE). Saves <model>/adapters/<name>/.")
    parser.add_argument("--model", required=True, help="the stage-1 model folder; the adapter is saved into it")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an adapter of the same name already saved in the model folder")
    parser.add_argument("--no-default", action="store_true",
                        help="do not make the new adapter the model's default answer for images without comments "
                             "(default: it becomes the default; change it later with `aesformer set-default`)")
    add_data_arguments(parser)
    add_training_arguments(parser, ADAPT)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from aesformer_cli.loading import check_model_source

    # Every input is checked before anything is loaded or written: the model folder never gets an untrained adapter.
    check_model_source(args.model, "--model")  # FileNotFoundError: a one-line error, status 2 (run_command)
    if not os.path.isdir(args.model):
        raise CommandError(f"--model {args.model}: no model folder at {os.path.abspath(args.model)} (stage 2 saves "
                           "its adapter into the stage-1 model folder)")
    if args.adapter_name is not None:
        _check_adapter_name(args.adapter_name, args.model, args.overwrite, "--adapter-name")
    data, spec = load_data(args)
    name = args.adapter_name or spec.name
    if args.adapter_name is None:
        _check_adapter_name(name, args.model, args.overwrite, "--adapter-name (default: the dataset's name)")
    check_splits(args, data, spec, ("train", "validation", "test"))
    from aesformer_cli.loading import load_model

    # the new adapter starts from the model's own image-only modules, not a folded default
    model, processor, _ = load_model(args.model, default_adapter=False, fit_max_length=False)
    if spec.report is not None:
        spec.report.rows_csv = DATASET_REPORT_CSV if (spec.report.dropped or spec.report.repaired) else None
    from aesformer_training.loop import train
    from modeling_aesformer.file_modes import follow_umask

    report = train(model, processor, data, spec, _config(args, ADAPT, adapter_name=name), model_dir=args.model)
    if not _is_main_process():  # the folders, results and config are the main process's to touch
        return 0
    print_report_location(spec.report, args.output_dir)
    results = Path(args.output_dir) / "results.json"
    if results.is_file():  # beside the adapter, so that `aesformer export` finds its evaluation for the card
        shutil.copyfile(results, Path(args.model) / "adapters" / name / "results.json")
    follow_umask(args.output_dir)
    follow_umask(Path(args.model) / "adapters" / name)
    print(f"stage 2 done: adapter in {Path(args.model) / 'adapters' / name}; test {_short(report['test'])}")
    if not args.no_default:
        from modeling_aesformer.adapters import set_default_adapter

        previous = set_default_adapter(args.model, name)
        print(f"images without comments are now answered by adapter {name!r}"
              + (f" (was {previous!r})" if previous and previous != name else "")
              + f"; change with `aesformer set-default {args.model} NAME`")
    return 0


def _check_adapter_name(name, model_dir, overwrite, flag):
    from modeling_aesformer.adapters import ADAPTERS_DIR, check_adapter_name

    try:
        check_adapter_name(name)
    except ValueError as err:
        raise CommandError(f"{flag}: {err}") from None
    folder = Path(model_dir) / ADAPTERS_DIR / name
    if folder.exists() and not overwrite:
        raise CommandError(f"{flag}: the model folder already has an adapter {name!r} ({folder}): pass --overwrite to "
                           "replace it, or choose another --adapter-name")


def eval_main(argv=None):
    from aesformer_cli.precision import add_dtype_argument

    parser = ArgumentParser(prog="aesformer eval",
                            description="Evaluate an Aesformer model (both branches) on a dataset split.")
    parser.add_argument("--model", required=True, help="model folder (its adapters/ are loaded for --adapter)")
    parser.add_argument("--adapter", help="dataset adapter for the image-only branch ('base' = none; default: the "
                                          "model's default adapter, see `aesformer set-default`)")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--seed", type=int, default=42, help="seed of the split when the data has no split column")
    parser.add_argument("--output", help="write the metrics as JSON here")
    add_dtype_argument(parser)
    add_data_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import json

    from aesformer_cli.loading import check_model_source

    # Inputs first: a run that can evaluate nothing stops before loading the model or writing --output.
    check_model_source(args.model, "--model")  # FileNotFoundError: a one-line error, status 2 (run_command)
    if args.adapter and args.adapter != "base":
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
    from aesformer_cli.loading import load_model
    from aesformer_cli.precision import chosen_dtype

    from aesformer_training.prediction import evaluate_branches

    # without --adapter the model's default adapter is folded in (see from_pretrained); evaluation runs on the CPU
    model, processor, _ = load_model(args.model, [args.adapter] if args.adapter else None,
                                     default_adapter=args.adapter is None, dtype=chosen_dtype(args, "cpu"))
    from modeling_aesformer.pipeline_aesformer import untrained_answer_message

    warning = untrained_answer_message(model, [args.adapter or "base"])
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    results = evaluate_branches(model, processor, data[args.split], spec, adapter=args.adapter,
                                batch_size=args.batch_size, num_workers=args.num_workers)
    if "skipped" not in results.get("image_only", {"skipped": ""}):
        from modeling_aesformer.adapter_weights_aesformer import base_model, image_only_answer

        name, trained = image_only_answer(base_model(model).config, args.adapter or "base")
        results["image_only"].update(adapter=name, trained=trained)
        print(f"image-only branch answered by adapter {name!r}" + ("" if trained else " (UNTRAINED head)"))
    print(format_table(results))
    if all("skipped" in metrics for metrics in results.values()):
        reasons = "; ".join(f"{branch}: {metrics['skipped']}" for branch, metrics in results.items())
        raise CommandError(f"nothing could be evaluated on the {args.split} split ({reasons})"
                           + (f"; --output {args.output} was not written" if args.output else ""))
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
