"""The resumable training state and the saved models: `save_checkpoint` (accelerate's `save_state` plus the loop
position as `trainer_state.json`, written to a temporary folder then renamed), `resolve_checkpoint` ("latest"),
the RNG checks a resume needs, and the best model (stage 1) or adapter (stage 2) selected on validation."""

import json
import os
import shutil
from pathlib import Path

import torch

from modeling_aesformer.adapter_weights_aesformer import adapter_folder
from modeling_aesformer.file_modes import replace_folder, write_folder_atomically

from .train_config import PRETRAIN

CHECKPOINTS_DIR = "checkpoints"
TRAINER_STATE_FILE = "trainer_state.json"
# Written by earlier versions through accelerate's `register_for_checkpointing`, which unpickles it with
# weights_only=False on resume (arbitrary code); read here with weights_only=True only, as a fallback.
LEGACY_TRAINER_STATE_FILE = "custom_checkpoint_0.pkl"
# Which run a checkpoint belongs to (output folder, stage, adapter, model folder): written once in `checkpoints/`
# before training and copied into every `step_*`, so a resume never continues another run's state.
RUN_RECORD_FILE = "run.json"


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


def run_record(stage, output_dir, adapter=None, model_dir=None) -> dict:
    """What makes a run one run: its output folder and stage, and for stage 2 its adapter and model folder."""
    record = {"output_dir": os.path.realpath(output_dir), "stage": stage}
    if adapter is not None:
        record.update(adapter=adapter, model_dir=os.path.realpath(model_dir) if model_dir else None)
    return record


def write_run_record(output_dir, record) -> None:
    """`checkpoints/run.json` of `output_dir` (temporary file, then renamed): copied into each checkpoint saved."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp_{RUN_RECORD_FILE}"
    tmp.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, root / RUN_RECORD_FILE)


def read_run_record(checkpoint):
    """The run record saved in checkpoint folder `checkpoint`, None for a checkpoint of an earlier version."""
    path = Path(checkpoint) / RUN_RECORD_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"checkpoint {checkpoint}: {RUN_RECORD_FILE} is not readable JSON ({err})") from None
    if not isinstance(record, dict) or "stage" not in record:
        raise ValueError(f"checkpoint {checkpoint}: {RUN_RECORD_FILE} is not an Aesformer run record")
    return record


def checkpoint_steps(output_dir) -> list:
    """The complete checkpoints `checkpoints/step_*` of `output_dir`, oldest first."""
    root = Path(output_dir) / CHECKPOINTS_DIR
    return sorted(root.glob("step_*"), key=lambda p: int(p.name.split("_")[1])) if root.is_dir() else []


def check_rng_file(folder, process_index):
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


def keep_rng_state(batches):
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
        if (root / RUN_RECORD_FILE).is_file():  # the checkpoint says which run it continues
            shutil.copyfile(root / RUN_RECORD_FILE, tmp / RUN_RECORD_FILE)
        replace_folder(tmp, final)  # the same step saved again (epoch end after a --save-steps save) is swapped
        aside = []
        steps = sorted(root.glob("step_*"), key=lambda p: int(p.name.split("_")[1]))
        for old in steps[:-keep] if keep else []:
            aside.append(root / f".old_{old.name}")
            shutil.rmtree(aside[-1], ignore_errors=True)
            os.replace(old, aside[-1])
        for folder in aside:
            shutil.rmtree(folder, ignore_errors=True)
    accelerator.wait_for_everyone()


def _best_dir(config, output_dir, model_dir):
    if config.stage == PRETRAIN:
        return Path(output_dir) / "model"
    return Path(model_dir or Path(output_dir) / "model")


def save_best(accelerator, objective, processor, config, output_dir, model_dir):
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        return
    unwrapped = accelerator.unwrap_model(objective)
    target = _best_dir(config, output_dir, model_dir)
    if config.stage == PRETRAIN:
        write_folder_atomically(lambda tmp: (unwrapped.model.save_pretrained(tmp), processor.save_pretrained(tmp)),
                                target)
    else:
        from modeling_aesformer.adapters import save_adapters

        name = unwrapped.model.active_adapter

        def write_adapter(tmp):  # PEFT writes <root>/adapters/<name>/: staged inside tmp, then moved up
            staged = save_adapters(unwrapped.model, tmp / ".staged", names=[name])[0]
            for item in staged.iterdir():
                os.replace(item, tmp / item.name)
            shutil.rmtree(tmp / ".staged")

        write_folder_atomically(write_adapter, Path(adapter_folder(target, name)))


def load_best(unwrapped, config, output_dir, model_dir):
    """The weights selected on validation, read back from the saved folder, for the one test evaluation."""
    target = _best_dir(config, output_dir, model_dir)
    model = unwrapped.model
    device = next(model.parameters()).device
    if config.stage == PRETRAIN:
        return type(model).from_pretrained(target, use_safetensors=True).to(device).eval()
    from peft.utils import load_peft_weights, set_peft_model_state_dict

    name = model.active_adapter
    set_peft_model_state_dict(model, load_peft_weights(adapter_folder(target, name)), adapter_name=name)
    return model.eval()


__all__ = ["CHECKPOINTS_DIR", "RUN_RECORD_FILE", "TRAINER_STATE_FILE", "TrainerState", "check_rng_file",
           "checkpoint_steps", "read_run_record", "run_record", "write_run_record", "keep_rng_state", "load_best",
           "resolve_checkpoint", "save_best", "save_checkpoint"]
