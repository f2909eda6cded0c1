"""The report's files under one folder: a CSV per table, the plots and `report.md` listing them."""

from __future__ import annotations

from pathlib import Path

from posttrain.data_io import write_text
from posttrain.report import plots
from posttrain.report.inputs import training_stages
from posttrain.report.markdown import markdown
from posttrain.report.tables import csv_text, overoptimisation_rows


def write_report(out: Path, reference: str, countdown: list[dict], best_of: list[dict],
                 instruct: dict[str, list[dict]], reward_models: list[dict], held_out: list[dict],
                 train: Path, overoptimisation: list[dict] = (), seeds: list[dict] = ()) -> None:
    """Write the tables' CSVs (the non-empty ones), the plots (with one training figure per stage folder
    under `train` that logged curves) and `report.md` into `out`, a fresh folder."""
    (out / "plots").mkdir(parents=True)
    tables = {"countdown.csv": countdown, "best_of_n.csv": best_of, "reward_models.csv": reward_models,
              "rl_held_out_reward.csv": held_out, **{f"instruct_{j}.csv": rows for j, rows in instruct.items()},
              "overoptimisation.csv": overoptimisation_rows(list(overoptimisation)), "countdown_seeds.csv": list(seeds)}
    files = [name for name, rows in tables.items() if rows]
    for name in files:
        write_text(out / name, csv_text(tables[name]))
    if countdown:
        plots.plot_bars(out / "plots" / "countdown_accuracy.png", countdown, "accuracy", "Countdown greedy accuracy")
        files.append("plots/countdown_accuracy.png")
    if best_of:
        plots.plot_best_of_n(out / "plots" / "best_of_n.png", best_of)
        files.append("plots/best_of_n.png")
    for judge, rows in instruct.items():
        plots.plot_bars(out / "plots" / f"win_rates_{judge}.png", rows, "win_rate",
                        f"win rate vs {reference} ({judge})", chance=0.5)
        files.append(f"plots/win_rates_{judge}.png")
    if overoptimisation:
        plots.plot_overoptimisation(out / "plots" / "overoptimisation.png", list(overoptimisation))
        files.append("plots/overoptimisation.png")
    for stage in training_stages(train):
        if plots.plot_training(out / "plots" / f"training_{stage}.png", train / stage / "plots" / "metrics"):
            files.append(f"plots/training_{stage}.png")
    write_text(out / "report.md", markdown(reference, countdown, best_of, instruct, reward_models, held_out, files,
                                           tables["overoptimisation.csv"], list(seeds)))
