"""Reinforcement learning on sampled completions with TRL's `RLOOTrainer` or `GRPOTrainer`.

    python -m stages.rl --method rloo --section rloo_countdown --task countdown --model models/sft_countdown \
        --prompts data/countdown/train.jsonl --out models/rloo_countdown --live metrics/train/rloo_countdown

For each prompt the policy samples `num_generations` completions; a reward function scores them
(`--task countdown`: the verifier through `posttrain.training.rewards`; `--task instruct`: the model given by
`--reward-model`); the advantage of a completion is its reward against its group. Countdown prompts
are the raw `countdown.prompt_template` with `target` and `nums` kept as columns for the reward;
instruction prompts are the system prompt and the user turn, through the chat template.

`<section>.held_out` prompts, the last of the file, are kept out of training: TRL samples them with
the training settings at the steps `trainer.eval_strategy` names (`eval_on_start` for step 0), so the
`eval/reward` curve follows one fixed prompt set, free of the batch-to-batch spread of puzzle
difficulty that hides a small rise in the training batches' reward.

The trainer's fields come from `<section>.trainer` in params.yaml and TRL validates them. Group size
(`num_generations`), `beta`, `learning_rate`, `temperature` and the length cap `max_completion_length`
must be set there: TRL's defaults differ between the two trainers (beta 0.05 vs 0, 2 vs 8
completions) and would otherwise apply silently. Prompts are left-padded; sampling stops at
`<|im_end|>`, made the eos of the tokenizer and of the saved generation config. The policy is
loaded from the path, so with `beta > 0` TRL loads the reference from the same path: the reference
is the starting checkpoint. vLLM samples on a GPU that has it, unless `use_vllm` is set. Reward, KL,
completion length and entropy curves go to DVCLive under `--live`.

Where this departs from the published algorithms:
- RLOO (Ahmadian et al., 2024): as published (leave-one-out baseline, sequence-level KL penalty
  `beta * (log pi - log pi_ref)` subtracted from the reward), except that TRL wraps the loss in
  PPO's clipped ratio; with one optimisation pass per batch (`num_iterations: 1`) the ratio is 1 and
  the gradient is plain REINFORCE with the baseline.
- GRPO (Shao et al., 2024): TRL's default `loss_type: dapo` averages the loss over all tokens of the
  batch, not per sequence then per group (set `loss_type: grpo` for the paper's); the reference stays
  the starting checkpoint (no iterative reference updates); rewards are scaled by the group's std
  (`scale_rewards: group`), as published.
"""

from __future__ import annotations

import argparse
import importlib.util
import tempfile
from pathlib import Path

from pipeline import params
from posttrain.data_io import read_jsonl, require_model_dir
from posttrain.schemas import COUNTDOWN_TASK, ULTRAFEEDBACK
from posttrain.errors import UserError, run_main
from posttrain.prompts import chat_messages, countdown_prompt, load_chat_tokenizer
from posttrain.training.rewards import RewardFunc, countdown_reward, reward_model_reward
from posttrain.training.config import dvclive_callback, save_trained, trainer_args

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
          out: Path, live: Path | None, held_out: int = 0) -> None:
    """Train the policy in `model_dir` on `dataset`'s prompts and save model and tokenizer to `out`."""
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
    with tempfile.TemporaryDirectory() as workdir:
        args = trainer_args(config_cls, {"use_vllm": vllm_usable(), **fields}, f"{section}.trainer", Path(workdir),
                            save_strategy="no")
        trainer = trainer_cls(
            model=str(model_dir),  # a path: with beta > 0 TRL loads the reference from it, the starting point
            reward_funcs=reward_funcs, args=args, train_dataset=dataset, eval_dataset=eval_dataset,
            processing_class=tokenizer,
            callbacks=[dvclive_callback(live)] if live else None,
        )
        trainer.train()
        trainer.model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(EOS)
        tokenizer.padding_side = saved_padding_side
        save_trained(trainer, tokenizer, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--section", required=True, help="the params.yaml section of this run")
    parser.add_argument("--task", choices=["countdown", "instruct"], required=True)
    parser.add_argument("--model", type=Path, required=True, help="the starting policy, also the KL reference")
    parser.add_argument("--prompts", type=Path, required=True)
    parser.add_argument("--reward-model", type=Path, help="instruct: the sequence-classification reward model")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--live", type=Path, help="DVCLive folder for the training curves")
    args = parser.parse_args()
    require_model_dir(args.model, "--model")
    p = params.load()
    section = params.section(p, args.section, params.Rl, "an RL")
    if args.task == "countdown":
        dataset = countdown_dataset(read_jsonl(args.prompts, COUNTDOWN_TASK), p.countdown.prompt_template)
        reward_funcs = [countdown_reward]
    else:
        if args.reward_model is None:
            raise UserError("--task instruct needs --reward-model")
        dataset = instruct_dataset(read_jsonl(args.prompts, {"prompt": ULTRAFEEDBACK["prompt"]}),
                                   p.instruct.system_prompt)
        reward_funcs = [reward_model_reward(args.reward_model)]
    train(args.method, args.section, section.trainer, args.model, dataset, reward_funcs, args.out, args.live,
          section.held_out)


if __name__ == "__main__":
    run_main(main)
