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
warmstart alone is the comparison the report makes. The puzzle logic is `posttrain.countdown.puzzles`.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from pipeline import params
from posttrain.countdown.puzzles import key, synthesize, warmstart_puzzles
from posttrain.data_io import read_jsonl, write_json, write_jsonl
from posttrain.errors import run_main
from posttrain.schemas import COUNTDOWN_TASK, WARMSTART


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
    rows, summary = synthesize(read_jsonl(args.train, COUNTDOWN_TASK), excluded, held_out, p.synthetic.n,
                               p.synthetic.think, template, p.seed)
    union = warmstarts[0] + rows
    random.Random(p.seed).shuffle(union)
    summary.update(warmstart=len(warmstarts[0]), union=len(union))
    write_jsonl(args.out, rows, WARMSTART)
    write_jsonl(args.union, union, WARMSTART)
    write_json(args.summary, summary)
    print(", ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    run_main(main)
