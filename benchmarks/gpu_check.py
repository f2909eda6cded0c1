"""GPU check: the paper profile's SFT, DPO, RLOO and generation at full size on one GPU, timed.

    python -m benchmarks.gpu_check [--dry] [--out figures.json] [--peak-tflops 989] [--methods sft dpo ...]

A model shaped as Qwen2.5-0.5B (its published config, written out below) with random weights, and a
tokenizer trained here by `posttrain.training.base_model.train_tokenizer` with the chat tokens the stages use (no
network); the embedding is padded to the real 151,936-token vocabulary, so every matmul has the real
model's shape. Synthetic rows in the stages' own input formats, each filling the paper's lengths, go
through the stages' own code with `conf/profile/paper.yaml`'s settings, read at run time; only the step
counts are capped:

- `sft`: `stages.sft.train` at `sft_countdown`'s settings, on warmstart rows (`query`, `completion`);
- `sft_instruct`: the same at `sft_instruct`'s (batch 32 x 8), on SmolTalk rows (`messages`);
- `dpo`: `stages.dpo.build_trainer` at `dpo`'s settings, on UltraFeedback rows;
- `rloo`: `posttrain.training.rl.train` at `rloo_countdown`'s settings, on Countdown tasks, with transformers
  sampling (`use_vllm: false`: vLLM's wheel cannot be carried to the GPU machine);
- `generate`: `posttrain.generation.generate_transformers` with `generate.greedy` and `generate.batch_size`.

Precision is the stages' own: bf16 autocast over fp32 master weights in training, the checkpoint's bf16
weights in generation. `sft.train` and `rl.train` take their one callback through `live` (DVCLive's);
the check swaps its step timer in there (`dpo.build_trainer` returns the trainer: the timer is added).

It prints, per method, tokens/s, step time (mean over the steps after warm-up), peak GPU memory and
MFU, then an ESTIMATE of each paper stage's wall time: the sequences the stage trains on (rows x epochs,
or max_steps x batch) times the measured seconds per sequence, or generation batches times the measured
batch time. Random weights never stop early, and sampling is forced to its cap (`min_new_tokens`: RLOO
through `generation_kwargs`, generation by wrapping `generation.generation_config`), so every row and
completion is at its length cap: the estimates are upper bounds for a trained model that
stops early. `--out` also writes the figures as JSON.

MFU = model FLOPs per token x tokens/s / the GPU's peak dense bf16 FLOP/s (989e12 on H100 SXM and H200,
found from the device's name; `--peak-tflops` for another GPU). Model FLOPs per token, N the parameter
count (the tied embedding once: it is also the lm_head's matmul): SFT 6N (forward and backward); DPO 8N
(policy 6N, frozen reference forward 2N); RLOO 10N per prompt and completion token (sampling 2N, policy
6N, reference 2N; 8N with beta 0); generation 2N per new token. Attention's own FLOPs and the
recomputation of gradient checkpointing (TRL's default) are not counted, as MFU conventionally does not.

Without CUDA (or with `--dry`) it runs at a dry size: two layers of width 64, rows of 192 tokens,
batches of 2-4, in well under a minute; tests/test_gpu_check.py keeps that path working. Full size:
about 5 minutes on one H100 (a guess from the step counts: not yet run on one).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import random
import resource
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any
from unittest import mock

import torch
import yaml
from transformers import TrainerCallback

from benchmarks.gpu_estimates import ASSUMPTIONS, NOT_ESTIMATED, estimates, report
from pipeline import params
from posttrain import generation
from posttrain.data_io import read_jsonl, write_jsonl
from posttrain.prompts import countdown_prompt
from posttrain.schemas import COUNTDOWN_TASK
from posttrain.training import rl
from posttrain.training.base_model import train_tokenizer
from posttrain.training.rewards import countdown_reward
from stages import dpo, sft

PAPER_PROFILE = Path(__file__).resolve().parent.parent / "conf" / "profile" / "paper.yaml"
METHODS = ("sft", "dpo", "rloo", "generate", "sft_instruct")  # the one most likely to run out of memory last
NO_CHECKPOINTS = params.Checkpoints(steps=10**9, save_total_limit=1)  # timed runs save nothing

SECTIONS = {"sft": "sft_countdown", "sft_instruct": "sft_instruct", "dpo": "dpo", "rloo": "rloo_countdown"}

# Qwen/Qwen2.5-0.5B's config.json as published on the hub (huggingface.co/Qwen/Qwen2.5-0.5B, config.json)
QWEN2_5_0_5B = {
    "vocab_size": 151936, "hidden_size": 896, "intermediate_size": 4864, "num_hidden_layers": 24,
    "num_attention_heads": 14, "num_key_value_heads": 2, "max_position_embeddings": 32768,
    "rope_theta": 1000000.0, "tie_word_embeddings": True, "rms_norm_eps": 1e-6, "hidden_act": "silu",
}
# Peak dense bf16 FLOP/s by device name (NVIDIA's data sheets; the sparse figures are twice these)
PEAK_BF16 = [("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12)]
# A cap on the BPE trained here (its small corpus gives ~600 tokens; the embedding is padded past it):
# the Countdown prompt comes to ~140 tokens, as with Qwen2.5's own tokenizer
TOKENIZER_VOCAB = 4096
GIB = 2**30
BUDGET_S = 480  # the limit for the full size on one H100 or H200


@dataclasses.dataclass(frozen=True)
class Size:
    """How big the check runs: the model, the capped step counts, and overrides of the paper's sizes."""

    model: dict[str, Any]  # Qwen2Config fields
    warmup: int  # steps run before timing starts (first kernel calls, the allocator), at least 1
    steps: int  # timed steps
    rl_warmup: int  # an RLOO step samples 64 completions of 1,024 tokens: tens of seconds, so fewer
    rl_steps: int
    gen_batches: int  # generation batches; the first, which also loads the model, is the warm-up
    trainer: dict[str, dict[str, Any]]  # method -> trainer fields replacing the paper's (dry: batch, lengths)
    generate: dict[str, Any]  # replaces generate.batch_size and generate.greedy fields


FULL = Size(model=QWEN2_5_0_5B, warmup=2, steps=5, rl_warmup=1, rl_steps=2, gen_batches=3,
            trainer={}, generate={})
DRY = Size(
    model={**QWEN2_5_0_5B, "vocab_size": 1024, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
           "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 1024},
    warmup=1, steps=2, rl_warmup=1, rl_steps=2, gen_batches=3,
    trainer={"sft": {"per_device_train_batch_size": 2, "max_length": 192},
             "sft_instruct": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "max_length": 192},
             "dpo": {"per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "max_length": 192},
             "rloo": {"num_generations": 2, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 2,
                      "max_completion_length": 16}},
    generate={"batch_size": 4, "max_new_tokens": 16},
)

WORDS = ("the answer follows from each step because a careful reader checks every claim against the question "
         "and explains why it holds so that the result stays clear accurate and complete for anyone who asks").split()


def from_yaml(cls: type, values: dict[str, Any], **overrides: Any):
    """`cls` (a params dataclass) from the yaml's values for its fields: a field added to `cls` later comes from
    the yaml when the yaml has it, else from its default, and a yaml key `cls` lacks is left out."""
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in {**values, **overrides}.items() if k in names})


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class StepTimer(TrainerCallback):
    """The wall time at the end of each optimizer step, and TRL's cumulative `num_tokens` logged at it."""

    def __init__(self):
        self.ends: list[float] = []
        self.tokens: dict[int, float] = {}

    def on_step_end(self, args, state, control, **kwargs):
        sync()
        self.ends.append(time.perf_counter())

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "num_tokens" in logs:
            self.tokens[state.global_step] = logs["num_tokens"]

    def measure(self, warmup: int, sequences_per_step: int) -> dict[str, float]:
        """Step time and tokens over the steps after the first `warmup` (TRL counts non-padding tokens)."""
        steps = len(self.ends) - warmup
        if steps < 1 or warmup not in self.tokens or len(self.ends) not in self.tokens:
            raise RuntimeError(f"{len(self.ends)} steps ran with tokens logged at steps {sorted(self.tokens)}; "
                               f"need {warmup} warm-up steps and at least one more, each logging `num_tokens`")
        seconds = self.ends[-1] - self.ends[warmup - 1]
        tokens = self.tokens[len(self.ends)] - self.tokens[warmup]
        return {"steps_timed": steps, "step_time_s": seconds / steps, "tokens_per_step": tokens / steps,
                "tokens_per_s": tokens / seconds, "sequences_per_step": sequences_per_step,
                "seconds_per_unit": seconds / steps / sequences_per_step}


class Check:
    """One run of the check: the paper's settings, the size, the model and the temporary folder."""

    def __init__(self, paper: dict[str, Any], size: Size, workdir: Path, seed: int = 0):
        self.paper, self.size, self.workdir = paper, size, workdir
        self.rng = random.Random(seed)
        self.model_dir = workdir / "base"
        self.template = paper["countdown"]["prompt_template"]
        self.system_prompt = paper["instruct"]["system_prompt"]
        self.tokenizer = None
        self.n_params = 0

    # --- the model and the data -------------------------------------------------------------------------
    def equation(self) -> str:
        a, b = self.rng.randint(1, 99), self.rng.randint(1, 99)
        return f"{a} + {b} = {a + b}, then {a + b} - {b} = {a}."

    def words(self) -> str:
        return " ".join(self.rng.choice(WORDS) for _ in range(8)) + "."

    def task(self) -> dict[str, Any]:
        nums = [self.rng.randint(1, 99) for _ in range(self.rng.choice((3, 4)))]  # the hub set's 3 or 4
        return {"target": self.rng.randint(10, 999), "nums": nums}

    def long_text(self, piece, tokens: int) -> str:
        """Text of at least `tokens` tokens, from `piece()` strings: every row reaches the length cap."""
        text = ""
        while len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) < tokens:
            text += " ".join(piece() for _ in range(32)) + " "
        return text

    def build_model(self) -> None:
        """Train the tokenizer, build the seeded model from the config, save both in bf16 as the hub's checkpoint."""
        from transformers import Qwen2Config, Qwen2ForCausalLM

        texts = [countdown_prompt(self.template, **self.task()) + self.equation() for _ in range(200)]
        texts += [f"<|im_start|>user\n{self.words()}<|im_end|>\n<|im_start|>assistant\n{self.words()}<|im_end|>\n"
                  for _ in range(200)]
        self.tokenizer = train_tokenizer(texts, TOKENIZER_VOCAB)
        config = Qwen2Config(**self.size.model, bos_token_id=None, eos_token_id=self.tokenizer.eos_token_id,
                             pad_token_id=self.tokenizer.pad_token_id)
        if config.vocab_size < len(self.tokenizer):
            raise ValueError(f"vocab_size {config.vocab_size} < the tokenizer's {len(self.tokenizer)} tokens")
        torch.manual_seed(0)
        with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
            model = Qwen2ForCausalLM(config)
        self.n_params = sum(p.numel() for p in model.parameters())
        model.to(torch.bfloat16).save_pretrained(self.model_dir)
        self.tokenizer.save_pretrained(self.model_dir)
        del model

    def fields(self, method: str, warmup: int, steps: int) -> dict[str, Any]:
        """The paper section's trainer fields, at this size, capped at `warmup + steps` steps with no evaluation."""
        return {**self.paper[SECTIONS[method]]["trainer"], **self.size.trainer.get(method, {}),
                "max_steps": warmup + steps, "logging_steps": 1, "disable_tqdm": True, "eval_strategy": "no"}

    # --- the methods --------------------------------------------------------------------------------------
    def run_sft(self, method: str) -> dict[str, Any]:
        fields = self.fields(method, self.size.warmup, self.size.steps)
        per_step = fields["per_device_train_batch_size"] * fields.get("gradient_accumulation_steps", 1)
        n = per_step * (self.size.warmup + self.size.steps)
        length = fields["max_length"]
        if method == "sft":  # Countdown warmstart rows
            rows = [{"query": countdown_prompt(self.template, **self.task()),
                     "completion": f" <think>{self.long_text(self.equation, length)}</think>\n<answer>1 + 2</answer>"}
                    for _ in range(n)]
        else:  # SmolTalk rows
            rows = [{"messages": [{"role": "user", "content": self.words()},
                                  {"role": "assistant", "content": self.long_text(self.words, length)}],
                     "source": "gpu_check"} for _ in range(n)]
        write_jsonl(self.workdir / f"{method}.jsonl", rows)
        timer, out = StepTimer(), self.workdir / f"{method}_model"
        with mock.patch.object(sft, "dvclive_callback", lambda _live: timer):
            sft.train(SECTIONS[method], fields, self.model_dir, self.workdir / f"{method}.jsonl", None, out,
                      self.workdir / "live", system_prompt=self.system_prompt, saving=NO_CHECKPOINTS)
        shutil.rmtree(out, ignore_errors=True)
        return {**timer.measure(self.size.warmup, per_step), "unit": "sequence", "flops_per_token": 6}

    def run_dpo(self) -> dict[str, Any]:
        fields = self.fields("dpo", self.size.warmup, self.size.steps)
        per_step = fields["per_device_train_batch_size"] * fields.get("gradient_accumulation_steps", 1)
        rows = []
        for i in range(per_step * (self.size.warmup + self.size.steps)):
            prompt = self.words()
            answers = [[{"role": "user", "content": prompt},
                        {"role": "assistant", "content": self.long_text(self.words, fields["max_length"])}]
                       for _ in range(2)]
            rows.append({"prompt": prompt, "prompt_id": f"{i:064x}", "chosen": answers[0], "rejected": answers[1],
                         "messages": answers[0], "score_chosen": 8.0, "score_rejected": 3.0})
        write_jsonl(self.workdir / "prefs.jsonl", rows)
        section = from_yaml(params.Dpo, self.paper["dpo"], lora=None, trainer=fields)
        timer = StepTimer()
        trainer = dpo.build_trainer("dpo", section, self.system_prompt, self.model_dir, self.workdir / "prefs.jsonl",
                                    None, self.workdir / "dpo_out", None, NO_CHECKPOINTS)
        trainer.add_callback(timer)
        trainer.train()
        del trainer
        return {**timer.measure(self.size.warmup, per_step), "unit": "pair", "flops_per_token": 8}

    def run_rloo(self) -> dict[str, Any]:
        fields = self.fields("rloo", self.size.rl_warmup, self.size.rl_steps)
        # every completion runs to the cap: the paper's worst case, and steady timings
        fields |= {"eval_on_start": False, "use_vllm": False,
                   "generation_kwargs": {"min_new_tokens": fields["max_completion_length"]}}
        per_step = fields["per_device_train_batch_size"] * fields.get("gradient_accumulation_steps", 1)
        n_prompts = per_step // fields["num_generations"] * (self.size.rl_warmup + self.size.rl_steps)
        write_jsonl(self.workdir / "tasks.jsonl", [self.task() for _ in range(n_prompts)])
        dataset = rl.countdown_dataset(read_jsonl(self.workdir / "tasks.jsonl", COUNTDOWN_TASK), self.template)
        timer, out = StepTimer(), self.workdir / "rloo_model"
        with mock.patch.object(rl, "dvclive_callback", lambda _live: timer):
            rl.train("rloo", SECTIONS["rloo"], fields, self.model_dir, dataset, [countdown_reward], out,
                     self.workdir / "live", held_out=0, saving=NO_CHECKPOINTS)
        shutil.rmtree(out, ignore_errors=True)
        flops = 10 if fields["beta"] > 0 else 8
        return {**timer.measure(self.size.rl_warmup, per_step), "unit": "completion", "flops_per_token": flops}

    def run_generate(self) -> dict[str, Any]:
        g = self.paper["generate"]
        batch = self.size.generate.get("batch_size", g["batch_size"])
        decoding = from_yaml(params.Decoding, {**g["greedy"], **self.size.generate})
        prompts = [countdown_prompt(self.template, **self.task()) for _ in range(batch * self.size.gen_batches)]
        done, tokens, per_batch = [], [], batch * decoding.n
        with mock.patch.object(generation, "generation_config", forced_length(generation.generation_config)):
            for _index, _sample, _text, _n_prompt, n_new, _finish in generation.generate_transformers(
                    self.model_dir, prompts, decoding, batch_size=batch, seed=0):
                if len(tokens) % per_batch == 0:  # a batch's rows come together, once it has finished
                    sync()
                    done.append(time.perf_counter())
                tokens.append(n_new)
        timed = sum(tokens[per_batch:])  # after the first batch, which also loaded the model
        seconds = done[-1] - done[0]
        return {"steps_timed": len(done) - 1, "step_time_s": seconds / (len(done) - 1),
                "tokens_per_step": timed / (len(done) - 1), "tokens_per_s": timed / seconds,
                "sequences_per_step": per_batch, "seconds_per_unit": seconds / (len(done) - 1),
                "unit": "batch", "flops_per_token": 2, "new_tokens_per_sequence": max(tokens)}

    def run(self, method: str) -> dict[str, Any]:
        if method in ("sft", "sft_instruct"):
            return self.run_sft(method)
        return {"dpo": self.run_dpo, "rloo": self.run_rloo, "generate": self.run_generate}[method]()


def forced_length(make_config):
    """`generation.generation_config` with `min_new_tokens` = `max_new_tokens` added to the configs it makes.

    The stage samples with its decoding's settings and nothing else, so a minimum length cannot come
    from the model's own generation config: the check wraps the function that builds the config.
    """
    def with_min_length(*args, **kwargs):
        config = make_config(*args, **kwargs)
        config.min_new_tokens = config.max_new_tokens
        return config

    return with_min_length


def peak_memory_gib() -> float:
    """Peak GPU memory allocated since the last reset; on a CPU, the process's peak resident memory so far."""
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / GIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def peak_flops(tflops: float | None) -> float | None:
    """The GPU's peak dense bf16 FLOP/s: `--peak-tflops`, else from its name; None when unknown."""
    if tflops:
        return tflops * 1e12
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((flops for key, flops in PEAK_BF16 if key in name), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry", action="store_true", help="the dry size (automatic without CUDA)")
    parser.add_argument("--out", type=Path, help="also write the figures as JSON here")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's peak dense bf16 TFLOP/s, for MFU")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    args = parser.parse_args()
    dry = args.dry or not torch.cuda.is_available()
    size = DRY if dry else FULL
    paper = yaml.safe_load(PAPER_PROFILE.read_text())
    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    peak = peak_flops(args.peak_tflops)
    start = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[gpu_check {time.perf_counter() - start:6.1f} s] {message}", file=sys.stderr, flush=True)

    progress(f"{device}, {'dry' if dry else 'full'} size; settings from {PAPER_PROFILE}")
    result: dict[str, Any] = {"device": device, "dry": dry, "peak_tflops": peak and peak / 1e12, "methods": {}}
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as workdir:
        check = Check(paper, size, Path(workdir))
        check.build_model()
        result["n_params"] = check.n_params
        progress(f"model: {check.n_params / 1e6:.1f}M parameters, tokenizer {len(check.tokenizer)} tokens, "
                 f"embedding padded to {size.model['vocab_size']}")
        for method in args.methods:
            progress(f"{method}: starting")
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            section = SECTIONS.get(method, "generate.greedy")
            try:
                m = {"section": section, **check.run(method), "peak_memory_gib": peak_memory_gib()}
                m["mfu"] = m["flops_per_token"] * check.n_params * m["tokens_per_s"] / peak if peak else None
                per_sequence = m["tokens_per_step"] / m["sequences_per_step"]  # DPO's sequences are pairs
                progress(f"{method}: {m['tokens_per_s']:,.0f} tokens/s, {m['step_time_s']:.3f} s/step, "
                         f"{m['peak_memory_gib']:.1f} GiB, {per_sequence:,.0f} tokens per "
                         f"{'pair' if m['unit'] == 'pair' else 'sequence'}")
            except Exception as err:  # one method's failure (e.g. out of memory) must not cost the others' figures
                traceback.print_exc()
                first_line = (str(err).splitlines() or [""])[0][:200]
                m = {"section": section, "error": f"{type(err).__name__}: {first_line}",
                     "peak_memory_gib": peak_memory_gib()}
                progress(f"{method}: FAILED")
            result["methods"][method] = m
    result["estimates"] = estimates(paper, result["methods"])
    result["assumptions"], result["not_estimated"] = ASSUMPTIONS, NOT_ESTIMATED
    result["wall_s"] = time.perf_counter() - start
    print(report(result))
    progress(f"done in {result['wall_s']:.0f} s" + ("" if dry or result["wall_s"] <= BUDGET_S else
                                                       f", OVER the {BUDGET_S} s the check is meant to take"))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    sys.exit(1 if any("error" in m for m in result["methods"].values()) else 0)


if __name__ == "__main__":
    main()
