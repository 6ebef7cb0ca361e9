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
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .reports import LoadReport
from .train_config import ADAPT, PRETRAIN, TrainConfig

DATASET_REPORT_CSV = "dataset_report.csv"
RESULTS_JSON = "results.json"
logger = logging.getLogger(__name__)


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
        replaced: what `--overwrite` replaced (empty: nothing), one description per item.
        resumed_from: the checkpoint the run continued (None: it started from the beginning).
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
    replaced: list = dataclasses.field(default_factory=list)
    resumed_from: Optional[str] = None


# ------------------------------------------------------------------------------------------------------ one run
@dataclass
class RunPlan:
    """What a stage run does with its output folder, decided before anything is trained or written.

    Attributes:
        record: the run's identity (`checkpoints.run_record`): output folder, stage, adapter, model folder.
        resume: the checkpoint folder it continues (None: it starts from the beginning).
        replaced: the finished output `--overwrite` replaces, one description per item.
        remove: the paths of the earlier run removed before training (its checkpoints and results).
    """

    record: dict
    resume: Optional[str] = None
    replaced: list = dataclasses.field(default_factory=list)
    remove: list = dataclasses.field(default_factory=list)


def _describe_model(model_dir: Path) -> str:
    from modeling_aesformer.adapters import list_adapters

    adapters = list_adapters(model_dir) if model_dir.is_dir() else []
    text = f"the model in {model_dir}"
    if adapters:
        text += (f" and the {len(adapters)} adapter{'s' if len(adapters) > 1 else ''} trained on it "
                 f"({', '.join(adapters)})")
    return text


def _mismatch(record: dict, found: dict) -> Optional[str]:
    """How checkpoint record `found` differs from this run's `record` (None: the same run)."""
    for key, name in (("stage", "stage"), ("adapter", "adapter"), ("model_dir", "model folder")):
        if record.get(key) != found.get(key):
            return f"{name} {found.get(key)!r}, this run's is {record.get(key)!r}"
    return None


def plan_run(stage: str, output_dir, resume: Optional[str] = None, overwrite: bool = False,
             adapter: Optional[str] = None, model_dir=None) -> RunPlan:
    """Check what a run of `stage` into `output_dir` would replace, before anything is written: finished output
    there (stage 1's model, results.json, checkpoints) is an error (`StageInputError` naming the flags) unless
    `overwrite` (the plan lists what it replaces) or `resume` continues that same run. A checkpoint records its run
    (output folder, stage, adapter, model folder): `latest` and a named checkpoint of another run are refused."""
    from .checkpoints import CHECKPOINTS_DIR, checkpoint_steps, read_run_record, run_record

    out = Path(output_dir)
    plan = RunPlan(run_record(stage, out, adapter, model_dir))
    model = out / "model"
    steps = checkpoint_steps(out)
    existing = []
    if stage == PRETRAIN and (model / "config.json").is_file():
        existing.append(_describe_model(model))
    if (out / RESULTS_JSON).is_file():
        existing.append(f"the results {out / RESULTS_JSON}")
    if steps:
        existing.append(f"{len(steps)} checkpoint{'s' if len(steps) > 1 else ''} in {out / CHECKPOINTS_DIR}")
    if resume:
        if resume == "latest":
            chosen = str(steps[-1]) if steps else None
        elif not os.path.isdir(resume):
            raise StageInputError(f"--resume-from-checkpoint {resume}: no such checkpoint folder")
        else:
            chosen = resume
        if chosen is not None:
            try:
                found = read_run_record(chosen)
            except ValueError as err:
                raise StageInputError(f"--resume-from-checkpoint {resume}: {err}") from None
            if found is None:  # written before checkpoints recorded their run: it cannot be checked
                logger.warning("checkpoint %s records no run (an earlier version): continuing it as this run's",
                               chosen)
            else:
                differs = _mismatch(plan.record, found)
                if differs:
                    raise StageInputError(
                        f"--resume-from-checkpoint {resume}: {chosen} belongs to another run ({differs}): it is not "
                        f"continued; pass --overwrite to start this run over in --output-dir {out} (its checkpoints "
                        "are removed), or choose another --output-dir")
            plan.resume = chosen
            return plan
    if not existing:
        return plan
    if not overwrite:
        what = "; ".join(existing)
        continue_hint = "" if resume else ", --resume-from-checkpoint latest to continue that run"
        raise StageInputError(f"--output-dir {out} holds a finished or earlier run ({what}): pass --overwrite to "
                              f"replace it{continue_hint}, or choose another --output-dir")
    plan.replaced = existing
    plan.remove = [path for path in (out / CHECKPOINTS_DIR, out / RESULTS_JSON, out / DATASET_REPORT_CSV)
                   if path.exists()]
    return plan


def start_run(plan: RunPlan, config: TrainConfig) -> TrainConfig:
    """Carry out `plan` on the main process: say what `--overwrite` replaces, remove the earlier run's checkpoints
    and results (another run's `latest` must never be found beside this one), record this run in
    `checkpoints/run.json`. Returns `config` resuming exactly the checked checkpoint. Called before the training
    loop starts accelerate: its process-group start waits for every process, so no other process reads the folder
    before this one is done (and creating accelerate's state here would miss the launcher's settings)."""
    from .checkpoints import write_run_record

    if int(os.environ.get("RANK", "0")) == 0:  # accelerate's main process: rank 0 (RANK unset: one process)
        if plan.replaced:
            logger.warning("--overwrite: replacing %s", "; ".join(plan.replaced))
        for path in plan.remove:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
        write_run_record(config.output_dir, plan.record)
    return dataclasses.replace(config, resume_from_checkpoint=plan.resume)


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
             tokenizer=None, image_size: Optional[int] = None, protocol: Optional[dict] = None,
             overwrite: bool = False) -> StageResult:
    """Stage 1 (with comments): build the model (`build_stage1_model`, its fresh weights from `config.seed`), train
    it on `data` (a DatasetDict of a loader, `spec` its DatasetSpec), finish (see the module doc). The model is
    saved to `config.output_dir/model`. Finished output there is an error unless `overwrite` or
    `config.resume_from_checkpoint` continues that run (`plan_run`)."""
    if config.stage != PRETRAIN:
        raise ValueError(f"pretrain() runs stage {PRETRAIN!r}, the config says {config.stage!r}")
    from accelerate.utils import set_seed

    check_stage1_sources(model, vision_model, text_model, preset, tokenizer)
    plan = plan_run(PRETRAIN, config.output_dir, config.resume_from_checkpoint, overwrite)
    # torch seeds each process at random: the fresh weights (all of them with a preset, the heads and fusion layers
    # from a Swin and a BERT) must come from the seed, or two runs with one seed start apart.
    set_seed(config.seed)
    built, processor = build_stage1_model(model, vision_model, text_model, preset, tokenizer, image_size)
    config = start_run(plan, config)
    results = _train(built, processor, data, spec, config, protocol=protocol)
    output_dir = Path(config.output_dir)
    stage = StageResult(PRETRAIN, results, output_dir, output_dir / "model", dataset_report=spec.report,
                        main_process=_is_main_process(), replaced=plan.replaced, resumed_from=plan.resume)
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
    comments. An adapter of that name already saved is an error unless `overwrite` or
    `config.resume_from_checkpoint` continues the run that trains it; so is an earlier run's output in
    `config.output_dir` (`plan_run`)."""
    if config.stage != ADAPT:
        raise ValueError(f"adapt() runs stage {ADAPT!r}, the config says {config.stage!r}")
    from modeling_aesformer.loading import load_model

    check_adapt_model(model_dir)
    name = config.adapter_name or spec.name
    flag = "--adapter-name" if config.adapter_name else "--adapter-name (default: the dataset's name)"
    plan = plan_run(ADAPT, config.output_dir, config.resume_from_checkpoint, overwrite, name, model_dir)
    adapter_dir = check_adapter_target(name, model_dir, overwrite or plan.resume is not None, flag)
    if overwrite and adapter_dir.exists() and plan.resume is None:
        plan.replaced.append(f"the adapter {name!r} in {adapter_dir}")
    config = dataclasses.replace(config, adapter_name=name)
    # the new adapter starts from the model's own image-only modules, not a folded default
    model, processor, _ = load_model(model_dir, default_adapter=False, fit_max_length=False)
    config = start_run(plan, config)
    results = _train(model, processor, data, spec, config, model_dir=model_dir, protocol=protocol)
    output_dir = Path(config.output_dir)
    stage = StageResult(ADAPT, results, output_dir, Path(model_dir), adapter=name, adapter_dir=adapter_dir,
                        dataset_report=spec.report, main_process=_is_main_process(), replaced=plan.replaced,
                        resumed_from=plan.resume)
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
    lines = [f"--overwrite replaced {item}" for item in stage.replaced]
    if stage.resumed_from:
        lines.append(f"continued the run of checkpoint {stage.resumed_from}")
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


__all__ = ["DATASET_REPORT_CSV", "RESULTS_JSON", "RunPlan", "StageInputError", "StageResult", "plan_run", "start_run", "adapt", "build_stage1_model",
           "check_adapt_model", "check_adapter_target", "check_stage1_sources", "mark_stage1", "pretrain", "summary"]
