"""Intervals keep their coverage near 0 and 1 (issue: numbers that cannot mislead, §2).

Binary items: the exact coverage of `wilson_ci` over the binomial distribution, across p and n.
Fractional items in [0, 1] (pass@k from a pool of samples): simulated coverage of `proportion_ci`.
The percentile bootstrap, for contrast, covers 86-91% at these p and n and gives [1, 1] when all succeed.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from posttrain.evaluation import stats

PS = [0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.999]
NS = [50, 200, 500, 1000]


def _binomial_pmf(n: int, p: float) -> np.ndarray:
    k = np.arange(n + 1)
    log_comb = np.array([math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) for i in k])
    with np.errstate(divide="ignore"):
        return np.exp(log_comb + k * np.log(p) + (n - k) * np.log1p(-p))


def exact_coverage(n: int, p: float) -> float:
    pmf = _binomial_pmf(n, p)
    return float(sum(pmf[k] for k in range(n + 1) if stats.wilson_ci(k, n)[0] <= p <= stats.wilson_ci(k, n)[1]))


def test_wilson_coverage_across_p_and_n():
    coverage = {(n, p): exact_coverage(n, p) for n in NS for p in PS}
    mirrored = {(n, p): exact_coverage(n, 1 - p) for n in NS for p in PS}
    assert coverage == pytest.approx(mirrored, abs=1e-9)  # symmetric: rates near 0 alike
    # The cases (pass@10 of a good model), where the percentile bootstrap covered 86-91%:
    assert coverage[(50, 0.95)] >= 0.95 and coverage[(500, 0.995)] >= 0.95
    # Wilson's coverage oscillates with n and p (Brown, Cai and DasGupta 2001); it stays near nominal:
    assert min(coverage.values()) >= 0.915
    assert 0.945 <= np.mean(list(coverage.values())) <= 0.965


def test_no_zero_width_interval_at_the_bounds():
    low, high = stats.proportion_ci(np.ones(50))
    assert high == 1.0 and 0.92 < low < 0.94
    low, high = stats.proportion_ci(np.zeros(500))
    assert low == 0.0 and 0.0 < high < 0.01


@pytest.mark.parametrize(("a", "b", "k", "n"), [(5, 1, 5, 50), (30, 1, 3, 500), (2, 2, 5, 200), (5, 1, 1, 50)])
def test_proportion_ci_covers_pass_at_k_from_sample_pools(a: float, b: float, k: int, n: int):
    """Each prompt's success rate q ~ Beta(a, b); 10 samples; the per-prompt value is pass@k (fractional)."""
    rng = np.random.default_rng([a, b, k, n])
    per_count = np.array([1.0 if 10 - c < k else 1 - math.comb(10 - c, k) / math.comb(10, k) for c in range(11)])
    truth = per_count[rng.binomial(10, rng.beta(a, b, 400_000))].mean()
    runs = 1000
    hits = 0
    for _ in range(runs):
        values = per_count[rng.binomial(10, rng.beta(a, b, n))]
        low, high = stats.proportion_ci(values)
        hits += low <= truth <= high
    assert hits / runs >= 0.93, f"coverage {hits / runs:.3f} at truth {truth:.4f}"


def test_proportion_ci_refuses_values_outside_0_1():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        stats.proportion_ci([0.5, 1.5])
