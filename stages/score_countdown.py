"""Score a model's Countdown generations with the verifier.

    python -m stages.score_countdown --tasks data/countdown/eval.jsonl \
        --greedy data/generations/countdown/sft-greedy.jsonl --sample data/generations/countdown/sft-sample.jsonl \
        --scores data/scores/countdown/sft.jsonl --metrics metrics/countdown/sft.json

Writes one score row per generation row, and a flat metrics JSON (each rate with `<name>_ci`, a 95%
percentile bootstrap interval over the puzzles):
- `accuracy`, `score`, `format_rate` (with `--greedy`): greedy decoding; accuracy is the share exactly correct, score
  the reference mean (1 correct, 0.1 wrong answer in tags, 0 none; the number the seeds call
  "accuracy"), format rate the share with an answer tag.
- `pass_at_<k>` (with `--sample`) for each k in `score.best_of`, from the one pool of n samples per prompt with the
  unbiased estimator 1 - C(n-c, k)/C(n, k). The verifier is exact, so best-of-k with the verifier picks a
  correct sample whenever one exists: pass@k is best-of-k accuracy.
- `best_of_<k>_score`: the expected best reference score among k samples drawn from the pool without
  replacement (exact, over all k-subsets), i.e. best-of-k on the seeds' scale. With k = 1 these two are
  the sampled accuracy and score.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from math import comb
from pathlib import Path

from posttrain.countdown import verifier as countdown
from pipeline import params
from posttrain.data_io import read_jsonl, write_json, write_jsonl
from posttrain.schemas import COUNTDOWN_TASK
from posttrain.errors import UserError, run_main
from posttrain.evaluation.stats import bootstrap_ci


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
    scored = []
    for row in generations:
        index = row.get("prompt_id")
        if not isinstance(index, int) or not 0 <= index < len(tasks):
            raise UserError(f"{where}: prompt_id {index!r} is not a row of the task file")
        task = tasks[index]
        s = countdown.score(row["text"], task["nums"], task["target"])
        scored.append({"prompt_id": index, "sample": row["sample"], "decoding": row["decoding"],
                       "correct": s.correct, "reward": s.reward, "reason": s.reason,
                       "completion_tokens": row["completion_tokens"], "temperature": row.get("temperature")})
    return scored


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def _with_ci(out: dict, name: str, per_item: list[float], seed: int) -> None:
    """`name` and `name_ci` ([lo, hi], a 95% percentile bootstrap over the puzzles)."""
    out[name] = _mean(per_item)
    out[f"{name}_ci"] = [round(x, 4) for x in bootstrap_ci(per_item, seed=seed)]


def greedy_metrics(greedy: list[dict], seed: int) -> dict:
    """Accuracy, reference score and format rate of one completion per puzzle, with 95% intervals."""
    out: dict = {"n": len(greedy)}
    _with_ci(out, "accuracy", [float(r["correct"]) for r in greedy], seed)
    _with_ci(out, "score", [r["reward"] for r in greedy], seed)
    out["format_rate"] = _mean([r["reason"] != "no_answer_tag" for r in greedy])
    out["completion_tokens"] = _mean([r["completion_tokens"] for r in greedy])
    return out


def pool_metrics(pool: list[dict], best_of: list[int], n_tasks: int, seed: int) -> dict:
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
        _with_ci(out, f"pass_at_{k}", [pass_at_k(n, sum(r == 1.0 for r in rs), k) for rs in per_prompt.values()],
                 seed)
        _with_ci(out, f"best_of_{k}_score", [expected_best_of_k(rs, k) for rs in per_prompt.values()], seed)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=Path, required=True)
    parser.add_argument("--greedy", type=Path, help="one greedy completion per puzzle")
    parser.add_argument("--sample", type=Path, help="a pool of n sampled completions per puzzle")
    parser.add_argument("--scores", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--limit", type=int, help="the first LIMIT puzzles only (as generated with --limit)")
    args = parser.parse_args()
    if args.greedy is None and args.sample is None:
        raise UserError("give --greedy, --sample or both")
    p = params.load()
    tasks = read_jsonl(args.tasks, COUNTDOWN_TASK)[:args.limit]
    result: dict = {}
    scored: list[dict] = []
    if args.greedy:
        greedy = score_rows(tasks, read_jsonl(args.greedy), args.greedy)
        result.update(greedy_metrics(greedy, p.seed))
        scored += greedy
    if args.sample:
        pool = score_rows(tasks, read_jsonl(args.sample), args.sample)
        result.update(pool_metrics(pool, p.score.best_of, len(tasks), p.seed))
        scored += pool
    write_jsonl(args.scores, scored)
    write_json(args.metrics, result)
    print(", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    run_main(main)
