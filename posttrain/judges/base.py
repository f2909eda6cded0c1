"""What every judge is: one scalar reward per (prompt, response), in order; and the rule-based one."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from posttrain.errors import UserError


class Judge(Protocol):
    name: str
    model: str | None

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """One reward per (prompt, response), in order."""


class JudgeFailed(UserError):
    """Some pairs got no reward after all retries; the others are cached."""


class CheckerJudge:
    """The embedded profile's deterministic grader, `instruct_tasks.check(prompt, response).score` (1-10);
    a prompt that is none of its tasks is a UserError."""

    name, model = "checker", None

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        from posttrain.instruct.tasks import check

        same_length(prompts, responses)
        try:
            return [check(p, r).score for p, r in zip(prompts, responses)]
        except ValueError as err:
            raise UserError(f"checker: {err}") from None


def same_length(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
