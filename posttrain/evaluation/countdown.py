"""Countdown metrics from the verifier's verdicts: greedy accuracy, pass@k and best-of-k, per-puzzle outcomes.

`score_rows` runs the verifier on generation rows (`schemas.GENERATION`) and returns score rows
(`schemas.COUNTDOWN_SCORE`); `check_coverage` refuses a file that misses a puzzle or repeats a
(puzzle, sample) row, which would otherwise change the denominator silently; the other functions turn
score rows into flat metrics (each rate with `<name>_ci`, a 95% Wilson interval over the puzzles,
`stats.proportion_ci`, which keeps its coverage near 0 and 1 where a percentile bootstrap does not):
- `greedy_metrics`: `accuracy` (the share exactly correct), `score` (the reference mean: 1 correct, 0.1
  wrong answer in tags, 0 none; the number the seeds call "accuracy"), `format_rate` (the share with
  an answer tag) and the mean `completion_tokens` of one greedy completion per puzzle.
- `pool_metrics`: for each k, `pass_at_<k>` from one pool of n samples per prompt with the unbiased
  estimator 1 - C(n-c, k)/C(n, k) (the verifier is exact, so best-of-k with the verifier picks a correct
  sample whenever one exists: pass@k is best-of-k accuracy), and `best_of_<k>_score`, the expected best
  reference score among k samples drawn without replacement (exact, over all k-subsets). With k = 1
  these are the sampled accuracy and score.
- `greedy_outcomes`: one `schemas.OUTCOME` row per puzzle (1.0 correct, 0.0 not), for the report's
  paired tests.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from math import comb
from pathlib import Path

from posttrain.countdown import verifier
from posttrain.errors import UserError
from posttrain.evaluation.stats import proportion_ci


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k from n samples of which c are correct (Chen et al., 2021)."""
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def expected_best_of_k(rewards: list[float], k: int) -> float:
    """Expected maximum of k rewards drawn without replacement from `rewards`.

    The i-th smallest (1-based) is the maximum of exactly C(i-1, k-1) of the C(n, k) subsets.
    """
    ordered = sorted(rewards)
    n = len(ordered)
    return sum(r * comb(i - 1, k - 1) for i, r in enumerate(ordered, start=1) if i >= k) / comb(n, k)


def score_rows(tasks: list[dict], generations: list[dict], where: Path) -> list[dict]:
    """The verifier's verdict on each generation row, against the task row its `prompt_id` names."""
    scored = []
    for row in generations:
        index = row.get("prompt_id")
        if not isinstance(index, int) or not 0 <= index < len(tasks):
            raise UserError(f"{where}: prompt_id {index!r} is not a row of the task file")
        task = tasks[index]
        s = verifier.score(row["text"], task["nums"], task["target"])
        scored.append({"prompt_id": index, "sample": row["sample"], "decoding": row["decoding"],
                       "correct": s.correct, "reward": s.reward, "reason": s.reason,
                       "completion_tokens": row["completion_tokens"], "temperature": row.get("temperature")})
    return scored


def check_coverage(rows: list[dict], n_tasks: int, where: Path, one_per_puzzle: bool) -> None:
    """Each of the `n_tasks` puzzles has its rows, no (puzzle, sample) row twice, and with
    `one_per_puzzle` (greedy decoding) exactly one row; else an error naming the first bad puzzle."""
    counts = Counter(row["prompt_id"] for row in rows)
    seen: set[tuple[int, int]] = set()
    for index, row in enumerate(rows):
        key = (row["prompt_id"], row["sample"])
        if key in seen:
            raise UserError(f"{where}: row {index}: prompt_id {key[0]} sample {key[1]} appears twice")
        seen.add(key)
    missing = [i for i in range(n_tasks) if i not in counts]
    if missing:
        raise UserError(f"{where}: covers {len(counts)} of the {n_tasks} puzzles of the task file; prompt_id "
                        f"{missing[0]} is the first missing ({len(missing)} in all)")
    if one_per_puzzle and (extra := sorted(i for i, c in counts.items() if c != 1)):
        raise UserError(f"{where}: greedy decoding gives one row per puzzle; prompt_id {extra[0]} has "
                        f"{counts[extra[0]]}")


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _with_ci(out: dict, name: str, per_item: list[float]) -> None:
    """`name` and `name_ci` ([lo, hi], a 95% Wilson interval over the puzzles: every value is in [0, 1])."""
    out[name] = _mean(per_item)
    out[f"{name}_ci"] = [round(x, 4) for x in proportion_ci(per_item)]


def greedy_metrics(greedy: list[dict]) -> dict:
    """Accuracy, reference score and format rate of one completion per puzzle, with 95% intervals."""
    out: dict = {"n": len(greedy)}
    _with_ci(out, "accuracy", [float(r["correct"]) for r in greedy])
    _with_ci(out, "score", [r["reward"] for r in greedy])
    out["format_rate"] = _mean([r["reason"] != "no_answer_tag" for r in greedy])
    out["completion_tokens"] = _mean([r["completion_tokens"] for r in greedy])
    return out


def pool_metrics(pool: list[dict], best_of: list[int], n_tasks: int) -> dict:
    """pass@k (= best-of-k accuracy with the verifier) and best-of-k score from one pool, with 95% intervals."""
    per_prompt: dict[int, list[float]] = defaultdict(list)
    for row in pool:
        per_prompt[row["prompt_id"]].append(row["reward"])
    sizes = {len(r) for r in per_prompt.values()}
    if len(per_prompt) != n_tasks or len(sizes) != 1:
        raise UserError(f"the sample pool must hold the same number of samples for each of the {n_tasks} prompts")
    (n,) = sizes
    out: dict = {"n": n_tasks, "samples_per_prompt": n, "temperature": pool[0]["temperature"]}
    for k in best_of:
        if not 1 <= k <= n:
            raise UserError(f"params: score.best_of has {k}, but the pool holds {n} samples per prompt")
        _with_ci(out, f"pass_at_{k}", [pass_at_k(n, sum(r == 1.0 for r in rs), k) for rs in per_prompt.values()])
        _with_ci(out, f"best_of_{k}_score", [expected_best_of_k(rs, k) for rs in per_prompt.values()])
    return out


def greedy_outcomes(greedy: list[dict]) -> list[dict]:
    """Per puzzle, in prompt order: the share of its greedy rows that are correct (one row: 1.0 or 0.0)."""
    correct: dict[int, list[float]] = defaultdict(list)
    for row in greedy:
        correct[row["prompt_id"]].append(float(row["correct"]))
    return [{"prompt_id": i, "value": sum(v) / len(v)} for i, v in sorted(correct.items())]
