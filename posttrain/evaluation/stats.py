"""Statistics for comparing policies on one prompt set: bootstrap intervals, win rates, a
length-controlled win rate and paired tests. Pure numpy; no I/O, and every random draw comes from a
seed, so a metric is the same number on every run.

Prompts are the unit of every computation: each function takes one value per prompt (paired arrays in
the same prompt order), since rewards are comparable only between responses to the same prompt and the
prompts are the independent draws. pass@k and best-of-k live in `posttrain/evaluation/countdown.py`. Means
of values in [0, 1] get Wilson intervals (`proportion_ci`), which keep their coverage near 0 and 1;
other statistics a percentile bootstrap.

Length-controlled win rate (`length_controlled_win_rate`), after AlpacaEval 2.0's LC win rate (Dubois
et al., 2024, which 002 cites): a logistic regression of the per-prompt outcome (1 win, 0.5 tie, 0
loss, fitted as a fractional target) on the length difference d (policy minus reference, in tokens);
the LC win rate is the predicted win probability at d = 0. The feature is d / rms(d), clipped at
±`LC_CLIP`: scaled by the root mean square, not the spread around the mean, so that a one-sided gap
(the policy longer on nearly every prompt, the verbose-SFT case the metric exists for) keeps its size
and is not squashed to a constant that the intercept absorbs; linear in the bulk, so the prediction at
d = 0 is a fit, not an artefact of a saturating transform; clipped, so a few truncated rambles do not
steer it. The fit is Firth's penalised likelihood (Jeffreys prior): finite when length alone separates
wins from losses, and with its O(1/n) bias removed rather than a penalty on the slope alone, which
pushed the length effect into the intercept (on simulated length-only data the old ridge form gave
0.748 for a true 0.5). The interval is a Wald interval on the logit scale from the sandwich
(heteroskedasticity-robust, HC1) covariance, which holds for fractional outcomes; tests/test_stats.py
checks mean and coverage on simulated one- and two-sided gaps. Departures from AlpacaEval: no
per-instruction difficulty term (it needs many models judged on the same prompts), and all wins or all
losses give an LC win rate of exactly 1 or 0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

LC_CLIP = 3.0  # the length feature's bound, in root-mean-square units of the length difference


def _per_prompt(values, name: str = "values") -> np.ndarray:
    array = np.asarray(values, dtype=float)
    if array.ndim == 0 or len(array) == 0:
        raise ValueError(f"{name}: need at least one prompt")
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{name}: holds a NaN or an infinite value")
    return array


def _paired(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = _per_prompt(a, "a"), _per_prompt(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"paired values must have one entry per prompt each, got shapes {a.shape} and {b.shape}")
    return a, b


def bootstrap_ci(values, stat: Callable[[np.ndarray], float] = np.mean, n_boot: int = 2000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of `stat` over prompts.

    `values` holds one entry per prompt along its first axis; a 2-D array resamples rows, so a statistic of
    paired columns (e.g. the LC win rate of outcomes and length differences) keeps the pairs together.
    """
    values = _per_prompt(values)
    if not 0 < level < 1 or n_boot < 1:
        raise ValueError(f"need 0 < level < 1 and n_boot >= 1, got level={level}, n_boot={n_boot}")
    rng = np.random.default_rng(seed)
    index = rng.integers(0, len(values), size=(n_boot, len(values)))
    if stat is np.mean and values.ndim == 1:
        stats = values[index].mean(axis=1)
    else:
        stats = np.array([stat(values[i]) for i in index], dtype=float)
    tail = (1 - level) / 2
    low, high = np.quantile(stats, [tail, 1 - tail])
    return float(low), float(high)


def _poisson_lower(x: int, alpha: float) -> float:
    """The mean λ at which a Poisson count reaches `x` or more with probability `alpha` (bisection)."""
    def at_least(lam: float) -> float:
        return 1.0 - sum(math.exp(-lam) * lam**i / math.factorial(i) for i in range(x))

    low, high = 0.0, float(x) + 10.0
    for _ in range(100):
        middle = (low + high) / 2
        low, high = (middle, high) if at_least(middle) < alpha else (low, middle)
    return (low + high) / 2


def wilson_ci(successes: float, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a proportion, with Brown, Cai and DasGupta's (2001, §4.1.1) modification
    at the boundaries: with 1-3 successes (or failures) the bound on that side is the one-sided Poisson
    bound, where the plain Wilson bound undercovers (~91% at p = 0.99, n = 50). Never of zero width:
    no success in 50 gives [0, 0.071], not [0, 0]."""
    if n < 1 or not 0 <= successes <= n or not 0 < level < 1:
        raise ValueError(f"need n >= 1, 0 <= successes <= n and 0 < level < 1, got {successes}, {n}, {level}")
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    edge = 3 if n <= 50 else 2
    for count, side in ((successes, "low"), (n - successes, "high")):
        if float(count).is_integer() and 1 <= count <= edge:
            bound = _poisson_lower(int(count), 1 - level) / n
            low, high = (bound, high) if side == "low" else (low, 1.0 - bound)
    return float(low), float(high)


def proportion_ci(values, level: float = 0.95) -> tuple[float, float]:
    """Interval of the mean of per-item values in [0, 1] (correctness, pass@k, win outcomes, scores).

    The Wilson interval of the mean over n items: exact in form for 0/1 values, and conservative for
    fractional ones, since m(1 - m) bounds the variance of any variable in [0, 1] with mean m. Unlike the
    percentile bootstrap it keeps its coverage near 0 and 1 (the bootstrap's is 86-91% for pass@10 near
    1, and [1, 1] when every item succeeds), where an estimate of the variance from the sample fails.
    """
    values = _per_prompt(values)
    if values.ndim != 1 or np.any((values < 0) | (values > 1)):
        raise ValueError("proportion_ci takes one value in [0, 1] per item")
    return wilson_ci(float(values.sum()), len(values), level)


def outcomes(policy_rewards, reference_rewards, atol: float = 1e-9) -> np.ndarray:
    """Per prompt: 1 where the policy's reward is higher, 0.5 a tie, 0 lower.

    `atol` makes a tie of two means of the same rewards that differ only by rounding (a judge's rewards
    carry at most a few decimals).
    """
    policy, reference = _paired(policy_rewards, reference_rewards)
    diff = policy - reference
    return np.where(np.abs(diff) <= atol, 0.5, np.where(diff > 0, 1.0, 0.0))


@dataclass(frozen=True, eq=False)
class WinRate:
    wins: int
    ties: int
    losses: int
    win_rate: float  # a tie counts half
    win_rate_ties_as_losses: float  # the seeds' convention (reference.md §5)
    outcomes: np.ndarray  # per prompt: 1, 0.5, 0


def win_rate(policy_rewards, reference_rewards, atol: float = 1e-9) -> WinRate:
    """Win rate of the policy against the reference on the same prompts, ties counted both ways."""
    result = outcomes(policy_rewards, reference_rewards, atol)
    wins, ties = int(np.sum(result == 1.0)), int(np.sum(result == 0.5))
    n = len(result)
    return WinRate(wins=wins, ties=ties, losses=n - wins - ties, win_rate=float(result.mean()),
                   win_rate_ties_as_losses=wins / n, outcomes=result)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # no overflow warning for large |x|


def firth_logistic_fit(x: np.ndarray, y: np.ndarray, max_iter: int = 100) -> tuple[np.ndarray, np.ndarray]:
    """(coefficients, inverse Fisher information) of a logistic regression of y in [0, 1] on x, by
    Firth's (1993) modified score, X'(y - p + h (1/2 - p)) = 0 with h the hat values, solved by
    Fisher scoring with step halving. No library here has it (statsmodels is not a dependency)."""
    beta = np.zeros(x.shape[1])
    information_inverse = np.eye(x.shape[1])
    for _ in range(max_iter):
        p = _sigmoid(x @ beta)
        w = p * (1 - p)
        information_inverse = np.linalg.pinv((x * w[:, None]).T @ x)
        hat = np.einsum("ij,jk,ik->i", x, information_inverse, x) * w
        step = information_inverse @ (x.T @ (y - p + hat * (0.5 - p)))
        scale = min(1.0, 5.0 / max(1e-12, float(np.max(np.abs(step)))))  # no wild first steps
        beta = beta + scale * step
        if np.max(np.abs(scale * step)) < 1e-10:
            break
    p = _sigmoid(x @ beta)
    information_inverse = np.linalg.pinv((x * (p * (1 - p))[:, None]).T @ x)
    return beta, information_inverse


@dataclass(frozen=True)
class LengthControlled:
    win_rate: float  # predicted win probability at equal lengths
    length_coef: float  # slope on d / rms(d); > 0: longer answers win more often
    ci: tuple[float, float]  # Wald interval of win_rate on the logit scale, sandwich covariance


def length_controlled_win_rate(outcomes_per_prompt, policy_lengths, reference_lengths,
                               level: float = 0.95) -> LengthControlled:
    """The length-controlled win rate and its interval (see the module docstring)."""
    y = _per_prompt(outcomes_per_prompt, "outcomes")
    policy, reference = _paired(policy_lengths, reference_lengths)
    if y.shape != policy.shape or np.any((y < 0) | (y > 1)):
        raise ValueError("outcomes must lie in [0, 1], one per prompt, as many as the lengths")
    d = policy - reference
    rms = float(np.sqrt(np.mean(d**2)))
    if rms == 0 or (np.all(y == y[0]) and y[0] in (0.0, 1.0)):  # nothing to control for, or nothing to fit
        return LengthControlled(win_rate=float(y.mean()), length_coef=0.0, ci=proportion_ci(y, level))
    x = np.column_stack([np.ones_like(d), np.clip(d / rms, -LC_CLIP, LC_CLIP)])
    beta, bread = firth_logistic_fit(x, y)
    residual = y - _sigmoid(x @ beta)
    n, k = x.shape
    meat = (x * (residual**2)[:, None]).T @ x
    covariance = bread @ meat @ bread * (n / max(1, n - k))
    z = NormalDist().inv_cdf(1 - (1 - level) / 2)
    se = float(np.sqrt(max(covariance[0, 0], 0.0)))
    ci = (float(_sigmoid(beta[0] - z * se)), float(_sigmoid(beta[0] + z * se)))
    return LengthControlled(win_rate=float(_sigmoid(beta[0])), length_coef=float(beta[1]), ci=ci)


@dataclass(frozen=True)
class PairedTest:
    diff: float  # mean(a) - mean(b) over prompts
    ci: tuple[float, float]  # percentile bootstrap interval of the difference
    p_value: float  # two-sided, of no difference


def paired_bootstrap(a, b, n_boot: int = 10000, seed: int = 0, level: float = 0.95) -> PairedTest:
    """Compare two methods scored on the same items (correctness, win outcomes, rewards).

    The interval resamples items, keeping each pair together. The p-value is the bootstrap test of
    Efron and Tibshirani (1993, §16.4): resample the per-item differences shifted to mean zero, which
    makes the null true, and count how often their mean is at least as far from zero as the one observed;
    (count + 1) / (n_boot + 1) keeps it above zero.
    """
    a, b = _paired(a, b)
    d = a - b
    observed = float(d.mean())
    low, high = bootstrap_ci(d, n_boot=n_boot, seed=seed, level=level)
    rng = np.random.default_rng([seed, 1])  # a stream of its own, apart from the interval's
    null = (d - observed)[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    extreme = int(np.sum(np.abs(null) >= abs(observed) - 1e-12))
    return PairedTest(diff=observed, ci=(low, high), p_value=(extreme + 1) / (n_boot + 1))


def sign_test(a, b) -> float:
    """Exact two-sided sign test of paired items: how often a beats b against how often b beats a, ties
    dropped. On binary outcomes (two models' correctness on the same puzzles) it is the exact McNemar test."""
    a, b = _paired(a, b)
    above, below = int(np.sum(a > b)), int(np.sum(a < b))
    n = above + below
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(above, below) + 1))
    return min(1.0, 2 * tail / 2**n)


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b), by its continued fraction (Lentz's method);
    numpy has none and scipy is not a dependency for one function."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast below the mean: use the symmetry
        return 1.0 - _incomplete_beta(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)) / a
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    result = d
    for m in range(1, 500):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            result *= c * d
        if abs(c * d - 1.0) < 1e-14:
            break
    return front * result


def t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with `df` degrees of freedom."""
    return _incomplete_beta(df / 2, 0.5, df / (df + t * t)) if math.isfinite(t) else 0.0


def t_quantile(q: float, df: float) -> float:
    """The `q` quantile (q > 0.5) of Student's t with `df` degrees of freedom, by bisection."""
    low, high = 0.0, 1e6
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if t_two_sided_p(middle, df) / 2 > 1 - q else (low, middle)
    return (low + high) / 2


def between_seed_ci(values, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of one number per training seed (seeds are the independent draws)."""
    values = _per_prompt(values, "seeds")
    if len(values) < 2:
        return float(values[0]), float(values[0])
    half = t_quantile(1 - (1 - level) / 2, len(values) - 1) * values.std(ddof=1) / math.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


@dataclass(frozen=True)
class SeedsTest:
    diff: float  # mean over seeds and items of a - b
    ci: tuple[float, float]
    p_value: float  # two-sided, of no difference
    df: float  # Satterthwaite's degrees of freedom
    seeds: int
    items: int


def seeds_test(a, b, level: float = 0.95) -> SeedsTest:
    """Compare two methods trained with the same seeds and scored on the same items: `a[s][i]`, `b[s][i]` are
    seed s's score on item i. Items pair within each seed (the same puzzle, the same seed), and the
    difference's variance counts the seed-to-seed and the item-to-item spread, from the two-way layout
    d[s][i] = mu + seed_s + item_i + e (both random): Var(mean) = (MS_seed + MS_item - MS_error) / (S I),
    with Satterthwaite's degrees of freedom for the t reference. With one seed it is the paired t-test on
    items, which knows nothing of the seed's own spread."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.ndim != 2 or a.shape != b.shape or a.shape[1] < 2 or not np.all(np.isfinite(a - b)):
        raise ValueError(f"need two finite seeds x items arrays of one shape, got {a.shape} and {b.shape}")
    d = a - b
    seeds, items = d.shape
    grand = float(d.mean())
    by_seed, by_item = d.mean(axis=1), d.mean(axis=0)
    ms_item = seeds * float(np.sum((by_item - grand) ** 2)) / (items - 1)
    if seeds == 1:
        variance, df = ms_item / items, float(items - 1)
    else:
        ms_seed = items * float(np.sum((by_seed - grand) ** 2)) / (seeds - 1)
        residual = d - by_seed[:, None] - by_item[None, :] + grand
        ms_error = float(np.sum(residual**2)) / ((seeds - 1) * (items - 1))
        combined = max(ms_seed + ms_item - ms_error, ms_item, 1e-300)  # never below the items' own spread
        variance = combined / (seeds * items)
        parts = [(ms_seed, seeds - 1), (ms_item, items - 1), (ms_error, (seeds - 1) * (items - 1))]
        df = combined**2 / sum(ms**2 / k for ms, k in parts if ms > 0) if any(ms > 0 for ms, _ in parts) else 1.0
    se = math.sqrt(variance)
    half = t_quantile(1 - (1 - level) / 2, df) * se
    p = t_two_sided_p(grand / se, df) if se > 0 else (1.0 if grand == 0 else 0.0)
    return SeedsTest(diff=grand, ci=(grand - half, grand + half), p_value=min(1.0, p), df=df, seeds=seeds,
                     items=items)
