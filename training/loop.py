"""The one training loop behind `training/pretrain.py` (stage 1), `training/adapt.py` (stage 2), the CLI and tests.

Stage 1 ("pretrain", with comments): loss = EMD(p_img) + EMD(p_text) + 0.5·ITC (spec §2). Everything trains
except the image-only parts (multi-scale adapter, V-FFN, vision norm and head), which stay frozen.
Stage 2 ("adapt", image only): a dataset adapter (PEFT) on the frozen backbone; loss = EMD + 10·MSE.

Runs on `accelerate`: gradient accumulation, mixed precision from the accelerate config, `save_state` every N steps
and at each epoch end, resume from `latest` or a path, model selection on the VALIDATION split, and test metrics
computed once at the end. Resuming continues to the same result as an uninterrupted run: the saved state holds the
model (with the stage-1 momentum encoders, queues and temperature), optimizer, scheduler, RNG states and the
position in the epoch; the shuffle order and augmentations derive from (seed, epoch, sample index).
"""

import copy
import json
import logging
import math
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .train_config import ADAPT, PRETRAIN, TrainConfig  # noqa: F401 - re-exported

logger = logging.getLogger("aesformer.training")

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE_FILE = "trainer_state.json"
# Written by earlier versions through accelerate's `register_for_checkpointing`, which unpickles it with
# weights_only=False on resume (arbitrary code); read here with weights_only=True only, as a fallback.
LEGACY_TRAINER_STATE_FILE = "custom_checkpoint_0.pkl"


# ---------------------------------------------------------------------------------------------------- stage 1 ITC
class MomentumContrast(nn.Module):
    """ALBEF-style image-text contrastive loss as the original trains it (spec §2): unimodal features (the mean of
    `norm_cl` over the last Swin stage's tokens; BERT's [CLS]), no projection heads, momentum encoders (m = 0.995)
    whose features fill queues of `queue_size`, a learnable temperature clamped to [0.001, 0.5], identity targets
    over the in-batch momentum features. Training-only: never part of the saved model, always part of the
    resumable training state."""

    def __init__(self, model, queue_size=1024, momentum=0.995, temperature=0.07):
        super().__init__()
        hidden = model.config.hidden_size
        self.momentum = momentum
        self.norm_cl = nn.LayerNorm(hidden, eps=model.config.vision_config.layer_norm_eps)
        self.temp = nn.Parameter(torch.tensor(float(temperature)))
        # Momentum copies of the encoders the features come from (frozen; updated by EMA only).
        self.vision_m = copy.deepcopy(model.vision_model)
        self.text_m = copy.deepcopy(model.text_model)
        self.projection_m = copy.deepcopy(model.vision_projection)
        self.norm_cl_m = copy.deepcopy(self.norm_cl)
        for module in self._momentum_modules():
            module.requires_grad_(False)
        g = torch.Generator().manual_seed(0)
        self.register_buffer("image_queue", F.normalize(torch.randn(hidden, queue_size, generator=g), dim=0))
        self.register_buffer("text_queue", F.normalize(torch.randn(hidden, queue_size, generator=g), dim=0))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))

    def _momentum_modules(self):
        return [m for m in (self.vision_m, self.text_m, self.projection_m, self.norm_cl_m) if m is not None]

    def _online_pairs(self, model):
        return [(model.vision_model, self.vision_m), (model.text_model, self.text_m),
                (model.vision_projection, self.projection_m), (self.norm_cl, self.norm_cl_m)]

    @torch.no_grad()
    def momentum_update(self, model):
        for online, momentum in self._online_pairs(model):
            if online is None:
                continue
            for p, p_m in zip(online.parameters(), momentum.parameters()):
                p_m.mul_(self.momentum).add_(p.detach(), alpha=1.0 - self.momentum)

    @torch.no_grad()
    def momentum_features(self, pixel_values, input_ids, attention_mask, token_type_ids):
        stage4 = self.vision_m(pixel_values=pixel_values, output_hidden_states=True).hidden_states[-1]
        if self.projection_m is not None:
            stage4 = self.projection_m(stage4)
        image = F.normalize(self.norm_cl_m(stage4).mean(dim=1), dim=-1)
        text = self.text_m(input_ids=input_ids, attention_mask=attention_mask,
                           token_type_ids=token_type_ids).last_hidden_state[:, 0]
        return image, F.normalize(text, dim=-1)

    @torch.no_grad()
    def enqueue(self, image_feats, text_feats):
        n, size = image_feats.shape[0], self.image_queue.shape[1]
        index = (self.queue_ptr + torch.arange(n, device=image_feats.device)) % size  # circular: any batch size
        self.image_queue[:, index] = image_feats.T.to(self.image_queue.dtype)
        self.text_queue[:, index] = text_feats.T.to(self.text_queue.dtype)
        self.queue_ptr.copy_((self.queue_ptr + n) % size)

    def loss(self, model, output, batch, gather=None):
        with torch.no_grad():
            self.temp.clamp_(0.001, 0.5)
            self.momentum_update(model)
            image_m, text_m = self.momentum_features(
                batch["pixel_values"], batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids")
            )
            image_all = torch.cat([image_m.T, self.image_queue.clone()], dim=1)
            text_all = torch.cat([text_m.T, self.text_queue.clone()], dim=1)
        image = F.normalize(self.norm_cl(output.unimodal_image_embeds).mean(dim=1), dim=-1)
        text = F.normalize(output.unimodal_text_embeds, dim=-1)
        targets = torch.arange(image.shape[0], device=image.device)  # identity over the in-batch features
        loss = (F.cross_entropy(image @ text_all / self.temp, targets)
                + F.cross_entropy(text @ image_all / self.temp, targets)) / 2
        # Momentum features of every process enter the queue (gathered before enqueueing).
        image_m, text_m = (gather(image_m), gather(text_m)) if gather is not None else (image_m, text_m)
        self.enqueue(image_m, text_m)
        return loss


class PretrainObjective(nn.Module):
    """Stage 1: the model plus its training-only contrastive state, prepared as one module."""

    def __init__(self, model, config: TrainConfig):
        super().__init__()
        self.model = model
        self.contrast = MomentumContrast(model, config.queue_size, config.momentum, config.temperature)
        self.itc_weight = config.itc_weight
        # Image-only parts are frozen in stage 1.
        for module in [model.multi_scale_adapter, model.vision_norm, model.vision_head]:
            module.requires_grad_(False)
        for layer in model.fusion_layers:
            layer.vision_ffn.requires_grad_(False)
        self.gather = None

    def forward(self, batch):
        output = self.model(pixel_values=batch["pixel_values"], input_ids=batch["input_ids"],
                            attention_mask=batch["attention_mask"], token_type_ids=batch.get("token_type_ids"),
                            labels=batch["labels"])
        itc = self.contrast.loss(self.model, output, batch, gather=self.gather)
        return output.loss + self.itc_weight * itc, {"emd": output.loss.detach(), "itc": itc.detach()}


class AdaptObjective(nn.Module):
    """Stage 2: image-only branch through the active dataset adapter; EMD + mse_weight · MSE."""

    def __init__(self, peft_model, config: TrainConfig):
        super().__init__()
        self.model = peft_model
        self.mse_weight = config.mse_weight

    def forward(self, batch):
        output = self.model(pixel_values=batch["pixel_values"], labels=batch["labels"])
        target = batch["labels"] / batch["labels"].sum(-1, keepdim=True)
        mse = F.mse_loss(output.distribution, target)
        return output.loss + self.mse_weight * mse, {"emd": output.loss.detach(), "mse": mse.detach()}


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


class IndexedRows(torch.utils.data.Dataset):
    """Rows of a `datasets.Dataset` with their index (the augmentation seed derives from it)."""

    def __init__(self, rows):
        self.rows = rows

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return {**self.rows[index], "index": index}


class TrainerState:
    """Loop position and model-selection history; saved with every checkpoint as `trainer_state.json` (plain JSON:
    never unpickled)."""

    def __init__(self, lr_scheduler=None):
        self.global_step, self.epoch, self.step_in_epoch = 0, 0, 0
        # Loader batches read in this epoch, skipped ones (every image failed to decode) included: where a resumed
        # run goes on. None in a checkpoint written before it was kept: step_in_epoch x accumulation steps then.
        self.batches_in_epoch = 0
        self.best_metric, self.best_epoch, self.history = None, None, []
        # The scheduler's state (plain numbers) is saved in this JSON too: registered with accelerate it would be
        # pickled to custom_checkpoint_0.pkl, which accelerate unpickles with weights_only=False (arbitrary code).
        self._lr_scheduler = lr_scheduler

    def state_dict(self):
        state = {key: value for key, value in vars(self).items() if not key.startswith("_")}
        if self._lr_scheduler is not None:
            state["lr_scheduler"] = self._lr_scheduler.state_dict()
        return state

    def load_state_dict(self, state):
        state = {"batches_in_epoch": None, **state}
        scheduler_state = state.pop("lr_scheduler", None)
        vars(self).update(state)
        if self._lr_scheduler is not None:
            if scheduler_state is None:
                raise ValueError("the checkpoint holds no learning-rate scheduler state")
            self._lr_scheduler.load_state_dict(scheduler_state)

    def save(self, folder):
        """Write `trainer_state.json` into `folder` (floats keep every bit: JSON numbers, NaN/Infinity allowed)."""
        text = json.dumps(self.state_dict(), indent=1, default=_json_scalar)
        (Path(folder) / TRAINER_STATE_FILE).write_text(text + "\n", encoding="utf-8")

    def load(self, folder):
        """Read the state saved in checkpoint `folder`: `trainer_state.json`, or an older checkpoint's
        `custom_checkpoint_0.pkl` loaded with `torch.load(weights_only=True)` (a pickle that needs anything but
        plain containers and numbers is refused, never executed)."""
        folder = Path(folder)
        path = folder / TRAINER_STATE_FILE
        if path.is_file():
            state = json.loads(path.read_text(encoding="utf-8"))
        elif (folder / LEGACY_TRAINER_STATE_FILE).is_file():
            legacy = folder / LEGACY_TRAINER_STATE_FILE
            try:
                state = torch.load(legacy, map_location="cpu", weights_only=True)
            except Exception as err:  # noqa: BLE001 - an UnpicklingError names the refused global
                raise ValueError(f"refusing the training state {legacy}: torch.load(weights_only=True) failed: "
                                 f"{err}") from err
        else:
            raise FileNotFoundError(f"checkpoint {folder} has no {TRAINER_STATE_FILE}: not a complete checkpoint")
        if not isinstance(state, dict) or not {"global_step", "epoch", "step_in_epoch"} <= set(state):
            raise ValueError(f"{path}: not an Aesformer training state")
        self.load_state_dict(state)


def _json_scalar(value):
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        return value.item()
    if hasattr(value, "tolist") and callable(value.tolist):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def rows_with_comments(rows):
    """The rows of a dataset split that have comments."""
    return rows.select([i for i, c in enumerate(rows["comments"]) if str(c or "").strip()])


def resolve_checkpoint(output_dir, resume):
    """`latest` -> the newest `checkpoints/step_*` under output_dir (None if there is none); else the path."""
    if resume in (None, ""):
        return None
    if resume != "latest":
        if not os.path.isdir(resume):
            raise FileNotFoundError(f"checkpoint folder {resume} does not exist")
        return resume
    root = Path(output_dir) / CHECKPOINTS_DIR
    steps = sorted(root.glob("step_*"), key=lambda p: int(p.name.split("_")[1])) if root.is_dir() else []
    return str(steps[-1]) if steps else None


def _better(metric, value, best):
    if best is None:
        return True
    lower = metric.startswith("emd") or metric in ("mae", "rmse", "loss")
    return value < best if lower else value > best


# ---------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def predict(model, loader, accelerator=None, adapters=None):
    """Distributions, scores and targets over a loader (gathered across processes when `accelerator` is given)."""
    model.eval()
    preds, scores, targets, used = [], [], [], []
    threshold = None
    for batch in loader:
        if batch is None:
            continue
        inputs = {k: batch[k] for k in ("pixel_values", "input_ids", "attention_mask", "token_type_ids") if k in batch}
        out = model(**inputs, adapters=adapters) if adapters is not None else model(**inputs)
        items = (out.distribution, out.score, batch["labels"], out.used_comments)
        if accelerator is not None:
            items = accelerator.gather_for_metrics(items)
        for bucket, item in zip((preds, scores, targets, used), items):
            bucket.append(item.float().cpu() if item.dtype != torch.bool else item.cpu())
        threshold = float(out.threshold[0])
    if not preds:
        raise ValueError("no sample could be evaluated")
    return {"distribution": torch.cat(preds), "score": torch.cat(scores), "labels": torch.cat(targets),
            "used_comments": torch.cat(used), "threshold": threshold}


def metrics_from_predictions(pred, bin_values):
    from aesformer_training.evaluation import compute_metrics

    target = pred["labels"] / pred["labels"].sum(-1, keepdim=True)
    k = target.shape[-1]
    return compute_metrics(
        pred_distributions=pred["distribution"][:, :k].numpy(), true_distributions=target.numpy(),
        bin_values=list(bin_values), threshold=pred["threshold"],
    )


# ---------------------------------------------------------------------------------------------------- the loop
def train(model, processor, data, spec, config: TrainConfig, model_dir=None):
    """Train one stage. `data` is a DatasetDict (train/validation/test) from `aesformer_training.data`, `spec`
    its `DatasetSpec`. Stage 1 writes the best model (by validation) to `output_dir/model`; stage 2 adds the
    adapter `config.adapter_name` and writes the best one to `<model_dir or output_dir/model>/adapters/<name>/`.
    Returns the results dict also written to `output_dir/results.json`."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed
    from tqdm.auto import tqdm

    from aesformer_training.data import AestheticCollator
    from aesformer_training.transforms import TrainTransform

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
    transform = TrainTransform(resize=config.train_resize or round(size * 256 / 224), crop=size, seed=config.seed)
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
        _check_rng_file(resume, accelerator.process_index)
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
        if skip:  # resumed mid-epoch: the RNG must stay as the checkpoint left it (see _keep_rng_state)
            batches = _keep_rng_state(accelerator.skip_first_batches(train_loader, skip))
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
            _save_best(accelerator, objective, processor, config, output_dir, model_dir)
        if config.report_to:
            accelerator.log({f"validation/{k}": v for k, v in metrics.items()}, step=state.global_step)
        accelerator.print(f"epoch {state.epoch}: validation {config.selection_metric}={value:.4f}")
        state.epoch += 1
        state.step_in_epoch = state.batches_in_epoch = 0
        save_checkpoint(accelerator, output_dir, state, config.save_total_limit)
    progress.close()
    if state.best_epoch is None:  # never reached an epoch end (max_steps): select the last weights
        _save_best(accelerator, objective, processor, config, output_dir, model_dir)

    # ---- test metrics, once, with the weights selected on validation
    accelerator.wait_for_everyone()
    best = _load_best(accelerator.unwrap_model(objective), config, output_dir, model_dir)
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


def _check_rng_file(folder, process_index):
    """accelerate loads the RNG states with weights_only=True but only LOGS a failure and goes on, which would end a
    resumed run on other weights without a word: a checkpoint whose RNG file does not load is refused here."""
    from accelerate.utils import load

    path = Path(folder) / f"random_states_{process_index}.pkl"
    try:
        load(path)  # weights_only=True (plus numpy's RNG-state types)
    except Exception as err:  # noqa: BLE001 - missing, truncated or refused by weights_only
        raise ValueError(f"refusing the checkpoint {folder}: its RNG state {path.name} does not load with "
                         f"weights_only=True ({type(err).__name__}: {err})") from err


def _rng_states():
    import random

    import numpy as np

    states = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _set_rng_states(states):
    import random

    import numpy as np

    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])


def _keep_rng_state(batches):
    """Iterate `batches` with the global RNG states as they are now (as loaded from a mid-epoch checkpoint) when the
    first batch comes out. Starting a DataLoader iterator draws from the global torch RNG (its base seed); the
    interrupted run made that draw at the start of the epoch, BEFORE the checkpoint, so a resumed run that draws
    again would give every later dropout mask another value and end on other weights."""
    states = _rng_states()
    iterator = iter(batches)
    try:
        first = next(iterator)
    except StopIteration:
        _set_rng_states(states)
        return
    _set_rng_states(states)
    yield first
    yield from iterator


def save_checkpoint(accelerator, output_dir, state, keep):
    """save_state (and `trainer_state.json`) into a temporary folder, then rename it to `step_N`: a kill or an error
    during a save leaves every earlier checkpoint intact, and `latest` never names a half-written folder. A folder
    being replaced or rotated out is first renamed aside (`.old_*`), then deleted, so a kill during a deletion
    cannot leave a half-deleted `step_*` either."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    final = root / f"step_{state.global_step:08d}"
    tmp = root / f".tmp_step_{state.global_step:08d}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        state.save(tmp)
        _fsync_dir(tmp)
        aside = []
        if final.exists():  # the same step saved again (epoch end after a --save-steps save)
            aside.append(root / f".old_{final.name}")
            shutil.rmtree(aside[-1], ignore_errors=True)
            os.replace(final, aside[-1])
        os.replace(tmp, final)
        _fsync_dir(root)
        steps = sorted(root.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
        for old in steps[:-keep] if keep else []:
            aside.append(root / f".old_{old.name}")
            shutil.rmtree(aside[-1], ignore_errors=True)
            os.replace(old, aside[-1])
        for folder in aside:
            shutil.rmtree(folder, ignore_errors=True)
    accelerator.wait_for_everyone()


def _fsync_dir(folder):
    """Flush a folder's entries (and its files' data) to disk, so that a rename is not reordered before the
    data it publishes on a power loss. Best effort: not every platform can open a directory."""
    folder = Path(folder)
    for path in [p for p in folder.iterdir() if p.is_file()] + [folder]:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fsync(fd)
        except OSError:
            pass
        finally:
            os.close(fd)


def _best_dir(config, output_dir, model_dir):
    if config.stage == PRETRAIN:
        return Path(output_dir) / "model"
    return Path(model_dir or Path(output_dir) / "model")


def _save_best(accelerator, objective, processor, config, output_dir, model_dir):
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    unwrapped = accelerator.unwrap_model(objective)
    target = _best_dir(config, output_dir, model_dir)
    if config.stage == PRETRAIN:
        _atomic_save(lambda tmp: (unwrapped.model.save_pretrained(tmp), processor.save_pretrained(tmp)), target)
    else:
        from modeling_aesformer.adapters import save_adapters

        name = unwrapped.model.active_adapter
        target.mkdir(parents=True, exist_ok=True)
        stage = Path(output_dir) / ".best_adapter"
        shutil.rmtree(stage, ignore_errors=True)
        save_adapters(unwrapped.model, stage, names=[name])
        final = target / "adapters" / name
        final.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(stage / "adapters" / name, final)
        shutil.rmtree(stage, ignore_errors=True)


def _atomic_save(write, target):
    """`write(tmp)` into a temporary sibling, then swap it in: an error or a kill during `write` leaves `target`
    as it was. The swap is two renames; a kill between them leaves the previous folder at `.old_<name>`, which the
    next save puts back before anything else."""
    target = Path(target)
    tmp = target.with_name(f".tmp_{target.name}")
    old = target.with_name(f".old_{target.name}")
    if not target.exists() and old.exists():
        os.replace(old, target)  # recover from a kill between the two renames of an earlier save
    shutil.rmtree(tmp, ignore_errors=True)
    write(str(tmp))
    _fsync_dir(tmp)
    shutil.rmtree(old, ignore_errors=True)
    if target.exists():
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)


def _load_best(unwrapped, config, output_dir, model_dir):
    """The weights selected on validation, read back from the saved folder, for the one test evaluation."""
    target = _best_dir(config, output_dir, model_dir)
    model = unwrapped.model
    device = next(model.parameters()).device
    if config.stage == PRETRAIN:
        return type(model).from_pretrained(target, use_safetensors=True).to(device).eval()
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    name = model.active_adapter
    set_peft_model_state_dict(model, load_peft_weights(str(target / "adapters" / name)), adapter_name=name)
    return model.eval()


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


def evaluate_branches(model, processor, rows, spec, adapter=None, batch_size=32, num_workers=0,
                      branches=("with_comments", "image_only")):
    """Metrics of the with-comments branch (rows that have comments) and of the image-only branch (every row, with
    dataset adapter `adapter` when given) on `rows` (a dataset split), for the names in `branches`. A branch whose
    bins do not match the dataset's scale is left out with a reason."""
    from aesformer_training.data import AestheticCollator

    results, bin_values = {}, spec.bin_values.tolist()
    with_comments = rows_with_comments(rows)
    base_bins = model.config.num_score_bins  # a PeftModel forwards `config` to the base model
    plans = [("with_comments", with_comments, True, None), ("image_only", rows, False, adapter)]
    unknown = set(branches) - {plan[0] for plan in plans}
    if unknown:
        raise ValueError(f"unknown branches {sorted(unknown)}; known: with_comments, image_only")
    for branch, subset, include_comments, adapters in (plan for plan in plans if plan[0] in branches):
        if len(subset) == 0:
            results[branch] = {"skipped": "no rows"}
            continue
        if branch == "with_comments" and base_bins != spec.num_bins:
            results[branch] = {"skipped": f"the VL heads have {base_bins} bins, the dataset {spec.num_bins}"}
            continue
        loader = torch.utils.data.DataLoader(
            IndexedRows(subset), batch_size=batch_size, num_workers=num_workers,
            collate_fn=AestheticCollator(processor, include_comments=include_comments),
        )
        pred = predict(model, loader, adapters=adapters)
        if pred["distribution"].shape[-1] < spec.num_bins or not bool(pred["used_comments"].all() == include_comments):
            raise ValueError(f"{branch}: the model answered with {pred['distribution'].shape[-1]} bins on the wrong "
                             f"branch for a {spec.num_bins}-bin dataset")
        results[branch] = metrics_from_predictions(pred, bin_values)
    return results
