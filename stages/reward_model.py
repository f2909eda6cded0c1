"""Reward models trained on preference pairs: pointwise regression on scores, or Bradley-Terry on pairs.

    python -m stages.reward_model --kind bradley_terry --section reward_bt --model models/base \
        --train data/instruct/prefs_train.jsonl --test data/instruct/prefs_test.jsonl \
        --out models/reward_bt --metrics metrics/reward_model/reward_bt.json --live metrics/train/reward_bt

The two kinds of 001 (reference §4), one encoder with a single output in both:

    pointwise      001's "DistilBERT": each response of a pair is one example, regressed (MSE) on its
                   UltraFeedback score mapped from 1-10 to [0, 1], (s - 1) / 9; transformers' `Trainer`.
    bradley_terry  001's "Siamese": the shared encoder scores chosen and rejected, loss
                   -log sigmoid(r_chosen - r_rejected); TRL's `RewardTrainer`.

`--model` is the encoder's folder, which some stage makes (paper: `models/distilbert`, pulled from the
hub; embedded: `models/base`), and must be `<section>.encoder`, so that the params DVC tracks name it.
With `<section>.config` a mapping, a fresh `Qwen2ForSequenceClassification` of that config is built over
the folder's tokenizer (the embedded profile); with `config: null` the folder's weights are loaded with
a fresh one-output head (paper: `distilbert-base-uncased`). The trainer's fields come from
`<section>.trainer`: `TrainingArguments` fields for pointwise, TRL `RewardConfig` fields for bradley_terry.

The metric is pairwise accuracy on `--test`: the share of pairs whose chosen response scores above the
rejected one, a tie counting one half (a coin flip's expected accuracy). `score_pairs` is the scorer
later stages reuse (the RL reward, judges); it reads any local sequence-classification folder with one
output, so an off-the-shelf reward model (`OpenAssistant/reward-model-deberta-v3-large`, pulled by the
pull_model stage) needs no training.

Departures from 001: its regression target's scaling is not published (here [0, 1]); its "Siamese"
loop is replaced by TRL's trainer, the same loss, which also turns dropout off (`disable_dropout`)
so that chosen and rejected are scored by the same network; the pointwise run keeps the encoder's.
Texts over `max_length` tokens are cut at the right end, in training and scoring alike.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline import params
from posttrain.data_io import read_jsonl, require_model_dir, write_json
from posttrain.schemas import ULTRAFEEDBACK
from posttrain.errors import UserError, run_main
from posttrain.prompts import load_chat_tokenizer
from posttrain.training.config import dvclive_callback, trainer_args
from posttrain.training.reward_model import (KINDS, _set_pad_token, encode, load_scorer, normalized_score, pairwise_accuracy,
                                             score_with)

def build_encoder(cfg: params.RewardModel, section: str, encoder_dir: Path, seed: int):
    """A one-output sequence classifier and its tokenizer, from the folder `encoder_dir`: a fresh Qwen2 encoder
    of `cfg.config` over its tokenizer, or (`cfg.config` null) its weights with a fresh head."""
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


def _make_trainer(kind: str, section: str, cfg: params.RewardModel, model, tokenizer, train_rows, test_rows,
                  workdir: Path, live: Path | None):
    fields = {"eval_strategy": "epoch", **cfg.trainer}
    callbacks = [dvclive_callback(live)] if live else None
    if kind == "pointwise":
        from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

        args = trainer_args(TrainingArguments, fields, f"{section}.trainer", workdir, save_strategy="no")
        return Trainer(model=model, args=args, processing_class=tokenizer, callbacks=callbacks,
                       data_collator=DataCollatorWithPadding(tokenizer),
                       train_dataset=_pointwise_dataset(train_rows, tokenizer, cfg.max_length),
                       eval_dataset=_pointwise_dataset(test_rows, tokenizer, cfg.max_length))
    from trl import RewardConfig, RewardTrainer

    args = trainer_args(RewardConfig, fields, f"{section}.trainer", workdir, save_strategy="no",
                        max_length=cfg.max_length)
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


def train(kind: str, section: str, cfg: params.RewardModel, model_dir: Path, train_path: Path, test_path: Path,
          out: Path, metrics: Path, live: Path | None, seed: int) -> dict[str, Any]:
    """Train a reward model of `kind`, save model and tokenizer to `out`, write its test metrics to `metrics`."""
    if kind not in KINDS:
        raise UserError(f"--kind {kind}: must be one of {', '.join(KINDS)}")
    if Path(model_dir) != Path(cfg.encoder):  # DVC tracks the params, so the folder read must be the one they name
        raise UserError(f"--model {model_dir} is not `{section}.encoder` ({cfg.encoder}): pass the encoder's folder")
    require_model_dir(model_dir, "--model")
    train_rows, test_rows = read_jsonl(train_path, ULTRAFEEDBACK), read_jsonl(test_path, ULTRAFEEDBACK)
    if not train_rows or not test_rows:
        raise UserError(f"{train_path if not train_rows else test_path}: no preference pairs")
    model, tokenizer = build_encoder(cfg, section, model_dir, seed)
    with tempfile.TemporaryDirectory() as workdir:
        trainer = _make_trainer(kind, section, cfg, model, tokenizer, train_rows, test_rows, Path(workdir), live)
        trainer.train()
        tmp = out.with_name(out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        trainer.save_model(str(tmp))
        tokenizer.save_pretrained(tmp)
    result = evaluate(tmp, test_rows, trainer.args.per_device_eval_batch_size)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    write_json(metrics, result)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kind", choices=KINDS, required=True)
    parser.add_argument("--section", required=True, help="the params.yaml section of this run")
    parser.add_argument("--model", type=Path, required=True, help="the encoder's folder, `<section>.encoder`")
    parser.add_argument("--train", type=Path, required=True, help="UltraFeedback-schema preference pairs")
    parser.add_argument("--test", type=Path, required=True, help="held-out pairs for the pairwise accuracy")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--metrics", type=Path, required=True)
    parser.add_argument("--live", type=Path, help="DVCLive folder for the training curves")
    args = parser.parse_args()
    p = params.load()
    section = params.section(p, args.section, params.RewardModel, "a reward-model")
    result = train(args.kind, args.section, section, args.model, args.train, args.test, args.out, args.metrics,
                   args.live, p.seed)
    print(f"{args.section}: pairwise accuracy {result['pairwise_accuracy']:.3f} on {result['n']} pairs -> {args.out}")


if __name__ == "__main__":
    run_main(main)
