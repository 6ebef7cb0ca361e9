"""The training recipe as data: `TrainConfig` (the paper's defaults per stage) and the stage names. Standard library
only, so that the command line can build its flags (and answer `--help`) before torch loads."""

from dataclasses import dataclass, field
from typing import Optional

PRETRAIN, ADAPT = "pretrain", "adapt"


@dataclass
class TrainConfig:
    """Hyper-parameters; the defaults are the paper's recipe (spec §2) for the given stage."""

    stage: str
    output_dir: str
    learning_rate: Optional[float] = None  # stage 1: 1e-5, stage 2: 1e-4
    min_learning_rate: float = 1e-6  # cosine (stepped per epoch) ends here
    warmup_steps: int = 0  # linear warm-up (not in the paper's recipe; useful when training from scratch)
    batch_size: Optional[int] = None  # stage 1: 16, stage 2: 256
    eval_batch_size: Optional[int] = None
    epochs: int = 50
    max_steps: Optional[int] = None  # stop early after this many optimizer steps (smoke runs)
    weight_decay: float = 0.01
    max_grad_norm: Optional[float] = None  # clip the global gradient norm (not in the paper's recipe)
    adam_betas: tuple = (0.9, 0.99)
    seed: int = 42
    gradient_accumulation_steps: int = 1
    save_steps: Optional[int] = None  # also save at every epoch end
    save_total_limit: int = 2
    resume_from_checkpoint: Optional[str] = None  # "latest" or a checkpoint folder
    num_workers: int = 0
    selection_metric: str = "srcc"  # on the validation split; emd_* and mae/rmse are minimised
    # stage 1
    itc_weight: float = 0.5
    momentum: float = 0.995
    queue_size: int = 1024
    temperature: float = 0.07
    # stage 2
    mse_weight: float = 10.0
    adapter_name: Optional[str] = None
    adapter_preset: str = "faithful"
    # data
    train_resize: Optional[int] = None  # default: 256/224 of the model's input size
    report_to: Optional[str] = None  # an accelerate tracker ("tensorboard", ...) or None
    extra: dict = field(default_factory=dict)

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
