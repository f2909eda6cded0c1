"""RLOO and GRPO with TRL's trainers: the prompt datasets, the held-out split and one training run.

Countdown prompts are the raw prompt template with `target` and `nums` kept as columns for the
reward; instruction prompts are the system prompt and the user turn, through the chat template.
`train` fills TRL's config from a trainer section (TRL validates the fields), makes `<|im_end|>` the
eos of the tokenizer and of the saved generation config, left-pads prompts, and lets vLLM sample on
a GPU that has it unless `use_vllm` is set. It checkpoints to `<out>.checkpoints` and a rerun resumes
there (posttrain/training/checkpoints.py): the held-out evaluations keep their schedule, which counts
global steps, and `eval_on_start` is not repeated.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from posttrain.errors import UserError
from posttrain.prompts import chat_messages, countdown_prompt, load_chat_tokenizer
from posttrain.training import checkpoints
from posttrain.training.config import checkpoint_fields, dvclive_callback, save_trained, trainer_args
from posttrain.training.rewards import RewardFunc

EOS = "<|im_end|>"
METHODS = ("rloo", "grpo")
# Set explicitly in every profile: the trainers' defaults differ, and a silent 512-token cap is costly.
REQUIRED = ("num_generations", "beta", "learning_rate", "temperature", "max_completion_length")


def countdown_dataset(rows: list[dict], template: str):
    """Prompts rendered as generation and evaluation render them, with the puzzle kept for the reward."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": countdown_prompt(template, r["nums"], r["target"]),
                               "target": r["target"], "nums": r["nums"]} for r in rows])


def instruct_dataset(rows: list[dict], system_prompt: str):
    """Conversational prompts; TRL applies the chat template with the generation prompt."""
    from datasets import Dataset

    return Dataset.from_list([{"prompt": chat_messages(system_prompt, r["prompt"])} for r in rows])


def vllm_usable() -> bool:
    import torch

    return torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None


def trainer_classes(method: str) -> tuple[type, type]:
    """TRL's config and trainer for `method`."""
    if method == "rloo":
        from trl import RLOOConfig, RLOOTrainer

        return RLOOConfig, RLOOTrainer
    if method == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        return GRPOConfig, GRPOTrainer
    raise UserError(f"--method must be one of {', '.join(METHODS)}, got {method!r}")


def split_held_out(dataset, held_out: int, section: str, fields: dict):
    """(training prompts, the last `held_out` prompts or None); the evaluation schedule must match."""
    if not 0 <= held_out < len(dataset):
        raise UserError(f"params: `{section}.held_out` is {held_out}; it must be at least 0 and leave some of the "
                        f"{len(dataset)} prompts to train on")
    evaluates = fields.get("eval_strategy", "no") != "no"
    if evaluates != (held_out > 0):
        raise UserError(f"params: `{section}.held_out` and `{section}.trainer.eval_strategy` go together: held-out "
                        "prompts need an evaluation schedule, and an evaluation needs held-out prompts")
    if held_out == 0:
        return dataset, None
    return dataset.select(range(len(dataset) - held_out)), dataset.select(range(len(dataset) - held_out, len(dataset)))


def train(method: str, section: str, fields: dict, model_dir: Path, dataset, reward_funcs: list[RewardFunc],
          out: Path, live: Path | None, held_out: int = 0, logged_only: list[RewardFunc] = (),
          seed: int | None = None, saving=None, inputs: list[Path] = ()) -> None:
    """Train the policy in `model_dir` on `dataset`'s prompts and save model and tokenizer to `out`.

    `logged_only` reward functions are scored and logged with weight 0 (a gold judge beside the proxy);
    `seed` replaces the section's `trainer.seed` (and `data_seed`), for a replicate of the run.
    `saving` (`steps`, `save_total_limit`) sets the checkpoints unless the section's trainer does;
    `inputs` are other files the rewards read (a reward model), for the checkpoints' fingerprint."""
    if logged_only:
        if "reward_weights" in fields:
            raise UserError(f"params: `{section}.trainer.reward_weights` and a gold judge cannot go together")
        fields = {**fields, "reward_weights": [1.0] * len(reward_funcs) + [0.0] * len(logged_only)}
        reward_funcs = [*reward_funcs, *logged_only]
    if seed is not None:
        fields = {**fields, "seed": seed, **({"data_seed": seed} if "data_seed" in fields else {})}
    config_cls, trainer_cls = trainer_classes(method)
    missing = [name for name in REQUIRED if name not in fields]
    if missing:
        raise UserError(f"params: missing parameter `{section}.trainer.{missing[0]}` (required: {', '.join(REQUIRED)})")
    if len(dataset) == 0:
        raise UserError("--prompts: no prompts to train on")
    dataset, eval_dataset = split_held_out(dataset, held_out, section, fields)
    tokenizer = load_chat_tokenizer(model_dir)
    if EOS not in tokenizer.get_vocab():
        raise UserError(f"{model_dir}: the tokenizer has no {EOS} token; RL starts from a chat-tuned (SFT) model")
    saved_padding_side = tokenizer.padding_side
    tokenizer.eos_token = EOS  # TRL stops sampling at the tokenizer's eos and the model's generation eos
    tokenizer.padding_side = "left"  # prompts end where completions start (reference.md §6)
    defaults = {"use_vllm": vllm_usable(), **(checkpoint_fields(saving) if saving else {})}
    args = trainer_args(config_cls, {**defaults, **fields}, f"{section}.trainer", checkpoints.checkpoint_dir(out))
    trainer = trainer_cls(
        model=str(model_dir),  # a path: with beta > 0 TRL loads the reference from it, the starting point
        reward_funcs=reward_funcs, args=args, train_dataset=dataset, eval_dataset=eval_dataset,
        processing_class=tokenizer,
        callbacks=[dvclive_callback(live)] if live else None,
    )
    for func in reward_funcs:
        if hasattr(func, "bind"):
            func.bind(trainer)
    rows = hashlib.sha256(json.dumps([dataset.to_list(), eval_dataset.to_list() if eval_dataset else None],
                                     sort_keys=True).encode()).hexdigest()
    settings = {"prompts": rows, "rewards": [getattr(f, "__name__", repr(f)) for f in reward_funcs]}
    checkpoints.train(trainer, section, settings, [model_dir, *inputs], live)
    trainer.model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(EOS)
    tokenizer.padding_side = saved_padding_side
    save_trained(trainer, tokenizer, out)
    checkpoints.remove(trainer)
