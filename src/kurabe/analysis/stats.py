"""The one place that says what "median with a 95% interval" and "a/b with a 95% interval"
mean in kurabe (docs/metrics.md, Aggregates).

Requests are clustered: the repeats of one prompt share its output length, language and much of
its speed, so they are not independent draws. Every interval here takes the cluster of each
value (kurabe passes the prompt id) and treats prompts, not requests, as the sampled units:

* a median: a two-stage cluster bootstrap (prompts with replacement, then the repeats within
  each drawn prompt with replacement) and an *expanded* percentile interval, whose tail level is
  widened for the number of prompts ``k`` so that it matches a t interval with ``k - 1`` degrees
  of freedom (a plain percentile interval from a handful of prompts is too narrow);
* a paired ratio a/b: the geometric mean of the per-pair ratios, with a t interval on the mean
  log ratio whose standard error is the cluster-robust one (prompts as clusters) and whose
  degrees of freedom are ``k - 1``.

Without cluster keys every value is its own cluster. Values are put in a canonical order
(cluster key, then value) before anything is computed and the bootstrap has a fixed seed, so
the same data in any row order give the same figures, to the last digit.

Below ``MIN_PROMPTS`` distinct prompts a ratio is reported without a verdict: the figure and its
interval are shown, ``decided`` is False and ``no_verdict`` says why. The coverage that backs
these choices is simulated in tests/test_intervals.py.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass
from typing import Final

import numpy as np
from scipy import stats as sps

CONFIDENCE = 0.95
N_RESAMPLES = 4000
SEED = 20261129
# Fewest distinct prompts (clusters) behind a ratio before kurabe calls a winner; a prompt gives
# at least one pair, so this is also the fewest pairs. See docs/metrics.md for the simulation.
MIN_PROMPTS = 5
_CHUNK_VALUES = 2_000_000  # bootstrap draws held in memory at once


@dataclass(frozen=True)
class Estimate:
    median: float | None
    ci_low: float | None
    ci_high: float | None
    n: int
    clusters: int = 0  # distinct prompts behind the figure (each value alone without keys)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Ratio:
    """a/b: for paired data the geometric mean of per-pair ratios, with its 95% interval."""

    ratio: float | None
    ci_low: float | None
    ci_high: float | None
    n: int  # pairs (for two independent samples: the smaller sample)
    clusters: int = 0  # distinct prompts behind the figure
    no_verdict: str | None = None  # why no verdict is given (too few prompts, nothing matched)

    @property
    def decided(self) -> bool:
        """True when there are enough prompts to decide and the interval excludes 1.0."""
        if self.no_verdict is not None or self.ci_low is None:
            return False
        assert self.ci_high is not None  # an interval has both ends or neither
        return self.ci_low > 1.0 or self.ci_high < 1.0

    def to_dict(self) -> dict:
        return {**asdict(self), "decided": self.decided}


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _clean(values: Sequence[float | None]) -> np.ndarray:
    """The finite values, sorted (a canonical order: row order never reaches a figure)."""
    return np.sort(np.array([v for v in values if _finite(v)], dtype=float))


def _key_order(key: Hashable) -> tuple[str, str]:
    return type(key).__name__, repr(key)


def _grouped(values: Sequence[float | None], clusters: Sequence[Hashable] | None
             ) -> list[np.ndarray]:
    """The finite values grouped by cluster in a canonical order: clusters sorted by key,
    values sorted within each; without keys every value is its own cluster."""
    if clusters is None:
        return [np.array([v]) for v in _clean(values)]
    if len(clusters) != len(values):
        raise ValueError("each value needs its cluster key")
    groups: dict[Hashable, list[float]] = {}
    for value, key in zip(values, clusters, strict=True):
        if _finite(value):
            assert value is not None
            groups.setdefault(key, []).append(float(value))
    return [np.sort(np.array(groups[k])) for k in sorted(groups, key=_key_order)]


def tail_level(k: int) -> float:
    """The tail probability of the expanded percentile interval for ``k`` clusters: the
    normal quantile at this level is sqrt(k / (k - 1)) times Student's t quantile with k - 1
    degrees of freedom (Hesterberg's expanded percentile interval)."""
    t = sps.t.ppf(0.5 + CONFIDENCE / 2, k - 1)
    return float(sps.norm.cdf(-math.sqrt(k / (k - 1)) * t))


def _nanmedian_rows(x: np.ndarray) -> np.ndarray:
    """Median of each row, ignoring NaN padding (fast: one sort)."""
    s = np.sort(x, axis=1)  # NaN sorts last
    count = np.sum(~np.isnan(x), axis=1)
    rows = np.arange(len(x))
    return (s[rows, (count - 1) // 2] + s[rows, count // 2]) / 2


def _cluster_bootstrap(groups: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """N_RESAMPLES two-stage resamples, each a row: k prompts drawn with replacement, then for
    each drawn prompt as many of its values as it has, drawn with replacement (NaN pads)."""
    k = len(groups)
    sizes = np.array([len(g) for g in groups])
    width = int(sizes.max())
    padded = np.full((k, width), np.nan)
    for i, g in enumerate(groups):
        padded[i, :len(g)] = g
    per_chunk = max(1, _CHUNK_VALUES // (k * width))
    out = []
    for start in range(0, N_RESAMPLES, per_chunk):
        b = min(per_chunk, N_RESAMPLES - start)
        drawn = rng.integers(0, k, (b, k))
        n_drawn = sizes[drawn][..., None]
        within = (rng.random((b, k, width)) * n_drawn).astype(int)
        sample = padded[drawn[..., None], within]
        sample[np.arange(width) >= n_drawn] = np.nan
        out.append(sample.reshape(b, k * width))
    return np.concatenate(out)


def median_ci(values: Sequence[float | None],
              clusters: Sequence[Hashable] | None = None) -> Estimate:
    """Median and its 95% interval from a two-stage cluster bootstrap (expanded percentile).

    ``clusters``: the cluster key (prompt id) of each value; None: every value its own cluster.
    One prompt gives a median and no interval: nothing says how other prompts would go."""
    groups = _grouped(values, clusters)
    if not groups:
        return Estimate(None, None, None, 0, 0)
    sample = np.sort(np.concatenate(groups))
    n, k = len(sample), len(groups)
    median = float(np.median(sample))
    if k < 2:
        return Estimate(median, None, None, n, k)
    if np.all(sample == sample[0]):
        return Estimate(median, median, median, n, k)
    boot = _nanmedian_rows(_cluster_bootstrap(groups, np.random.default_rng(SEED)))
    q = tail_level(k)
    low, high = np.quantile(boot, [q, 1 - q])
    return Estimate(median, float(low), float(high), n, k)


def too_few(k: int, n: int, unit: str = "pair") -> str | None:
    """Why ``k`` prompts (``n`` pairs, or requests) are too few to decide, or None when they
    are enough."""
    if k >= MIN_PROMPTS:
        return None
    return (f"too few requests to decide: {k} prompt{'s' if k != 1 else ''}, {n} "
            f"{unit}{'s' if n != 1 else ''}; at least {MIN_PROMPTS} prompts are needed")


def paired_ratio(a: Sequence[float], b: Sequence[float],
                 clusters: Sequence[Hashable] | None = None) -> Ratio:
    """a/b over matched pairs: exp(mean(log(a_i / b_i))), with a 95% t interval on the mean
    log ratio whose standard error treats prompts as clusters (k - 1 degrees of freedom).

    ``clusters``: the prompt of each pair; None: every pair its own cluster. Pairs with a
    missing, zero or negative side are dropped."""
    if len(a) != len(b) or (clusters is not None and len(clusters) != len(a)):
        raise ValueError("paired_ratio needs matched pairs")
    keys: Sequence[Hashable] = clusters if clusters is not None else [None] * len(a)
    logs: list[float] = []
    kept: list[Hashable] = []
    for x, y, key in zip(a, b, keys, strict=True):
        if _finite(x) and _finite(y) and x > 0 and y > 0:
            logs.append(math.log(x / y))
            kept.append(key)
    groups = _grouped(logs, kept if clusters is not None else None)
    if not groups:
        return Ratio(None, None, None, 0, 0, "no matched pairs")
    d = np.concatenate(groups)
    n, k = len(d), len(groups)
    centre = float(np.mean(d))
    ratio = math.exp(centre)
    verdict = too_few(k, n)
    if k < 2:
        return Ratio(ratio, None, None, n, k, verdict)
    if np.all(d == d[0]):
        return Ratio(ratio, ratio, ratio, n, k, verdict)
    # Cluster-robust (CR1) variance of the mean over all pairs: each prompt's summed residual.
    resid = np.array([float(np.sum(g - centre)) for g in groups])
    se = math.sqrt(k / (k - 1) * float(np.sum(resid ** 2))) / n
    half = float(sps.t.ppf(0.5 + CONFIDENCE / 2, k - 1)) * se
    return Ratio(ratio, math.exp(centre - half), math.exp(centre + half), n, k, verdict)


def ratio_of_medians(after: Sequence[float | None], before: Sequence[float | None],
                     clusters_after: Sequence[Hashable] | None = None,
                     clusters_before: Sequence[Hashable] | None = None) -> Ratio:
    """median(after) / median(before) for two independent samples (two runs with nothing to
    pair), with an expanded-percentile interval from a two-stage cluster bootstrap of each run
    on its own; the tail level is set by the run with fewer prompts."""
    ga, gb = _grouped(after, clusters_after), _grouped(before, clusters_before)
    na, nb = sum(len(g) for g in ga), sum(len(g) for g in gb)
    k = min(len(ga), len(gb))
    n = min(na, nb)
    if k == 0:
        return Ratio(None, None, None, n, k, "not measured in both runs")
    a, b = np.sort(np.concatenate(ga)), np.sort(np.concatenate(gb))
    if np.median(b) == 0:
        return Ratio(None, None, None, n, k, "the earlier median is zero")
    ratio = float(np.median(a) / np.median(b))
    verdict = too_few(k, n, "request")
    if k < 2:
        return Ratio(ratio, None, None, n, k, verdict)
    if np.all(a == a[0]) and np.all(b == b[0]):
        return Ratio(ratio, ratio, ratio, n, k, verdict)
    rng = np.random.default_rng(SEED)
    boot_a = _nanmedian_rows(_cluster_bootstrap(ga, rng))
    boot_b = _nanmedian_rows(_cluster_bootstrap(gb, rng))
    with np.errstate(divide="ignore", invalid="ignore"):
        boot = boot_a / boot_b
    boot = boot[np.isfinite(boot)]
    if len(boot) == 0:
        return Ratio(ratio, None, None, n, k, verdict)
    q = tail_level(k)
    low, high = np.quantile(boot, [q, 1 - q])
    return Ratio(ratio, float(low), float(high), n, k, verdict)


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
    if np.all(sample == sample[0]):
        return MeanEstimate(mean, mean, mean, len(sample))
    res = sps.bootstrap(
        (sample,), np.mean, confidence_level=CONFIDENCE, n_resamples=N_RESAMPLES,
        method="percentile", vectorized=True, rng=np.random.default_rng(SEED),
    )
    low, high = res.confidence_interval.low, res.confidence_interval.high
    return MeanEstimate(mean, float(low), float(high), len(sample))


def proportion_ci(successes: int, n: int, level: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (judge agreement, flip
    and refusal rates): unlike the plain normal interval it stays inside [0, 1] and is not
    zero-width at 0 or n successes. ``n`` = 0 gives (0.0, 1.0): nothing is known."""
    if n <= 0:
        return (0.0, 1.0)
    if not 0 <= successes <= n:
        raise ValueError(f"successes {successes} must lie in 0..{n}")
    z = float(sps.norm.ppf(0.5 + level / 2))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


# Percentiles of load levels (docs/metrics.md, Load): numpy's "linear" method, which is
# Hyndman and Fan's type 7 (the default of numpy, R and Excel's PERCENTILE.INC): the value at
# rank 1 + q (n - 1) of the sorted sample, interpolated linearly between neighbours.
PERCENTILE_METHOD: Final = "linear"


def percentiles(values: Sequence[float | None], qs: Sequence[float] = (50, 90, 99)
                ) -> dict[str, float | None]:
    """``{"p50": ..., "p90": ..., "p99": ...}`` of the finite values (type 7, linear
    interpolation); every entry None when there is no value."""
    sample = _clean(values)
    if len(sample) == 0:
        return {f"p{q:g}": None for q in qs}
    found = np.percentile(sample, [float(q) for q in qs], method=PERCENTILE_METHOD)
    return {f"p{q:g}": float(v) for q, v in zip(qs, found, strict=True)}
