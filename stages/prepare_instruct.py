"""Prepare the instruction-following data in the SmolTalk and UltraFeedback schemas.

    python -m stages.prepare_instruct --out data/instruct --summary metrics/data/instruct.json

Writes six JSONL files:
- `sft_train`, `sft_test`: SmolTalk rows (`messages`, `source`) cut to the first user/assistant turn.
- `prefs_train`, `prefs_test`: UltraFeedback preference pairs (train_prefs / test_prefs).
- `gen_train`, `gen_test`: UltraFeedback prompts for RL (train_gen) and evaluation (test_gen).

From the hub each split is a seeded sample of the requested size. Source `generator` makes them with
the embedded task families (`posttrain.instruct.tasks`), whose deterministic checker scores the pairs.
Any training row whose prompt appears in a test split is dropped: evaluation prompts are never
trained on.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from pipeline import params
from posttrain.data_io import load_rows, validate, write_json, write_jsonl
from posttrain.errors import UserError, run_main
from posttrain.instruct import tasks as instruct_tasks
from posttrain.schemas import SMOLTALK, ULTRAFEEDBACK

TRAIN, TEST = ("sft_train", "prefs_train", "gen_train"), ("sft_test", "prefs_test", "gen_test")


def first_turn(row: dict) -> dict | None:
    """A SmolTalk row cut to its first user turn and the assistant's answer, or None if it has none."""
    messages = [m for m in row["messages"] if m["role"] != "system"]
    if len(messages) < 2 or messages[0]["role"] != "user" or messages[1]["role"] != "assistant":
        return None
    return {"messages": messages[:2], "source": row["source"]}


def user_prompt(name: str, row: dict) -> str:
    return row["messages"][0]["content"] if name.startswith("sft") else row["prompt"]


def from_hub(cfg: params.Instruct, seed: int) -> dict[str, list[dict]]:
    smoltalk = {"sft_train": "train", "sft_test": "test"}
    ultrafeedback = {"prefs_train": "train_prefs", "prefs_test": "test_prefs",
                     "gen_train": "train_gen", "gen_test": "test_gen"}
    out = {}
    for name, split in smoltalk.items():
        rows = load_rows(cfg.smoltalk_source, split, SMOLTALK, "instruct.smoltalk_source", cfg.smoltalk_revision)
        out[name] = [r for r in map(first_turn, rows) if r is not None]
    for name, split in ultrafeedback.items():
        out[name] = load_rows(cfg.ultrafeedback_source, split, ULTRAFEEDBACK, "instruct.ultrafeedback_source",
                              cfg.ultrafeedback_revision)
    for name, rows in out.items():
        size = getattr(cfg, name)
        out[name] = random.Random(f"{seed}/{name}").sample(rows, min(size, len(rows)))
    return out


def from_generator(cfg: params.Instruct, seed: int) -> dict[str, list[dict]]:
    try:
        made = instruct_tasks.build_datasets(
            seed=seed, n_sft=cfg.sft_train, n_sft_test=cfg.sft_test, n_prefs_train=cfg.prefs_train,
            n_prefs_test=cfg.prefs_test, n_gen_train=cfg.gen_train, n_gen_test=cfg.gen_test,
            sft_noise=cfg.sft_noise, sft_verbose=cfg.sft_verbose,
        )
    except ValueError as err:
        raise UserError(f"instruct: {err}") from None
    return {
        "sft_train": made["smoltalk_train"],
        "sft_test": made["smoltalk_test"],
        "prefs_train": made["ultrafeedback_train_prefs"],
        "prefs_test": made["ultrafeedback_test_prefs"],
        "gen_train": made["ultrafeedback_train_gen"],
        "gen_test": made["ultrafeedback_test_gen"],
    }


def prepare(cfg: params.Instruct, seed: int) -> tuple[dict[str, list[dict]], dict]:
    if (cfg.smoltalk_source == "generator") != (cfg.ultrafeedback_source == "generator"):
        raise UserError("instruct.smoltalk_source and ultrafeedback_source: use the generator for both or neither")
    out = from_generator(cfg, seed) if cfg.smoltalk_source == "generator" else from_hub(cfg, seed)
    test_prompts = {user_prompt(name, row) for name in TEST for row in out[name]}
    summary = {}
    for name in TRAIN:
        kept = [row for row in out[name] if user_prompt(name, row) not in test_prompts]
        summary[f"{name}_dropped_held_out"] = len(out[name]) - len(kept)
        out[name] = kept
    for name, rows in out.items():
        validate(rows, SMOLTALK if name.startswith("sft") else ULTRAFEEDBACK, name)
        summary[name] = len(rows)
        if not rows:
            raise UserError(f"instruct: split `{name}` is empty")
    return out, summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--summary", type=Path, required=True)
    args = parser.parse_args()
    p = params.load()
    files, summary = prepare(p.instruct, p.seed)
    for name, rows in files.items():
        write_jsonl(args.out / f"{name}.jsonl", rows)
    write_json(args.summary, summary)
    print(", ".join(f"{k}={v}" for k, v in summary.items()))


if __name__ == "__main__":
    run_main(main)
