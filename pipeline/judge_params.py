"""A judge of `evaluation.judges` as its kind and settings: what the judge stages and RL's gold judge build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipeline import params
from posttrain.errors import UserError
from posttrain.judges import JUDGES


def judge_settings(p: params.Params, name: str, overrides: dict[str, Any] | None = None) -> tuple[str, dict[str, Any]]:
    """The kind and settings of `evaluation.judges.<name>` (`overrides`, e.g. command-line options, win)."""
    judges = p.evaluation.judges
    if name not in judges:
        raise UserError(f"params: no judge `evaluation.judges.{name}` (known: {', '.join(judges)})")
    spec = dict(judges[name])
    kind = spec.pop("kind", None)
    if kind not in JUDGES:
        raise UserError(f"params: `evaluation.judges.{name}.kind` must be one of {', '.join(JUDGES)}, got {kind!r}")
    if kind == "reward_model":  # its folder must be a dependency of the judge stages, which dvc.yaml gives only there
        raise UserError(f"params: `evaluation.judges.{name}` is a reward model: list it in "
                        "`evaluation.reward_judges` (it is then read from models/<name>)")
    spec = {**spec, **(overrides or {})}
    if "cache" in spec:
        spec["cache"] = Path(spec["cache"])
    return kind, spec
