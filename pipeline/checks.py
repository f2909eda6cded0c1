"""Values of the right type that no run can use, refused before any work (`pipeline.params.parse` runs
`check_values` on every load, so the first stage stops, naming the parameter).

The type check of `pipeline.params` lets through values of the right type that no run can use: TRL and transformers
take a negative learning rate, batch size 0 or a negative epoch count and train on them with exit
status 0 (or fail deep inside a data loader), and the puzzle generator loops on settings that cannot make
puzzles.
"""

from __future__ import annotations

import dataclasses
import math
import string
import typing
from typing import Any

from pipeline.params import Countdown, Decoding, Dpo, Lora, Params, RewardModel, Rl, Sft, Sweep
from posttrain.errors import UserError

# The exhaustive solver's limit (posttrain.countdown.solver.MAX_NUMS) and the generation backends
# (posttrain.generation.BACKENDS), written out rather than imported: every stage reads this file, and
# importing those modules would make every stage depend on them (test_bad_input.py keeps them equal).
MAX_NUMS = 4
BACKENDS = ("auto", "transformers", "vllm")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# rule name -> test; the name is the message ("must be <name>")
POSITIVE, NON_NEGATIVE = "a number > 0", "a number >= 0"
AT_LEAST_1, AT_LEAST_0, AT_LEAST_2 = "an integer >= 1", "an integer >= 0", "an integer >= 2"
PROBABILITY, SHARE, DROPOUT = "a number in (0, 1]", "a number in [0, 1]", "a number in [0, 1)"
_RULES: dict[str, typing.Callable[[Any], bool]] = {
    POSITIVE: lambda v: _number(v) and v > 0,
    NON_NEGATIVE: lambda v: _number(v) and v >= 0,
    AT_LEAST_1: lambda v: _int(v) and v >= 1,
    AT_LEAST_0: lambda v: _int(v) and v >= 0,
    AT_LEAST_2: lambda v: _int(v) and v >= 2,
    PROBABILITY: lambda v: _number(v) and 0 < v <= 1,
    SHARE: lambda v: _number(v) and 0 <= v <= 1,
    DROPOUT: lambda v: _number(v) and 0 <= v < 1,
    "-1 (off) or an integer >= 1": lambda v: _int(v) and (v == -1 or v >= 1),
    "a number > 0 (a count, or a fraction of the steps)": lambda v: _number(v) and v > 0,
}

# The fields of a `trainer` section (TRL's SFTConfig, DPOConfig, RLOOConfig, GRPOConfig, RewardConfig,
# transformers' TrainingArguments) checked by name where present; TRL checks their types and the rest.
# `beta` here is the RL KL coefficient (0: no KL term, GRPO's default); DPO's beta is `dpo.beta`.
TRAINER_RULES = {
    "learning_rate": POSITIVE,
    "per_device_train_batch_size": AT_LEAST_1,
    "per_device_eval_batch_size": AT_LEAST_1,
    "gradient_accumulation_steps": AT_LEAST_1,
    "num_train_epochs": NON_NEGATIVE,
    "max_steps": "-1 (off) or an integer >= 1",
    "warmup_steps": AT_LEAST_0,
    "warmup_ratio": SHARE,
    "weight_decay": NON_NEGATIVE,
    "max_grad_norm": NON_NEGATIVE,
    "logging_steps": "a number > 0 (a count, or a fraction of the steps)",
    "eval_steps": "a number > 0 (a count, or a fraction of the steps)",
    "save_steps": "a number > 0 (a count, or a fraction of the steps)",
    "save_total_limit": AT_LEAST_1,
    "max_length": AT_LEAST_1,
    "max_prompt_length": AT_LEAST_1,
    "max_completion_length": AT_LEAST_1,
    "beta": NON_NEGATIVE,
    "temperature": POSITIVE,  # RL sampling: logits are divided by it, 0 is a division by zero
    "top_p": PROBABILITY,
    "num_generations": AT_LEAST_2,  # RLOO's and GRPO's baseline needs two samples of a prompt
}


def _need(value: Any, rule: str, where: str) -> None:
    if not _RULES[rule](value):
        raise UserError(f"params: `{where}` must be {rule}, got {value!r}")


def _check_trainer(fields: dict[str, Any], where: str) -> None:
    for name, rule in TRAINER_RULES.items():
        if fields.get(name) is not None:  # TRL takes null for some (max_length: no truncation)
            _need(fields[name], rule, f"{where}.{name}")
    if fields.get("num_train_epochs") == 0 and fields.get("max_steps", -1) == -1:
        raise UserError(f"params: `{where}.num_train_epochs` is 0 and no `max_steps` is set: nothing would be trained")


def check_template(template: str, where: str) -> None:
    """A Countdown prompt template names `{nums}` and `{target}` once each, plain, and no other field.

    Read with the standard library's own parser of `str.format` templates, which `countdown_prompt` fills.
    """
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as err:
        raise UserError(f"params: `{where}`: not a format template: {err} (write a literal brace as {{{{ or }}}})") \
            from None
    names = [name for name, _, _ in fields]
    for name, spec, conv in fields:
        if name not in ("nums", "target") or spec or conv:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise UserError(f"params: `{where}` has the field {shown}; only {{nums}} and {{target}} are filled in "
                            "(write a literal brace as {{ or }})")
    for name in ("nums", "target"):
        if names.count(name) != 1:
            raise UserError(f"params: `{where}` must name {{{name}}} once, found it {names.count(name)} times")


def _check_generator(cfg: Countdown, where: str) -> None:
    g = cfg.generator
    if len(g.num_count) != 2 or not 2 <= g.num_count[0] <= g.num_count[1] <= MAX_NUMS:
        raise UserError(f"params: `{where}.num_count` must be [min, max] with 2 <= min <= max <= {MAX_NUMS} "
                        f"(the exhaustive solver's limit), got {g.num_count}")
    if not 1 <= g.low <= g.high:
        raise UserError(f"params: `{where}.low` and `high` must have 1 <= low <= high, got {g.low} and {g.high}")
    if g.target_low > g.target_high:
        raise UserError(f"params: `{where}.target_low` must be <= target_high, got {g.target_low} > {g.target_high}")
    # No equation over k numbers <= high exceeds high**k (or k * high when high is 1).
    most = max(max(g.high ** k, k * g.high) for k in range(g.num_count[0], g.num_count[1] + 1))
    if g.target_low > most:
        raise UserError(f"params: `{where}.target_low`={g.target_low} is unreachable: no equation of "
                        f"{g.num_count[1]} numbers up to {g.high} exceeds {most}")
    # Distinct puzzles are at most (multisets of numbers) x (targets): when fewer than the rows asked
    # for, say so now instead of searching for puzzles that do not exist.
    if cfg.tasks_source == "generator":
        size = g.high - g.low + 1
        bound = sum(math.comb(size + k - 1, k) for k in range(g.num_count[0], g.num_count[1] + 1)) \
            * (g.target_high - g.target_low + 1)
        needed = max(cfg.train_rows[1], cfg.eval_rows[1])
        if bound < needed:
            raise UserError(f"params: `{where}` can make at most {bound} distinct puzzles, and countdown.train_rows/"
                            f"eval_rows ask for {needed}; widen the number or target ranges")


def _check_countdown(cfg: Countdown) -> None:
    check_template(cfg.prompt_template, "countdown.prompt_template")
    for name in ("train_rows", "eval_rows"):
        rows = getattr(cfg, name)
        if len(rows) != 2 or not 0 <= rows[0] < rows[1]:
            raise UserError(f"params: `countdown.{name}` must be [start, stop) with 0 <= start < stop, got {rows}")
    _need(cfg.n_eval, AT_LEAST_1, "countdown.n_eval")
    if cfg.n_eval > cfg.eval_rows[1] - cfg.eval_rows[0]:
        raise UserError(f"params: `countdown.n_eval`={cfg.n_eval} is more than the "
                        f"{cfg.eval_rows[1] - cfg.eval_rows[0]} rows of countdown.eval_rows")
    for name in ("warmstart_train", "warmstart_test"):
        if getattr(cfg, name) is not None:
            _need(getattr(cfg, name), AT_LEAST_1, f"countdown.{name}")
    _check_generator(cfg, "countdown.generator")


def _check_decoding(d: Decoding | Sweep, where: str) -> None:
    _need(d.n, AT_LEAST_1, f"{where}.n")
    _need(d.top_p, PROBABILITY, f"{where}.top_p")
    _need(d.max_new_tokens, AT_LEAST_1, f"{where}.max_new_tokens")
    _need(d.repetition_penalty, POSITIVE, f"{where}.repetition_penalty")
    if isinstance(d, Sweep):
        _need(d.prompts, AT_LEAST_1, f"{where}.prompts")
        if not d.temperatures:
            raise UserError(f"params: `{where}.temperatures` is empty")
        for i, t in enumerate(d.temperatures):
            _need(t, POSITIVE, f"{where}.temperatures[{i}]")
        return
    _need(d.temperature, NON_NEGATIVE, f"{where}.temperature")
    if d.temperature == 0 and d.n != 1:
        raise UserError(f"params: `{where}.n` must be 1 with temperature 0 (greedy gives one sample), got {d.n}")


def _check_lora(lora: Lora | None, where: str) -> None:
    if lora is None:
        return
    _need(lora.r, AT_LEAST_1, f"{where}.r")
    _need(lora.alpha, POSITIVE, f"{where}.alpha")
    _need(lora.dropout, DROPOUT, f"{where}.dropout")
    if not lora.target_modules:
        raise UserError(f"params: `{where}.target_modules` is empty")


def check_values(p: Params) -> None:
    """Refuse values of the right type that make no sense, naming the parameter (the first one found)."""
    _check_countdown(p.countdown)
    i = p.instruct
    for name in ("sft_train", "sft_test", "prefs_train", "prefs_test", "gen_train", "gen_test"):
        _need(getattr(i, name), AT_LEAST_1, f"instruct.{name}")
    _need(i.sft_noise, SHARE, "instruct.sft_noise")
    _need(i.sft_verbose, SHARE, "instruct.sft_verbose")
    _need(p.base_model.vocab_size, AT_LEAST_1, "base_model.vocab_size")
    pre = p.base_model.pretrain
    _need(pre.max_steps, AT_LEAST_0, "base_model.pretrain.max_steps")
    _need(pre.learning_rate, POSITIVE, "base_model.pretrain.learning_rate")
    _need(pre.batch_size, AT_LEAST_1, "base_model.pretrain.batch_size")
    _need(pre.max_length, AT_LEAST_1, "base_model.pretrain.max_length")
    _need(p.launch.num_processes, AT_LEAST_1, "launch.num_processes")
    for field in dataclasses.fields(Params):
        value, where = getattr(p, field.name), field.name
        if isinstance(value, Sft):
            _check_trainer(value.trainer, f"{where}.trainer")
            _check_lora(value.lora, f"{where}.lora")
            if value.early_stopping_patience is not None:
                _need(value.early_stopping_patience, AT_LEAST_1, f"{where}.early_stopping_patience")
            if (lp := value.length_penalty) is not None:
                _need(lp.weight, NON_NEGATIVE, f"{where}.length_penalty.weight")
                _need(lp.every, AT_LEAST_1, f"{where}.length_penalty.every")
                _need(lp.samples, AT_LEAST_1, f"{where}.length_penalty.samples")
                _need(lp.temperature, POSITIVE, f"{where}.length_penalty.temperature")
                _need(lp.max_new_tokens, AT_LEAST_1, f"{where}.length_penalty.max_new_tokens")
        elif isinstance(value, Dpo):
            _need(value.beta, POSITIVE, f"{where}.beta")
            _check_trainer(value.trainer, f"{where}.trainer")
            _check_lora(value.lora, f"{where}.lora")
        elif isinstance(value, Rl):
            _need(value.held_out, AT_LEAST_0, f"{where}.held_out")
            _check_trainer(value.trainer, f"{where}.trainer")
        elif isinstance(value, RewardModel):
            _need(value.max_length, AT_LEAST_1, f"{where}.max_length")
            _check_trainer(value.trainer, f"{where}.trainer")
    _need(p.synthetic.n, AT_LEAST_0, "synthetic.n")
    _need(p.distill.prompts, AT_LEAST_1, "distill.prompts")
    g = p.generate
    if g.backend not in BACKENDS:
        raise UserError(f"params: `generate.backend` must be one of {', '.join(BACKENDS)}, got {g.backend!r}")
    _need(g.batch_size, AT_LEAST_1, "generate.batch_size")
    for name in ("greedy", "teacher", "instruct", "sweep"):
        _check_decoding(getattr(g, name), f"generate.{name}")
    if not p.score.best_of:
        raise UserError("params: `score.best_of` is empty")
    for index, k in enumerate(p.score.best_of):
        _need(k, AT_LEAST_1, f"score.best_of[{index}]")
        if k > g.sweep.n:
            raise UserError(f"params: `score.best_of[{index}]`={k} is more than the {g.sweep.n} samples per prompt "
                            "of generate.sweep.n")
    _need(p.evaluation.text_rows, AT_LEAST_1, "evaluation.text_rows")

