"""Distillation data (003): a seeded sample of training prompts, and a teacher's answers as warmstart rows.

    python -m stages.distill prompts --train data/countdown/train.jsonl --out data/distill/prompts.jsonl
    python -m stages.distill collect --prompts data/distill/prompts.jsonl \
        --generations data/distill/<teacher>-generations.jsonl --out data/distill/<teacher>.jsonl \
        --summary metrics/data/distill_<teacher>.json

`prompts` samples `distill.prompts` training puzzles (seeded) in the task schema, so
`stages.generate --task countdown --decoding teacher` answers them with the teacher (003: top_p 0.8,
temperature 0.7). `collect` turns those generations into (query, completion) rows for
`stages.sft --section sft_distill`: the query is the prompt the teacher saw (`countdown.prompt_template`),
the completion the teacher's text as generated, trailing whitespace stripped (SFT appends the eos).
With `distill.verified_only` only the answers the verifier accepts are kept; 003 does not say it
filtered, so `false` trains on every answer, as 003 may have.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from pipeline import params
from posttrain.countdown import verifier as countdown
from posttrain.data_io import read_jsonl, write_json, write_jsonl
from posttrain.errors import UserError, run_main
from posttrain.prompts import countdown_prompt
from posttrain.schemas import COUNTDOWN_TASK, GENERATION, WARMSTART


def sample_prompts(tasks: list[dict], n: int, seed: int) -> list[dict]:
    """`n` training tasks drawn without replacement, in the sampled order."""
    if not 0 < n <= len(tasks):
        raise UserError(f"params: distill.prompts={n} must be between 1 and the {len(tasks)} training tasks")
    return random.Random(seed).sample(tasks, n)


def collect(prompts: list[dict], generations: list[dict], template: str, verified_only: bool,
            where: str) -> tuple[list[dict], dict]:
    """Warmstart rows from a teacher's generations, and the teacher's counts on these prompts."""
    answered: set[tuple[int, int]] = set()
    rows, verified, formatted = [], 0, 0
    for index, gen in enumerate(generations):
        prompt_id = gen["prompt_id"]
        if prompt_id >= len(prompts):
            raise UserError(f"{where}: row {index}: field `prompt_id` is {prompt_id}, but the prompt file has "
                            f"{len(prompts)} rows; were these generations made from these prompts?")
        if (prompt_id, gen["sample"]) in answered:
            raise UserError(f"{where}: row {index}: field `sample`: prompt {prompt_id} sample {gen['sample']} "
                            "appears twice")
        answered.add((prompt_id, gen["sample"]))
        task = prompts[prompt_id]
        text = gen["text"].rstrip()
        verdict = countdown.score(text, task["nums"], task["target"])
        verified += verdict.correct
        formatted += verdict.reason != "no_answer_tag"
        if verdict.correct or not verified_only:
            rows.append({"query": countdown_prompt(template, task["nums"], task["target"]), "completion": text})
    missing = len(prompts) - len({prompt_id for prompt_id, _ in answered})
    if missing:
        raise UserError(f"{where}: {missing} of the {len(prompts)} prompts have no answer; were these "
                        "generations made from these prompts?")
    if not rows:
        raise UserError(f"{where}: none of the {len(generations)} teacher answers is kept "
                        f"(distill.verified_only={verified_only}, {verified} verified)")
    summary = {"prompts": len(prompts), "teacher_answers": len(generations), "verified": verified, "kept": len(rows),
               "accuracy": verified / len(generations), "format_rate": formatted / len(generations)}
    return rows, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    prompts = commands.add_parser("prompts", help="sample the training prompts every teacher answers")
    prompts.add_argument("--train", type=Path, required=True, help="training puzzles (target, nums)")
    prompts.add_argument("--out", type=Path, required=True)
    gather = commands.add_parser("collect", help="a teacher's generations -> warmstart rows for SFT")
    gather.add_argument("--prompts", type=Path, required=True, help="the file `prompts` wrote")
    gather.add_argument("--generations", type=Path, required=True, help="stages.generate rows for those prompts")
    gather.add_argument("--out", type=Path, required=True, help="warmstart rows (query, completion)")
    gather.add_argument("--summary", type=Path, required=True)
    args = parser.parse_args()
    p = params.load()
    if args.command == "prompts":
        rows = sample_prompts(read_jsonl(args.train, COUNTDOWN_TASK), p.distill.prompts, p.seed)
        write_jsonl(args.out, rows, COUNTDOWN_TASK)
        print(f"{len(rows)} distillation prompts -> {args.out}")
        return
    prompt_rows = read_jsonl(args.prompts, COUNTDOWN_TASK)
    generations = read_jsonl(args.generations, GENERATION)
    rows, summary = collect(prompt_rows, generations, p.countdown.prompt_template, p.distill.verified_only,
                            str(args.generations))
    write_jsonl(args.out, rows, WARMSTART)
    write_json(args.summary, summary)
    print(", ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    run_main(main)
