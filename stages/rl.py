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
difficulty that hides a small rise in the training batches' reward. With `<section>.gold_judge` (instruct
RL), that judge scores the same samples with weight 0: proxy and gold curves against the KL.

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
import os
from pathlib import Path

from pipeline import params
from pipeline.judge_params import judge_settings
from posttrain.data_io import read_jsonl, require_model_dir
from posttrain.errors import UserError, run_main
from posttrain.schemas import COUNTDOWN_TASK, INSTRUCT_PROMPT
from posttrain.judges import KEY_VARIABLE, make_judge
from posttrain.training.rewards import countdown_reward, judge_reward, reward_model_reward
from posttrain.training.rl import METHODS, countdown_dataset, instruct_dataset, train


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
    parser.add_argument("--seed", type=int, help="replaces the section's trainer seed: a replicate of the run")
    args = parser.parse_args()
    require_model_dir(args.model, "--model")
    p = params.load()
    section = params.section(p, args.section, params.Rl, "an RL")
    if args.task == "countdown":
        dataset = countdown_dataset(read_jsonl(args.prompts, COUNTDOWN_TASK), p.countdown.prompt_template)
        reward_funcs = [countdown_reward]
        if section.gold_judge is not None:  # the verifier is the gold: there is no proxy to check it against
            raise UserError(f"params: `{args.section}.gold_judge` is for instruction RL; Countdown's reward is exact")
    else:
        if args.reward_model is None:
            raise UserError("--task instruct needs --reward-model")
        dataset = instruct_dataset(read_jsonl(args.prompts, INSTRUCT_PROMPT),
                                   p.instruct.system_prompt)
        reward_funcs = [reward_model_reward(args.reward_model)]
    train(args.method, args.section, section.trainer, args.model, dataset, reward_funcs, args.out, args.live,
          section.held_out, logged_only=gold(p, section.gold_judge), seed=args.seed, saving=p.checkpoints,
          inputs=[args.reward_model] if args.reward_model else [])


def gold(p: params.Params, name: str | None) -> list:
    """The gold judge's reward function (weight 0), or none: none named, or an API judge without its key."""
    if name is None:
        return []
    kind, settings = judge_settings(p, name)
    if kind == "nemotron" and not os.environ.get(KEY_VARIABLE):
        print(f"gold judge {name}: {KEY_VARIABLE} is not set; no gold curve")
        return []
    return [judge_reward(make_judge(kind, **settings), name, eval_only=kind != "checker")]


if __name__ == "__main__":
    run_main(main)
