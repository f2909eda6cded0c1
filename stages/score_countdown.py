"""Score a model's Countdown generations with the verifier.

    python -m stages.score_countdown --tasks data/countdown/eval.jsonl \
        --greedy data/generations/countdown/sft-greedy.jsonl --sample data/generations/countdown/sft-sample.jsonl \
        --scores data/scores/countdown/sft.jsonl --metrics metrics/countdown/sft.json

Writes one score row per generation row, and a flat metrics JSON:
- `accuracy`, `score`, `format_rate`: greedy decoding; accuracy is the share exactly correct, score
  the reference mean (1 correct, 0.1 wrong answer in tags, 0 none; the number the seeds call
  "accuracy"), format rate the share with an answer tag.
- `pass_at_<k>` for each k in `score.best_of`, from the one pool of n samples per prompt with the
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

from stages import countdown, params
from stages.data_io import COUNTDOWN_TASK, read_jsonl, write_json, write_jsonl
from stages.errors import UserError, run_main


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
                       "completion_tokens": row["completion_tokens"]})
    return scored


def metrics(greedy: list[dict], pool: list[dict], best_of: list[int], n_tasks: int) -> dict:
    """The flat metrics of one model (see the module docstring)."""
    def mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else 0.0

    per_prompt: dict[int, list[float]] = defaultdict(list)
    for row in pool:
        per_prompt[row["prompt_id"]].append(row["reward"])
    sizes = {len(r) for r in per_prompt.values()}
    if len(per_prompt) != n_tasks or len(sizes) != 1:
        raise ValueError(f"sample pool must hold the same number of samples for each of the {n_tasks} prompts")
    (n,) = sizes
    out = {
        "n": len(greedy),
        "accuracy": mean([r["correct"] for r in greedy]),
        "score": mean([r["reward"] for r in greedy]),
        "format_rate": mean([r["reason"] != "no_answer_tag" for r in greedy]),
        "completion_tokens": mean([r["completion_tokens"] for r in greedy]),
        "samples_per_prompt": n,
    }
    for k in best_of:
        if not 1 <= k <= n:
            raise UserError(f"params: score.best_of has {k}, but the pool holds {n} samples per prompt")
        out[f"pass_at_{k}"] = mean([pass_at_k(n, sum(r == 1.0 for r in rs), k) for rs in per_prompt.values()])
        out[f"best_of_{k}_score"] = mean([expected_best_of_k(rs, k) for rs in per_prompt.values()])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=Path, required=True)
    parser.add_argument("--greedy", type=Path, required=True)
    parser.add_argument("--sample", type=Path, required=True)
    parser.add_argument("--scores", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    args = parser.parse_args()
    p = params.load()
    tasks = read_jsonl(args.tasks, COUNTDOWN_TASK)
    greedy = score_rows(tasks, read_jsonl(args.greedy), args.greedy)
    pool = score_rows(tasks, read_jsonl(args.sample), args.sample)
    result = metrics(greedy, pool, p.score.best_of, len(tasks))
    write_jsonl(args.scores, greedy + pool)
    write_json(args.metrics, result)
    print(", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    run_main(main)
