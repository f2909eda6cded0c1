"""Direct preference optimisation (DPO) from the SFT model, with TRL's `DPOTrainer`.

    python -m stages.dpo --section dpo --model models/sft_instruct \
        --train data/instruct/prefs_train.jsonl --eval data/instruct/prefs_test.jsonl \
        --out models/dpo --live metrics/train/dpo

DPO (Rafailov et al., 2023) fits the policy pi to preference pairs without a reward model or
sampling: for a prompt x, a chosen answer y_w and a rejected one y_l, the loss (`loss_type: sigmoid`)
is -log sigmoid(beta * [(log pi(y_w|x) - log ref(y_w|x)) - (log pi(y_l|x) - log ref(y_l|x))]), the
Bradley-Terry likelihood of the pair under the reward beta * log(pi / ref) that the policy implies.
`beta` sets how far the policy may move from the reference. The reference is the starting (SFT)
model, frozen: with full fine-tuning TRL loads a second copy from the same `--model` path; with
LoRA it is the policy with its adapter disabled, i.e. the same SFT weights.

Reads UltraFeedback rows (`prompt`; `chosen`/`rejected`: [user, assistant] conversations) and
gives TRL conversational pairs: the prompt is the params' system prompt and the user turn, as SFT
and evaluation render it (the sources' DPO saw a different one, reference.md §6); the completions
are the two assistant turns, each closed by the chat template's `<|im_end|>`, the eos of the saved
tokenizer and generation config. `beta` and `loss_type` (one TRL loss type, or a list that TRL
adds up, e.g. `[sigmoid, sft]` for DPO with an SFT term on the chosen answers) come from
`<section>`, the other `DPOConfig` fields from `<section>.trainer`; with `<section>.lora` set, a LoRA
adapter is trained and merged onto the model it was trained from. Loss, reward margins and
accuracies go to DVCLive under `--live`, on the training pairs and, with `--eval`, on the held-out
ones (each epoch unless the trainer section sets `eval_strategy`). Resumable: posttrain/training/checkpoints.py.

Where this departs from the paper: nowhere with `loss_type: sigmoid` (log-probabilities are summed
over the answer's tokens, as published); pairs longer than `trainer.max_length` tokens are cut at
the end, and TRL drops a pair whose prompt alone fills it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pipeline import params
from posttrain.data_io import read_jsonl, require_model_dir
from posttrain.errors import UserError, run_main
from posttrain.prompts import chat_messages, load_chat_tokenizer
from posttrain.schemas import ULTRAFEEDBACK
from posttrain.training import checkpoints
from posttrain.training.config import checkpoint_fields, dvclive_callback, lora_config, save_trained, trainer_args

EOS = "<|im_end|>"
PREFERENCE = {field: ULTRAFEEDBACK[field] for field in ("prompt", "chosen", "rejected")}
# TRL 1.16's loss types. TRL checks the name only when it computes the first loss, after loading two
# models and tokenizing the data; this fails before any of it. A copy because TRL exports no list: its
# names live only in `DPOTrainer.dpo_loss`'s if/elif chain and the prose of `DPOConfig.loss_type`'s help,
# which tests/test_dpo.py compares this with, so a TRL upgrade that adds or drops one fails there.
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


def preference_example(row: dict, system_prompt: str) -> dict:
    """TRL's conversational preference example: the prompt as every instruction stage renders it, two answers."""
    return {"prompt": chat_messages(system_prompt, row["prompt"]),
            "chosen": row["chosen"][-1:], "rejected": row["rejected"][-1:]}


def load_preferences(path: Path, system_prompt: str):
    """The pairs in `path` as a `Dataset`, or a `UserError` naming the file, the row and the field."""
    from datasets import Dataset

    examples = []
    for index, row in enumerate(read_jsonl(path, PREFERENCE)):
        for field in ("chosen", "rejected"):
            if not row[field] or row[field][-1]["role"] != "assistant":
                raise UserError(f"{path}: row {index}: field `{field}` does not end with an assistant message")
        if not row["chosen"][-1]["content"].strip():
            raise UserError(f"{path}: row {index}: field `chosen` has an empty assistant message")
        examples.append(preference_example(row, system_prompt))
    if not examples:
        raise UserError(f"{path}: no preference pairs")
    return Dataset.from_list(examples)


def dpo_args(section: str, dpo: params.Dpo, output_dir: Path, has_eval: bool, saving: params.Checkpoints):
    """TRL's `DPOConfig`: `beta` and `loss_type` from the section, the rest from its `trainer` fields."""
    from trl import DPOConfig

    for name in ("beta", "loss_type"):
        if name in dpo.trainer:
            raise UserError(f"params: `{section}.trainer.{name}`: set it once, as `{section}.{name}`")
    loss_types = [dpo.loss_type] if isinstance(dpo.loss_type, str) else list(dpo.loss_type)
    unknown = [name for name in loss_types if name not in LOSS_TYPES]
    if unknown or not loss_types:
        raise UserError(f"params: `{section}.loss_type` must be one of {', '.join(LOSS_TYPES)} or a list of them, "
                        f"got {dpo.loss_type!r}")
    eval_fields = {"eval_strategy": "epoch"} if has_eval else {}
    return trainer_args(DPOConfig, {**eval_fields, **checkpoint_fields(saving), **dpo.trainer}, f"{section}.trainer",
                        output_dir, beta=dpo.beta, loss_type=loss_types)


def build_trainer(section: str, dpo: params.Dpo, system_prompt: str, model_dir: Path, train_path: Path,
                  eval_path: Path | None, output_dir: Path, live: Path | None, saving: params.Checkpoints):
    """A `DPOTrainer` whose policy and reference both start from `model_dir`."""
    from trl import DPOTrainer

    args = dpo_args(section, dpo, output_dir, eval_path is not None, saving)
    train_dataset = load_preferences(train_path, system_prompt)
    eval_dataset = load_preferences(eval_path, system_prompt) if eval_path else None
    tokenizer = load_chat_tokenizer(model_dir)
    if EOS not in tokenizer.get_vocab():
        raise UserError(f"{model_dir}: the tokenizer has no {EOS} token; DPO starts from a chat-tuned (SFT) model")
    tokenizer.eos_token = EOS
    trainer = DPOTrainer(
        # A path, not a loaded model: TRL loads it in fp32 (a bf16 checkpoint's weights would swallow updates
        # at DPO's learning rates) and, without a ref_model and without LoRA, loads the reference from this
        # same path, so the reference is the starting model.
        model=str(model_dir), args=args, processing_class=tokenizer,
        train_dataset=train_dataset, eval_dataset=eval_dataset,
        peft_config=lora_config(dpo.lora) if dpo.lora else None,
        callbacks=[dvclive_callback(live)] if live else None,
    )
    # TRL drops, without a word, a pair whose prompt alone fills max_length: say how many went.
    dropped = len(train_dataset) - len(trainer.train_dataset)
    print(f"{section}: {len(trainer.train_dataset)} training pairs ({dropped} dropped: prompt >= max_length tokens)")
    return trainer


def train(section: str, dpo: params.Dpo, system_prompt: str, model_dir: Path, train_path: Path,
          eval_path: Path | None, out: Path, live: Path | None, saving: params.Checkpoints) -> None:
    """Train the model in `model_dir` on the pairs in `train_path` and save model and tokenizer to `out`."""
    trainer = build_trainer(section, dpo, system_prompt, model_dir, train_path, eval_path,
                            checkpoints.checkpoint_dir(out), live, saving)
    checkpoints.train(trainer, section, [dpo.lora, system_prompt], [model_dir, train_path, eval_path], live)
    tokenizer = trainer.processing_class
    trainer.model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(EOS)
    save_trained(trainer, tokenizer, out)
    checkpoints.remove(trainer)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--section", required=True, help="the params.yaml section of this run")
    parser.add_argument("--model", type=Path, required=True, help="the starting (SFT) model, also the reference")
    parser.add_argument("--train", type=Path, required=True)
    parser.add_argument("--eval", type=Path)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--live", type=Path, help="DVCLive folder for the training curves")
    args = parser.parse_args()
    require_model_dir(args.model, "--model")
    p = params.load()
    section = params.section(p, args.section, params.Dpo, "a DPO")
    train(args.section, section, p.instruct.system_prompt, args.model, args.train, args.eval, args.out, args.live,
          p.checkpoints)


if __name__ == "__main__":
    run_main(main)
