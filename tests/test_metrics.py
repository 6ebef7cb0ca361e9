"""Aesthetic metrics (numpy/scipy and the local `evaluate` module, offline) and the kebab-case flag helper."""

import argparse
import fnmatch
import json
import math
import os
import pathlib
import subprocess
import sys
import re
import textwrap

import numpy as np
import pytest
import torch
from scipy import stats

import aesformer_training
from aesformer_cli.common import ArgumentParser, KebabHelpFormatter, add_argument
from aesformer_training.evaluation import METRIC_NAMES, compute_metrics, metric_path


REPO = pathlib.Path(__file__).resolve().parents[1]


def random_distributions(rng, n, bins):
    raw = rng.gamma(1.0, size=(n, bins))
    return raw / raw.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------------------------------------------
# compute_metrics
# ---------------------------------------------------------------------------------------------------------------


def test_matches_scipy_and_numpy_on_random_distributions():
    rng = np.random.default_rng(0)
    pred, true = random_distributions(rng, 64, 10), random_distributions(rng, 64, 10)
    result = compute_metrics(pred_distributions=pred, true_distributions=true)
    assert set(result) == set(METRIC_NAMES)
    ps, ts = pred @ np.arange(1, 11), true @ np.arange(1, 11)
    assert result["plcc"] == pytest.approx(stats.pearsonr(ps, ts)[0], abs=1e-12)
    assert result["srcc"] == pytest.approx(stats.spearmanr(ps, ts)[0], abs=1e-12)
    assert result["krcc"] == pytest.approx(stats.kendalltau(ps, ts)[0], abs=1e-12)
    assert result["mae"] == pytest.approx(np.mean(np.abs(ps - ts)))
    assert result["rmse"] == pytest.approx(np.sqrt(np.mean((ps - ts) ** 2)))
    assert result["accuracy"] == pytest.approx(np.mean((ps > 5) == (ts > 5)))
    gaps = np.abs(np.cumsum(pred, 1) - np.cumsum(true, 1))
    assert result["emd_r1"] == pytest.approx(gaps.mean())
    assert result["emd_r2"] == pytest.approx(np.sqrt((gaps**2).mean(axis=1)).mean())
    assert result["n"] == 64 and isinstance(result["n"], int)
    assert all(type(result[k]) is float for k in METRIC_NAMES if k != "n")


def test_kendall_is_tau_b_with_ties():
    pred = np.array([1.0, 2.0, 2.0, 3.0, 4.0, 4.0, 5.0])
    true = np.array([1.0, 1.0, 2.0, 3.0, 3.0, 5.0, 4.0])
    result = compute_metrics(pred_scores=pred, true_scores=true)
    assert result["krcc"] == pytest.approx(stats.kendalltau(pred, true, variant="b")[0])
    assert result["krcc"] != pytest.approx(stats.kendalltau(pred, true, variant="c")[0])
    assert result["srcc"] == pytest.approx(stats.spearmanr(pred, true)[0])


def test_emd_hand_computed():
    pred = [[1, 0, 0], [0.5, 0.5, 0]]
    true = [[0, 0, 1], [0, 0.5, 0.5]]
    # CDF gaps: sample 1 |[1,1,1]-[0,0,1]| = [1,1,0]; sample 2 |[.5,1,1]-[0,.5,1]| = [.5,.5,0]
    result = compute_metrics(pred_distributions=pred, true_distributions=true)
    assert result["emd_r1"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert result["emd_r2"] == pytest.approx((math.sqrt(2 / 3) + math.sqrt(0.5 / 3)) / 2)
    assert compute_metrics(pred_distributions=true, true_distributions=true)["emd_r1"] == 0


def test_accuracy_threshold_is_strict_and_configurable():
    true = [5.0, 5.01, 4.0, 6.0]
    pred = [5.2, 4.9, 4.5, 7.0]
    # truth high: F T F T; prediction high: T F F T
    assert compute_metrics(pred_scores=pred, true_scores=true)["accuracy"] == 0.5
    assert compute_metrics(pred_scores=pred, true_scores=true, threshold=4.95)["accuracy"] == 0.75
    jas = compute_metrics(pred_scores=[0.4, 0.6, 0.7], true_scores=[0.5, 0.55, 0.2], threshold=0.5)
    assert jas["accuracy"] == pytest.approx(2 / 3)


def test_scores_only_have_no_emd_and_mixed_inputs_work():
    result = compute_metrics(pred_scores=[1, 2, 3], true_scores=[1, 2, 4])
    assert set(result) == {"accuracy", "plcc", "srcc", "krcc", "mae", "rmse", "n"}
    assert result["mae"] == pytest.approx(1 / 3) and result["rmse"] == pytest.approx(math.sqrt(1 / 3))
    mixed = compute_metrics(pred_distributions=[[1, 0], [0, 1], [0.5, 0.5]], true_scores=[1, 2, 1.4])
    assert "emd_r1" not in mixed and mixed["mae"] == pytest.approx(0.1 / 3)
    # given scores win over distributions of the same side
    both = compute_metrics(pred_distributions=[[1, 0], [0, 1]], pred_scores=[1.5, 1.5],
                           true_distributions=[[1, 0], [0, 1]])
    assert both["mae"] == pytest.approx(0.5) and both["emd_r1"] == 0  # EMD still compares the distributions


def test_vote_counts_bin_values_and_tensors():
    rng = np.random.default_rng(1)
    counts = rng.integers(0, 30, size=(20, 7)) + 1
    pred = random_distributions(rng, 20, 7)
    from_counts = compute_metrics(pred_distributions=pred, true_distributions=counts, bin_values=np.arange(1, 8))
    normalised = compute_metrics(pred_distributions=pred, true_distributions=counts / counts.sum(1, keepdims=True))
    assert from_counts == pytest.approx(normalised)
    values = np.linspace(0, 1, 7)
    scaled = compute_metrics(pred_distributions=pred, true_distributions=counts, bin_values=values, threshold=0.5)
    ps, ts = pred @ values, (counts / counts.sum(1, keepdims=True)) @ values
    assert scaled["mae"] == pytest.approx(np.mean(np.abs(ps - ts)))
    assert scaled["accuracy"] == pytest.approx(np.mean((ps > 0.5) == (ts > 0.5)))
    as_tensors = compute_metrics(pred_distributions=torch.tensor(pred, dtype=torch.float64),
                                 true_distributions=torch.tensor(counts))
    assert as_tensors == pytest.approx(normalised)


def test_undefined_correlations_are_nan():
    result = compute_metrics(pred_scores=[3, 3, 3], true_scores=[1, 2, 3])
    assert math.isnan(result["plcc"]) and math.isnan(result["srcc"]) and math.isnan(result["krcc"])
    single = compute_metrics(pred_scores=[6], true_scores=[7])
    assert single["accuracy"] == 1 and math.isnan(single["plcc"]) and single["n"] == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pred_scores": [1, 2]}, "true_distributions or true_scores"),
        ({"true_scores": [1, 2]}, "pred_distributions or pred_scores"),
        ({"pred_scores": [1, 2], "true_scores": [1, 2, 3]}, "different numbers of samples"),
        ({"pred_distributions": [[1, 0]], "true_distributions": [[1, 0, 0]]}, "different numbers of bins"),
        ({"pred_distributions": [[1, -1, 1]], "true_scores": [1]}, "negative"),
        ({"pred_distributions": [[0, 0]], "true_scores": [1]}, "sums to 0"),
        ({"pred_scores": [float("nan")], "true_scores": [1]}, "NaN"),
        ({"pred_distributions": [[1, 0]], "true_scores": [1], "bin_values": [1, 2, 3]}, "bin_values"),
        ({"pred_scores": [], "true_scores": []}, "no samples"),
    ],
)
def test_input_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compute_metrics(**kwargs)


# ---------------------------------------------------------------------------------------------------------------
# the evaluate module: package data, loaded by path, offline
# ---------------------------------------------------------------------------------------------------------------


def test_metric_module_is_package_data_and_evaluation_imports_light():
    folder = pathlib.Path(metric_path())
    script = folder / "aesthetic_metrics.py"
    assert folder.name == "aesthetic_metrics" and script.is_file()
    # the script must match the package-data globs, or a wheel install would not ship it
    package_data = re.search(r"\[tool\.setuptools\.package-data\](.*?)(\n\[|\Z)",
                             (REPO / "pyproject.toml").read_text(), re.S).group(1)
    patterns = re.findall(r'"([^"]+)"', re.search(r"aesformer_training\s*=\s*\[([^\]]*)\]", package_data).group(1))
    relative = script.relative_to(pathlib.Path(aesformer_training.__file__).parent).as_posix()
    assert any(fnmatch.fnmatch(relative, pattern) for pattern in patterns), (relative, patterns)
    code = ("import sys, aesformer_training.evaluation as e; "
            "print(sorted(m for m in ('evaluate', 'scipy', 'datasets', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


EVALUATE_SCRIPT = textwrap.dedent(
    """
    import json, socket, sys

    def no_network(*args, **kwargs):
        raise OSError("network access attempted during an offline test")

    socket.socket.connect = no_network
    socket.create_connection = no_network

    from aesformer_training.evaluation import load_metric, metric_path
    import evaluate

    inputs = json.loads(sys.stdin.read())
    metric = evaluate.load(metric_path())
    out = {
        "distributions": metric.compute(predictions=inputs["pred"], references=inputs["true"]),
        "scores": metric.compute(predictions=inputs["pred_scores"], references=inputs["true_scores"], threshold=0.5),
        "mixed": load_metric().compute(predictions=inputs["pred"], references=inputs["true_scores"],
                                       bin_values=inputs["values"], threshold=0.5),
    }
    batched = load_metric(keep_in_memory=True)
    for p, t in zip(inputs["pred"], inputs["true"]):
        batched.add(prediction=p, reference=t)
    out["batched"] = batched.compute()
    print("RESULT" + json.dumps(out))
    """
)


def test_evaluate_load_by_path_offline_matches_compute_metrics(tmp_path):
    rng = np.random.default_rng(3)
    pred, true = random_distributions(rng, 12, 5), random_distributions(rng, 12, 5)
    pred_scores, true_scores = rng.random(12), rng.random(12)
    values = np.linspace(0, 1, 5)
    inputs = {"pred": pred.tolist(), "true": true.tolist(), "pred_scores": pred_scores.tolist(),
              "true_scores": true_scores.tolist(), "values": values.tolist()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "TRANSFORMERS_"))}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_EVALUATE_CACHE=str(tmp_path / "evaluate"),
               HF_MODULES_CACHE=str(tmp_path / "modules"), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               HF_EVALUATE_OFFLINE="1", HF_UPDATE_DOWNLOAD_COUNTS="0")
    proc = subprocess.run([sys.executable, "-c", EVALUATE_SCRIPT], input=json.dumps(inputs), capture_output=True,
                          text=True, env=env, timeout=180, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT"))
    got = json.loads(line[len("RESULT"):])
    assert got["distributions"] == pytest.approx(compute_metrics(pred_distributions=pred, true_distributions=true))
    assert got["batched"] == pytest.approx(got["distributions"])
    assert got["scores"] == pytest.approx(
        compute_metrics(pred_scores=pred_scores, true_scores=true_scores, threshold=0.5))
    assert got["mixed"] == pytest.approx(compute_metrics(pred_distributions=pred, true_scores=true_scores,
                                                         bin_values=values, threshold=0.5))
    assert "emd_r1" in got["distributions"] and "emd_r1" not in got["scores"]
    copies = list((tmp_path / "modules").rglob("aesthetic_metrics.py"))
    assert copies, "evaluate.load should copy the script into the temporary modules cache"


# ---------------------------------------------------------------------------------------------------------------
# kebab-case flags with snake_case aliases
# ---------------------------------------------------------------------------------------------------------------


def test_add_argument_registers_both_spellings():
    parser = argparse.ArgumentParser(prog="x", formatter_class=KebabHelpFormatter)
    add_argument(parser, "--batch-size", type=int, default=16)
    add_argument(parser, "--learning_rate", type=float)  # given in snake_case: kebab becomes the primary
    group = parser.add_argument_group("data")
    add_argument(group, "--data-dir", "-d")
    assert parser.parse_args(["--batch_size", "8"]).batch_size == 8
    assert parser.parse_args(["--batch-size=4"]).batch_size == 4
    args = parser.parse_args(["--learning-rate", "0.1", "--data_dir", "x"])
    assert args.learning_rate == 0.1 and args.data_dir == "x"
    assert parser.parse_args(["-d", "y"]).data_dir == "y"
    help_text = parser.format_help()
    assert "--batch-size" in help_text and "--learning-rate" in help_text
    assert "--batch_size" not in help_text and "--data_dir" not in help_text


def test_argument_parser_subclass_accepts_snake_case_everywhere(capsys):
    parser = ArgumentParser(prog="train")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--mixed_precision", default="no")  # registered in snake_case
    parser.add_argument("--dry-run", action="store_true")
    group = parser.add_argument_group("optimiser")
    group.add_argument("--learning-rate", type=float)
    sub = parser.add_subparsers(dest="command")
    stage = sub.add_parser("adapt")
    stage.add_argument("--adapter-preset", default="faithful")
    args = parser.parse_args(["--batch_size=8", "--mixed-precision", "bf16", "--dry_run", "--learning_rate", "1e-4",
                              "adapt", "--adapter_preset", "lora"])
    assert (args.batch_size, args.mixed_precision, args.dry_run, args.learning_rate) == (8, "bf16", True, 1e-4)
    assert (args.command, args.adapter_preset) == ("adapt", "lora")
    assert parser.parse_args(["--batch-size", "2"]).batch_size == 2
    help_text = parser.format_help()
    assert "--batch_size" not in help_text and "--mixed-precision" in help_text
    plain = ArgumentParser(prog="p")
    plain.add_argument("--batch-size", type=int)
    plain.add_argument("rest", nargs="*")
    args = plain.parse_args(["--batch_size", "3", "--", "--batch_size"])  # after "--" tokens are left alone
    assert args.batch_size == 3 and args.rest == ["--batch_size"]
    with pytest.raises(SystemExit):
        plain.parse_args(["--no_such_flag", "1"])
    assert "--no-such-flag" in capsys.readouterr().err  # unknown flags are reported in kebab-case
    assert plain.parse_args(["--batch_s", "5"]).batch_size == 5  # abbreviations still work
