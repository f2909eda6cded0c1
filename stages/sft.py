"""Supervised fine-tuning with TRL's `SFTTrainer`, loss on the completion only.

    python -m stages.sft --section sft_countdown --model models/base \
        --train data/countdown/warmstart_train.jsonl --eval data/countdown/warmstart_test.jsonl \
        --out models/sft_countdown --live metrics/train/sft_countdown

Reads warmstart rows (`query`, `completion`: raw-text prompt and completion) or SmolTalk rows
(`messages`: a conversation whose last turn is the completion). `<|im_end|>` is the eos: TRL appends
it to every completion, so the model learns to stop where generation stops. The trainer's fields
come from `<section>.trainer` in params.yaml; curves go to DVCLive under `--live`.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from stages import params
from stages.data_io import read_jsonl
from stages.errors import UserError, run_main
from stages.train_utils import dvclive_callback, trainer_args

EOS = "<|im_end|>"


def to_prompt_completion(row: dict) -> dict:
    """A training example in TRL's prompt-completion format, from either schema."""
    if "query" in row:
        return {"prompt": row["query"], "completion": row["completion"]}
    return {"prompt": row["messages"][:-1], "completion": row["messages"][-1:]}


def load_examples(path: Path):
    from datasets import Dataset

    rows = [to_prompt_completion(row) for row in read_jsonl(path)]
    if not rows:
        raise UserError(f"{path}: no rows to train on")
    return Dataset.from_list(rows)


def train(section: str, fields: dict, model_dir: Path, train_path: Path, eval_path: Path | None,
          out: Path, live: Path | None) -> None:
    """Fine-tune the model in `model_dir` and save model and tokenizer to `out`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    with tempfile.TemporaryDirectory() as workdir:
        eval_fields = {"eval_strategy": "epoch"} if eval_path else {}
        args = trainer_args(SFTConfig, {**eval_fields, **fields}, f"{section}.trainer", Path(workdir),
                            completion_only_loss=True, eos_token=EOS, save_strategy="no")
        trainer = SFTTrainer(
            model=model, args=args, processing_class=tokenizer,
            train_dataset=load_examples(train_path),
            eval_dataset=load_examples(eval_path) if eval_path else None,
            callbacks=[dvclive_callback(live)] if live else None,
        )
        trainer.train()
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tokenizer.eos_token = EOS
        model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(EOS)
        trainer.save_model(str(tmp))
        tokenizer.save_pretrained(tmp)
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--section", required=True, help="the params.yaml section of this run")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--eval", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--live", type=Path, help="DVCLive folder for the training curves")
    args = parser.parse_args()
    p = params.load()
    section = getattr(p, args.section, None)
    if not isinstance(section, params.Sft):
        raise UserError(f"--section {args.section}: not an SFT section of params.yaml")
    train(args.section, section.trainer, args.model, args.train, args.eval, args.out, args.live)


if __name__ == "__main__":
    run_main(main)
