"""Prompt rendering shared by training, generation and evaluation, so every stage sees one format.

Countdown prompts are raw text from `countdown.prompt_template` (the TinyZero "base" prompt in the
paper profile); instruction prompts go through the tokenizer's chat template with the system prompt
from params (the same one for SFT, DPO, RL and evaluation).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any


def countdown_prompt(template: str, nums: Sequence[int], target: int) -> str:
    """Render a Countdown prompt; `{nums}` renders as a Python list, e.g. `[44, 19, 35]`."""
    return template.format(nums=list(nums), target=target)


def countdown_query_pattern(template: str) -> re.Pattern[str]:
    """A pattern that finds `nums` and `target` in a prompt written from `template`."""
    parts = re.split(r"(\{nums\}|\{target\})", template)
    regex = "".join(
        r"(?P<nums>\[[0-9, ]*\])" if part == "{nums}" else r"(?P<target>[0-9]+)" if part == "{target}" else re.escape(part)
        for part in parts
    )
    return re.compile(regex)


def parse_countdown_query(pattern: re.Pattern[str], query: str) -> tuple[list[int], int] | None:
    """The puzzle a prompt asks for, or None when the prompt does not follow the template."""
    match = pattern.search(query)
    if match is None:
        return None
    nums = [int(n) for n in match["nums"].strip("[]").split(",") if n.strip()]
    return nums, int(match["target"])


def chat_messages(system_prompt: str, user: str) -> list[dict[str, Any]]:
    """The conversation every instruction stage feeds the model: the system prompt, then the user turn.

    An empty system prompt gives the single-turn (user only) format of 003.
    """
    system = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*system, {"role": "user", "content": user}]
