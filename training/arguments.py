"""The command-line arguments of the two training stages, and what turns them into a stage run: the flags (one per
`TrainConfig` field, with its help and default; the data flags; the model source), the checks of the files they name
and the loading of the dataset, each problem a `StageInputError` naming its flag, then `stages.pretrain` /
`stages.adapt`.

`aesformer pretrain|adapt` (`aesformer_cli.train`) add these flags to the command line's own parser;
`accelerate launch training/pretrain.py|adapt.py` run `launch`, which parses them with a plain one (every flag in
both spellings, ``--learning-rate`` and ``--learning_rate``), so the launch scripts need nothing above this layer.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import typing

from .reports import ON_BAD_ROWS_ADVICE, SPLITS, DatasetLoadError, ImagesNotFoundError
from .stages import (StageInputError, StageResult, adapt, check_adapt_model, check_adapter_target,
                     check_stage1_sources, plan_run, pretrain, summary)
from .train_config import ADAPT, PRETRAIN, TrainConfig

DATA_FORMATS = ("generic", "ava", "photonet", "jas")
DEBUG_FLAG = "--debug"


def _add(container, flag: str, **kwargs):
    """`flag` (kebab-case) and its snake_case spelling, as one option (`dest` from the kebab-case one)."""
    snake = "--" + flag[2:].replace("-", "_")
    return container.add_argument(*dict.fromkeys([flag, snake]), **kwargs)


def add_data_arguments(parser):
    group = parser.add_argument_group("data")
    _add(group, "--data", required=True,
                       help="generic: the dataset folder (metadata.csv); ava: AVA.txt; photonet: the vote file; "
                            "jas: the score CSV")
    _add(group, "--data-format", choices=DATA_FORMATS, default="generic")
    _add(group, "--image-dir", action="append", metavar="DIR",
         help="folder of the images (ava, photonet, jas); not searched recursively; repeat it for images in several "
              "folders (ava, photonet: an id found in two folders is an error)")
    _add(group, "--test-list", help="official test ids, one per line (ava: generic_test.jpgl)")
    _add(group, "--train-list", help="official train ids, one per line (ava: generic_ls_train.jpgl); without it "
                                     "train is every id not in --test-list; ids in neither list are left out")
    _add(group, "--comments", action="append", metavar="FILE",
                       help="comments file, any format: CSV/JSONL keyed by id, file name or path; the AVA-Comments "
                            "CSV (index,label,comment); a JSON object key -> comment(s) as DPC-Captions "
                            "(docs/data-format.md); repeat for several files")
    _add(group, "--on-bad-rows", choices=("skip", "fail"), default="skip",
                       help="malformed rows: skip and report them (default) or stop")
    _add(group, "--validation-fraction", type=float,
                       help="part of the ids carved out of train as validation when the data has no split of its "
                            "own (default: ava 0.05, others 0.1)")


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
                shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
                kwargs["help"] += f" (default: {shown})"
        kwargs["type"] = _flag_type(spec, default)
        _add(groups[None if spec.metadata.get("stage") is None else stage], f"--{spec.name.replace('_', '-')}",
             **kwargs)


def _flag_type(spec, default):
    """The command-line type of a `TrainConfig` field: its annotation, `Optional[X]` as `X`, a tuple's items' type."""
    if isinstance(default, tuple):
        return type(default[0])
    kind = spec.type
    if typing.get_origin(kind) is typing.Union:
        kind = next(arg for arg in typing.get_args(kind) if arg is not type(None))
    return kind


def add_pretrain_arguments(parser):
    """Stage 1's flags: the model source (one of), the data, the training."""
    source = parser.add_argument_group("model (one of)")
    _add(source, "--model", help="a saved Aesformer model folder (with its processor)")
    _add(source, "--vision-model", help="a pretrained Swin folder or Hub id (with --text-model)")
    _add(source, "--text-model", help="a pretrained BERT folder or Hub id (its tokenizer is used)")
    _add(source, "--preset", help="a fresh, randomly initialised model from a preset (with --tokenizer)")
    _add(source, "--tokenizer", help="tokenizer folder (required with --preset)")
    _add(source, "--image-size", type=int, help="model input size for --preset")
    _add(parser, "--overwrite", action="store_true",
         help="replace the finished run in --output-dir: its model (and the adapters trained on it), results and "
              "checkpoints (default: an existing run is an error; --resume-from-checkpoint continues it)")
    add_data_arguments(parser)
    add_training_arguments(parser, PRETRAIN)
    return parser


def add_adapt_arguments(parser):
    """Stage 2's flags: the model folder the adapter goes into, the data, the training."""
    _add(parser, "--model", required=True, help="the stage-1 model folder; the adapter is saved into it")
    _add(parser, "--overwrite", action="store_true",
         help="replace an adapter of the same name already saved in the model folder, and an earlier run's results "
              "and checkpoints in --output-dir (--resume-from-checkpoint continues that run instead)")
    _add(parser, "--no-default", action="store_true",
         help="do not make the new adapter the model's default answer for images without comments (default: it "
              "becomes the default; change it later with `aesformer set-default`)")
    add_data_arguments(parser)
    add_training_arguments(parser, ADAPT)
    return parser


PRETRAIN_DESCRIPTION = "Aesformer stage 1: train with comments (EMD of both VL heads + 0.5·ITC)."
ADAPT_DESCRIPTION = ("Aesformer stage 2: train a dataset adapter on the frozen backbone (image only; EMD + 10·MSE). "
                     "Saves <model>/adapters/<name>/.")


def config_from_args(args, stage: str, **extra) -> TrainConfig:
    """The `TrainConfig` of the parsed flags (a flag left out: the field's own default)."""
    fields = TrainConfig.__dataclass_fields__
    values = {k: v for k, v in vars(args).items() if k in fields and v is not None}
    return TrainConfig(stage=stage, **{**values, **extra})


def run_pretrain(args) -> StageResult:
    """Stage 1 from its parsed flags. Every input is checked before anything is built or written: a run that cannot
    train writes nothing."""
    check_stage1_sources(args.model, args.vision_model, args.text_model, args.preset, args.tokenizer)
    plan_run(PRETRAIN, args.output_dir, args.resume_from_checkpoint, args.overwrite)  # finished work: checked first
    data, spec = load_data(args)
    check_splits(args, data, spec, SPLITS, with_comments=True)
    return pretrain(data, spec, config_from_args(args, PRETRAIN), model=args.model, vision_model=args.vision_model,
                    text_model=args.text_model, preset=args.preset, tokenizer=args.tokenizer,
                    image_size=args.image_size, protocol=data_protocol(args, spec), overwrite=args.overwrite)


def run_adapt(args) -> StageResult:
    """Stage 2 from its parsed flags. Every input is checked before anything is loaded or written: the model folder
    never gets an untrained adapter."""
    check_adapt_model(args.model)

    def check_target(name, flag="--adapter-name"):  # an adapter of the run being continued may be replaced
        check_adapter_target(name, args.model, True, flag)  # the name first: the run record holds it
        plan = plan_run(ADAPT, args.output_dir, args.resume_from_checkpoint, args.overwrite, name, args.model)
        check_adapter_target(name, args.model, args.overwrite or plan.resume is not None, flag)

    if args.adapter_name is not None:
        check_target(args.adapter_name)
    data, spec = load_data(args)
    if args.adapter_name is None:
        check_target(spec.name, "--adapter-name (default: the dataset's name)")
    check_splits(args, data, spec, SPLITS)
    return adapt(data, spec, config_from_args(args, ADAPT), args.model, overwrite=args.overwrite,
                 make_default=not args.no_default, protocol=data_protocol(args, spec))


def end_process_group() -> None:
    """End the torch.distributed process group a launched run made (`accelerate launch`), before the interpreter
    exits: left to the exit, its threads are torn down in no set order (a two-process CI run once aborted at exit
    with "terminate called without an active exception"). For the commands only: a Python caller's own group is
    the caller's."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def launch(stage: str, argv=None) -> int:
    """The launch scripts' command (`accelerate launch training/<stage>.py ...`): parse, run the stage, print what
    `aesformer <stage>` prints (main process). An input problem is one line ``<script>: error: ...`` on stderr and
    exit status 2 (``--debug``: the traceback instead)."""
    prog = f"training/{stage}.py"
    parser = argparse.ArgumentParser(prog=prog, description=PRETRAIN_DESCRIPTION if stage == PRETRAIN
                                     else ADAPT_DESCRIPTION)
    (add_pretrain_arguments if stage == PRETRAIN else add_adapt_arguments)(parser)
    parser.add_argument(DEBUG_FLAG, action="store_true",
                        help="on an error, show the full Python traceback instead of the message alone")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = (run_pretrain if stage == PRETRAIN else run_adapt)(args)
    except (ValueError, OSError, ImportError) as error:
        if args.debug:
            raise
        message = f"{error.details}\n{ON_BAD_ROWS_ADVICE}" if isinstance(error, DatasetLoadError) else str(error)
        print(f"{prog}: error: {message}", file=sys.stderr)
        return 2
    finally:
        end_process_group()
    if result.main_process:
        print("\n".join(summary(result)))
    return 0


def check_data_arguments(args):
    """The data flags name files and folders that exist (before anything is loaded or written)."""
    generic = args.data_format == "generic"
    if not os.path.exists(args.data):
        raise StageInputError(f"--data {args.data}: no such {'folder' if generic else 'file'}")
    if generic and not os.path.isdir(args.data):
        raise StageInputError(f"--data {args.data}: the generic format is a folder (with metadata.csv); for "
                           f"another layout pass --data-format ({', '.join(DATA_FORMATS[1:])})")
    if generic and not os.path.isfile(os.path.join(args.data, "metadata.csv")):
        raise StageInputError(f"--data {args.data}: the folder has no metadata.csv (the generic format; see "
                           "docs/data-format.md); for AVA, Photo.net or JAS files pass --data-format")
    if not generic and os.path.isdir(args.data):
        raise StageInputError(f"--data {args.data}: a folder, but --data-format {args.data_format} reads a file")
    if not args.image_dir and args.data_format in ("ava", "photonet"):
        raise StageInputError(f"--image-dir is required for --data-format {args.data_format}")
    for folder in args.image_dir or ():
        if not os.path.isdir(folder):
            raise StageInputError(f"--image-dir {folder}: no such folder")
    if args.image_dir and len(args.image_dir) > 1 and args.data_format not in ("ava", "photonet"):
        raise StageInputError(f"--image-dir is given {len(args.image_dir)} times: several image folders are read for "
                              f"--data-format ava and photonet, not {args.data_format}")
    for flag in ("--test-list", "--train-list"):
        path = getattr(args, flag[2:].replace("-", "_"), None)
        if path and not os.path.isfile(path):
            raise StageInputError(f"{flag} {path}: no such file")
        if path and args.data_format == "jas":
            raise StageInputError(f"{flag} is read for --data-format ava, photonet and generic, not jas")
    for path in args.comments or ():
        if not os.path.isfile(path):
            raise StageInputError(f"--comments {path}: no such file")


def _flag_of(args, text):
    """The data flag whose file a loader's message names (for the prefix of the command-line message)."""
    for flag, values in (("--comments", args.comments or ()), ("--test-list", [args.test_list]),
                         ("--train-list", [getattr(args, "train_list", None)]), ("--image-dir", args.image_dir or ()),
                         ("--data", [args.data])):
        for value in values:
            if value and (os.path.abspath(value) in text or value in text):
                return f"{flag} {value}"
    return "--data"


def load_data(args):
    """Loads the dataset the data flags name. Every input problem becomes a `StageInputError` naming its flag."""
    from . import loaders as data
    from .comments import AmbiguousCommentKeysError, CommentsFileError

    check_data_arguments(args)
    common = {"seed": args.seed, "on_error": args.on_bad_rows, "comments": args.comments or None}
    fractions = {} if args.validation_fraction is None else {"validation_fraction": args.validation_fraction}
    if fractions and args.data_format == "jas":
        raise StageInputError("--validation-fraction does not apply to --data-format jas (its split has fixed sizes)")
    lists = {"test_list": args.test_list, "train_list": getattr(args, "train_list", None)}
    image_dirs = args.image_dir or []
    try:
        if args.data_format == "generic":
            loaded = data.load_generic(args.data, **common, **fractions, **lists)
        elif args.data_format == "ava":
            loaded = data.load_ava(args.data, image_dirs, **lists, **common, **fractions)
        elif args.data_format == "photonet":
            loaded = data.load_photonet(args.data, image_dirs, **lists, **common, **fractions)
        else:
            loaded = data.load_jas(args.data, image_dir=image_dirs[0] if image_dirs else None, **common)
        if loaded[1].report is not None and loaded[1].report.images_not_found is not None:
            raise loaded[1].report.images_not_found
        return loaded
    except ImagesNotFoundError as err:
        if args.data_format == "generic":
            raise StageInputError(err.describe("--data", as_typed=args.data)) from None
        if args.image_dir:
            raise StageInputError(err.describe("--image-dir", as_typed=args.image_dir[0])) from None
        raise StageInputError(err.describe("--image-dir")) from None
    except (AmbiguousCommentKeysError, CommentsFileError) as err:
        raise StageInputError(f"--comments: {err}") from None
    except DatasetLoadError:
        raise  # its own message; the caller adds the --on-bad-rows advice
    except (ValueError, OSError) as err:
        raise StageInputError(f"{_flag_of(args, str(err))}: {err}") from None


def data_protocol(args, spec) -> dict:
    """What a results file records of the data: the data flags as given, the dataset's scale, how the splits were
    made (rule and seed) and the rows kept per split."""
    report = spec.report
    return {
        "data": {"data": args.data, "data_format": args.data_format, "image_dir": list(args.image_dir or []),
                 "test_list": args.test_list, "train_list": getattr(args, "train_list", None),
                 "comments": list(args.comments or []), "on_bad_rows": args.on_bad_rows,
                 "validation_fraction": args.validation_fraction},
        "dataset": spec.name,
        "scale": {"num_bins": spec.num_bins, "score_range": list(spec.score_range), "threshold": spec.threshold},
        "split_rule": report.split_rule if report is not None else None,
        "seed": args.seed,
        "split_sizes": dict(report.split_sizes) if report is not None else None,
    }


def _has_split_column(folder):
    import csv

    with open(os.path.join(folder, "metadata.csv"), encoding="utf-8-sig", newline="") as handle:
        return "split" in [name.strip() for name in next(csv.reader(handle), [])]


def check_splits(args, data, spec, needed, with_comments=False):
    """Each split in `needed` has rows (stage 1: rows with comments); else a `StageInputError` that says which split is
    empty, what was kept, and which flag to look at."""
    sizes = {split: len(data[split]) for split in SPLITS}
    usable = dict(sizes)
    report = spec.report
    if with_comments:
        from aesformer_processing.processing_aesformer import has_comment_text

        usable = {split: sum(1 for c in data[split]["comments"] if has_comment_text(c)) for split in SPLITS}
        if sum(sizes.values()) and not sum(usable.values()):
            raise StageInputError(_no_comments_message(args, report, sum(sizes.values()), data))
    kept = ", ".join(f"{split} {sizes[split]:,}" for split in SPLITS)
    for split in needed:
        if usable[split]:
            continue
        if with_comments and sizes[split]:
            raise StageInputError(
                f"the {split} split has no image with comments ({sizes[split]:,} images without; with comments: "
                + ", ".join(f"{s} {usable[s]:,}" for s in SPLITS) + "): stage 1 trains and selects on images with "
                "comments; add comments for them (--comments)")
        if sum(sizes.values()) == 0:
            dropped = ", ".join(f"{r} {n:,}" for r, n in sorted(report.counts().items())) if report else ""
            raise StageInputError(f"--data {args.data}: no usable row ({report.total_rows if report else 0:,} read"
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
        raise StageInputError(f"the {split} split is empty (kept: {kept}); {advice}")
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
    root = args.data if args.data_format == "generic" else (args.image_dir or [os.path.dirname(args.data)])[0]
    relative = os.path.relpath(row["image"], root).replace(os.sep, "/")
    name = os.path.basename(row["image"])
    forms = dict.fromkeys([relative, name, os.path.splitext(name)[0]])
    return " or ".join(repr(form) for form in forms)


__all__ = ["DATA_FORMATS", "add_adapt_arguments", "add_data_arguments", "add_pretrain_arguments", "data_protocol",
           "add_training_arguments", "check_data_arguments", "check_splits", "config_from_args", "end_process_group",
           "launch",
           "load_data", "run_adapt", "run_pretrain"]
