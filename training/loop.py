"""The one training loop behind `training/pretrain.py` (stage 1), `training/adapt.py` (stage 2), the CLI and tests.

Stage 1 ("pretrain", with comments): loss = EMD(p_img) + EMD(p_text) + 0.5·ITC (the paper's recipe). Everything trains
except the image-only parts (multi-scale adapter, V-FFN, vision norm and head), which stay frozen.
Stage 2 ("adapt", image only): a dataset adapter (PEFT) on the frozen backbone; loss = EMD + 10·MSE.

Runs on `accelerate`: gradient accumulation, mixed precision from the accelerate config, `save_state` every N steps
and at each epoch end, resume from `latest` or a path, model selection on the VALIDATION split, and test metrics
computed once at the end. Resuming continues to the same result as an uninterrupted run: the saved state holds the
model (with the stage-1 momentum encoders, queues and temperature), optimizer, scheduler, RNG states and the
position in the epoch; the shuffle order and augmentations derive from (seed, epoch, sample index).

The pieces live beside it: the objectives in `losses.py`, the checkpoints and the saved best model in
`checkpoints.py`, `predict` and the metrics in `prediction.py`.
"""

import json
import logging
import math
from dataclasses import asdict
from pathlib import Path

import torch

from .checkpoints import TrainerState, check_rng_file, keep_rng_state, load_best, resolve_checkpoint, save_best, \
    save_checkpoint
from .losses import AdaptObjective, PretrainObjective
from .prediction import IndexedRows, metrics_from_predictions, predict, rows_with_comments
from .train_config import ADAPT, PRETRAIN, TrainConfig  # noqa: F401 - re-exported

logger = logging.getLogger("aesformer.training")


# ---------------------------------------------------------------------------------------------------- data plumbing
class EpochShuffle(torch.utils.data.Sampler):
    """A permutation that depends only on (seed, epoch): the order is reproducible after a resume."""

    def __init__(self, length, seed):
        self.length, self.seed, self.epoch = length, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.length, generator=g).tolist())

    def __len__(self):
        return self.length


def _better(metric, value, best):
    if best is None:
        return True
    lower = metric.startswith("emd") or metric in ("mae", "rmse", "loss")
    return value < best if lower else value > best


# ---------------------------------------------------------------------------------------------------- the loop
def adopt_dataset_scale(model, spec):
    """Stage 1 fits the heads to `spec`'s votes, so they answer on its scale: score range and threshold (a 1..10 set
    that is not AVA labels at its midpoint, 5.5, not AVA's 5.0). Only when the bins agree (the EMD needs them to)."""
    from modeling_aesformer.modeling_aesformer import AesformerScoreHead

    config = model.config
    if spec.num_bins != config.num_score_bins:
        return
    config.score_range = [float(v) for v in spec.score_range]
    config.score_threshold = float(spec.threshold)
    for module in model.modules():
        if isinstance(module, AesformerScoreHead):
            module.set_scale(config.num_score_bins, config.score_range, config.score_threshold)


def train(model, processor, data, spec, config: TrainConfig, model_dir=None):
    """Train one stage. `data` is a DatasetDict (train/validation/test) from `aesformer_training.loaders`, `spec`
    its `DatasetSpec`. Stage 1 writes the best model (by validation) to `output_dir/model`; stage 2 adds the
    adapter `config.adapter_name` and writes the best one to `<model_dir or output_dir/model>/adapters/<name>/`.
    Returns the results dict also written to `output_dir/results.json`."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from aesformer_training.collator import AestheticCollator
    from aesformer_training.transforms import TrainTransform, train_resize

    if config.stage == PRETRAIN and getattr(processor, "tokenizer", None) is not None:
        processor.warn_on_vocab_size(model.config.text_config.vocab_size, "training")
    output_dir = Path(config.output_dir)
    accelerator = Accelerator(gradient_accumulation_steps=config.gradient_accumulation_steps,
                              log_with=config.report_to, project_dir=str(output_dir))
    set_seed(config.seed)
    report = {"stage": config.stage, "config": _jsonable(asdict(config)), "dataset": spec.name}
    if getattr(spec, "report", None) is not None:  # rows the loader dropped or repaired, by id and reason
        report["dataset_report"] = spec.report.to_dict()

    # ---- data: stage 1 needs comments (rows without are counted and reported), stage 2 uses images only
    train_rows, val_rows, test_rows = data["train"], data["validation"], data["test"]
    if config.stage == PRETRAIN:
        report["rows_without_comments"] = {
            split: int(sum(1 for c in rows["comments"] if not str(c or "").strip()))
            for split, rows in (("train", train_rows), ("validation", val_rows), ("test", test_rows))
        }
        if any(report["rows_without_comments"].values()):
            logger.warning("stage 1 trains on images WITH comments: leaving out rows without comments %s",
                           report["rows_without_comments"])
        train_rows, val_rows, test_rows = (rows_with_comments(r) for r in (train_rows, val_rows, test_rows))
    include_comments = config.stage == PRETRAIN
    size = model.config.vision_config.image_size
    transform = TrainTransform(resize=config.train_resize or train_resize(size), crop=size, seed=config.seed)
    train_collator = AestheticCollator(processor, transform=transform, seed=config.seed,
                                       include_comments=include_comments)
    eval_collator = AestheticCollator(processor, include_comments=include_comments)
    sampler = EpochShuffle(len(train_rows), config.seed)
    train_loader = torch.utils.data.DataLoader(IndexedRows(train_rows), batch_size=config.batch_size,
                                               sampler=sampler, collate_fn=train_collator,
                                               num_workers=config.num_workers)
    val_loader, test_loader = (
        torch.utils.data.DataLoader(IndexedRows(rows), batch_size=config.eval_batch_size, collate_fn=eval_collator,
                                    num_workers=config.num_workers)
        for rows in (val_rows, test_rows)
    )

    # ---- objective
    if config.stage == PRETRAIN:
        adopt_dataset_scale(model, spec)
        objective = PretrainObjective(model, config)
        objective.gather = accelerator.gather
        scored = model
    else:
        from modeling_aesformer.adapters import add_dataset_adapter

        name = config.adapter_name or spec.name
        peft_model = add_dataset_adapter(model, name, preset=config.adapter_preset, num_score_bins=spec.num_bins,
                                         score_range=spec.score_range, threshold=spec.threshold, dataset=spec.name)
        objective = AdaptObjective(peft_model, config)
        scored = peft_model
    trainable = [p for p in objective.parameters() if p.requires_grad]
    report["trainable_parameters"] = sum(p.numel() for p in trainable)
    report["total_parameters"] = sum(p.numel() for p in scored.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate, betas=config.adam_betas,
                                  weight_decay=config.weight_decay)
    objective, optimizer, train_loader, val_loader, test_loader = accelerator.prepare(
        objective, optimizer, train_loader, val_loader, test_loader
    )
    steps_per_epoch = math.ceil(len(train_loader) / config.gradient_accumulation_steps)
    # Stepped once per optimizer step by this loop (not prepared: accelerate would step it once per process).
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, learning_rate_schedule(config, steps_per_epoch))
    # Saved next to accelerate's state as JSON, with the scheduler's state (neither is registered with accelerate,
    # which would pickle them and unpickle them with weights_only=False on resume).
    state = TrainerState(lr_scheduler=scheduler)
    if config.report_to:
        accelerator.init_trackers(f"aesformer-{config.stage}", config=_jsonable(asdict(config)))

    resume = resolve_checkpoint(output_dir, config.resume_from_checkpoint)
    if resume:
        state.load(resume)  # first: a folder that is not a complete checkpoint fails before anything is loaded
        check_rng_file(resume, accelerator.process_index)
        accelerator.load_state(resume)  # model from safetensors; optimizer, RNG with weights_only=True
        accelerator.print(f"resumed from {resume} at epoch {state.epoch}, step {state.global_step}")

    total_steps = steps_per_epoch * config.epochs
    if config.max_steps is not None:
        total_steps = min(total_steps, config.max_steps)
    progress = tqdm(total=total_steps, initial=state.global_step, desc=f"{config.stage}",
                    disable=not accelerator.is_local_main_process)
    bin_values = spec.bin_values.tolist()
    stop = state.global_step >= total_steps
    while state.epoch < config.epochs and not stop:
        objective.train()
        train_loader.set_epoch(state.epoch)
        train_collator.epoch = state.epoch
        if state.batches_in_epoch is None:  # a checkpoint of an earlier version: no batch was skipped, presumably
            state.batches_in_epoch = state.step_in_epoch * config.gradient_accumulation_steps
        skip = state.batches_in_epoch
        if skip:  # resumed mid-epoch: the RNG must stay as the checkpoint left it (see keep_rng_state)
            batches = keep_rng_state(accelerator.skip_first_batches(train_loader, skip))
        else:
            batches = train_loader
        for batch in batches:
            state.batches_in_epoch += 1  # read, even when skipped: a resumed run must not read it again
            if batch is None:
                continue  # every image of this batch failed to decode (the collator logged them)
            with accelerator.accumulate(objective):
                loss, parts = objective(batch)
                accelerator.backward(loss)
                if config.max_grad_norm is not None and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(objective.parameters(), config.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad()
            if not accelerator.sync_gradients:
                continue
            scheduler.step()
            state.global_step += 1
            state.step_in_epoch += 1
            progress.update(1)
            logs = {"loss": loss.item(), **{k: v.item() for k, v in parts.items()},
                    "lr": optimizer.param_groups[0]["lr"]}
            progress.set_postfix(loss=f"{logs['loss']:.4f}")
            if config.report_to:
                accelerator.log(logs, step=state.global_step)
            if config.save_steps and state.global_step % config.save_steps == 0:
                save_checkpoint(accelerator, output_dir, state, config.save_total_limit)
            if state.global_step >= total_steps:
                stop = True
                break
        if stop and state.step_in_epoch < steps_per_epoch:
            break  # max_steps reached mid-epoch: no epoch-end work
        # ---- epoch end: validation, model selection, scheduler, checkpoint
        pred = predict(scored, val_loader, accelerator)
        metrics = metrics_from_predictions(pred, bin_values)
        state.history.append({"epoch": state.epoch, "step": state.global_step, "validation": metrics})
        value = metrics[config.selection_metric]
        if _better(config.selection_metric, value, state.best_metric):
            state.best_metric, state.best_epoch = value, state.epoch
            save_best(accelerator, objective, processor, config, output_dir, model_dir)
        if config.report_to:
            accelerator.log({f"validation/{k}": v for k, v in metrics.items()}, step=state.global_step)
        accelerator.print(f"epoch {state.epoch}: validation {config.selection_metric}={value:.4f}")
        state.epoch += 1
        state.step_in_epoch = state.batches_in_epoch = 0
        save_checkpoint(accelerator, output_dir, state, config.save_total_limit)
    progress.close()
    if state.best_epoch is None:  # never reached an epoch end (max_steps): select the last weights
        save_best(accelerator, objective, processor, config, output_dir, model_dir)

    # ---- test metrics, once, with the weights selected on validation
    accelerator.wait_for_everyone()
    best = load_best(accelerator.unwrap_model(objective), config, output_dir, model_dir)
    pred = predict(best, test_loader, accelerator)
    report.update(
        best_epoch=state.best_epoch, best_validation=state.best_metric, selection_metric=config.selection_metric,
        history=state.history, steps=state.global_step, test=metrics_from_predictions(pred, bin_values),
        skipped_images=[list(x) for x in train_collator.skipped + eval_collator.skipped],
    )
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
        (output_dir / "results.json").write_text(json.dumps(_jsonable(report), indent=2) + "\n")
    if config.report_to:
        accelerator.end_training()
    return report


def learning_rate_schedule(config, steps_per_epoch):
    """The learning-rate factor per optimizer step: linear warm-up over `warmup_steps` (0 in the paper's recipe),
    times a cosine over EPOCHS from `learning_rate` to `min_learning_rate` (constant within an epoch, as the
    original steps its CosineAnnealingLR once per epoch)."""
    low = config.min_learning_rate / config.learning_rate

    def factor(step):
        epoch = min(step // max(steps_per_epoch, 1), config.epochs)
        cosine = low + (1 - low) * 0.5 * (1 + math.cos(math.pi * epoch / config.epochs))
        warmup = min(1.0, (step + 1) / config.warmup_steps) if config.warmup_steps else 1.0
        return cosine * warmup

    return factor


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and callable(value.item):
        return value.item()
    return value
