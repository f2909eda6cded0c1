"""From the GPU check's measurements to an estimate of each paper stage's wall time, and the printed tables.

A stage's estimate is its units times the measured seconds per unit: sequences (SFT), pairs (DPO) or
completions (RLOO) that it trains on, from the paper profile's epochs, batch sizes, `max_steps` and data
sizes, or the generation batches it runs. Rows and completions were measured at their length caps, so
each estimate is an upper bound for a trained model that stops early. Stages whose settings do not
scale from a measured method are listed in `NOT_ESTIMATED`, with why.
"""

from __future__ import annotations

import math
from typing import Any

# reference.md §1: the warmstart set has "~1,000" train rows; the verifier keeps fewer (an upper bound)
WARMSTART_ROWS = 1000

NOT_ESTIMATED = [
    "rl_instruct@*: 4-32 completions of 256-512 tokens a step; decoding time does not scale down from batch 64",
    "distill_generate@<teacher>: the teachers are 1.5B and 3B models, not the one measured",
    "sft_instruct_lp: early stopping and the penalty's sampling make its length unknown in advance",
    "reward_model@*, judges: other models (DistilBERT, DeBERTa)",
]
ASSUMPTIONS = [
    f"warmstart: ~{WARMSTART_ROWS:,} train rows (reference.md §1, 'verify on download'); the verifier keeps fewer",
    "every row and completion at its length cap (max_length, max_new_tokens, max_completion_length): upper bounds",
    "one GPU (launch.num_processes 1); model loading, saving and SFT's periodic evaluations not counted",
    "data sizes from the paper profile: SmolTalk rows used, UltraFeedback train_prefs, distillation prompts",
]
PLURAL = {"sequence": "sequences", "pair": "pairs", "completion": "completions", "batch": "batches"}


def estimates(paper: dict[str, Any], measured: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Each paper stage's wall time: its units x the measured seconds per unit of the method it runs."""
    rows = []

    def add(stage: str, method: str, units: float, basis: str) -> None:
        m = measured.get(method, {})
        if "seconds_per_unit" in m:  # a method that failed or did not run gives no estimates
            rows.append({"stage": stage, "from": method, "units": units, "unit": m["unit"],
                         "seconds": units * m["seconds_per_unit"], "basis": basis})

    def epochs(section: str) -> int:
        return paper[section]["trainer"]["num_train_epochs"]

    inst, synthetic, prompts = paper["instruct"], paper["synthetic"]["n"], paper["distill"]["prompts"]
    add("sft_countdown", "sft", WARMSTART_ROWS * epochs("sft_countdown"),
        f"~{WARMSTART_ROWS:,} warmstart rows (assumed) x {epochs('sft_countdown')} epochs")
    add("sft_synthetic", "sft", (WARMSTART_ROWS + synthetic) * epochs("sft_synthetic"),
        f"(~{WARMSTART_ROWS:,} + {synthetic:,} synthetic) rows x {epochs('sft_synthetic')} epochs")
    add("sft_distill@<teacher> (each)", "sft", prompts * epochs("sft_distill"),
        f"<= {prompts:,} verified answers x {epochs('sft_distill')} epochs")
    add("sft_instruct", "sft_instruct", inst["sft_train"] * epochs("sft_instruct"),
        f"{inst['sft_train']:,} SmolTalk rows x {epochs('sft_instruct')} epoch(s)")
    add("sft_instruct_lora", "sft", inst["sft_train"] * epochs("sft_instruct_lora"),
        f"{inst['sft_train']:,} rows x {epochs('sft_instruct_lora')} epochs at full fine-tuning's cost "
        "(LoRA skips the weights' gradients: less)")
    add("dpo", "dpo", inst["prefs_train"] * epochs("dpo"), f"{inst['prefs_train']:,} pairs x {epochs('dpo')} epoch(s)")
    add("dpo_lora", "dpo", inst["prefs_train"] * epochs("dpo_lora"),
        f"{inst['prefs_train']:,} pairs x {epochs('dpo_lora')} epochs at full DPO's cost (LoRA: less)")
    for stage in ("rloo_countdown", "grpo_countdown"):
        t, held_out = paper[stage]["trainer"], paper[stage]["held_out"]
        per_step = t["per_device_train_batch_size"] * t.get("gradient_accumulation_steps", 1)
        rounds = t["max_steps"] // t["eval_steps"] + bool(t.get("eval_on_start")) if held_out else 0
        add(stage, "rloo", t["max_steps"] * per_step + rounds * held_out * t["num_generations"],
            f"{t['max_steps']} steps x {per_step} completions + {rounds} evaluations of {held_out} prompts x "
            f"{t['num_generations']} (at a training completion's cost: an upper bound)"
            + ("; GRPO taken to cost what RLOO does" if stage.startswith("grpo") else ""))
    g, n_eval = paper["generate"], paper["countdown"]["n_eval"]
    full = g["greedy"]["max_new_tokens"]  # the measured batches' length
    add("generate_countdown@<model> (each)", "generate", math.ceil(n_eval / g["batch_size"]),
        f"{n_eval:,} puzzles, greedy")
    sweep = g["sweep"]
    add("sweep_countdown@<T> (each)", "generate",
        math.ceil(min(sweep["prompts"], n_eval) / g["batch_size"]) * sweep["n"] * sweep["max_new_tokens"] / full,
        f"{min(sweep['prompts'], n_eval):,} puzzles x {sweep['n']} samples, time taken as proportional to "
        "sequences (an upper bound: larger batches decode more per second)")
    add("generate_instruct@<model> (each)", "generate",
        math.ceil(inst["gen_test"] / g["batch_size"]) * g["instruct"]["max_new_tokens"] / full,
        f"{inst['gen_test']} prompts, {g['instruct']['max_new_tokens']} new tokens (time scaled by new tokens)")
    return rows


def hours(seconds: float) -> str:
    return f"{int(seconds // 3600)}:{int(seconds % 3600 // 60):02d}:{int(seconds % 60):02d}"


def report(result: dict[str, Any]) -> str:
    """The two tables, as markdown: measured per method, then the estimate per paper stage."""
    size = "DRY SIZE: the figures only show that the code runs" if result["dry"] else "full size"
    peak = f"{result['peak_tflops']:g}" if result["peak_tflops"] else "unknown (no MFU; pass --peak-tflops)"
    lines = [f"GPU check on {result['device']} ({size}); model {result['n_params'] / 1e6:.1f}M parameters; "
             f"peak bf16 TFLOP/s {peak}", "",
             "| method | paper section | tokens/s | step time (s) | tokens/step | peak memory (GiB) | MFU |",
             "|---|---|---|---|---|---|---|"]
    for method, m in result["methods"].items():
        if "error" in m:
            lines.append(f"| {method} | {m['section']} | FAILED: {m['error']} | | | | |")
            continue
        mfu = f"{m['mfu']:.1%}" if m.get("mfu") is not None else "?"
        lines.append(f"| {method} | {m['section']} | {m['tokens_per_s']:,.0f} | {m['step_time_s']:.3f} | "
                     f"{m['tokens_per_step']:,.0f} | {m['peak_memory_gib']:.1f} | {mfu} |")
    lines += ["", "ESTIMATE of each paper stage's wall time on this GPU (the stage's units x the measured time "
              "per unit):", "", "| stage | from | units | estimate (h:mm:ss) | basis |", "|---|---|---|---|---|"]
    lines += [f"| {e['stage']} | {e['from']} | {e['units']:,.0f} {PLURAL[e['unit']]} | {hours(e['seconds'])} | "
              f"{e['basis']} |" for e in result["estimates"]]
    lines += ["", "Not estimated: " + "; ".join(NOT_ESTIMATED) + ".", "Assumptions: " + "; ".join(ASSUMPTIONS) + "."]
    return "\n".join(lines)
