"""Score generations with a judge, one reward per row; then, optionally, the policy's win rate.

    python -m stages.judges --judge nemotron --model nvidia/llama-3.1-nemotron-70b-reward \
        --base-url https://integrate.api.nvidia.com/v1 --cache cache/judges.sqlite \
        --prompts data/instruct/gen_test.jsonl --generations data/generations/instruct/sft-greedy.jsonl \
        --out data/judged/nemotron/sft-greedy.jsonl
    python -m stages.judges --from-params NAME ...   # the judge `evaluation.judges.NAME` of params.yaml

Judges (`posttrain.judges`): `checker` (the embedded profile's grader), `reward_model` (a local one-output
sequence classifier by folder), `nemotron` (an OpenAI-compatible reward endpoint; the key only from
$NVIDIA_API_KEY; cache, retries and input limit in `posttrain/judges/api.py`). An API judge's failed
pairs stop the run with no output; its cache (`--cache`, out of DVC's outs) lets a rerun request only them.

`--out` gets one `schemas.JUDGED` row per generation row: `prompt_id`, `sample`, `reward`, `judge`,
`judge_model`. With `--win-rate-out`, `--reference-judged`, `--reference-generations` and
`--outcomes-out`, the same process then computes `posttrain.evaluation.win_rate` of these generations
against the reference's, judged by the same judge (intervals seeded by params' `seed`): the metrics JSON
(`schemas.WIN_RATE_METRICS`) and one `schemas.OUTCOME` row per prompt (1 win, 0.5 tie, 0 loss).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pipeline import params
from pipeline.judge_params import judge_settings
from posttrain import schemas, startup
from posttrain.data_io import read_jsonl, write_json, write_jsonl
from posttrain.errors import UserError, run_main
from posttrain.evaluation import win_rate
from posttrain.judges import JUDGES, judge_generations, make_judge

WIN_ARGS = ("win_rate_out", "reference_judged", "reference_generations", "outcomes_out")


def write_win_rate(args: argparse.Namespace) -> None:
    """The win rate of `args.out` against the reference's judged rows: metrics JSON and per-prompt outcomes."""
    metrics, outcomes = win_rate.evaluate(args.prompts, args.out, args.reference_judged, args.generations,
                                          args.reference_generations, seed=params.load().seed)
    problem = schemas.check_metrics(metrics, schemas.WIN_RATE_METRICS, str(args.win_rate_out))
    if problem:
        raise ValueError(problem)
    write_json(args.win_rate_out, metrics)
    write_jsonl(args.outcomes_out, [{"prompt_id": i, "value": o} for i, o in enumerate(outcomes)], schemas.OUTCOME)
    print(", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in metrics.items()
                    if not isinstance(v, list)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--judge", choices=list(JUDGES), help="a judge kind, with its settings as options")
    which.add_argument("--from-params", metavar="NAME",
                       help="the judge `evaluation.judges.NAME` of params.yaml: its kind and settings")
    parser.add_argument("--model", help="reward_model: its folder; nemotron: the API's model name")
    parser.add_argument("--base-url", help="nemotron: the OpenAI-compatible endpoint")
    parser.add_argument("--cache", type=Path, help="nemotron: SQLite file of rewards already paid for")
    parser.add_argument("--prompts", type=Path, required=True, help="`schemas.INSTRUCT_PROMPT` rows")
    parser.add_argument("--generations", type=Path, required=True, help="`schemas.GENERATION` rows")
    parser.add_argument("--out", type=Path, required=True, help="the judged rows")
    parser.add_argument("--concurrency", type=int, help="nemotron: requests in flight at most")
    parser.add_argument("--timeout", type=float, help="nemotron: seconds before a request is retried")
    parser.add_argument("--max-retries", type=int, help="nemotron: retries of a transient error")
    parser.add_argument("--backoff", type=float, help="nemotron: first retry's wait in seconds, doubling")
    parser.add_argument("--input-tokens", type=int, help="nemotron: the API's input limit")
    parser.add_argument("--batch-size", type=int, help="reward_model: pairs per forward pass")
    parser.add_argument("--max-length", type=int, help="reward_model: tokens read at most")
    win = parser.add_argument_group("win rate: then, in the same process, `posttrain.evaluation.win_rate` of "
                                    "these generations against the reference's, judged by the same judge")
    win.add_argument("--win-rate-out", type=Path, help="the metrics JSON")
    win.add_argument("--reference-judged", type=Path, help="the reference's judged rows")
    win.add_argument("--reference-generations", type=Path, help="the reference's generation rows")
    win.add_argument("--outcomes-out", type=Path, help="per-prompt outcomes against the reference (JSONL)")
    args = parser.parse_args()
    win_args = [getattr(args, name) for name in WIN_ARGS]
    if any(win_args) and not all(win_args):
        raise UserError("--win-rate-out, --reference-judged, --reference-generations and --outcomes-out go together")
    settings = {k: v for k, v in vars(args).items()
                if v is not None and k not in ("judge", "from_params", "prompts", "generations", "out", *WIN_ARGS)}
    if args.from_params:
        args.judge, settings = judge_settings(params.load(), args.from_params, settings)
    if args.judge == "nemotron" and not all(settings.get(k) is not None for k in ("model", "base_url", "cache")):
        raise UserError("--judge nemotron needs --model, --base-url and --cache (the cache is what lets a "
                        "rerun skip the pairs already paid for)")
    if args.judge == "reward_model" and settings.get("model") is None:
        raise UserError("--judge reward_model needs --model (a folder or hub id)")
    prompt_rows = read_jsonl(args.prompts, schemas.INSTRUCT_PROMPT)
    generation_rows = read_jsonl(args.generations, schemas.GENERATION)
    judge = make_judge(args.judge, **settings)
    startup.ready("judging")
    rows = judge_generations(judge, prompt_rows, generation_rows, str(args.generations))
    write_jsonl(args.out, rows, schemas.JUDGED)
    mean = sum(r["reward"] for r in rows) / len(rows) if rows else float("nan")
    print(f"{args.judge}: {len(rows)} rewards, mean {mean:.3f} -> {args.out}")
    if args.win_rate_out:  # one process where a second stage would pay DVC's and Python's start-up again
        write_win_rate(args)


if __name__ == "__main__":
    run_main(main)
