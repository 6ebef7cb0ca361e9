"""The score scale of a dataset (`DatasetSpec`: bins, score range, threshold, the load's report) and the target
distributions on it (`scores_to_distributions`, for datasets that give a mean score instead of votes)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .reports import LoadReport


DEFAULT_SCORE_SIGMA = 1.0


@dataclass
class DatasetSpec:
    """The score scale of a dataset.

    Attributes:
        name: dataset name (``"ava"``, ``"photonet"``, ``"jas"`` or the generic dataset's name).
        num_bins: number of bins of the target distributions.
        score_range: ``(lowest, highest)`` score; bin ``i`` stands for ``linspace(*score_range, num_bins)[i]``.
        threshold: accuracy threshold: an image is "high" iff its score is ``> threshold``.
        report: the `LoadReport` of the load that produced this spec (``None`` for a hand-made spec).
    """

    name: str
    num_bins: int
    score_range: tuple[float, float]
    threshold: float
    report: LoadReport | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if isinstance(self.num_bins, bool) or not isinstance(self.num_bins, (int, np.integer)) or self.num_bins < 2:
            raise ValueError(f"num_bins must be an int >= 2, got {self.num_bins!r}.")
        self.num_bins = int(self.num_bins)
        lo, hi = as_score_range(self.score_range, "score_range")
        self.score_range = (lo, hi)
        self.threshold = float(self.threshold)
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number, got {self.threshold!r}.")

    @property
    def bin_values(self) -> np.ndarray:
        """The score each bin stands for: ``linspace(score_range[0], score_range[1], num_bins)``."""
        return np.linspace(self.score_range[0], self.score_range[1], self.num_bins)

    def score_of(self, distribution: Sequence[float]) -> float:
        """The mean score of a distribution (or of vote counts, which are normalised first)."""
        values = np.asarray(distribution, dtype=np.float64)
        return float(values @ self.bin_values / values.sum())

    def to_json_dict(self) -> dict[str, Any]:
        """The scale as written to ``dataset.json`` (without the report)."""
        return {
            "name": self.name,
            "num_bins": self.num_bins,
            "score_range": list(self.score_range),
            "threshold": self.threshold,
        }


def as_score_range(value: Any, what: str) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what} must be a pair of numbers [lowest, highest], got {value!r}.") from err
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"{what} must be two finite numbers with lowest < highest, got {value!r}.")
    return lo, hi


def default_threshold(score_range: Sequence[float], dataset: str | None) -> float:
    """The one threshold rule of `modeling_aesformer` (imported here, not at module level: the command line imports
    this module before torch)."""
    from modeling_aesformer.configuration_aesformer import default_score_threshold

    return default_score_threshold(score_range, dataset)


def scores_to_distributions(
    scores: Sequence[float], score_range: Sequence[float], num_bins: int, sigma: float = DEFAULT_SCORE_SIGMA
) -> np.ndarray:
    """
    Turns mean scores into target distributions with a discretised Gaussian whose mean is exactly the score.

    For bin indices ``k = 0..num_bins-1`` (bin ``k`` stands for ``linspace(*score_range, num_bins)[k]``),
    ``p_k ∝ exp(-(k - c)² / (2 σ²))`` with `sigma` in BINS. The centre ``c`` is chosen so that the mean of the
    distribution, ``Σ p_k · value_k``, equals the score exactly: in the middle of the scale ``c`` is the score's
    position in bins, near the ends it moves outwards so that the truncated Gaussian does not pull the mean inwards.
    A score at either end of the range gives a one-hot distribution on the end bin.

    Args:
        scores: mean scores, each inside `score_range`.
        score_range: ``(lowest, highest)``.
        num_bins: number of bins (>= 2).
        sigma: the Gaussian's standard deviation in bins (> 0). Default 1.0 bin.

    Returns:
        `np.ndarray` float64 of shape ``[len(scores), num_bins]``; each row sums to 1.
    """
    lo, hi = as_score_range(score_range, "score_range")
    sigma = float(sigma)
    if not (math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"score_sigma must be a positive number of bins, got {sigma!r}.")
    if num_bins < 2:
        raise ValueError(f"num_bins must be >= 2, got {num_bins}.")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(scores)) or np.any(scores < lo) or np.any(scores > hi):
        raise ValueError(f"scores must be finite and inside the score range [{lo}, {hi}].")
    position = (scores - lo) / (hi - lo) * (num_bins - 1)  # target mean in bin units
    k = np.arange(num_bins, dtype=np.float64)
    # p_k ∝ exp(theta·k − k²/(2σ²)) is the Gaussian centred at c = theta·σ²; its mean grows strictly with
    # theta, so bisection on theta finds the centre whose mean equals `position`.
    bound = (num_bins - 1) / sigma**2 + 60.0
    theta_lo = np.full_like(position, -bound)
    theta_hi = np.full_like(position, bound)
    base = -(k**2) / (2 * sigma**2)

    def distributions(theta: np.ndarray) -> np.ndarray:
        logits = theta[:, None] * k[None, :] + base[None, :]
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    for _ in range(100):  # the bracket is < 2·(N/σ² + 60) wide: 100 halvings reach float precision
        mid = (theta_lo + theta_hi) / 2
        too_low = distributions(mid) @ k < position
        theta_lo = np.where(too_low, mid, theta_lo)
        theta_hi = np.where(too_low, theta_hi, mid)
    out = distributions((theta_lo + theta_hi) / 2)
    out[position <= 0] = np.eye(num_bins)[0]
    out[position >= num_bins - 1] = np.eye(num_bins)[-1]
    return out


__all__ = ["DEFAULT_SCORE_SIGMA", "DatasetSpec", "as_score_range", "default_threshold", "scores_to_distributions"]
