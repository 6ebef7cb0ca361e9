"""The training recipe as data: `TrainConfig` (the paper's defaults per stage) and the stage names. Standard library
only, so that the command line can build its flags (and answer `--help`) before torch loads.

Every field but `stage` is a command-line flag of `aesformer pretrain|adapt` (`--learning-rate` for
`learning_rate`): its metadata holds the help text and, for a field of one stage only, that stage."""

from dataclasses import dataclass, field
from typing import Optional

PRETRAIN, ADAPT = "pretrain", "adapt"


def _flag(default, help_text, stage=None, stage_default=False, **argparse_kwargs):
    """A field whose flag says `help_text`; `stage` (PRETRAIN or ADAPT) when only that stage reads it;
    `stage_default` when `None` stands for a value per stage (`__post_init__`), which the flag then shows;
    `argparse_kwargs` (choices, metavar, nargs) pass to `add_argument`."""
    return field(default=default, metadata={"help": help_text, "stage": stage, "stage_default": stage_default,
                                            **argparse_kwargs})


@dataclass
class TrainConfig:
    """Hyper-parameters; the defaults are the paper's recipe for the given stage (`None`: the stage's own)."""

    stage: str = field(metadata={"help": f"{PRETRAIN!r} (stage 1, with comments) or {ADAPT!r} (stage 2, adapter)"})
    output_dir: str = field(metadata={"help": "folder of the checkpoints, results.json and (stage 1) the model",
                                      "required": True})
    learning_rate: Optional[float] = _flag(None, "peak learning rate (stage 1: 1e-5, stage 2: 1e-4)",
                                           stage_default=True)
    min_learning_rate: float = _flag(1e-6, "the cosine schedule (stepped per epoch) ends here")
    warmup_steps: int = _flag(0, "linear warm-up over this many optimizer steps (not in the paper's recipe; "
                                 "useful when training from scratch)")
    batch_size: Optional[int] = _flag(None, "per process (stage 1: 16, stage 2: 256)", stage_default=True)
    eval_batch_size: Optional[int] = _flag(None, "validation and test batch size (default: --batch-size)")
    epochs: int = _flag(50, "number of epochs")
    max_steps: Optional[int] = _flag(None, "stop after this many optimizer steps (smoke runs)")
    weight_decay: float = _flag(0.01, "AdamW weight decay")
    max_grad_norm: Optional[float] = _flag(None, "clip the global gradient norm (not in the paper's recipe)")
    adam_betas: tuple = _flag((0.9, 0.99), "AdamW betas", nargs=2, metavar=("BETA1", "BETA2"))
    seed: int = _flag(42, "seed of the weights, the shuffle, the augmentation and a seeded split")
    gradient_accumulation_steps: int = _flag(1, "batches per optimizer step")
    save_steps: Optional[int] = _flag(None, "also save the training state every N optimizer steps (it is saved at "
                                            "every epoch end)")
    save_total_limit: int = _flag(2, "checkpoints kept (the oldest are deleted)")
    resume_from_checkpoint: Optional[str] = _flag(None, "'latest' or a checkpoint folder")
    num_workers: int = _flag(0, "DataLoader workers (image decoding)")
    selection_metric: str = _flag("srcc", "validation metric that selects the saved weights (emd_*, mae and rmse "
                                          "are minimised)")
    # stage 1
    itc_weight: float = _flag(0.5, "weight of the image-text contrastive loss", PRETRAIN)
    momentum: float = _flag(0.995, "momentum of the contrastive momentum encoders", PRETRAIN)
    queue_size: int = _flag(1024, "size of the contrastive feature queues", PRETRAIN)
    temperature: float = _flag(0.07, "initial temperature of the contrastive loss (learnt, clamped to [0.001, "
                                     "0.5])", PRETRAIN)
    # stage 2
    mse_weight: float = _flag(10.0, "weight of the MSE between the predicted and the true distribution", ADAPT)
    adapter_name: Optional[str] = _flag(None, "default: the dataset's name (letters, digits, '-' and '_')", ADAPT)
    adapter_preset: str = _flag("faithful", "the adapter's kind", ADAPT, choices=("faithful", "lora"))
    # data
    train_resize: Optional[int] = _flag(None, "training images are resized to this side, then randomly cropped to "
                                              "the model's input size (default: 256/224 of it)")
    report_to: Optional[str] = _flag(None, "an accelerate tracker, e.g. tensorboard")

    def __post_init__(self):
        if self.stage not in (PRETRAIN, ADAPT):
            raise ValueError(f"stage must be {PRETRAIN!r} or {ADAPT!r}, got {self.stage!r}")
        if self.learning_rate is None:
            self.learning_rate = 1e-5 if self.stage == PRETRAIN else 1e-4
        if self.batch_size is None:
            self.batch_size = 16 if self.stage == PRETRAIN else 256
        self.eval_batch_size = self.eval_batch_size or self.batch_size
        self.adam_betas = tuple(self.adam_betas)


__all__ = ["ADAPT", "PRETRAIN", "TrainConfig"]
