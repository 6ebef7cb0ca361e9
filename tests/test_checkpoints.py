"""Checkpoints (`aesformer_training.checkpoints`): `aesformer pretrain` killed with SIGKILL mid-save resumes to
bit-identical weights, a failed or killed save leaves the previous checkpoint (and the best model folder) intact, the
training state is JSON and a legacy pickle is read with weights_only=True only; a pickle in a checkpoint never runs."""

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from aesformer_training.dataset_spec import DatasetSpec
from aesformer_training.loaders import write_generic
from modeling_aesformer import AesformerConfig, AesformerModel

from _helpers import SUBPROCESS_ENV, Payload, kill_when_stalled, tokenizer_for, toy_training_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


TRAIN_STALL_DRIVER = textwrap.dedent("""
    import os, sys, time
    import accelerate
    marker, stall_folder = sys.argv[1], sys.argv[2]
    original = accelerate.Accelerator.save_state

    def save_state(self, *args, **kwargs):
        output_dir = args[0] if args else kwargs.get("output_dir")
        result = original(self, *args, **kwargs)
        if os.path.basename(str(output_dir)) == stall_folder:
            open(marker, "w").close()
            time.sleep(600)  # killed here: written to its temporary folder, not yet renamed
        return result

    accelerate.Accelerator.save_state = save_state
    from aesformer_cli.main import main
    sys.exit(main(sys.argv[3:]))
""")


def finish(process, timeout=300):
    _, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err.decode(errors="replace")[-4000:]


@pytest.fixture(scope="module")
def training_data(tmp_path_factory):
    """24 images in the generic format (as tests/test_training.py), plus a zero-vote row and a missing file."""
    folder = tmp_path_factory.mktemp("train-data")
    rows = toy_training_rows()
    rows.append({"file_name": "images/000.png", "id": "no-votes", "votes": [0] * 10, "comments": ["x"],
                 "split": "train"})
    rows.append({"file_name": "images/lost.png", "votes": [1] * 10, "comments": ["y"], "split": "train"})
    write_generic(folder, rows, DatasetSpec("toy", 10, (1, 10), 5.0))
    (folder / "tok-src").mkdir()
    tokenizer_for(folder / "tok-src").save_pretrained(folder / "tok")
    return folder


def test_training_killed_mid_epoch_resumes_to_bit_identical_weights(training_data, tmp_path):
    """`aesformer pretrain` killed with SIGKILL while saving step 5 (epoch 2 of 2, mid-epoch, step 5 already applied
    in memory) resumes from `latest` (step 4) and ends with the same bits as an uninterrupted run."""
    common = ["pretrain", "--preset", "tiny", "--tokenizer", str(training_data / "tok"), "--data",
              str(training_data), "--batch-size", "4", "--epochs", "2", "--save-steps", "1", "--learning-rate",
              "1e-3", "--queue-size", "8", "--seed", "7"]
    full, cut, marker = tmp_path / "full", tmp_path / "cut", tmp_path / "stalled"
    cli = [sys.executable, "-m", "aesformer_cli"]
    popen = dict(stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=SUBPROCESS_ENV, cwd=tmp_path)
    reference = subprocess.Popen(cli + common + ["--output-dir", str(full)], **popen)
    killed = subprocess.Popen([sys.executable, "-c", TRAIN_STALL_DRIVER, str(marker), ".tmp_step_00000005"]
                              + common + ["--output-dir", str(cut)], **popen)
    kill_when_stalled(killed, marker)
    assert killed.returncode == -signal.SIGKILL
    checkpoints = cut / "checkpoints"
    # the save in flight never became a checkpoint; the previous ones are intact
    assert sorted(p.name for p in checkpoints.iterdir()) == [".tmp_step_00000005", "run.json", "step_00000003",
                                                               "step_00000004"]
    from aesformer_training.checkpoints import TrainerState, resolve_checkpoint

    latest = resolve_checkpoint(cut, "latest")
    state = TrainerState()
    state.load(latest)
    assert Path(latest).name == "step_00000004" and (state.epoch, state.step_in_epoch) == (1, 1)  # mid-epoch
    assert not (cut / "results.json").exists()

    resumed = subprocess.Popen(cli + common + ["--output-dir", str(cut), "--resume-from-checkpoint", "latest"],
                               **popen)
    finish(resumed)
    finish(reference)
    for a, b in ((full / "model" / "model.safetensors", cut / "model" / "model.safetensors"),
                 (full / "checkpoints" / "step_00000006" / "model.safetensors",
                  cut / "checkpoints" / "step_00000006" / "model.safetensors")):
        wa, wb = load_file(str(a)), load_file(str(b))
        assert wa.keys() == wb.keys() and len(wa) > 100
        assert all(torch.equal(wa[k], wb[k]) for k in wa), [k for k in wa if not torch.equal(wa[k], wb[k])][:5]
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (full, cut))
    assert ra["test"] == rb["test"] and ra["history"] == rb["history"] and ra["steps"] == rb["steps"] == 6
    assert sorted(p.name for p in checkpoints.iterdir()) == ["run.json", "step_00000005", "step_00000006"]  # temp cleaned
    # bad rows are in the results, by id
    dropped = {issue["id"]: issue["reason"] for issue in ra["dataset_report"]["dropped"]}
    assert dropped == {"no-votes": "zero_votes", "images/lost.png": "missing_image"}

    # -- safe loading of a resumed checkpoint: a pickle inside it is refused, its payload never runs
    from aesformer_cli import train as scripts

    pickled = sorted(p.name for p in (checkpoints / "step_00000005").iterdir() if p.suffix in (".bin", ".pkl", ".pt"))
    assert "optimizer.bin" in pickled and "random_states_0.pkl" in pickled
    for name in pickled:  # each pickle of the checkpoint in turn: the others are genuine
        poisoned = tmp_path / f"poisoned-{name}"
        payload_ran = tmp_path / f"payload-ran-{name}"
        shutil.copytree(checkpoints / "step_00000005", poisoned / "checkpoints" / "step_00000005")
        torch.save({"state": Payload(payload_ran)}, poisoned / "checkpoints" / "step_00000005" / name)
        resume = common[1:] + ["--output-dir", str(poisoned), "--resume-from-checkpoint", "latest"]
        with pytest.raises((pickle.UnpicklingError, ValueError), match="weights_only"):
            scripts.pretrain_main(resume)
        assert not payload_ran.exists(), f"unpickling {name} ran its code"


def test_a_failed_or_killed_save_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    from safetensors.torch import save_file

    from aesformer_training import checkpoints
    from modeling_aesformer.file_modes import write_folder_atomically

    class FakeAccelerator:  # the parts of accelerate's API that save_checkpoint uses
        is_main_process = True
        fail = False

        def wait_for_everyone(self):
            pass

        def save_state(self, folder):
            os.makedirs(folder)
            save_file({"w": torch.full((4,), float(state.global_step))}, os.path.join(folder, "model.safetensors"))
            if self.fail:
                raise OSError("disk full")  # midway: model written, nothing else
            (Path(folder) / "optimizer.bin").write_bytes(b"ok")

    accelerator, state = FakeAccelerator(), checkpoints.TrainerState()
    for step in (1, 2):
        state.global_step = step
        checkpoints.save_checkpoint(accelerator, tmp_path, state, keep=2)
    accelerator.fail = True
    for step in (3, 2):  # a new step, and the same step saved again (epoch end after a --save-steps save)
        state.global_step, state.epoch = step, 9
        with pytest.raises(OSError, match="disk full"):
            checkpoints.save_checkpoint(accelerator, tmp_path, state, keep=2)
        latest = checkpoints.resolve_checkpoint(tmp_path, "latest")
        assert Path(latest).name == "step_00000002"
        assert load_file(os.path.join(latest, "model.safetensors"))["w"].tolist() == [2.0] * 4
        reloaded = checkpoints.TrainerState()
        reloaded.load(latest)
        assert (reloaded.global_step, reloaded.epoch) == (2, 0)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir() if not p.name.startswith(".tmp")) == [
        "step_00000001", "step_00000002"]

    # killed while deleting the folder a re-save of the same step replaces: `latest` is still complete
    real_rmtree = shutil.rmtree

    def killed_while_deleting(path, *args, **kwargs):
        if Path(path).name in ("step_00000002", ".old_step_00000002") and Path(path).is_dir():
            (Path(path) / "model.safetensors").unlink()  # the deletion got this far
            raise KeyboardInterrupt
        return real_rmtree(path, *args, **kwargs)

    accelerator.fail = False
    state.global_step, state.epoch = 2, 1
    monkeypatch.setattr(checkpoints.shutil, "rmtree", killed_while_deleting)
    with pytest.raises(KeyboardInterrupt):
        checkpoints.save_checkpoint(accelerator, tmp_path, state, keep=2)
    monkeypatch.undo()
    latest = checkpoints.resolve_checkpoint(tmp_path, "latest")
    assert Path(latest).name == "step_00000002"
    assert load_file(os.path.join(latest, "model.safetensors"))["w"].tolist() == [2.0] * 4
    reloaded = checkpoints.TrainerState()
    reloaded.load(latest)
    assert (reloaded.global_step, reloaded.epoch) == (2, 1)  # the new save, complete

    # the best model folder: `write_folder_atomically` with a write that dies midway
    target = tmp_path / "model"
    model = AesformerModel(AesformerConfig.from_preset("tiny"))
    write_folder_atomically(lambda tmp: model.save_pretrained(tmp), target)

    def broken(tmp):
        os.makedirs(tmp, exist_ok=True)  # the writer makes it
        (Path(tmp) / "config.json").write_text("{")  # half a folder
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_folder_atomically(broken, target)
    reloaded = AesformerModel.from_pretrained(target)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))
    # a kill between the two renames of a swap: the next save puts the previous folder back first
    os.replace(target, tmp_path / ".old_model")
    with pytest.raises(KeyboardInterrupt):
        write_folder_atomically(broken, target)
    reloaded = AesformerModel.from_pretrained(target)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), reloaded.state_dict().values()))


def test_the_training_state_is_json_and_a_legacy_pickle_is_refused(tmp_path):
    from aesformer_training.checkpoints import TrainerState

    state = TrainerState()
    state.global_step, state.epoch, state.best_metric = 5, 1, np.float64(0.25)
    state.history = [{"epoch": 0, "validation": {"srcc": 0.1 + 0.2, "n": np.int64(4), "emd": float("nan")}}]
    state.save(tmp_path)
    loaded = TrainerState()
    loaded.load(tmp_path)
    assert loaded.history[0]["validation"]["srcc"] == 0.1 + 0.2 and loaded.best_metric == 0.25
    # an older checkpoint: accelerate's custom_checkpoint_0.pkl, read with weights_only=True only
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    torch.save({"global_step": 3, "epoch": 0, "step_in_epoch": 3, "best_metric": None, "best_epoch": None,
                "history": []}, legacy / "custom_checkpoint_0.pkl")
    loaded.load(legacy)
    assert loaded.global_step == 3
    payload_ran = tmp_path / "payload-ran"
    torch.save({"global_step": Payload(payload_ran)}, legacy / "custom_checkpoint_0.pkl")
    with pytest.raises(ValueError, match="weights_only=True"):
        loaded.load(legacy)
    assert not payload_ran.exists()
    with pytest.raises(FileNotFoundError, match="not a complete checkpoint"):
        TrainerState().load(tmp_path / "missing")
