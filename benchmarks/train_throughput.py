"""Training throughput: each training stage against its plain TRL trainer, side by side in one process.

    python -m benchmarks.train_throughput [--method sft] [--steps 30] [--rounds 2]
    python -m benchmarks.train_throughput --method dpo [--section dpo] [--model models/sft_instruct] \
        [--train data/instruct/prefs_train.jsonl]
    python -m benchmarks.train_throughput --method rloo [--section rloo_countdown] \
        [--model models/sft_countdown] [--train data/countdown/train.jsonl]

Every variant trains `--steps` optimizer steps from the same model on the same rows with the section's
trainer settings (learning rate, schedule, batch size, seed) in this one process, in rounds (A B C, A B
C, ...) so that a busy machine slows each alike. Throughput is counted from the end of the first step
(warm-up) to the end of the last: training tokens per second for SFT (prompt and completion, padding
not counted), seconds per step for DPO and RL (both variants see the same batches); the table gives
each variant's median over rounds and its ratio to plain TRL.

- `plain TRL`: the trainer with the section's fields and nothing else, as a TRL user would write it
  (`SFTTrainer`, `DPOTrainer`, `RLOOTrainer`/`GRPOTrainer`; `use_cpu` and `bf16: false` on a CPU, no
  logging, no saving). The data is what the stage trains on (its prompt format, `<|im_end|>` as eos,
  left-padded RL prompts): those decide what is computed, not how fast.
- `stage`: the stage's own training function as the DVC stage runs it: DVCLive curves, checkpoint
  saving and fingerprints, the data conversion. RL runs without its held-out evaluation, which plain
  TRL does not have (`held_out: 0`).
- SFT only, `stage, bf16 autocast`: the stage with `bf16: true` (on a CPU, transformers runs the forward in
  `torch.autocast("cpu", bfloat16)`, weights and optimizer in fp32): what a CPU with bf16 instructions gains.
- SFT only, `stage, padding-free`: the stage with `padding_free: true` (and `max_length: null`, which
  TRL asks for without packing): each batch is one row, its sequences kept apart by their position ids
  (transformers builds the block-diagonal mask from them for sdpa), so no padding is computed.
- SFT only, `stage, packed`: the stage with `packing: true` (TRL's best-fit-decreasing packing into rows
  of `max_length`, padding-free) and the batch size divided by the examples that fit a row, so a step
  still sees about as many examples.

Set OMP_NUM_THREADS the same for every comparison you make (a shared machine's spinning threads make
timings meaningless); the variants here share the process, so they share the setting.
"""


from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

from pipeline import params
from posttrain.data_io import read_jsonl
from posttrain.schemas import COUNTDOWN_TASK
from stages import dpo, sft

DEFAULTS = {  # method: (section, model, training rows)
    "sft": ("sft_countdown", "models/base", "data/countdown/warmstart_train.jsonl"),
    "dpo": ("dpo", "models/sft_instruct", "data/instruct/prefs_train.jsonl"),
    "rloo": ("rloo_countdown", "models/sft_countdown", "data/countdown/train.jsonl"),
    "grpo": ("grpo_countdown", "models/sft_countdown", "data/countdown/train.jsonl"),
}
TRAINER = {"sft": "SFTTrainer", "dpo": "DPOTrainer", "rloo": "RLOOTrainer", "grpo": "GRPOTrainer"}
PLAIN = {"use_cpu": True, "bf16": False, "report_to": "none", "save_strategy": "no"}


class Meter:
    """Times each optimizer step and, where it wraps the collator, counts the tokens each batch carries."""

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

    def rate(self, tokens: bool) -> float:
        """Tokens per second (`tokens`) or seconds per step, after the first step."""
        if len(self.ends) < 2:
            raise SystemExit("error: --steps must be at least 2 (the first step is the warm-up)")
        elapsed = self.ends[-1] - self.ends[0]
        return sum(self.tokens[1:len(self.ends)]) / elapsed if tokens else elapsed / (len(self.ends) - 1)


def timed(trainer_cls, count_tokens: bool):
    """`trainer_cls` whose instances time steps (and count tokens) into `trainer_cls.meter` (set per run)."""
    class Timed(trainer_cls):
        meter: Meter

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            if count_tokens:
                self.data_collator = self.meter.wrap(self.data_collator)
            self.add_callback(self.meter.callback())

    return Timed


def measured(method: str, build) -> float:
    """Run `build(trainer_cls)` with a timed copy of the method's TRL trainer: its rate."""
    import trl

    name = TRAINER[method]
    Trainer = timed(getattr(trl, name), count_tokens=method == "sft")
    Trainer.meter = Meter()
    original = getattr(trl, name)
    setattr(trl, name, Trainer)  # the stages import their trainer when they train: their own code runs
    try:
        build(Trainer)
    finally:
        setattr(trl, name, original)
    return Trainer.meter.rate(tokens=method == "sft")


def plain_sft(Trainer, fields: dict, model: Path, rows: Path, workdir: Path) -> None:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig

    examples = [{"prompt": r["query"], "completion": r["completion"]} for r in read_jsonl(rows)]
    Trainer(model=AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32),
            args=SFTConfig(output_dir=str(workdir), eos_token=sft.EOS, **PLAIN, **fields),
            processing_class=AutoTokenizer.from_pretrained(model), train_dataset=Dataset.from_list(examples)).train()


def plain_dpo(Trainer, section: params.Dpo, system_prompt: str, model: Path, rows: Path, workdir: Path) -> None:
    from transformers import AutoTokenizer
    from trl import DPOConfig

    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.eos_token = dpo.EOS
    losses = [section.loss_type] if isinstance(section.loss_type, str) else list(section.loss_type)
    Trainer(model=str(model), args=DPOConfig(output_dir=str(workdir), beta=section.beta,
                                             loss_type=losses, **PLAIN, **section.trainer),
            processing_class=tokenizer, train_dataset=dpo.load_preferences(rows, system_prompt)).train()


def plain_rl(Trainer, method: str, fields: dict, template: str, model: Path, rows: Path, workdir: Path) -> None:
    from transformers import AutoTokenizer

    from posttrain.training import rl
    from posttrain.training.rewards import countdown_reward

    config_cls, _ = rl.trainer_classes(method)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.eos_token, tokenizer.padding_side = rl.EOS, "left"
    Trainer(model=str(model), reward_funcs=[countdown_reward],
            args=config_cls(output_dir=str(workdir), **PLAIN, **fields), processing_class=tokenizer,
            train_dataset=rl.countdown_dataset(read_jsonl(rows, COUNTDOWN_TASK), template)).train()


def variants(method: str, p: params.Params, section_name: str, steps: int, model: Path, rows: Path,
             per_row: int) -> dict:
    """{name: run(workdir) -> rate} for the method."""
    if method == "sft":
        section = params.section(p, section_name, params.Sft, "an SFT")
        base = {**section.trainer, "max_steps": steps, "logging_steps": max(1, steps // 3)}
        batch = base["per_device_train_batch_size"]

        def stage(fields):
            return lambda w: measured(method, lambda _: sft.train(section_name, fields, model, rows, None, w / "out",
                                                                  w / "live", saving=p.checkpoints))
        return {
            "plain TRL": lambda w: measured(method, lambda T: plain_sft(T, base, model, rows, w)),
            "stage": stage(base),
            "stage, bf16 autocast": stage({**base, "bf16": True}),
            "stage, padding-free": stage({**base, "padding_free": True, "max_length": None}),
            "stage, packed": stage({**base, "packing": True, "per_device_train_batch_size": max(1, batch // per_row)}),
        }
    if method == "dpo":
        section = params.section(p, section_name, params.Dpo, "a DPO")
        run = {**section.trainer, "max_steps": steps, "logging_steps": max(1, steps // 3)}
        section = dataclasses.replace(section, trainer=run)
        prompt = p.instruct.system_prompt
        return {
            "plain TRL": lambda w: measured(method, lambda T: plain_dpo(T, section, prompt, model, rows, w)),
            "stage": lambda w: measured(method, lambda _: dpo.train(section_name, section, prompt, model, rows, None,
                                                                    w / "out", w / "live", p.checkpoints)),
        }
    from posttrain.training import rl
    from posttrain.training.rewards import countdown_reward

    section = params.section(p, section_name, params.Rl, "an RL")
    evaluation = ("eval_strategy", "eval_steps", "eval_on_start", "per_device_eval_batch_size")
    run = {**{k: v for k, v in section.trainer.items() if k not in evaluation},
           "max_steps": steps, "logging_steps": max(1, steps // 3)}
    template = p.countdown.prompt_template

    def stage(w):
        dataset = rl.countdown_dataset(read_jsonl(rows, COUNTDOWN_TASK), template)
        rl.train(method, section_name, run, model, dataset, [countdown_reward], w / "out", w / "live",
                 saving=p.checkpoints)
    return {
        "plain TRL": lambda w: measured(method, lambda T: plain_rl(T, method, run, template, model, rows, w)),
        "stage": lambda w: measured(method, lambda _: stage(w)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", choices=sorted(DEFAULTS), default="sft")
    parser.add_argument("--section", help="the params.yaml section (default: the method's Countdown or DPO one)")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--train", type=Path)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--per-row", type=int, default=4,
                        help="SFT: examples that fit one packed row (max_length / example length): divides the batch")
    args = parser.parse_args()
    section, model, rows = DEFAULTS[args.method]
    section, model, rows = args.section or section, args.model or Path(model), args.train or Path(rows)
    runs = variants(args.method, params.load(), section, args.steps, model, rows, args.per_row)
    unit = "tokens/s" if args.method == "sft" else "s/step"
    results: dict[str, list[float]] = {name: [] for name in runs}
    for round_ in range(args.rounds):
        for name, run in runs.items():
            with tempfile.TemporaryDirectory() as tmp:
                results[name].append(run(Path(tmp)))
            print(f"round {round_ + 1}: {name}: {results[name][-1]:,.3g} {unit}", flush=True)
    plain = statistics.median(results["plain TRL"])
    print(f"\n{section}, {args.steps} steps x {args.rounds} rounds, median {unit} (speed against plain TRL):")
    print(f"| variant | {unit} | speed vs plain TRL | rounds |\n|---|---|---|---|")
    for name, values in results.items():
        median = statistics.median(values)
        speed = median / plain if args.method == "sft" else plain / median
        print(f"| {name} | {median:,.3g} | {speed:.2f}x | {', '.join(f'{v:,.3g}' for v in values)} |")


if __name__ == "__main__":
    main()
