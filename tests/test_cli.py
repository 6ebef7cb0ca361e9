"""The `aesformer` command line: parsing happens before torch/transformers load (their speed is measured in
bench/bench_cli_help.py, not here); one-line errors for a missing GPU and a mistyped model folder."""

import subprocess
import sys
from pathlib import Path

import pytest

from _helpers import score_cli

REPO = Path(__file__).resolve().parent.parent

HELP_SCRIPT = """
import sys
sys.argv = ["aesformer"] + sys.argv[1:]
from aesformer_cli.main import main
try:
    main()
except SystemExit as done:
    assert done.code == 0, done.code
heavy = sorted(m for m in ("torch", "transformers", "peft", "accelerate") if m in sys.modules)
assert not heavy, f"--help imported {heavy}"
print("light")
"""


@pytest.mark.parametrize("words", [["--help"], ["score", "--help"], ["explain", "--help"], ["push", "--help"],
                                   ["set-default", "--help"], ["convert-original", "--help"], ["--version"],
                                   ["pretrain", "--help"], ["adapt", "--help"]])
def test_help_parses_without_importing_torch_or_transformers(words):
    run = subprocess.run([sys.executable, "-c", HELP_SCRIPT, *words], capture_output=True, text=True, cwd=REPO,
                         timeout=120)
    assert run.returncode == 0 and "light" in run.stdout, run.stderr[-2000:]
    assert ("usage: aesformer" in run.stdout) or words == ["--version"]


def test_every_command_is_listed_and_parses(tmp_path):
    from aesformer_cli import main as cli

    full = cli.build_parser()  # every command's real parser
    listing = cli.build_parser(None)  # names and help only
    commands = next(a for a in full._actions if a.dest == "command").choices
    listed = next(a for a in listing._actions if a.dest == "command").choices
    assert list(commands) == list(listed)
    for name in cli.LAZY_COMMANDS:  # each command's own parser, built alone, is the full one
        alone = next(a for a in cli.build_parser(name)._actions if a.dest == "command").choices[name]
        assert [a.dest for a in alone._actions] == [a.dest for a in commands[name]._actions], name


def test_missing_cuda_and_a_mistyped_model_are_one_line_errors(tmp_path, capsys):
    import torch

    image = tmp_path / "x.png"
    image.write_bytes(b"")
    if not torch.cuda.is_available():
        assert score_cli(image, "--model", tmp_path, "--device", "cuda", "--output", tmp_path / "s.csv") == 2
        err = capsys.readouterr().err
        assert "--device cuda: CUDA is not available here" in err and "Traceback" not in err
    assert score_cli(image, "--model", tmp_path / "no-such-model", "--output", tmp_path / "s.csv") == 2
    err = capsys.readouterr().err
    assert "no model folder" in err and "no-such-model" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "s.csv").exists()  # a run that cannot succeed writes nothing


def test_pipeline_threshold_must_be_a_number():
    from transformers import pipeline

    from modeling_aesformer import AesformerConfig, AesformerImageProcessor, AesformerModel

    model = AesformerModel(AesformerConfig.from_preset("tiny")).eval()
    scorer = pipeline("image-aesthetics", model=model,
                      image_processor=AesformerImageProcessor(size={"height": 32, "width": 32}))
    with pytest.raises(ValueError, match="threshold must be a number"):
        scorer("x.png", threshold="high")


def test_written_folders_follow_the_umask(tmp_path):
    """An exported folder and a saved adapter are readable as the umask allows (mkdtemp and transformers' private
    temporary files would leave 0700 folders and a 0600 model.safetensors)."""
    import os
    import stat

    from modeling_aesformer.export import export_model

    from _helpers import tiny_model_folder

    previous = os.umask(0o022)
    try:
        model_dir = tiny_model_folder(tmp_path / "model", adapters_scale=0.05)
        hub = export_model(model_dir, tmp_path / "hub", log=lambda *a: None)
    finally:
        os.umask(previous)
    for folder in (hub, model_dir / "adapters" / "ava"):
        for path in [folder, *folder.rglob("*")]:
            mode = stat.S_IMODE(path.stat().st_mode)
            assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


@pytest.mark.parametrize("stage", ["pretrain", "adapt"])
def test_every_train_config_field_is_a_flag_with_its_default(stage):
    import dataclasses

    from aesformer_cli.common import ArgumentParser
    from aesformer_training.arguments import add_training_arguments, config_from_args
    from aesformer_training.train_config import TrainConfig

    parser = ArgumentParser()
    add_training_arguments(parser, stage)
    flags = {a.dest for a in parser._actions}
    for field in dataclasses.fields(TrainConfig):
        other_stage = field.metadata.get("stage") not in (None, stage)
        assert (field.name in flags) == (field.name != "stage" and not other_stage), field.name
    # no flag given: exactly the stage's defaults
    assert config_from_args(parser.parse_args(["--output-dir", "out"]), stage) == TrainConfig(stage=stage, output_dir="out")
    # both spellings, the stage's own flags, and the ones that had none before
    own = ["--temperature", "0.1", "--queue_size", "8"] if stage == "pretrain" else ["--mse_weight", "3"]
    args = parser.parse_args(["--output_dir", "out", "--adam-betas", "0.8", "0.95", "--train_resize", "40",
                              "--batch-size", "4", *own])
    config = config_from_args(args, stage)
    assert config.adam_betas == (0.8, 0.95) and config.train_resize == 40
    assert config.batch_size == config.eval_batch_size == 4  # eval follows the given batch size
    if stage == "pretrain":
        assert (config.temperature, config.queue_size, config.learning_rate) == (0.1, 8, 1e-5)
    else:
        assert (config.mse_weight, config.learning_rate, config.adapter_preset) == (3.0, 1e-4, "faithful")


def test_every_command_follows_one_convention(tmp_path, capsys):
    """cli/common.py: every subcommand's flags accept the snake_case spelling; a reported error is one line
    `aesformer: error: ...` and exit status 2, whichever command reports it; --debug shows the traceback instead."""
    from aesformer_cli.main import build_parser, main

    args = build_parser("score").parse_args(["score", "x.jpg", "--model", "m", "--batch_size", "3",
                                             "--max_image_pixels", "10"])
    assert (args.batch_size, args.max_image_pixels) == (3, 10)
    missing = str(tmp_path / "absent")
    for argv in (["set-default", missing, "toy"],
                 ["convert-original", missing + ".pth", "--output", str(tmp_path / "out")],
                 ["export", missing, "--output", str(tmp_path / "hub")],
                 ["score", str(tmp_path / "x.png"), "--model", missing, "--output", str(tmp_path / "s.csv")]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("aesformer: error: ") and len(err.strip().splitlines()) == 1, (argv, err)
        assert "Traceback" not in err
        with pytest.raises(Exception):
            main(["--debug", *argv])
        capsys.readouterr()
    assert not (tmp_path / "out").exists() and not (tmp_path / "hub").exists()
