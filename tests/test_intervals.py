"""Intervals that respect how prompts cluster: coverage simulated against a known truth, row
order, the minimum sample, and what clustering changes.

The coverage simulation draws many datasets shaped like a run (prompts × repeats), where each
prompt has its own speed and its own effect on the speed ratio (a per-prompt random effect, so
the repeats of one prompt are correlated) and each request has lognormal noise, and counts how
often kurabe's 95% interval holds the true figure. The same datasets go through the method
kurabe used before (a percentile bootstrap that resamples every request independently), which
must fail the same check: the simulation is hard enough to tell the two apart.

``python tests/test_intervals.py`` prints the coverage of both methods over a grid of designs.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass

import numpy as np
import pytest

from kurabe.analysis.speed import Comparison, analyse_speed
from kurabe.analysis.stats import (
    MIN_PROMPTS,
    Estimate,
    Ratio,
    mean_ci,
    median_ci,
    paired_ratio,
    ratio_of_medians,
)
from kurabe.records import RequestRow

TRUE_RATIO = 1.25
TRUE_MEDIAN = 40.0


@dataclass(frozen=True)
class Design:
    prompts: int = 6
    repeats: int = 3
    prompt_sd: float = 0.10  # sd of the per-prompt effect on log(a/b)
    noise_sd: float = 0.05  # sd of each request's log noise (lognormal noise)
    speed_sd: float = 0.30  # sd of log speed between prompts (what a prompt fixes)


def simulate_pairs(design: Design, datasets: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Speeds a and b, shape (datasets, prompts, repeats): b_pr = s_p e^(ε), a_pr = θ e^(u_p)
    s_p e^(ε'), with s_p the prompt's speed and u_p its effect on the ratio."""
    rng = np.random.default_rng(seed)
    shape = (datasets, design.prompts, design.repeats)
    speed = TRUE_MEDIAN * np.exp(rng.normal(0, design.speed_sd, (datasets, design.prompts, 1)))
    effect = rng.normal(0, design.prompt_sd, (datasets, design.prompts, 1))
    b = speed * np.exp(rng.normal(0, design.noise_sd, shape))
    a = TRUE_RATIO * np.exp(effect) * speed * np.exp(rng.normal(0, design.noise_sd, shape))
    return a, b


def simulate_speeds(design: Design, datasets: int, seed: int) -> np.ndarray:
    """One model's speeds, (datasets, prompts, repeats): 40 e^(α_p + ε); the median of the
    population of prompts and repeats is 40 (α and ε are symmetric about 0)."""
    rng = np.random.default_rng(seed)
    alpha = rng.normal(0, design.speed_sd, (datasets, design.prompts, 1))
    noise = rng.normal(0, design.noise_sd, (datasets, design.prompts, design.repeats))
    return TRUE_MEDIAN * np.exp(alpha + noise)


def clusters(design: Design) -> list[str]:
    return [f"p{p}" for p in range(design.prompts) for _ in range(design.repeats)]


def ratio_coverage(design: Design, datasets: int, seed: int) -> float:
    """Share of datasets whose paired_ratio interval holds the true ratio."""
    a, b = simulate_pairs(design, datasets, seed)
    keys = clusters(design)
    hits = 0
    for i in range(datasets):
        r = paired_ratio(a[i].ravel().tolist(), b[i].ravel().tolist(), clusters=keys)
        assert r.ci_low is not None and r.ci_high is not None
        hits += r.ci_low <= TRUE_RATIO <= r.ci_high
    return hits / datasets


def median_coverage(design: Design, datasets: int, seed: int) -> float:
    y = simulate_speeds(design, datasets, seed)
    keys = clusters(design)
    hits = 0
    for i in range(datasets):
        est = median_ci(y[i].ravel().tolist(), clusters=keys)
        assert est.ci_low is not None and est.ci_high is not None
        hits += est.ci_low <= TRUE_MEDIAN <= est.ci_high
    return hits / datasets


def old_method_coverage(values: np.ndarray, truth: float, statistic, resamples: int,
                        seed: int) -> float:
    """The interval kurabe used before: a percentile bootstrap resampling every request (or
    pair) independently, as if the repeats of a prompt were independent draws. ``values``:
    (datasets, n); vectorised over datasets and resamples."""
    rng = np.random.default_rng(seed)
    hits = 0
    for chunk in np.array_split(values, max(1, len(values) // 50)):
        idx = rng.integers(0, chunk.shape[1], (len(chunk), resamples, chunk.shape[1]))
        stats = statistic(np.take_along_axis(chunk[:, None, :], idx, axis=2), axis=2)
        low, high = np.quantile(stats, [0.025, 0.975], axis=1)
        hits += int(np.sum((low <= truth) & (truth <= high)))
    return hits / len(values)


def old_ratio_coverage(design: Design, datasets: int, seed: int, resamples: int = 1000) -> float:
    a, b = simulate_pairs(design, datasets, seed)
    logs = np.log(a / b).reshape(datasets, -1)
    return old_method_coverage(logs, np.log(TRUE_RATIO), np.mean, resamples, seed + 1)


def old_median_coverage(design: Design, datasets: int, seed: int, resamples: int = 1000) -> float:
    y = simulate_speeds(design, datasets, seed).reshape(datasets, -1)
    return old_method_coverage(y, TRUE_MEDIAN, np.median, resamples, seed + 1)


# -- coverage -------------------------------------------------------------------------------

def test_ratio_interval_holds_its_coverage_when_prompts_cluster():
    design = Design(prompts=6, repeats=3)
    new = ratio_coverage(design, datasets=1000, seed=11)
    old = old_ratio_coverage(design, datasets=1000, seed=11)
    assert new >= 0.93, new
    # The same datasets defeat the interval that took every request as independent.
    assert old < 0.85, old


def test_ratio_interval_holds_with_one_repeat_per_prompt():
    # One repeat: the case a bootstrap over a handful of values covers worst.
    assert ratio_coverage(Design(prompts=6, repeats=1), datasets=1000, seed=12) >= 0.93
    assert ratio_coverage(Design(prompts=MIN_PROMPTS, repeats=2), datasets=1000,
                          seed=13) >= 0.93


def test_median_interval_holds_its_coverage_when_prompts_cluster():
    design = Design(prompts=6, repeats=3)
    new = median_coverage(design, datasets=400, seed=21)
    old = old_median_coverage(design, datasets=400, seed=21)
    assert new >= 0.93, new
    assert old < 0.85, old


# -- what clustering changes ----------------------------------------------------------------

def test_repeating_each_pair_does_not_narrow_the_ratio_interval():
    a = [130.0, 118.0, 151.0, 122.0, 140.0, 127.0]
    b = [100.0, 101.0, 110.0, 99.0, 104.0, 103.0]
    once = paired_ratio(a, b)
    # Three identical repeats of each prompt carry no more information than one.
    thrice = paired_ratio([x for x in a for _ in range(3)], [y for y in b for _ in range(3)],
                          clusters=[p for p in range(6) for _ in range(3)])
    assert thrice.ratio == pytest.approx(once.ratio)
    assert (thrice.ci_low, thrice.ci_high) == pytest.approx((once.ci_low, once.ci_high))
    assert (thrice.n, thrice.clusters) == (18, 6)
    # Taken as 18 independent pairs, the same data would look three times as sure.
    naive = paired_ratio([x for x in a for _ in range(3)], [y for y in b for _ in range(3)])
    assert naive.ci_high - naive.ci_low < 0.6 * (thrice.ci_high - thrice.ci_low)


def test_repeating_each_value_does_not_narrow_the_median_interval():
    values = [31.0, 44.0, 38.0, 52.0, 40.0, 35.0, 47.0]
    once = median_ci(values, clusters=list(range(7)))
    thrice = median_ci([v for v in values for _ in range(3)],
                       clusters=[p for p in range(7) for _ in range(3)])
    assert thrice.median == once.median == 40.0
    assert (thrice.ci_low, thrice.ci_high) == (once.ci_low, once.ci_high)
    naive = median_ci([v for v in values for _ in range(3)])
    assert naive.ci_high - naive.ci_low < thrice.ci_high - thrice.ci_low


def test_the_ratio_interval_is_the_t_interval_over_prompts():
    # Balanced prompts: the interval is exp(mean ± t(k−1) · sd(prompt means) / √k), by hand.
    from scipy import stats as sps

    logs = {"p1": [0.20, 0.24], "p2": [0.10, 0.12], "p3": [0.31, 0.29], "p4": [0.18, 0.22],
            "p5": [0.05, 0.09], "p6": [0.26, 0.20]}
    b = [100.0] * 12
    a = [100.0 * np.exp(d) for p in logs for d in logs[p]]
    keys = [p for p in logs for _ in logs[p]]
    r = paired_ratio(a, b, clusters=keys)
    means = np.array([np.mean(v) for v in logs.values()])
    half = sps.t.ppf(0.975, 5) * means.std(ddof=1) / np.sqrt(6)
    assert r.ratio == pytest.approx(np.exp(means.mean()))
    assert (r.ci_low, r.ci_high) == pytest.approx(
        (np.exp(means.mean() - half), np.exp(means.mean() + half)))
    assert r.decided and r.no_verdict is None


def test_uneven_repeats_per_prompt_are_handled():
    rng = np.random.default_rng(5)
    keys = [p for p, reps in zip("abcdefg", [1, 4, 2, 5, 3, 1, 2], strict=True)
            for _ in range(reps)]
    values = list(rng.lognormal(3.5, 0.3, len(keys)))
    est = median_ci(values, clusters=keys)
    assert (est.n, est.clusters) == (18, 7)
    assert min(values) <= est.ci_low <= est.median <= est.ci_high <= max(values)
    r = paired_ratio([v * 1.3 for v in values], values, clusters=keys)
    assert r.ratio == pytest.approx(1.3) and r.decided


def test_one_prompt_gives_a_figure_and_no_interval():
    est = median_ci([10.0, 11.0, 12.0], clusters=["p", "p", "p"])
    assert (est.median, est.ci_low, est.ci_high, est.clusters) == (11.0, None, None, 1)
    r = paired_ratio([12.0, 13.0, 12.5], [10.0, 10.0, 10.0], clusters=["p", "p", "p"])
    assert r.ratio is not None and r.ci_low is None and not r.decided
    assert "1 prompt," in (r.no_verdict or "")


# -- row order ------------------------------------------------------------------------------

def shuffled(rng: random.Random, *columns: list) -> list[list]:
    order = list(range(len(columns[0])))
    rng.shuffle(order)
    return [[c[i] for i in order] for c in columns]


def test_the_same_data_in_another_order_gives_identical_figures():
    nprng = np.random.default_rng(3)
    keys = [f"p{p}" for p in range(6) for _ in range(3)]
    a = list(nprng.lognormal(4.0, 0.3, 18))
    b = list(nprng.lognormal(4.0, 0.3, 18))
    first_ratio, first_median = paired_ratio(a, b, keys), median_ci(a, keys)
    first_plain, first_mean = median_ci(a), mean_ci(a)
    first_unpaired = ratio_of_medians(a, b, keys, keys)
    rng = random.Random(4)
    for _ in range(5):
        sa, sb, sk = shuffled(rng, a, b, keys)
        assert paired_ratio(sa, sb, sk) == first_ratio
        assert median_ci(sa, sk) == first_median
        assert median_ci(sa) == first_plain
        assert mean_ci(sa) == first_mean
        sa2, sk2 = shuffled(rng, a, keys)
        assert ratio_of_medians(sa2, sb, sk2, sk) == first_unpaired


def row(model: str, prompt: str, repeat: int, decode: float, ttft: float) -> RequestRow:
    metrics = {"decode_tokens_per_s": decode, "chars_per_s": decode * 3,
               "prompt_tokens_per_s": 40 / ttft, "ttft_s": ttft, "output_tokens": 64,
               "answer_chars": 190}
    return RequestRow(seq=0, model=model, prompt_id=prompt, repeat=repeat, phase="measure",
                      status="ok", error=None, sent_at_unix_s=0, request={}, record={},
                      metrics=metrics)


def test_a_speed_analysis_does_not_depend_on_row_order():
    rng = np.random.default_rng(8)
    rows = [row(m, f"p{p}", r, float(rng.lognormal(4 + (m == "a") * 0.02, 0.1)),
                float(rng.lognormal(-2, 0.2)))
            for p in range(6) for r in range(3) for m in "ab"]
    first = analyse_speed(["a", "b"], rows)
    shuffler = random.Random(9)
    for _ in range(3):
        again = list(rows)
        shuffler.shuffle(again)
        other = analyse_speed(["a", "b"], again)
        assert other.per_model == first.per_model
        assert [c.to_dict() for c in other.comparisons] == [c.to_dict() for c in
                                                            first.comparisons]
    assert all(e.clusters == 6 for e in first.per_model["a"].values() if e.n)


# -- the minimum sample ---------------------------------------------------------------------

def test_two_requests_are_not_a_verdict():
    r = paired_ratio([120, 130], [100, 100])
    assert r.ratio == pytest.approx((1.2 * 1.3) ** 0.5)
    assert not r.decided
    assert r.no_verdict and "too few requests to decide" in r.no_verdict
    d = r.to_dict()
    assert {"ratio", "ci_low", "ci_high", "n", "decided"} <= set(d)
    assert d["decided"] is False and d["no_verdict"] == r.no_verdict


def test_many_repeats_of_few_prompts_are_still_too_few():
    keys = [p for p in range(MIN_PROMPTS - 1) for _ in range(10)]
    b = [100.0 + (i % 7) for i in range(len(keys))]
    a = [2.0 * y for y in b]  # twice as fast on every request
    r = paired_ratio(a, b, clusters=keys)
    assert r.ratio == pytest.approx(2.0)
    assert (r.n, r.clusters) == (10 * (MIN_PROMPTS - 1), MIN_PROMPTS - 1)
    assert not r.decided and r.no_verdict
    # One prompt more, and the same speed-up is decided.
    keys5 = [p for p in range(MIN_PROMPTS) for _ in range(2)]
    b5 = [100.0 + i for i in range(len(keys5))]
    enough = paired_ratio([2.0 * y for y in b5], b5, clusters=keys5)
    assert enough.decided and enough.no_verdict is None


def test_a_comparison_with_too_few_prompts_says_so():
    r = paired_ratio([150.0, 160.0, 155.0], [100.0, 100.0, 100.0], clusters=["p1", "p2", "p3"])
    sentence = Comparison("a", "b", "decode_tokens_per_s", r).sentence()
    assert "too few requests to decide" in sentence
    assert "faster" not in sentence
    assert sentence.startswith("no clear winner in decode")


def test_equal_runs_with_enough_prompts_are_undecided_not_too_few():
    keys = [p for p in range(6) for _ in range(2)]
    a = [100.0, 102.0, 98.0, 101.0, 99.0, 100.5, 100.2, 99.7, 101.3, 98.9, 100.1, 99.6]
    b = [101.0, 99.0, 100.0, 100.0, 100.5, 99.5, 99.8, 100.4, 100.2, 99.3, 100.6, 100.0]
    r = paired_ratio(a, b, clusters=keys)
    assert r.no_verdict is None and r.ci_low < 1.0 < r.ci_high and not r.decided
    unpaired = ratio_of_medians(a, b, keys, keys)
    assert unpaired.no_verdict is None and not unpaired.decided


def test_estimates_keep_their_keys():
    assert set(Estimate(1.0, 0.5, 1.5, 3, 2).to_dict()) >= {"median", "ci_low", "ci_high", "n"}
    assert set(Ratio(1.0, 0.5, 1.5, 3).to_dict()) >= {"ratio", "ci_low", "ci_high", "n",
                                                      "decided"}



def test_explain_describes_the_method_and_the_minimum():
    from kurabe.api import explain_metrics

    _, aggregates = explain_metrics()
    for phrase in ("two-stage cluster bootstrap", "t interval", f"fewer than {MIN_PROMPTS} distinct prompts",
                   "too few requests to decide", "row order"):
        assert phrase in aggregates


# -- the coverage table ---------------------------------------------------------------------

def coverage_table(datasets: int = 2000) -> None:
    """Coverage of the old and the new intervals over a grid of designs (slow: minutes)."""
    print(f"true ratio {TRUE_RATIO}, true median {TRUE_MEDIAN}; {datasets} datasets per row; "
          "old = percentile bootstrap over independent requests (1000 resamples)")
    print(f"{'prompts':>7} {'repeats':>7} {'prompt sd':>9} {'noise sd':>8} {'speed sd':>8} | "
          f"{'ratio old':>9} {'ratio new':>9} | {'median old':>10} {'median new':>10}")
    for prompts, repeats, prompt_sd, noise_sd, speed_sd in [
            (6, 3, 0.10, 0.05, 0.30), (6, 3, 0.05, 0.05, 0.10), (6, 3, 0.0, 0.05, 0.05),
            (6, 1, 0.10, 0.05, 0.30), (3, 3, 0.10, 0.05, 0.30), (4, 3, 0.10, 0.05, 0.30),
            (5, 3, 0.10, 0.05, 0.30), (5, 1, 0.10, 0.05, 0.30), (5, 2, 0.03, 0.08, 0.10),
            (8, 3, 0.10, 0.05, 0.30), (12, 3, 0.10, 0.05, 0.30)]:
        d = Design(prompts, repeats, prompt_sd, noise_sd, speed_sd)
        seed = prompts * 100 + repeats
        n_median = datasets // 4
        print(f"{prompts:>7} {repeats:>7} {prompt_sd:>9} {noise_sd:>8} {speed_sd:>8} | "
              f"{old_ratio_coverage(d, datasets, seed):>9.3f} "
              f"{ratio_coverage(d, datasets, seed):>9.3f} | "
              f"{old_median_coverage(d, n_median, seed):>10.3f} "
              f"{median_coverage(d, n_median, seed):>10.3f}", flush=True)


if __name__ == "__main__":
    coverage_table(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
