"""Judges: one scalar reward per (prompt, response), chosen by name.

    checker       the embedded profile's grader (`base.CheckerJudge`).
    reward_model  a local one-output sequence classifier by folder (`reward_model.RewardModelJudge`).
    nemotron      an OpenAI-compatible reward endpoint, cached and retried (`api.ApiJudge`).

`make_judge(name, **settings)` builds one; `judge_generations` scores generation rows with it.
"""

from __future__ import annotations

import inspect
from typing import Any

from posttrain.errors import UserError
from posttrain.judges.api import KEY_VARIABLE, ApiJudge, fit_to_limit, parse_reward, retry_delay
from posttrain.judges.base import CheckerJudge, Judge, JudgeFailed
from posttrain.judges.cache import RewardCache
from posttrain.judges.reward_model import RewardModelJudge

__all__ = ["JUDGES", "KEY_VARIABLE", "ApiJudge", "CheckerJudge", "Judge", "JudgeFailed", "RewardCache",
           "RewardModelJudge", "fit_to_limit", "judge_generations", "make_judge", "parse_reward", "retry_delay"]

JUDGES = {"checker": CheckerJudge, "reward_model": RewardModelJudge, "nemotron": ApiJudge}


def make_judge(name: str, **settings: Any) -> Judge:
    """The judge called `name`, built with `settings` (the keyword arguments of its class)."""
    if name not in JUDGES:
        raise UserError(f"unknown judge {name!r}; known: {', '.join(JUDGES)}")
    parameters = inspect.signature(JUDGES[name]).parameters
    allowed = set(parameters) - {"name"}
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise UserError(f"judge {name} takes no setting {', '.join(unknown)} (it takes: {', '.join(sorted(allowed))})")
    missing = [p for p, v in parameters.items() if v.default is inspect.Parameter.empty and p not in settings]
    if missing:
        raise UserError(f"judge {name} needs the setting {', '.join(missing)}")
    return JUDGES[name](**settings)


def judge_generations(judge: Judge, prompt_rows: list[dict], generation_rows: list[dict],
                      where: str = "generations") -> list[dict]:
    """One `schemas.JUDGED` row per generation row: its prompt_id and sample, the reward, and who gave it."""
    for index, row in enumerate(generation_rows):
        if not 0 <= row["prompt_id"] < len(prompt_rows):
            raise UserError(f"{where}: row {index}: prompt_id {row['prompt_id']} is not a row of the "
                            f"{len(prompt_rows)} prompts")
    rewards = judge.score([prompt_rows[r["prompt_id"]]["prompt"] for r in generation_rows],
                          [r["text"] for r in generation_rows])
    return [{"prompt_id": r["prompt_id"], "sample": r["sample"], "reward": reward, "judge": judge.name,
             "judge_model": judge.model} for r, reward in zip(generation_rows, rewards)]
