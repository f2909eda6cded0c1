"""Reward models: the regression target, pairwise accuracy, scoring (prompt, response) pairs, and training.

The scorer reads any local sequence-classification folder with one output: the reward models the
pipeline trains and off-the-shelf ones (OpenAssistant's DeBERTa). The RL reward adapter, the
reward-model judge and the training stage all score through `score_with`, so a response gets one
reward whoever asks.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from posttrain.errors import UserError
from posttrain.prompts import load_chat_tokenizer
from posttrain.training.config import checkpoint_fields, dvclive_callback, trainer_args

KINDS = ("pointwise", "bradley_terry")
SCORE_RANGE = (1.0, 10.0)  # UltraFeedback's scale


def normalized_score(score: float) -> float:
    """An UltraFeedback score mapped from 1-10 to [0, 1], the pointwise regression target."""
    low, high = SCORE_RANGE
    return (score - low) / (high - low)


def pairwise_accuracy(chosen: Sequence[float], rejected: Sequence[float]) -> float:
    """Share of pairs where the chosen response scores higher; a tie counts one half, as a coin flip would."""
    if len(chosen) != len(rejected) or not chosen:
        raise ValueError(f"need as many chosen as rejected scores, at least one: {len(chosen)} vs {len(rejected)}")
    return sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)) / len(chosen)


def encode(tokenizer, prompts: Sequence[str], responses: Sequence[str], max_length: int) -> dict[str, list]:
    """Token ids of what the reward model reads, for training and scoring alike, unpadded.

    A tokenizer with a chat template (the pipeline's Qwen2 one) renders the [user, assistant] turn as
    the policy sees it, with no system turn (`load_chat_tokenizer` takes out a template's default); an
    encoder's tokenizer (BERT, DeBERTa) gets the prompt and response as a text pair,
    `[CLS] prompt [SEP] response [SEP]`, which is how OpenAssistant's reward models were trained.
    No token type ids: TRL's preference collator drops them, so scoring must not depend on them.
    """
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    common = {"truncation": True, "max_length": max_length, "return_token_type_ids": False}
    if tokenizer.chat_template:
        texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": r}],
                                               tokenize=False) for p, r in zip(prompts, responses)]
        # the template writes any special tokens itself
        return dict(tokenizer(texts, add_special_tokens=False, **common))
    return dict(tokenizer(list(prompts), list(responses), **common))


def score_with(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], batch_size: int,
               max_length: int | None = None) -> list[float]:
    """One reward per (prompt, response), from a loaded one-output sequence-classification model.

    Batches are length-sorted and right-padded: a causal encoder then sees each sequence at the same
    positions as alone, and pools its last real token, so scores do not depend on the batch size.
    """
    import torch

    if max_length is None:  # a trained reward model saves its truncation length with its tokenizer
        max_length = min(tokenizer.model_max_length, getattr(model.config, "max_position_embeddings", None) or 10**9)
    if model.config.num_labels != 1:
        raise ValueError(f"a reward model has one output; this one has {model.config.num_labels}")
    ids = encode(tokenizer, prompts, responses, max_length)["input_ids"]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    scores = [0.0] * len(ids)
    model.eval()
    device = next(model.parameters()).device
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            chunk = order[start:start + batch_size]
            batch = tokenizer.pad({"input_ids": [ids[i] for i in chunk]}, padding_side="right", return_tensors="pt")
            logits = model(input_ids=batch["input_ids"].to(device),
                           attention_mask=batch["attention_mask"].to(device)).logits
            for i, value in zip(chunk, logits[:, 0].float().tolist()):
                scores[i] = value
    return scores


def load_scorer(model_dir: str | Path):
    """The model (on the GPU when there is one) and tokenizer of a reward model folder, with a pad token set."""
    import torch
    from transformers import AutoModelForSequenceClassification

    tokenizer = load_chat_tokenizer(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir)
    _set_pad_token(model, tokenizer)
    return model.to("cuda" if torch.cuda.is_available() else "cpu"), tokenizer


def score_pairs(model_dir: str | Path, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 32,
                max_length: int | None = None) -> list[float]:
    """One reward per (prompt, response) from the reward model saved in `model_dir` (any one-output model)."""
    model, tokenizer = load_scorer(model_dir)
    return score_with(model, tokenizer, prompts, responses, batch_size, max_length)


def _set_pad_token(model, tokenizer) -> None:
    """A sequence classifier pools the last non-pad token, so it must know the pad id (TRL does the same)."""
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.config.pad_token_id = tokenizer.pad_token_id


# ------------------------------------------------------------------ training
def build_encoder(cfg, section: str, encoder_dir: Path, seed: int):
    """A one-output sequence classifier and its tokenizer, from the folder `encoder_dir`: a fresh Qwen2 encoder
    of `cfg.config` over its tokenizer, or (`cfg.config` None) its weights with a fresh head. `cfg` is a
    reward-model section: `config`, `max_length` (and `trainer`, for `make_trainer`)."""
    from transformers import AutoModelForSequenceClassification, Qwen2Config, Qwen2ForSequenceClassification, set_seed

    set_seed(seed)  # the fresh head (and a built encoder) start the same on every run
    head = {"num_labels": 1, "problem_type": "regression"}  # one scalar score; MSE when there are labels
    tokenizer = load_chat_tokenizer(encoder_dir)
    if cfg.config is not None:
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        try:
            config = Qwen2Config(vocab_size=len(tokenizer), bos_token_id=None, eos_token_id=tokenizer.eos_token_id,
                                 pad_token_id=tokenizer.pad_token_id, **head, **cfg.config)
        except (TypeError, ValueError) as err:
            raise UserError(f"params: {section}.config: {err}") from None
        model = Qwen2ForSequenceClassification(config)
    else:
        model = AutoModelForSequenceClassification.from_pretrained(encoder_dir, **head)
    _set_pad_token(model, tokenizer)
    tokenizer.padding_side = "right"  # see `score_with`
    tokenizer.model_max_length = cfg.max_length  # saved with the model: `score_pairs` truncates the same way
    return model, tokenizer


def _pointwise_dataset(rows: list[dict[str, Any]], tokenizer, max_length: int):
    """Each response of a pair is one regression example on its normalized score."""
    from datasets import Dataset

    prompts = [r["prompt"] for r in rows for _ in range(2)]
    responses = [r[side][-1]["content"] for r in rows for side in ("chosen", "rejected")]
    labels = [normalized_score(r[key]) for r in rows for key in ("score_chosen", "score_rejected")]
    return Dataset.from_dict({**encode(tokenizer, prompts, responses, max_length), "labels": labels})


def _pair_dataset(rows: list[dict[str, Any]], tokenizer, max_length: int):
    """Pairs tokenized here, through `encode`, so TRL trains on exactly what `score_pairs` reads."""
    from datasets import Dataset

    prompts = [r["prompt"] for r in rows]
    chosen = encode(tokenizer, prompts, [r["chosen"][-1]["content"] for r in rows], max_length)["input_ids"]
    rejected = encode(tokenizer, prompts, [r["rejected"][-1]["content"] for r in rows], max_length)["input_ids"]
    return Dataset.from_dict({"chosen_ids": chosen, "rejected_ids": rejected})


def make_trainer(kind: str, section: str, cfg, model, tokenizer, train_rows, test_rows, workdir: Path,
                 live: Path | None, saving):
    """`Trainer` (pointwise, MSE) or TRL's `RewardTrainer` (bradley_terry) over `cfg.trainer`'s fields,
    checkpointing to `workdir` every `saving.steps` (`saving.save_total_limit` kept) unless they say otherwise."""
    fields = {"eval_strategy": "epoch", **checkpoint_fields(saving), **cfg.trainer}
    callbacks = [dvclive_callback(live)] if live else None
    if kind == "pointwise":
        from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

        args = trainer_args(TrainingArguments, fields, f"{section}.trainer", workdir)
        return Trainer(model=model, args=args, processing_class=tokenizer, callbacks=callbacks,
                       data_collator=DataCollatorWithPadding(tokenizer),
                       train_dataset=_pointwise_dataset(train_rows, tokenizer, cfg.max_length),
                       eval_dataset=_pointwise_dataset(test_rows, tokenizer, cfg.max_length))
    from trl import RewardConfig, RewardTrainer

    args = trainer_args(RewardConfig, fields, f"{section}.trainer", workdir, max_length=cfg.max_length)
    return RewardTrainer(model=model, args=args, processing_class=tokenizer, callbacks=callbacks,
                         train_dataset=_pair_dataset(train_rows, tokenizer, cfg.max_length),
                         eval_dataset=_pair_dataset(test_rows, tokenizer, cfg.max_length))


def evaluate(model_dir: Path, rows: list[dict[str, Any]], batch_size: int) -> dict[str, Any]:
    """Pairwise accuracy of a saved reward model on preference rows, with the count of pairs and of ties."""
    model, tokenizer = load_scorer(model_dir)
    prompts = [r["prompt"] for r in rows]
    chosen = score_with(model, tokenizer, prompts, [r["chosen"][-1]["content"] for r in rows], batch_size)
    rejected = score_with(model, tokenizer, prompts, [r["rejected"][-1]["content"] for r in rows], batch_size)
    return {"pairwise_accuracy": pairwise_accuracy(chosen, rejected), "n": len(rows),
            "ties": sum(c == r for c, r in zip(chosen, rejected))}
