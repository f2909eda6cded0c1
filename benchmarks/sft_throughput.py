"""SFT training throughput: the project's SFT stage against TRL's plain `SFTTrainer`, side by side.

    python -m benchmarks.sft_throughput [--section sft_countdown] [--model models/base] \
        [--train data/countdown/warmstart_train.jsonl] [--steps 30] [--rounds 2]

Every variant trains `--steps` optimizer steps from the same model on the same rows with the section's
trainer settings (learning rate, schedule, batch size, seed) in this one process, in rounds (A B C D,
A B C D, ...) so that a busy machine slows each alike. Throughput is training tokens (prompt and
completion, padding not counted) per second, from the end of the first step (warm-up) to the end of
the last; the table gives each variant's median over rounds and its ratio to plain TRL.

- `plain TRL`: `SFTTrainer(model, args=SFTConfig(...), processing_class=tokenizer, train_dataset=rows)`
  with the section's fields and nothing else, as a TRL user would write it.
- `stage`: `stages.sft.train` as the DVC stage runs it: DVCLive curves, checkpoint saving, the
  prompt/completion conversion.
- `stage, padding-free`: the stage with `padding_free: true` (and `max_length: null`, which TRL asks for
  without packing): each batch is one row, its sequences kept apart by their position ids (transformers
  builds the block-diagonal mask from them for sdpa), so no padding is computed.
- `stage, packed`: the stage with `packing: true` (TRL's best-fit-decreasing packing into rows of
  `max_length`, padding-free) and the batch size divided by the examples that fit a row, so a step still
  sees about as many examples.

Set OMP_NUM_THREADS the same for every comparison you make (a shared machine's spinning threads make
timings meaningless); the variants here share the process, so they share the setting.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pipeline import params
from posttrain.data_io import read_jsonl
from stages import sft


class Meter:
    """Counts the tokens each batch carries (wrapping the collator) and times each optimizer step."""

    def __init__(self) -> None:
        self.tokens: list[int] = []
        self.ends: list[float] = []

    def wrap(self, collate):
        def counted(examples):
            batch = collate(examples)
            mask = batch.get("attention_mask")
            self.tokens.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
            return batch
        return counted

    def callback(self):
        from transformers import TrainerCallback

        meter = self

        class StepTimer(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                meter.ends.append(time.perf_counter())

        return StepTimer()

    def tokens_per_second(self) -> float:
        if len(self.ends) < 2:
            raise SystemExit("error: --steps must be at least 2 (the first step is the warm-up)")
        return sum(self.tokens[1:len(self.ends)]) / (self.ends[-1] - self.ends[0])


def timed(trainer_cls):
    """`trainer_cls` whose instances count tokens and time steps into `trainer_cls.meter` (set per run)."""
    class Timed(trainer_cls):
        meter: Meter

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.data_collator = self.meter.wrap(self.data_collator)
            self.add_callback(self.meter.callback())

    return Timed


def run_plain(fields: dict, model: Path, train: Path, workdir: Path) -> float:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    Trainer = timed(SFTTrainer)
    Trainer.meter = Meter()
    rows = [{"prompt": r["query"], "completion": r["completion"]} for r in read_jsonl(train)]
    trainer = Trainer(model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32),
                      args=SFTConfig(output_dir=str(workdir), use_cpu=not torch.cuda.is_available(), bf16=False,
                                     report_to="none", save_strategy="no", eos_token=sft.EOS, **fields),
                      processing_class=AutoTokenizer.from_pretrained(model), train_dataset=Dataset.from_list(rows))
    trainer.train()
    return Trainer.meter.tokens_per_second()


def run_stage(section: str, fields: dict, model: Path, train: Path, workdir: Path, saving) -> float:
    import trl

    Trainer = timed(trl.SFTTrainer)
    Trainer.meter = Meter()
    original, trl.SFTTrainer = trl.SFTTrainer, Trainer  # the stage imports it when it trains: its own code runs
    try:
        sft.train(section, fields, model, train, None, workdir / "out", workdir / "live", saving=saving)
    finally:
        trl.SFTTrainer = original
    return Trainer.meter.tokens_per_second()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--section", default="sft_countdown")
    parser.add_argument("--model", type=Path, default=Path("models/base"))
    parser.add_argument("--train", type=Path, default=Path("data/countdown/warmstart_train.jsonl"))
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--per-row", type=int, default=4,
                        help="examples that fit one packed row (max_length / example length): divides the batch")
    args = parser.parse_args()
    p = params.load()
    section = params.section(p, args.section, params.Sft, "an SFT")
    base = {**section.trainer, "max_steps": args.steps, "logging_steps": max(1, args.steps // 3)}
    batch = base["per_device_train_batch_size"]
    variants = {
        "plain TRL": lambda w: run_plain(base, args.model, args.train, w),
        "stage": lambda w: run_stage(args.section, base, args.model, args.train, w, p.checkpoints),
        "stage, padding-free": lambda w: run_stage(
            args.section, {**base, "padding_free": True, "max_length": None}, args.model, args.train, w,
            p.checkpoints),
        "stage, packed": lambda w: run_stage(
            args.section, {**base, "packing": True, "per_device_train_batch_size": max(1, batch // args.per_row)},
            args.model, args.train, w, p.checkpoints),
    }
    results: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(args.rounds):
        for name, run in variants.items():
            with tempfile.TemporaryDirectory() as tmp:
                results[name].append(run(Path(tmp)))
            print(f"round {round_ + 1}: {name}: {results[name][-1]:,.0f} tokens/s", flush=True)
    plain = statistics.median(results["plain TRL"])
    print(f"\n{args.section}, {args.steps} steps x {args.rounds} rounds, median tokens/s (ratio to plain TRL):")
    print("| variant | tokens/s | vs plain TRL | rounds |\n|---|---|---|---|")
    for name, values in results.items():
        median = statistics.median(values)
        print(f"| {name} | {median:,.0f} | {median / plain:.2f}x | {', '.join(f'{v:,.0f}' for v in values)} |")


if __name__ == "__main__":
    main()
