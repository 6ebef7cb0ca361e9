"""Aesthetic metrics as a local `evaluate` module: accuracy, PLCC, SRCC, KRCC, MAE, RMSE, EMD (r = 1, 2).

Load it by path, offline: ``evaluate.load(aesformer_training.evaluation.metric_path())`` (or
``aesformer_training.evaluation.load_metric()``). The computation is `aesformer_training.evaluation.compute_metrics`,
so this file needs the installed `aesformer` package.
"""

import datasets
import evaluate

from aesformer_training.evaluation import compute_metrics


_DESCRIPTION = """
Image aesthetics metrics on mean scores and score distributions: binary accuracy (high iff score > threshold),
Pearson (PLCC), Spearman (SRCC) and Kendall tau-b (KRCC) correlations, MAE and RMSE of the mean scores, and the
earth mover's distance between the distributions' CDFs with r = 1 (`emd_r1`, as the paper's tables) and r = 2
(`emd_r2`, the training loss). EMD is reported only when both predictions and references are distributions.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: per image, a distribution over the bins (list of floats; vote counts are normalised) or a mean
        score (a float).
    references: the same, for the ground truth (each side may use either form; all rows of a side use one form).
    threshold: accuracy threshold on the score scale (default 5.0: AVA, Photo.net; JAS uses 0.5).
    bin_values: the score of each bin (default 1..bins), used to turn distributions into mean scores.
Returns:
    accuracy, plcc, srcc, krcc, mae, rmse, n, and emd_r1, emd_r2 when both sides are distributions.
Example:
    >>> metric = evaluate.load(metric_path())
    >>> metric.compute(predictions=[[0.1, 0.9], [0.8, 0.2], [0.5, 0.5]], references=[[0, 1], [1, 0], [0.6, 0.4]],
    ...                threshold=1.5)["accuracy"]
    1.0
"""

_CITATION = "The AesFormer paper and code: https://github.com/AiArt-HDU/aesformer"

_DISTRIBUTION = datasets.Sequence(datasets.Value("float64"))
_SCORE = datasets.Value("float64")


class AestheticMetrics(evaluate.Metric):
    """Accuracy, PLCC, SRCC, KRCC, MAE, RMSE and EMD r=1/r=2 for image aesthetics."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": _DISTRIBUTION, "references": _DISTRIBUTION}),
                datasets.Features({"predictions": _SCORE, "references": _SCORE}),
                datasets.Features({"predictions": _DISTRIBUTION, "references": _SCORE}),
                datasets.Features({"predictions": _SCORE, "references": _DISTRIBUTION}),
            ],
        )

    def _compute(self, predictions, references, threshold=5.0, bin_values=None):
        pred_is_dist = len(predictions) > 0 and _is_distribution(predictions[0])
        true_is_dist = len(references) > 0 and _is_distribution(references[0])
        return compute_metrics(
            pred_distributions=[list(p) for p in predictions] if pred_is_dist else None,
            pred_scores=None if pred_is_dist else list(predictions),
            true_distributions=[list(r) for r in references] if true_is_dist else None,
            true_scores=None if true_is_dist else list(references),
            bin_values=bin_values,
            threshold=threshold,
        )


def _is_distribution(value):
    """A distribution is a sequence of numbers; a score is a single number."""
    return not isinstance(value, (str, bytes)) and hasattr(value, "__len__")
