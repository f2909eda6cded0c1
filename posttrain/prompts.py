"""Prompt rendering shared by training, generation and evaluation, so every stage sees one format.

Countdown prompts are raw text from `countdown.prompt_template` (the TinyZero "base" prompt in the
paper profile); instruction prompts go through the tokenizer's chat template with the system prompt
from params (the same one for SFT, DPO, RL and evaluation).

Every stage that renders a chat gets its tokenizer from `load_chat_tokenizer`, which takes out a
template's default system turn: Qwen2.5's template writes "You are Qwen, created by Alibaba Cloud..."
whenever a conversation has none (reference.md §7), so an empty system prompt (003's single-turn
format) would otherwise be rendered with a system prompt nobody chose. TRL's trainers get that
tokenizer as `processing_class`, so they render the same string.
"""

from __future__ import annotations

import re
import string
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posttrain.errors import UserError

# A template's constant system turn, written when the conversation brings none: a Jinja output of one
# string literal that opens and closes a system turn (Qwen2.5's "You are Qwen, ...", Qwen2's "You are
# a helpful assistant.", Qwen2.5-Math's "Please reason step by step, ..."). A system turn built from
# the conversation (`'<|im_start|>system\n' + messages[0]['content'] + ...`) is several literals and
# stays. Qwen2.5's tools branch also names a default, inside the system turn that declares the tools;
# no stage passes tools, so it is left as it is.
DEFAULT_SYSTEM_TURN = re.compile(r"\{\{-?\s*'<\|im_start\|>system\\n(?:[^'\\]|\\.)*<\|im_end\|>\\n'\s*-?\}\}")


def countdown_prompt(template: str, nums: Sequence[int], target: int) -> str:
    """Render a Countdown prompt; `{nums}` renders as a Python list, e.g. `[44, 19, 35]`."""
    return template.format(nums=list(nums), target=target)


def countdown_query_pattern(template: str) -> re.Pattern[str]:
    """A pattern that finds `nums` and `target` in a prompt written from `template`."""
    # str.format's own parser: literal text with `{{` already read as `{`, then the field it fills.
    fields = {"nums": r"(?P<nums>\[[0-9, ]*\])", "target": r"(?P<target>[0-9]+)", None: ""}
    return re.compile("".join(re.escape(text) + fields[name] for text, name, _, _ in string.Formatter().parse(template)))


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


def chat_prompt(tokenizer, system_prompt: str, user: str) -> str:
    """The text an instruction prompt is fed to the model as: the chat, then the assistant turn's opening."""
    return tokenizer.apply_chat_template(chat_messages(system_prompt, user), tokenize=False,
                                         add_generation_prompt=True)


def without_default_system(tokenizer, where: str | Path):
    """`tokenizer`, its chat template changed to write no system turn of its own; a `UserError` naming
    `where` (the model folder) if one still does.

    Checked by rendering, whatever the template: [system S, user U] must end with [user U] and be
    longer. A system prompt given in the conversation renders as before. A tokenizer without a chat
    template (an encoder's: BERT, DeBERTa) is returned as it is.
    """
    template = tokenizer.chat_template
    if not template:
        return tokenizer
    if isinstance(template, str) and DEFAULT_SYSTEM_TURN.search(template):
        tokenizer.chat_template = DEFAULT_SYSTEM_TURN.sub("", template)
    user = [{"role": "user", "content": "Which turn is this?"}]
    try:
        alone = tokenizer.apply_chat_template(user, tokenize=False)
        with_system = tokenizer.apply_chat_template([{"role": "system", "content": "A system prompt."}, *user],
                                                    tokenize=False)
    except Exception as err:  # jinja2's errors, or a template that refuses a system turn
        raise UserError(f"{where}: the chat template cannot render a system turn and a user turn: {err}") from None
    if not (with_system.endswith(alone) and len(with_system) > len(alone)):
        raise UserError(f"{where}: the chat template writes a system turn of its own when the conversation has "
                        f"none, and it could not be taken out; an empty `instruct.system_prompt` needs a template "
                        f"without one. It renders a lone user turn as {alone!r}")
    return tokenizer


def load_chat_tokenizer(model_dir: str | Path, **kwargs: Any):
    """The tokenizer of `model_dir` (`AutoTokenizer`, `kwargs` passed on), without a default system turn."""
    from transformers import AutoTokenizer

    return without_default_system(AutoTokenizer.from_pretrained(model_dir, **kwargs), model_dir)
