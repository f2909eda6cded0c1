"""Prepare the Countdown data: training prompts, a held-out evaluation sample and the warmstart set.

    python -m stages.prepare_countdown --out data/countdown --summary metrics/data/countdown.json

Writes, in the hub datasets' schemas (reference.md §1):
- `train.jsonl`, `eval.jsonl`: puzzles (`target`, `nums`). Training rows come from
  `countdown.train_rows` of the source split, the evaluation sample (`n_eval`, seeded) from
  `countdown.eval_rows`; any training puzzle equal to a held-out one (same target, same numbers) is
  dropped, so no evaluation puzzle is ever trained on.
- `warmstart_train.jsonl`, `warmstart_test.jsonl`: (`query`, `completion`) for SFT, from the hub's
  train and test splits (never mixed) or, with `generator`, solver-written completions for training
  puzzles. Every completion is checked by the verifier and dropped if wrong (the hub set has wrong
  ones), and every query is re-rendered with `countdown.prompt_template`, so training and evaluation
  see one template (001 trained with newlines and evaluated with spaces).

Source `generator` draws a seeded stream of distinct solvable puzzles (exhaustive solver; +, -, ×,
exact ÷; every number used once) and treats it like the hub's single split.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from tqdm import tqdm

from pipeline import params
from posttrain.countdown.puzzles import check_puzzles, generate_tasks, key, solved_completion, verified_warmstart
from posttrain.data_io import load_rows, write_json, write_jsonl
from posttrain.errors import UserError, run_main
from posttrain.prompts import countdown_prompt
from posttrain.schemas import COUNTDOWN_TASK, WARMSTART


def prepare(cfg: params.Countdown, seed: int) -> tuple[dict[str, list[dict]], dict]:
    """Return the four files' rows and a summary of what was kept and dropped."""
    (train_start, train_stop), (eval_start, eval_stop) = cfg.train_rows, cfg.eval_rows
    if not (0 <= train_start < train_stop and 0 <= eval_start < eval_stop):
        raise UserError("countdown.train_rows and eval_rows must be [start, stop) with 0 <= start < stop")
    if train_start < eval_stop and eval_start < train_stop:
        raise UserError(f"countdown.train_rows {cfg.train_rows} and eval_rows {cfg.eval_rows} overlap")
    rng = random.Random(seed)
    if cfg.tasks_source == "generator":
        tasks = generate_tasks(cfg.generator, max(train_stop, eval_stop), rng)
    else:
        tasks = load_rows(cfg.tasks_source, cfg.tasks_split, COUNTDOWN_TASK, "countdown.tasks_source",
                          cfg.tasks_revision)
    if len(tasks) < max(train_stop, eval_stop):
        raise UserError(f"{cfg.tasks_source}: {len(tasks)} rows, fewer than train_rows/eval_rows ask for")

    where = {"generator": "countdown.generator"}.get(cfg.tasks_source) or (
        cfg.tasks_source if Path(cfg.tasks_source).is_file() else f"{cfg.tasks_source} [{cfg.tasks_split}]")
    check_puzzles([(i, tasks[i]) for i in [*range(train_start, train_stop), *range(eval_start, eval_stop)]], where,
                  solvable=False)
    held_out = {key(row) for row in tasks[eval_start:eval_stop]}
    unique_eval = list({key(tasks[i]): i for i in range(eval_start, eval_stop)}.values())  # one row per puzzle
    if len(unique_eval) < cfg.n_eval:
        raise UserError(f"{where}: eval_rows {cfg.eval_rows} hold {len(unique_eval)} distinct puzzles (the other "
                        f"{eval_stop - eval_start - len(unique_eval)} repeat them), fewer than countdown.n_eval="
                        f"{cfg.n_eval}")
    sampled = random.Random(seed).sample(unique_eval, cfg.n_eval)
    check_puzzles([(i, tasks[i]) for i in sampled], where, solvable=True)  # a score on an unsolvable one means nothing
    eval_rows = [tasks[i] for i in sampled]
    train_index = [i for i in range(train_start, train_stop) if key(tasks[i]) not in held_out]
    train = [tasks[i] for i in train_index]

    if cfg.warmstart_source == "generator":
        n_train, n_test = cfg.warmstart_train or 0, cfg.warmstart_test or 0
        if n_train + n_test > len(train):
            raise UserError(f"countdown.warmstart_train + warmstart_test exceed the {len(train)} training puzzles")
        check_puzzles([(i, tasks[i]) for i in train_index[:n_train + n_test]], where, solvable=True)
        splits = {
            name: [
                {"query": countdown_prompt(cfg.prompt_template, r["nums"], r["target"]),
                 "completion": solved_completion(r, cfg.generator.think)}
                for r in tqdm(rows, desc=f"solving warmstart {name}", mininterval=2)
            ]
            for name, rows in (("train", train[:n_train]), ("test", train[n_train:n_train + n_test]))
        }
    else:
        splits = {
            name: load_rows(cfg.warmstart_source, name, WARMSTART, "countdown.warmstart_source",
                            cfg.warmstart_revision)[:limit]
            for name, limit in (("train", cfg.warmstart_train), ("test", cfg.warmstart_test))
        }
    out = {"train": train, "eval": eval_rows}
    summary = {"tasks_train": len(train), "tasks_eval": len(eval_rows),
               "tasks_train_dropped_held_out": train_stop - train_start - len(train)}
    for name, rows in splits.items():
        out[f"warmstart_{name}"], counts = verified_warmstart(
            rows, cfg.prompt_template, held_out, f"{cfg.warmstart_source} [{name}]"
        )
        summary[f"warmstart_{name}"] = len(out[f"warmstart_{name}"])
        summary.update({f"warmstart_{name}_dropped_{k}": v for k, v in counts.items()})
        if not out[f"warmstart_{name}"]:
            raise UserError(f"{cfg.warmstart_source} [{name}]: no warmstart row survived verification")
    return out, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the four JSONL files")
    parser.add_argument("--summary", type=Path, required=True, help="JSON counts of rows kept and dropped")
    args = parser.parse_args()
    p = params.load()
    files, summary = prepare(p.countdown, p.seed)
    for name, rows in files.items():
        schema = WARMSTART if name.startswith("warmstart") else COUNTDOWN_TASK
        write_jsonl(args.out / f"{name}.jsonl", rows, schema)
    write_json(args.summary, summary)
    print(", ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    run_main(main)
