"""Every row and metrics format the pipeline reads or passes between stages, defined once.

A schema maps a field to a check of its value. `data_io.read_jsonl(path, SCHEMA)` validates a file
against one (an error names the file, the row and the field) and `data_io.write_jsonl(path, rows,
SCHEMA)` checks rows before writing them, so the writer of a format and each of its readers import
the same definition here; `tests/test_schemas.py` keeps it so.

Two kinds of `prompt_id` exist, and the names say which: in the hub's UltraFeedback rows (and the
prompt files made from them) `prompt_id` is the hub's SHA-256 string; in every row the pipeline
writes about a prompt file (generations, scores, judged rows, outcomes) `prompt_id` is the row index
into that prompt file, an int.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def is_finite(v: Any) -> bool:
    return is_number(v) and math.isfinite(v)


def is_index(v: Any) -> bool:
    return is_int(v) and v >= 0


def is_str(v: Any) -> bool:
    return isinstance(v, str)


def is_bool(v: Any) -> bool:
    return isinstance(v, bool)


def is_messages(v: Any) -> bool:
    return isinstance(v, list) and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in v
    )


def is_interval(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(map(is_number, v))


def optional(check: Check) -> Check:
    return lambda v: v is None or check(v)


# ------------------------------------------------------------------ the hub's datasets (the columns read)
COUNTDOWN_TASK: dict[str, Check] = {  # Jiayi-Pan/Countdown-Tasks-3to4, and the generator's rows
    "target": is_int,
    "nums": lambda v: isinstance(v, list) and len(v) > 0 and all(is_int(n) and n >= 0 for n in v),
}
WARMSTART: dict[str, Check] = {"query": is_str, "completion": is_str}  # Asap7772/cog_behav_all_strategies
SMOLTALK: dict[str, Check] = {"messages": is_messages, "source": is_str}  # HuggingFaceTB/smol-smoltalk
ULTRAFEEDBACK: dict[str, Check] = {  # HuggingFaceH4/ultrafeedback_binarized
    "prompt": is_str,
    "prompt_id": is_str,  # the hub's SHA-256 of the prompt
    "chosen": is_messages,
    "rejected": is_messages,
    "messages": is_messages,
    "score_chosen": is_number,
    "score_rejected": is_number,
}
INSTRUCT_PROMPT: dict[str, Check] = {"prompt": ULTRAFEEDBACK["prompt"]}  # what generation and judging read
REFERENCE_ANSWER: dict[str, Check] = {"messages": SMOLTALK["messages"]}  # 002's text metrics: the held-out answers

# ------------------------------------------------------------------ rows the pipeline writes
GENERATION: dict[str, Check] = {  # stages.generate: one row per (prompt, sample), sorted by both
    "prompt_id": is_index,  # row index into the prompt file
    "sample": is_index,
    "text": is_str,
    "prompt_tokens": is_int,
    "completion_tokens": is_int,
    "finish": is_str,  # "stop" or "length"
    "decoding": is_str,  # the generate.<decoding> section
    "temperature": is_number,
    "model": is_str,  # the model folder's name
}
COUNTDOWN_SCORE: dict[str, Check] = {  # stages.score_countdown: the verifier's verdict on one generation row
    "prompt_id": is_int,
    "sample": is_int,
    "decoding": is_str,
    "correct": is_bool,
    "reward": is_number,  # TinyZero's reference score: 1.0 correct, 0.1 well-formed but wrong, 0.0 otherwise
    "reason": is_str,
    "completion_tokens": is_int,
    "temperature": optional(is_number),
}
JUDGED: dict[str, Check] = {  # stages.judges: one judge's reward for one generation row
    "prompt_id": is_int,
    "sample": is_int,
    "reward": is_finite,
    "judge": is_str,
    "judge_model": optional(is_str),
}
OUTCOME: dict[str, Check] = {  # per-prompt outcomes behind a metric, for paired comparisons in the report
    "prompt_id": is_int,
    "value": is_number,  # Countdown: 1.0 correct, 0.0 not; instructions: 1 win, 0.5 tie, 0 loss vs the reference
}

# ------------------------------------------------------------------ metrics JSON (flat; the keys every file has)
# A key ending in `_ci` holds [lo, hi]; every other listed key holds a number. Files may hold more keys.
COUNTDOWN_METRICS = ["n", "accuracy", "accuracy_ci", "score", "score_ci", "format_rate", "completion_tokens"]
POOL_METRICS = ["n", "samples_per_prompt", "temperature"]  # plus, for each k of score.best_of, these:


def pool_keys(k: int) -> list[str]:
    """The keys of best-of-k in a sample pool's metrics: pass@k (best-of-k accuracy) and best-of-k score."""
    return [f"pass_at_{k}", f"pass_at_{k}_ci", f"best_of_{k}_score", f"best_of_{k}_score_ci"]


WIN_RATE_METRICS = ["n", "samples_per_prompt", "win_rate", "win_rate_ci", "win_rate_ties_as_losses", "wins",
                    "ties", "losses", "sample_win_rate", "lc_win_rate", "lc_win_rate_ci", "lc_length_coef",
                    "mean_reward", "mean_reward_ci", "reference_mean_reward", "mean_length",
                    "reference_mean_length", "ci_level"]
TEXT_METRICS = ["n", "bleu_1", "bleu_2", "bleu_4", "perplexity"]
REWARD_MODEL_METRICS = ["n", "pairwise_accuracy"]


def check_metrics(data: Any, keys: list[str], where: str) -> str | None:
    """None when `data` is a metrics object holding `keys` with values of the right kind, else what is wrong."""
    if not isinstance(data, dict):
        return f"{where}: metrics must be a JSON object"
    for key in keys:
        value = data.get(key)
        if not (is_interval(value) if key.endswith("_ci") else is_number(value)):
            return f"{where}: key `{key}` is missing or not a number{' pair' * key.endswith('_ci')}"
    return None
