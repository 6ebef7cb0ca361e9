"""Aesthetic metrics: accuracy, PLCC, SRCC, KRCC, MAE, RMSE and EMD (r = 1 and r = 2).

`compute_metrics` is plain numpy (scipy.stats for the rank correlations, imported when it is called), so the
training loop can use it without importing `evaluate` (which takes seconds). The same function backs the local
`evaluate` module shipped as package data in ``metrics/aesthetic_metrics/aesthetic_metrics.py``:

```python
from aesformer_training.evaluation import load_metric
metric = load_metric()  # evaluate.load(metric_path()), works offline
metric.compute(predictions=pred_distributions, references=true_distributions, threshold=5.0)
```
"""

from __future__ import annotations

import math
import os
import warnings
from typing import Any

import numpy as np


METRIC_NAMES = ("accuracy", "plcc", "srcc", "krcc", "mae", "rmse", "emd_r1", "emd_r2", "n")


def metric_path() -> str:
    """The folder of the local `evaluate` module (``aesthetic_metrics/aesthetic_metrics.py``)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "metrics", "aesthetic_metrics")


def load_metric(**kwargs):
    """``evaluate.load(metric_path(), **kwargs)``: loads the local metric module (no Hub access)."""
    import evaluate

    return evaluate.load(metric_path(), **kwargs)


def _to_numpy(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):  # torch tensor on any device
        value = value.detach().float().cpu().numpy()
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must hold numbers: {err}") from err
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name} holds NaN or infinite values.")
    return array


def _distributions(value: Any, name: str) -> np.ndarray | None:
    """[n, bins] rows normalised to sum 1 (vote counts are accepted)."""
    if value is None:
        return None
    array = _to_numpy(value, name)
    if array.ndim != 2 or array.shape[1] < 2:
        raise ValueError(f"{name} must have shape [n, bins] with bins >= 2, got {array.shape}.")
    if np.any(array < 0):
        raise ValueError(f"{name} holds negative values (row {int(np.argwhere(array < 0)[0, 0])}).")
    totals = array.sum(axis=1, keepdims=True)
    if np.any(totals <= 0):
        raise ValueError(f"{name} has a row that sums to 0 (row {int(np.flatnonzero(totals[:, 0] <= 0)[0])}).")
    return array / totals


def _scores(value: Any, name: str) -> np.ndarray | None:
    if value is None:
        return None
    array = _to_numpy(value, name)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of scores, got shape {array.shape}.")
    return array


def _correlation(function, x: np.ndarray, y: np.ndarray) -> float:
    """A scipy correlation as a float; NaN when it is undefined (fewer than 2 samples, a constant input)."""
    if len(x) < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(function(x, y)[0])


def compute_metrics(
    pred_distributions=None,
    true_distributions=None,
    pred_scores=None,
    true_scores=None,
    bin_values=None,
    threshold: float = 5.0,
) -> dict[str, float]:
    """
    Aesthetic metrics of predictions against the ground truth.

    Give each side as distributions ``[n, bins]`` (vote counts are normalised per row) and/or mean scores ``[n]``.
    A side's scores are the given scores when there are any, else ``Σ_k p_k · bin_values[k]``.

    - ``accuracy``: binary, an image is high iff its score is ``> threshold`` (strictly; 5.00 is low on AVA), for
      the truth and the prediction alike; the fraction of images on the same side.
    - ``plcc`` (Pearson), ``srcc`` (Spearman), ``krcc`` (Kendall tau-b): on the mean scores, no logistic fitting;
      NaN when undefined (fewer than 2 samples or a constant input).
    - ``mae``, ``rmse``: on the mean scores.
    - ``emd_r1``, ``emd_r2``: only when BOTH distributions are given: per sample
      ``(mean_k |CDF_pred[k] − CDF_true[k]|^r)^(1/r)`` over all ``bins`` CDF points, averaged over samples
      (r = 2 is the training loss; the paper's tables report r = 1).
    - ``n``: the number of samples.

    Args:
        pred_distributions, true_distributions: array-likes (numpy, lists, torch tensors) ``[n, bins]``.
        pred_scores, true_scores: array-likes ``[n]``.
        bin_values: the score of each bin; default ``1..bins``.
        threshold: the accuracy threshold on the score scale (AVA and Photo.net 5.0, JAS 0.5).

    Returns:
        `dict` with the keys ``accuracy, plcc, srcc, krcc, mae, rmse, n`` and, with both distributions,
        ``emd_r1, emd_r2``; Python floats (``n`` an int).
    """
    pred_d = _distributions(pred_distributions, "pred_distributions")
    true_d = _distributions(true_distributions, "true_distributions")
    pred_s = _scores(pred_scores, "pred_scores")
    true_s = _scores(true_scores, "true_scores")
    threshold = float(threshold)

    n_bins = {d.shape[1] for d in (pred_d, true_d) if d is not None}
    if len(n_bins) > 1:
        raise ValueError(f"pred_distributions and true_distributions have different numbers of bins {sorted(n_bins)}.")
    values = None
    if n_bins:
        (bins,) = n_bins
        if bin_values is None:
            values = np.arange(1, bins + 1, dtype=np.float64)
        else:
            values = _to_numpy(bin_values, "bin_values").reshape(-1)
            if len(values) != bins:
                raise ValueError(f"bin_values has {len(values)} values but the distributions have {bins} bins.")

    if pred_s is None:
        if pred_d is None:
            raise ValueError("give pred_distributions or pred_scores.")
        pred_s = pred_d @ values
    if true_s is None:
        if true_d is None:
            raise ValueError("give true_distributions or true_scores.")
        true_s = true_d @ values

    lengths = {
        name: len(a)
        for name, a in (("pred_distributions", pred_d), ("true_distributions", true_d), ("pred_scores", pred_s),
                        ("true_scores", true_s))
        if a is not None
    }
    if len(set(lengths.values())) > 1:
        raise ValueError(f"the inputs have different numbers of samples: {lengths}.")
    n = len(pred_s)
    if n == 0:
        raise ValueError("no samples to evaluate.")

    try:
        from scipy import stats
    except ImportError as err:  # pragma: no cover - scipy ships with the train and test extras
        raise ImportError("compute_metrics needs scipy: pip install 'aesformer[train]'.") from err

    error = pred_s - true_s
    result: dict[str, float] = {
        "accuracy": float(np.mean((pred_s > threshold) == (true_s > threshold))),
        "plcc": _correlation(stats.pearsonr, pred_s, true_s),
        "srcc": _correlation(stats.spearmanr, pred_s, true_s),
        "krcc": _correlation(stats.kendalltau, pred_s, true_s),
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
    }
    if pred_d is not None and true_d is not None:
        cdf_gap = np.abs(np.cumsum(pred_d, axis=1) - np.cumsum(true_d, axis=1))
        result["emd_r1"] = float(np.mean(np.mean(cdf_gap, axis=1)))
        result["emd_r2"] = float(np.mean(np.sqrt(np.mean(cdf_gap**2, axis=1))))
    result["n"] = int(n)
    return result


__all__ = ["METRIC_NAMES", "compute_metrics", "load_metric", "metric_path"]
