"""The one place that says what "median with a 95% interval" means in kurabe.

Intervals are percentile bootstrap intervals (scipy.stats.bootstrap) with a fixed seed, so the
same stored rows always give the same figures.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
N_RESAMPLES = 4000
SEED = 20261129


@dataclass(frozen=True)
class Estimate:
    median: float | None
    ci_low: float | None
    ci_high: float | None
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Ratio:
    """Paired ratio a/b: geometric mean of per-pair ratios, with a bootstrap interval."""

    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    n: int

    @property
    def decided(self) -> bool:
        """True when the interval excludes 1.0 (one side is faster)."""
        if self.ci_low is None:
            return False
        assert self.ci_high is not None  # an interval has both ends or neither
        return self.ci_low > 1.0 or self.ci_high < 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "decided": self.decided}


def _clean(values: Sequence[float | None]) -> np.ndarray:
    arr = np.array([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    return arr


def _bootstrap(sample: np.ndarray, statistic) -> tuple[float, float]:
    if len(sample) < 2 or np.all(sample == sample[0]):
        value = float(statistic(sample, axis=-1))
        return value, value
    res = sps.bootstrap(
        (sample,), statistic, confidence_level=CONFIDENCE, n_resamples=N_RESAMPLES,
        method="percentile", vectorized=True, rng=np.random.default_rng(SEED),
    )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def median_ci(values: Sequence[float | None]) -> Estimate:
    """Median and its 95% percentile-bootstrap interval; n=1 gives no interval."""
    sample = _clean(values)
    if len(sample) == 0:
        return Estimate(None, None, None, 0)
    median = float(np.median(sample))
    if len(sample) == 1:
        return Estimate(median, None, None, 1)
    low, high = _bootstrap(sample, np.median)
    return Estimate(median, low, high, len(sample))


def paired_ratio(a: Sequence[float], b: Sequence[float]) -> Ratio:
    """a/b over matched pairs: exp(mean(log(a_i / b_i))), interval by resampling pairs."""
    if len(a) != len(b):
        raise ValueError("paired_ratio needs matched pairs")
    logs = _clean([math.log(x / y) for x, y in zip(a, b, strict=True)
                   if x and y and x > 0 and y > 0])
    if len(logs) == 0:
        return Ratio(None, None, None, 0)
    ratio = float(np.exp(np.mean(logs)))
    if len(logs) == 1:
        return Ratio(ratio, None, None, 1)
    low, high = _bootstrap(logs, np.mean)
    return Ratio(ratio, float(np.exp(low)), float(np.exp(high)), len(logs))


def ratio_of_medians(after: Sequence[float | None], before: Sequence[float | None]) -> Ratio:
    """median(after) / median(before) for two independent samples (two runs), with a
    percentile-bootstrap interval that resamples each run separately."""
    a, b = _clean(after), _clean(before)
    if len(a) == 0 or len(b) == 0 or np.median(b) == 0:
        return Ratio(None, None, None, min(len(a), len(b)))
    ratio = float(np.median(a) / np.median(b))
    if len(a) < 2 or len(b) < 2:
        return Ratio(ratio, None, None, min(len(a), len(b)))
    res = sps.bootstrap(
        (a, b), lambda x, y, axis=-1: np.median(x, axis=axis) / np.median(y, axis=axis),
        confidence_level=CONFIDENCE, n_resamples=N_RESAMPLES, method="percentile",
        vectorized=True, paired=False, rng=np.random.default_rng(SEED),
    )
    return Ratio(ratio, float(res.confidence_interval.low), float(res.confidence_interval.high),
                 min(len(a), len(b)))


@dataclass(frozen=True)
class MeanEstimate:
    mean: float | None
    ci_low: float | None
    ci_high: float | None
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def mean_ci(values: Sequence[float | None]) -> MeanEstimate:
    """Mean and its 95% percentile-bootstrap interval (judge scores, paired differences)."""
    sample = _clean(values)
    if len(sample) == 0:
        return MeanEstimate(None, None, None, 0)
    mean = float(np.mean(sample))
    if len(sample) == 1:
        return MeanEstimate(mean, None, None, 1)
    low, high = _bootstrap(sample, np.mean)
    return MeanEstimate(mean, low, high, len(sample))
