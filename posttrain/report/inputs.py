"""The report's inputs: flat metrics JSON, per-item outcome rows and DVCLive curves, each checked as read.

A malformed file is a `UserError` naming it; a missing one is absent (None or empty), so a model whose
files are missing is left out of the report.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from posttrain import schemas
from posttrain.data_io import read_jsonl
from posttrain.errors import UserError


def read_metrics(path: Path, keys: list[str]) -> dict:
    """One flat metrics JSON; a key it lacks, or a value of the wrong kind, is an error naming the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read metrics: {err}") from None
    problem = schemas.check_metrics(data, keys, str(path))
    if problem:
        raise UserError(problem)
    return data


def read_folder(folder: Path, keys: list[str]) -> dict[str, dict]:
    """Every `<name>.json` of the folder as {name: metrics}; none when the folder is missing."""
    return {p.stem: read_metrics(p, keys) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def read_outcomes(path: Path) -> dict[int, float] | None:
    """An outcome file (`schemas.OUTCOME`) as {prompt_id: value}, or None where the file is missing."""
    if not path.is_file():
        return None
    values: dict[int, float] = {}
    for index, row in enumerate(read_jsonl(path, schemas.OUTCOME)):
        if row["prompt_id"] in values:
            raise UserError(f"{path}: row {index}: prompt_id {row['prompt_id']} appears twice")
        values[row["prompt_id"]] = row["value"]
    return values


def read_curve(path: Path) -> tuple[list[float], list[float]]:
    """A DVCLive TSV (columns `step` and the metric) as (steps, values)."""
    try:
        rows = list(csv.reader(io.StringIO(path.read_text()), delimiter="\t"))[1:]
        return [float(r[0]) for r in rows], [float(r[1]) for r in rows]
    except (OSError, ValueError, IndexError) as err:
        raise UserError(f"{path}: not a DVCLive TSV (step, value): {err}") from None


def training_stages(train: Path) -> list[str]:
    """The stages that logged DVCLive curves under `train` (one folder each)."""
    return sorted(p.name for p in train.glob("*") if p.is_dir()) if train.is_dir() else []


def held_out_reward_rows(train: Path) -> list[dict]:
    """Per RL stage that evaluated held-out prompts: their mean reward before training and at the end."""
    rows = []
    for stage in training_stages(train):
        tsv = train / stage / "plots" / "metrics" / "eval" / "reward.tsv"
        if tsv.is_file():
            _, values = read_curve(tsv)
            if len(values) >= 2:
                rows.append({"stage": stage, "evaluations": len(values), "start": values[0], "end": values[-1],
                             "change": values[-1] - values[0]})
    return rows


def overoptimisation_curves(train: Path) -> list[dict]:
    """Per RL stage that logged a gold judge beside its reward on the held-out evaluations: the proxy's and
    the gold's mean reward and the KL from the starting policy at each evaluation (steps all three share)."""
    runs = []
    for stage in training_stages(train):
        folder = train / stage / "plots" / "metrics" / "eval"
        rewards = sorted((folder / "rewards").glob("*/mean.tsv")) if (folder / "rewards").is_dir() else []
        gold = [p for p in rewards if p.parent.name.startswith("gold_")]
        proxy = [p for p in rewards if not p.parent.name.startswith("gold_")]
        if not gold or not proxy or not (folder / "kl.tsv").is_file():
            continue
        curves = {name: dict(zip(*read_curve(path))) for name, path in
                  (("proxy", proxy[0]), ("gold", gold[0]), ("kl", folder / "kl.tsv"))}
        steps = sorted(set.intersection(*(set(c) for c in curves.values())))
        if len(steps) >= 2:
            runs.append({"stage": stage, "proxy_name": proxy[0].parent.name, "gold_name": gold[0].parent.name,
                         "steps": steps, **{name: [c[s] for s in steps] for name, c in curves.items()}})
    return runs
