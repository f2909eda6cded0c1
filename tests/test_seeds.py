"""Comparing methods across training seeds (issue: numbers that cannot mislead, §5).

Simulated Countdown correctness where each training seed shifts a method's skill at random: under the
null (the two methods alike), the plain paired test on pooled puzzles rejects far more than 5%, because
it knows nothing of the seed's spread; `stats.seeds_test` keeps about 5%, and still finds a real effect.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from posttrain.evaluation import stats


@pytest.mark.parametrize(("q", "df", "expected"), [(0.975, 1, 12.7062), (0.975, 2, 4.3027), (0.975, 10, 2.2281),
                                                   (0.975, 1e6, 1.9600), (0.95, 5, 2.0150)])
def test_t_quantiles_match_the_tables(q, df, expected):
    assert stats.t_quantile(q, df) == pytest.approx(expected, abs=2e-4)
    assert stats.t_two_sided_p(expected, df) == pytest.approx(2 * (1 - q), abs=1e-4)


def _runs(rng, seeds: int, items: int, spread: float, effect: float) -> tuple[np.ndarray, np.ndarray]:
    """(a, b): seeds x items correctness; item difficulty shared, each seed shifts each method's logit."""
    logit = np.log(rng.beta(2, 5, items))
    logit -= np.log1p(-np.exp(logit))

    def draw(shift: float) -> np.ndarray:
        p = 1 / (1 + np.exp(-(logit[None, :] + rng.normal(shift, spread, (seeds, 1)))))
        return (rng.random((seeds, items)) < p).astype(float)

    return draw(effect), draw(0.0)


def test_seed_spread_is_counted_where_a_pooled_paired_test_is_fooled():
    rng = np.random.default_rng(0)
    runs, seeds_rejects, pooled_rejects = 400, 0, 0
    for _ in range(runs):
        a, b = _runs(rng, seeds=3, items=500, spread=0.3, effect=0.0)
        seeds_rejects += stats.seeds_test(a, b).p_value < 0.05
        pooled_rejects += stats.seeds_test(a.reshape(1, -1), b.reshape(1, -1)).p_value < 0.05
    assert seeds_rejects / runs <= 0.08
    assert pooled_rejects / runs >= 0.3  # the one-seed habit: a "significant" gain half the time


def test_a_real_effect_is_found_across_seeds():
    rng = np.random.default_rng(1)
    found = sum(stats.seeds_test(*_runs(rng, seeds=3, items=500, spread=0.05, effect=0.8)).p_value < 0.05
                for _ in range(100))
    assert found >= 80


def test_seeds_test_on_a_known_layout():
    a = np.array([[1, 0, 1, 1], [1, 1, 0, 1]], dtype=float)
    b = np.array([[0, 0, 1, 0], [1, 0, 0, 1]], dtype=float)
    test = stats.seeds_test(a, b)
    assert test.diff == pytest.approx(3 / 8) and (test.seeds, test.items) == (2, 4)
    assert test.ci[0] < test.diff < test.ci[1] and 0 < test.p_value < 1
    with pytest.raises(ValueError, match="seeds x items"):
        stats.seeds_test(a, b[:, :3])


def test_between_seed_interval_is_a_t_interval():
    low, high = stats.between_seed_ci([0.16, 0.18, 0.17])
    half = 4.3027 * np.std([0.16, 0.18, 0.17], ddof=1) / math.sqrt(3)
    assert (low, high) == pytest.approx((0.17 - half, 0.17 + half), abs=1e-4)
