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
Texts over `max_length` tokens are cut at the right end, in training and scoring alike. Checkpoints go
to `<out>.checkpoints` every `checkpoints.steps`; a rerun resumes there (posttrain/training/checkpoints.py).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path
from typing import Any

from pipeline import params
from posttrain.data_io import read_jsonl, require_model_dir, write_metrics
from posttrain.errors import UserError, run_main
from posttrain.schemas import REWARD_MODEL_METRICS, ULTRAFEEDBACK
from posttrain.training import checkpoints
from posttrain.training.reward_model import KINDS, build_encoder, evaluate, make_trainer


def train(kind: str, section: str, cfg: params.RewardModel, model_dir: Path, train_path: Path, test_path: Path,
          out: Path, metrics: Path, live: Path | None, seed: int, saving: params.Checkpoints) -> dict[str, Any]:
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
    trainer = make_trainer(kind, section, cfg, model, tokenizer, train_rows, test_rows, checkpoints.checkpoint_dir(out),
                           live, saving)
    checkpoints.train(trainer, section, [kind, cfg, seed], [model_dir, train_path, test_path], live)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    trainer.save_model(str(tmp))
    tokenizer.save_pretrained(tmp)
    result = evaluate(tmp, test_rows, trainer.args.per_device_eval_batch_size)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    write_metrics(metrics, result, REWARD_MODEL_METRICS)
    checkpoints.remove(trainer)
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
                   args.live, p.seed, p.checkpoints)
    print(f"{args.section}: pairwise accuracy {result['pairwise_accuracy']:.3f} on {result['n']} pairs -> {args.out}")


if __name__ == "__main__":
    run_main(main)
