"""The one adapter from the project's scorers to TRL reward functions.

TRL's `RLOOTrainer` and `GRPOTrainer` call each reward function once per batch of completions as
`f(prompts=..., completions=..., completion_ids=..., **columns)`: `columns` are the prompt dataset's
other columns, one value per completion (a prompt's row repeats for each completion of its group),
plus TRL's `trainer_state`, `log_extra` and `log_metric`. A function returns one float per
completion and is logged as `rewards/<__name__>/mean`. Completions are strings for raw-text prompts
and `[{"role": "assistant", "content": ...}]` for conversational ones.

Two kinds plug in the same way:
- a verifier: `countdown_reward` wraps the pure `countdown.score`; the ground truth (`target`, `nums`)
  travels with each row, so the reward needs only the text and the row;
- a reward model: `reward_model_reward(model_dir)` returns a function that scores (prompt, response)
  with a local one-output sequence-classification model, through `posttrain.training.reward_model`'s scorer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from posttrain.countdown import verifier as countdown

RewardFunc = Callable[..., list[float]]


def completion_text(completion: str | list[dict[str, Any]]) -> str:
    """The text a completion holds: the string itself, or the content of its last (assistant) message."""
    if isinstance(completion, str):
        return completion
    return completion[-1]["content"]


def countdown_reward(prompts: Sequence[Any], completions: Sequence[Any], target: Sequence[int],
                     nums: Sequence[Sequence[int]], **kwargs: Any) -> list[float]:
    """The Countdown verifier's reward for each completion: 1.0 correct, 0.1 a wrong answer in tags, 0.0 none."""
    return [countdown.score(completion_text(c), n, t).reward
            for c, n, t in zip(completions, nums, target, strict=True)]


def prompt_text(prompt: str | list[dict[str, Any]]) -> str:
    """What a reward model reads as the prompt: the string itself, or the last user turn of a conversation.

    A reward model is trained on [user, assistant] turns (`posttrain.training.reward_model.encode`), so the policy's
    system prompt is not shown to it.
    """
    if isinstance(prompt, str):
        return prompt
    return next(m["content"] for m in reversed(prompt) if m["role"] == "user")


def reward_model_reward(model_dir: Path, batch_size: int = 32) -> RewardFunc:
    """A reward function scoring (prompt, response) with the one-output reward model saved in `model_dir`.

    Scores come from `posttrain.training.reward_model.score_with`, so the RL reward reads text exactly as the reward
    model was trained and evaluated on it. The model is loaded once, here.
    """
    from posttrain.data_io import require_model_dir
    from posttrain.training.reward_model import load_scorer, score_with

    model, tokenizer = load_scorer(require_model_dir(model_dir, "--reward-model"))

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        return score_with(model, tokenizer, [prompt_text(p) for p in prompts],
                          [completion_text(c) for c in completions], batch_size)

    reward.__name__ = f"reward_model_{Path(model_dir).name}"  # TRL logs rewards/<name>/mean
    return reward


def judge_reward(judge, name: str, eval_only: bool) -> RewardFunc:
    """A judge (`posttrain.judges`) as a reward function named `gold_<name>`, meant for weight 0: TRL then logs
    `rewards/gold_<name>/mean` beside the proxy's, in training and on the held-out evaluations, while the
    policy trains on the proxy alone (Gao et al.'s over-optimisation picture).

    With `eval_only` (a judge that costs per call, an API) it scores only while the policy is in eval mode,
    i.e. on the held-out evaluations, and gives NaN in training, which TRL leaves out of every mean; the
    trainer's model is bound after the trainer is built (`bind`).
    """
    bound: dict[str, Any] = {}

    def reward(prompts: Sequence[Any], completions: Sequence[Any], **kwargs: Any) -> list[float]:
        model = bound.get("model")
        if eval_only and (model is None or model.training):
            return [float("nan")] * len(completions)
        return [float(r) for r in judge.score([prompt_text(p) for p in prompts], [completion_text(c) for c in completions])]

    reward.__name__ = f"gold_{name}"
    reward.bind = lambda trainer: bound.update(model=trainer.model)  # type: ignore[attr-defined]
    return reward
