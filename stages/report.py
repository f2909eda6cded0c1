"""The comparison report: every method's metrics side by side, with paired tests, the sources' numbers and plots.

    python -m stages.report --metrics metrics --outcomes-countdown metrics/countdown_outcomes \
        --outcomes-instruct metrics/instruct_outcomes --out metrics/report

Reads the metrics JSON files (the numbers of record; `--metrics` holds the folders countdown,
countdown/sweep, instruct/<judge>, instruct_text, reward_model and train), the per-item outcomes
for paired tests (`--outcomes-countdown`: `<model>.jsonl`, greedy correctness per puzzle;
`--outcomes-instruct`: `<judge>-<model>.jsonl`, the outcome against the reference per prompt, 1 win,
0.5 tie, 0 loss), and the DVCLive curves, and writes `<out>/report.md` (read it first), one CSV per table
and `<out>/plots/`. Models are listed in the order of `evaluation.countdown_models` and
`.instruct_models`; best-of-N for each k of `score.best_of`. A model whose files are missing is left
out; a malformed file stops the stage naming it. The output folder is built beside `<out>` and renamed
into place, so a failed run leaves the last report whole. `posttrain/report/tables.py` says what the
paired tests are.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from pipeline import params
from posttrain import schemas
from posttrain.errors import run_main
from posttrain.report import tables
from posttrain.report.files import write_report
from posttrain.report.inputs import held_out_reward_rows, overoptimisation_curves, read_folder, read_outcomes


def build(metrics: Path, outcomes_countdown: Path, outcomes_instruct: Path, out: Path, p: params.Params) -> None:
    """Read everything, then write the report's files under `out` (a fresh folder)."""
    e = p.evaluation
    scored = read_folder(metrics / "countdown", schemas.COUNTDOWN_METRICS)
    correct = {m: read_outcomes(outcomes_countdown / f"{m}.jsonl") for m in scored}
    replicates = {f"{m}-s{s}" for m in e.seed_models for s in p.train_seeds}  # their own table
    countdown = {m: v for m, v in scored.items() if m not in replicates}
    cd_rows = tables.countdown_rows(countdown, correct, e.countdown_models)
    seed_rows = tables.seed_rows(scored, correct, e.seed_models, p.train_seeds)
    pool_keys = schemas.POOL_METRICS + [key for k in p.score.best_of for key in schemas.pool_keys(k)]
    bo_rows = tables.best_of_n_rows(read_folder(metrics / "countdown" / "sweep", pool_keys), p.score.best_of)
    text = read_folder(metrics / "instruct_text", schemas.TEXT_METRICS)
    judges = [*e.judges, *e.reward_judges]
    found = [d.name for d in sorted((metrics / "instruct").glob("*")) if d.is_dir()]
    instruct = {}
    for judge in [j for j in judges if j in found] + [j for j in found if j not in judges]:
        by_model = read_folder(metrics / "instruct" / judge, schemas.WIN_RATE_METRICS)
        outcome = {m: read_outcomes(outcomes_instruct / f"{judge}-{m}.jsonl") for m in by_model}
        instruct[judge] = tables.instruct_rows(by_model, text, outcome, e.instruct_models)
    rm_rows = tables.reward_model_rows(read_folder(metrics / "reward_model", schemas.REWARD_MODEL_METRICS))
    write_report(out, e.reference, cd_rows, bo_rows, instruct, rm_rows, held_out_reward_rows(metrics / "train"),
                 metrics / "train", overoptimisation_curves(metrics / "train"), seed_rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--metrics", type=Path, required=True, help="the metrics folder")
    parser.add_argument("--outcomes-countdown", type=Path, required=True,
                        help="per-puzzle greedy correctness, <model>.jsonl")
    parser.add_argument("--outcomes-instruct", type=Path, required=True,
                        help="per-prompt outcomes against the reference, <judge>-<model>.jsonl")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    p = params.load()
    staging, old = args.out.with_name(args.out.name + ".tmp"), args.out.with_name(args.out.name + ".old")
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        build(args.metrics, args.outcomes_countdown, args.outcomes_instruct, staging, p)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if args.out.exists():
        args.out.rename(old)
    staging.rename(args.out)
    shutil.rmtree(old, ignore_errors=True)
    print((args.out / "report.md").read_text())


if __name__ == "__main__":
    run_main(main)
