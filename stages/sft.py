"""Supervised fine-tuning with TRL's `SFTTrainer`, loss on the completion only: full, LoRA, length penalty.

    python -m stages.sft --section sft_instruct --model models/base \
        --train data/instruct/sft_train.jsonl --eval data/instruct/sft_test.jsonl \
        --out models/sft_instruct --live metrics/train/sft_instruct

Reads warmstart rows (`query`, `completion`: raw-text prompt and completion, as for Countdown) or
SmolTalk rows (`messages`), trained on their first user/assistant turn with `instruct.system_prompt`
in place of any system turn of the data, so SFT sees the prompt that DPO, RL and evaluation see (an
empty system prompt gives 003's single-turn format). `<|im_end|>` is the eos: TRL appends it to every
completion, so the model learns to stop where generation stops. The trainer's fields come from
`<section>.trainer` in params.yaml; curves go to DVCLive under `--live`.

Options of the section: `lora` trains PEFT adapters (`<out>/adapter`, merged into `<out>`);
`early_stopping_patience` stops after that many evaluations without a lower `eval_loss` and keeps the
best checkpoint; `length_penalty` adds 002's penalty through a REINFORCE term
(posttrain/training/length_penalty.py). `--seed` replaces `trainer.seed`. Checkpoints go to
`<out>.checkpoints` every `checkpoints.steps` (with early stopping: at each evaluation) and a rerun
resumes from the newest (posttrain/training/checkpoints.py); they are removed once `<out>` is saved.
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import TYPE_CHECKING

from pipeline import params
from posttrain.data_io import read_jsonl, require_model_dir
from posttrain.errors import UserError, run_main
from posttrain.prompts import chat_messages, load_chat_tokenizer
from posttrain.training import checkpoints
from posttrain.training.config import checkpoint_fields, dvclive_callback, lora_config, save_trained, trainer_args

if TYPE_CHECKING:
    from transformers import TrainerState

EOS = "<|im_end|>"


def first_exchange(messages: list[dict]) -> tuple[str, str] | None:
    """The first user turn and the assistant turn answering it, or None if the conversation has none."""
    for turn, reply in zip(messages, messages[1:]):
        if turn.get("role") == "user" and reply.get("role") == "assistant":
            return turn["content"], reply["content"]
    return None


def to_prompt_completion(row: dict, system_prompt: str) -> dict | None:
    """A training example in TRL's prompt-completion format, from either schema (None: no usable turn)."""
    if "query" in row:
        return {"prompt": row["query"], "completion": row["completion"]}
    exchange = first_exchange(row.get("messages") or [])
    if exchange is None:
        return None
    user, answer = exchange
    return {"prompt": chat_messages(system_prompt, user), "completion": [{"role": "assistant", "content": answer}]}


def load_examples(path: Path, system_prompt: str):
    from datasets import Dataset

    rows = []
    for index, row in enumerate(read_jsonl(path)):
        example = to_prompt_completion(row, system_prompt)
        if example is None:
            raise UserError(f"{path}: row {index}: neither a `query` nor `messages` with a user turn "
                            "answered by an assistant turn")
        rows.append(example)
    if not rows:
        raise UserError(f"{path}: no rows to train on")
    return Dataset.from_list(rows)


def train(section: str, fields: dict, model_dir: Path, train_path: Path, eval_path: Path | None, out: Path,
          live: Path | None, *, system_prompt: str = "", lora: params.Lora | None = None,
          early_stopping_patience: int | None = None, length_penalty: params.LengthPenalty | None = None,
          saving: params.Checkpoints) -> TrainerState:
    """Fine-tune the model in `model_dir`, save model and tokenizer to `out`; the trainer's final state."""
    import torch
    from transformers import AutoModelForCausalLM, EarlyStoppingCallback
    from trl import SFTConfig, SFTTrainer

    if early_stopping_patience is not None and eval_path is None:
        raise UserError(f"params: `{section}.early_stopping_patience` needs a validation set: pass --eval, "
                        "or set it to null")
    defaults, fixed = {**({"eval_strategy": "epoch"} if eval_path else {}), **checkpoint_fields(saving)}, {}
    if early_stopping_patience is not None:  # the best model is reloaded from a checkpoint: save at each evaluation
        defaults |= {"save_strategy": fields.get("eval_strategy", "epoch"),
                     "save_steps": fields.get("eval_steps", saving.steps)}
        fixed = {"load_best_model_at_end": True, "metric_for_best_model": "eval_loss", "greater_is_better": False}
    args = trainer_args(SFTConfig, {**defaults, **fields}, f"{section}.trainer", checkpoints.checkpoint_dir(out),
                        completion_only_loss=True, eos_token=EOS, **fixed)

    trainer_cls = SFTTrainer
    if length_penalty is not None:
        from posttrain.training.length_penalty import LengthPenaltySFTTrainer, check

        check(length_penalty, f"{section}.length_penalty")
        if args.packing or args.padding_free:  # the term needs each prompt on its own row
            raise UserError(f"params: `{section}.length_penalty` needs unpacked rows: set "
                            f"`{section}.trainer.packing` and `padding_free` to false")
        if length_penalty.weight > 0:  # weight 0 is plain SFT: nothing to sample
            trainer_cls = functools.partial(LengthPenaltySFTTrainer, length_penalty=length_penalty)

    callbacks = [dvclive_callback(live)] if live else []
    if early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=early_stopping_patience))
    tokenizer = load_chat_tokenizer(model_dir)
    trainer = trainer_cls(
        # fp32 master weights: a bf16 checkpoint (Qwen2.5) loads as bf16 by default, and bf16 drops small updates
        model=AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32),
        args=args, processing_class=tokenizer,
        train_dataset=load_examples(train_path, system_prompt),
        eval_dataset=load_examples(eval_path, system_prompt) if eval_path else None,
        callbacks=callbacks, peft_config=lora_config(lora) if lora else None,
    )
    settings = [system_prompt, lora, early_stopping_patience, length_penalty]  # what the trainer's args do not hold
    checkpoints.train(trainer, section, settings, [model_dir, train_path, eval_path], live)
    tokenizer.eos_token = EOS
    trainer.model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(EOS)
    save_trained(trainer, tokenizer, out)
    checkpoints.remove(trainer)
    return trainer.state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--section", required=True, help="the params.yaml section of this run")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--eval", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--live", type=Path, help="DVCLive folder for the training curves")
    parser.add_argument("--seed", type=int, help="replaces the section's trainer seed: a replicate of the run")
    args = parser.parse_args()
    require_model_dir(args.model, "--model")
    p = params.load()
    section = params.section(p, args.section, params.Sft, "an SFT")
    fields = section.trainer if args.seed is None else {**section.trainer, "seed": args.seed}
    train(args.section, fields, args.model, args.train, args.eval, args.out, args.live,
          system_prompt=p.instruct.system_prompt, lora=section.lora,
          early_stopping_patience=section.early_stopping_patience, length_penalty=section.length_penalty,
          saving=p.checkpoints)


if __name__ == "__main__":
    run_main(main)
