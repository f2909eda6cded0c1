"""Score a model's Countdown generations with the verifier.

    python -m stages.score_countdown --tasks data/countdown/eval.jsonl \
        --greedy data/generations/countdown/sft-greedy.jsonl --sample data/generations/countdown/sft-sample.jsonl \
        --scores data/scores/countdown/sft.jsonl --metrics metrics/countdown/sft.json \
        --outcomes metrics/countdown_outcomes/sft.jsonl

Writes one score row per generation row (`schemas.COUNTDOWN_SCORE`) and a flat metrics JSON
(`posttrain/evaluation/countdown.py` says what each number is):
- with `--greedy`: `accuracy`, `score`, `format_rate` of greedy decoding (`schemas.COUNTDOWN_METRICS`),
  and `--outcomes`, one row per puzzle (1.0 correct, 0.0 not) for the report's paired tests;
- with `--sample`: `pass_at_<k>` and `best_of_<k>_score` for each k in `score.best_of`, from the one pool
  of n samples per prompt (`schemas.POOL_METRICS`, `schemas.pool_keys`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import params
from posttrain import schemas
from posttrain.data_io import read_jsonl, write_json, write_jsonl
from posttrain.errors import UserError, run_main
from posttrain.evaluation.countdown import check_coverage, greedy_metrics, greedy_outcomes, pool_metrics, score_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=Path, required=True)
    parser.add_argument("--greedy", type=Path, help="one greedy completion per puzzle")
    parser.add_argument("--sample", type=Path, help="a pool of n sampled completions per puzzle")
    parser.add_argument("--scores", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--outcomes", type=Path, help="per-puzzle greedy correctness (required with --greedy)")
    parser.add_argument("--limit", type=int, help="the first LIMIT puzzles only (as generated with --limit)")
    args = parser.parse_args()
    if args.greedy is None and args.sample is None:
        raise UserError("give --greedy, --sample or both")
    if args.greedy is not None and args.outcomes is None:
        raise UserError("--greedy needs --outcomes")
    p = params.load()
    tasks = read_jsonl(args.tasks, schemas.COUNTDOWN_TASK)[:args.limit]
    result: dict = {}
    keys: list[str] = []
    scored: list[dict] = []
    if args.greedy:
        greedy = score_rows(tasks, read_jsonl(args.greedy, schemas.GENERATION), args.greedy)
        check_coverage(greedy, len(tasks), args.greedy, one_per_puzzle=True)
        result.update(greedy_metrics(greedy))
        keys += schemas.COUNTDOWN_METRICS
        scored += greedy
    if args.sample:
        pool = score_rows(tasks, read_jsonl(args.sample, schemas.GENERATION), args.sample)
        check_coverage(pool, len(tasks), args.sample, one_per_puzzle=False)
        result.update(pool_metrics(pool, p.score.best_of, len(tasks)))
        keys += schemas.POOL_METRICS + [key for k in p.score.best_of for key in schemas.pool_keys(k)]
        scored += pool
    problem = schemas.check_metrics(result, keys, str(args.metrics))
    if problem:
        raise UserError(problem)
    write_jsonl(args.scores, scored, schemas.COUNTDOWN_SCORE)
    if args.greedy:
        write_jsonl(args.outcomes, greedy_outcomes(greedy), schemas.OUTCOME)
    write_json(args.metrics, result)
    print(", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    run_main(main)
