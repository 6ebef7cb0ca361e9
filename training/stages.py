"""The two training stages as one call each: what `aesformer pretrain|adapt` and `accelerate launch
training/pretrain.py|adapt.py` run once their flags are parsed and the dataset is loaded.

    >>> from aesformer_training.loaders import load_generic
    >>> from aesformer_training.stages import adapt, pretrain
    >>> from aesformer_training.train_config import ADAPT, PRETRAIN, TrainConfig
    >>> data, spec = load_generic("my-photos")
    >>> stage1 = pretrain(data, spec, TrainConfig(stage=PRETRAIN, output_dir="runs/s1"),
    ...                   vision_model="swin-tiny", text_model="bert-base-cased")
    >>> stage2 = adapt(data, spec, TrainConfig(stage=ADAPT, output_dir="runs/s2"), model_dir=stage1.model_dir)

A stage builds or loads its model, trains it (`aesformer_training.loop.train`) and finishes: the rows the loader
dropped or repaired listed in `dataset_report.csv` beside `results.json`, stage 2's results copied beside its adapter
(where `aesformer export` finds them for the model card), the new adapter made the model's default answer for images
without comments, and every folder written readable as the umask allows. Under accelerate only the main process
finishes (two processes renaming one `config.json` temporary file race); `StageResult.main_process` says which one
a call ran on.

Errors: `StageInputError` (a `ValueError`) for inputs that cannot give a model, `ModelSourceError` /
`ModelLoadError` (`modeling_aesformer.loading`) for a model that cannot be found or loaded; the message names the
command-line flag of the item (``--vision-model``, ``--adapter-name``), as the commands print it.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .reports import LoadReport
from .train_config import ADAPT, PRETRAIN, TrainConfig

DATASET_REPORT_CSV = "dataset_report.csv"


class StageInputError(ValueError):
    """Stage inputs that cannot give a model (no model source, an adapter name that is taken or invalid); the message
    names the command-line flag of the item."""


@dataclass
class StageResult:
    """What a stage did.

    Attributes:
        stage: ``"pretrain"`` or ``"adapt"``.
        results: the results dict of the run (also in `output_dir/results.json`): ``test``, ``history``, ...
        output_dir: the run's folder (checkpoints, results.json, dataset_report.csv).
        model_dir: the model folder: stage 1's `output_dir/model`, stage 2's model folder.
        adapter: stage 2's adapter name (None for stage 1).
        adapter_dir: stage 2's `model_dir/adapters/<adapter>` (None for stage 1).
        dataset_report: the loader's `LoadReport` (`spec.report`), None for a hand-made spec.
        dataset_report_csv: where the dropped and repaired rows are listed (written always, only its header when
            the loader kept every row as it was); None for a hand-made spec or on a process that is not the main one.
        default_adapter: stage 2: the adapter that now answers images without comments (None: not changed).
        previous_default: stage 2: the model's default adapter before (None: the model's own modules).
        main_process: False on the other processes of a distributed run: they trained but finished nothing.
    """

    stage: str
    results: dict
    output_dir: Path
    model_dir: Path
    adapter: Optional[str] = None
    adapter_dir: Optional[Path] = None
    dataset_report: Optional[LoadReport] = None
    dataset_report_csv: Optional[Path] = None
    default_adapter: Optional[str] = None
    previous_default: Optional[str] = None
    main_process: bool = True


# ------------------------------------------------------------------------------------------------------ stage 1
def mark_stage1(config) -> None:
    """A stage-1 model answers images without comments with its own image-only modules, which stage 1 does not
    train (and whose inputs it changes): untrained, no default adapter (adapters belong to the old backbone)."""
    config.image_only_trained = False
    config.default_adapter = None
    config.merged_adapter = None


def check_stage1_sources(model=None, vision_model=None, text_model=None, preset=None, tokenizer=None) -> None:
    """The model source of stage 1 is one of: a saved model folder (`model`), a pretrained Swin and BERT
    (`vision_model` with `text_model`), a preset with a tokenizer; each named folder exists (or is a Hub id).
    Checked before anything is built or written."""
    from modeling_aesformer.loading import check_model_source

    if model:
        check_model_source(model, "--model")
    elif vision_model and text_model:
        check_model_source(vision_model, "--vision-model")
        check_model_source(text_model, "--text-model")
    elif not preset:
        raise StageInputError("give --model, or --vision-model with --text-model, or --preset with --tokenizer")
    elif not tokenizer:
        raise StageInputError("--preset needs --tokenizer")
    if tokenizer:
        check_model_source(tokenizer, "--tokenizer", require_config=False)


def _load_pretrained(load, reference, flag):
    """`load()` with a failure to load `reference` turned into one message naming `flag`."""
    from modeling_aesformer.loading import ModelLoadError, describe_load_error

    try:
        return load()
    except OSError as err:
        raise ModelLoadError(describe_load_error(reference, err, flag)) from None


def build_stage1_model(model=None, vision_model=None, text_model=None, preset=None, tokenizer=None,
                       image_size: Optional[int] = None):
    """The model and processor stage 1 starts from, marked as stage 1 (`mark_stage1`): a saved model folder as it
    is (its own image-only modules, not a folded default adapter; its processor as saved), a Swin and a BERT joined
    (`AesformerModel.from_vision_text_pretrained`; the BERT's tokenizer unless `tokenizer`), or a fresh model of a
    preset (its vocabulary sized to `tokenizer`, its input size `image_size`)."""
    from transformers import AutoTokenizer

    from modeling_aesformer import AesformerConfig, AesformerImageProcessor, AesformerModel, AesformerProcessor
    from modeling_aesformer.configuration_aesformer import comment_max_length
    from modeling_aesformer.loading import load_model

    check_stage1_sources(model, vision_model, text_model, preset, tokenizer)
    if model:
        built, processor, _ = load_model(model, default_adapter=False, fit_max_length=False)
        mark_stage1(built.config)
        return built, processor
    if vision_model and text_model:
        built = _load_pretrained(lambda: AesformerModel.from_vision_text_pretrained(vision_model, text_model),
                                 f"{vision_model} / {text_model}", "--vision-model/--text-model")
        words = _load_pretrained(lambda: AutoTokenizer.from_pretrained(tokenizer or text_model),
                                 tokenizer or text_model, "--tokenizer" if tokenizer else "--text-model")
    else:
        words = _load_pretrained(lambda: AutoTokenizer.from_pretrained(tokenizer), tokenizer, "--tokenizer")
        overrides = {"vision_config": {"image_size": image_size}} if image_size else {}
        config = AesformerConfig.from_preset(preset, **overrides)
        config.text_config.vocab_size = len(words)
        built = AesformerModel(config)
    size = built.config.vision_config.image_size
    processor = AesformerProcessor(AesformerImageProcessor(size={"height": size, "width": size}), words,
                                   max_length=comment_max_length(built.config))  # tiny: 128 positions
    processor.check_vocab_size(built.config.text_config.vocab_size)
    mark_stage1(built.config)
    return built, processor


def pretrain(data, spec, config: TrainConfig, *, model=None, vision_model=None, text_model=None, preset=None,
             tokenizer=None, image_size: Optional[int] = None, protocol: Optional[dict] = None) -> StageResult:
    """Stage 1 (with comments): build the model (`build_stage1_model`, its fresh weights from `config.seed`), train
    it on `data` (a DatasetDict of a loader, `spec` its DatasetSpec), finish (see the module doc). The model is
    saved to `config.output_dir/model`."""
    if config.stage != PRETRAIN:
        raise ValueError(f"pretrain() runs stage {PRETRAIN!r}, the config says {config.stage!r}")
    from accelerate.utils import set_seed

    check_stage1_sources(model, vision_model, text_model, preset, tokenizer)
    # torch seeds each process at random: the fresh weights (all of them with a preset, the heads and fusion layers
    # from a Swin and a BERT) must come from the seed, or two runs with one seed start apart.
    set_seed(config.seed)
    built, processor = build_stage1_model(model, vision_model, text_model, preset, tokenizer, image_size)
    results = _train(built, processor, data, spec, config, protocol=protocol)
    output_dir = Path(config.output_dir)
    stage = StageResult(PRETRAIN, results, output_dir, output_dir / "model", dataset_report=spec.report,
                        main_process=_is_main_process())
    if stage.main_process:
        stage.dataset_report_csv = _write_dataset_report(spec, output_dir)
        _follow_umask(output_dir)  # the model, checkpoints and results: readable as the umask allows
    return stage


# ------------------------------------------------------------------------------------------------------ stage 2
def check_adapter_target(name: str, model_dir, overwrite: bool = False, flag: str = "--adapter-name") -> Path:
    """`model_dir/adapters/<name>`, when `name` can name an adapter and the model folder has none of that name yet
    (or `overwrite`); else `StageInputError` naming `flag`."""
    from modeling_aesformer.adapter_weights_aesformer import adapter_folder
    from modeling_aesformer.adapters import check_adapter_name

    try:
        check_adapter_name(name)
    except ValueError as err:
        raise StageInputError(f"{flag}: {err}") from None
    folder = Path(adapter_folder(model_dir, name))
    if folder.exists() and not overwrite:
        raise StageInputError(f"{flag}: the model folder already has an adapter {name!r} ({folder}): pass --overwrite "
                              "to replace it, or choose another --adapter-name")
    return folder


def check_adapt_model(model_dir) -> None:
    """Stage 2 saves its adapter into a local stage-1 model folder: it must exist (with its config.json)."""
    from modeling_aesformer.loading import check_model_source

    check_model_source(model_dir, "--model")
    if not os.path.isdir(model_dir):
        raise StageInputError(f"--model {model_dir}: no model folder at {os.path.abspath(model_dir)} (stage 2 saves "
                              "its adapter into the stage-1 model folder)")


def adapt(data, spec, config: TrainConfig, model_dir, *, overwrite: bool = False,
          make_default: bool = True, protocol: Optional[dict] = None) -> StageResult:
    """Stage 2 (images only): train the dataset adapter `config.adapter_name` (default: the dataset's name) on the
    frozen backbone of the stage-1 model folder `model_dir`, save it to `model_dir/adapters/<name>/` and finish
    (see the module doc): with `make_default` the adapter becomes the model's default answer for images without
    comments. An adapter of that name already saved is an error unless `overwrite`."""
    if config.stage != ADAPT:
        raise ValueError(f"adapt() runs stage {ADAPT!r}, the config says {config.stage!r}")
    from modeling_aesformer.loading import load_model

    check_adapt_model(model_dir)
    name = config.adapter_name or spec.name
    flag = "--adapter-name" if config.adapter_name else "--adapter-name (default: the dataset's name)"
    adapter_dir = check_adapter_target(name, model_dir, overwrite, flag)
    config = dataclasses.replace(config, adapter_name=name)
    # the new adapter starts from the model's own image-only modules, not a folded default
    model, processor, _ = load_model(model_dir, default_adapter=False, fit_max_length=False)
    results = _train(model, processor, data, spec, config, model_dir=model_dir, protocol=protocol)
    output_dir = Path(config.output_dir)
    stage = StageResult(ADAPT, results, output_dir, Path(model_dir), adapter=name, adapter_dir=adapter_dir,
                        dataset_report=spec.report, main_process=_is_main_process())
    if not stage.main_process:  # the folders, results and config are the main process's to touch
        return stage
    stage.dataset_report_csv = _write_dataset_report(spec, output_dir)
    if (output_dir / "results.json").is_file():  # beside the adapter: `aesformer export` reads it for the card
        shutil.copyfile(output_dir / "results.json", adapter_dir / "results.json")
    _follow_umask(output_dir)
    _follow_umask(adapter_dir)
    if make_default:
        from modeling_aesformer.adapters import set_default_adapter

        stage.previous_default = set_default_adapter(model_dir, name)
        stage.default_adapter = name
    return stage


# ------------------------------------------------------------------------------------------------------ helpers
def _train(model, processor, data, spec, config: TrainConfig, model_dir=None, protocol=None) -> dict:
    import json

    from .loop import train  # torch and accelerate: only once the inputs are checked

    if spec.report is not None:  # results.json names the file that lists every dropped and repaired row
        spec.report.rows_csv = DATASET_REPORT_CSV
    results = train(model, processor, data, spec, config, model_dir=model_dir)
    # the protocol of the validation and test numbers: the data as given, the split, and how they were computed
    # (the weights' dtype, accelerate's mixed precision, the collator's full decode)
    from accelerate.state import AcceleratorState

    evaluation = {"dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
                  "mixed_precision": str(AcceleratorState().mixed_precision), "decode": "full"}
    results["protocol"] = {**(protocol or {}), "evaluation": evaluation}
    results_file = Path(config.output_dir) / "results.json"
    if _is_main_process() and results_file.is_file():
        results_file.write_text(json.dumps(json.loads(results_file.read_text()) | {"protocol": results["protocol"]},
                                           indent=2) + "\n")
    return results


def _is_main_process() -> bool:
    from accelerate import PartialState

    return PartialState().is_main_process


def _write_dataset_report(spec, output_dir: Path) -> Optional[Path]:
    """Every dropped and repaired row, next to results.json, always (only its header when there is none: a file
    that exists says nothing was dropped); None for a hand-made spec without a report."""
    report = spec.report
    if report is None:
        return None
    return Path(report.write_csv(output_dir / DATASET_REPORT_CSV))


def _follow_umask(path) -> None:
    from modeling_aesformer.file_modes import follow_umask

    follow_umask(path)


def summary(stage: StageResult) -> list[str]:
    """The lines the commands print when a stage is done (main process)."""
    lines = []
    report = stage.dataset_report
    if report is not None and stage.dataset_report_csv is not None and (report.dropped or report.repaired):
        lines.append(f"dataset report: {report.n_dropped:,} dropped and {report.n_repaired:,} repaired rows listed "
                     f"in {stage.dataset_report_csv}")
    test = _short(stage.results.get("test") or {})
    if stage.stage == PRETRAIN:
        lines.append(f"stage 1 done: model in {stage.model_dir}; test {test}")
    else:
        lines.append(f"stage 2 done: adapter in {stage.adapter_dir}; test {test}")
        if stage.default_adapter is not None:
            previous = stage.previous_default
            lines.append(f"images without comments are now answered by adapter {stage.default_adapter!r}"
                         + (f" (was {previous!r})" if previous and previous != stage.default_adapter else "")
                         + f"; change with `aesformer set-default {stage.model_dir} NAME`")
    return lines


def _short(metrics: dict) -> str:
    return ", ".join([f"n={metrics['n']}"] * ("n" in metrics)
                     + [f"{k}={metrics[k]:.4f}" for k in ("srcc", "plcc", "accuracy", "emd_r1") if k in metrics])


__all__ = ["DATASET_REPORT_CSV", "StageInputError", "StageResult", "adapt", "build_stage1_model",
           "check_adapt_model", "check_adapter_target", "check_stage1_sources", "mark_stage1", "pretrain", "summary"]
