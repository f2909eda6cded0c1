"""Synthetic Countdown examples: solver-written, verified completions added to the warmstart for SFT.

    python -m stages.synthetic --train data/countdown/train.jsonl \
        --warmstart data/countdown/warmstart_train.jsonl data/countdown/warmstart_test.jsonl \
        --eval data/countdown/eval.jsonl --out data/countdown/synthetic.jsonl \
        --union data/countdown/warmstart_synthetic.jsonl --summary metrics/data/synthetic.json

001 added 1,600 GPT-4o examples to the warmstart; here `synthetic.n` examples are written by the
exhaustive solver instead (`<think>` with its steps when `synthetic.think`), so every one is correct
by construction, and each is still checked by the verifier. Their puzzles are a seeded sample of the
training tasks, skipping any puzzle a warmstart file already holds (so the SFT eval split stays
unseen) and any held-out evaluation puzzle (`train.jsonl` already excludes them; `--eval` makes sure).

Writes `--out`, the synthetic rows alone, and `--union`, the first `--warmstart` file (the SFT
training split) plus the synthetic rows, shuffled with the seed: SFT on the union against SFT on the
warmstart alone is the comparison the report makes.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from posttrain.countdown import verifier as countdown
from posttrain.countdown import solver as countdown_solver
from pipeline import params
from posttrain.data_io import read_jsonl, write_json, write_jsonl
from posttrain.schemas import COUNTDOWN_TASK, WARMSTART
from posttrain.errors import UserError, run_main
from stages.prepare_countdown import Puzzle, key, solved_completion
from posttrain.prompts import countdown_prompt, countdown_query_pattern, parse_countdown_query


def warmstart_puzzles(rows: list[dict], template: str, where: str) -> set[Puzzle]:
    """The puzzles a warmstart file's queries ask for; a query off the template is an error.

    prepare_countdown re-renders every query from the template, so an unparsed one means the file
    and `countdown.prompt_template` disagree, and skipping it could let its puzzle in twice.
    """
    pattern = countdown_query_pattern(template)
    puzzles = set()
    for index, row in enumerate(rows):
        puzzle = parse_countdown_query(pattern, row["query"])
        if puzzle is None:
            raise UserError(f"{where}: row {index}: field `query` does not follow `countdown.prompt_template`")
        nums, target = puzzle
        puzzles.add((target, tuple(sorted(nums))))
    return puzzles


def synthesize(tasks: list[dict], excluded: set[Puzzle], held_out: set[Puzzle], cfg: params.Synthetic,
               template: str, seed: int) -> tuple[list[dict], dict]:
    """`cfg.n` verified warmstart rows for distinct training puzzles outside `excluded` and `held_out`.

    Candidates are visited in a seeded order until `cfg.n` are written, so the skip counts cover
    only the candidates visited. Raises a UserError when the training tasks cannot give `cfg.n`.
    """
    if cfg.n < 0:
        raise UserError(f"params: synthetic.n must be >= 0, got {cfg.n}")
    order = list(range(len(tasks)))
    random.Random(seed).shuffle(order)
    rows: list[dict] = []
    seen: set[Puzzle] = set()
    counts = {"skipped_duplicate": 0, "skipped_in_warmstart": 0, "skipped_held_out": 0,
              "skipped_too_many_numbers": 0, "skipped_unsolvable": 0, "dropped_wrong": 0}
    for index in order:
        if len(rows) == cfg.n:
            break
        task = tasks[index]
        puzzle = key(task)
        if puzzle in seen:
            counts["skipped_duplicate"] += 1
            continue
        seen.add(puzzle)
        if puzzle in held_out:
            counts["skipped_held_out"] += 1
        elif puzzle in excluded:
            counts["skipped_in_warmstart"] += 1
        elif len(task["nums"]) > countdown_solver.MAX_NUMS:
            counts["skipped_too_many_numbers"] += 1
        elif countdown_solver.solve(task["nums"], task["target"]) is None:
            counts["skipped_unsolvable"] += 1
        else:
            # solved_completion solves again (a few ms at most): one writer of the warmstart's format.
            completion = solved_completion(task, cfg.think)
            if countdown.score(completion, task["nums"], task["target"]).correct:
                rows.append({"query": countdown_prompt(template, task["nums"], task["target"]),
                             "completion": completion})
            else:
                counts["dropped_wrong"] += 1
    if len(rows) < cfg.n:
        details = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v)
        raise UserError(
            f"synthetic.n={cfg.n}: only {len(rows)} of the {len(tasks)} training tasks could be made into "
            f"verified examples ({details or 'none skipped'}); lower synthetic.n or widen the training rows"
        )
    return rows, {"requested": cfg.n, "written": len(rows), "candidates_visited": sum(counts.values()) + len(rows),
                  **counts}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=Path, required=True, help="training puzzles (target, nums)")
    parser.add_argument("--warmstart", type=Path, nargs="+", required=True,
                        help="warmstart files whose puzzles are skipped; the first is the one the union extends")
    parser.add_argument("--eval", type=Path, help="held-out puzzles, never used (train already excludes them)")
    parser.add_argument("--out", type=Path, required=True, help="the synthetic rows (query, completion)")
    parser.add_argument("--union", type=Path, required=True, help="first --warmstart file + synthetic, shuffled")
    parser.add_argument("--summary", type=Path, required=True)
    args = parser.parse_args()
    p = params.load()
    template = p.countdown.prompt_template
    warmstarts = [read_jsonl(path, WARMSTART) for path in args.warmstart]
    excluded = set().union(*(warmstart_puzzles(rows, template, str(path))
                             for rows, path in zip(warmstarts, args.warmstart)))
    held_out = {key(row) for row in read_jsonl(args.eval, COUNTDOWN_TASK)} if args.eval else set()
    rows, summary = synthesize(read_jsonl(args.train, COUNTDOWN_TASK), excluded, held_out, p.synthetic,
                               template, p.seed)
    union = warmstarts[0] + rows
    random.Random(p.seed).shuffle(union)
    summary.update(warmstart=len(warmstarts[0]), union=len(union))
    write_jsonl(args.out, rows)
    write_jsonl(args.union, union)
    write_json(args.summary, summary)
    print(", ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    run_main(main)
