"""The schema of `params.yaml`, and the loader every stage reads it through.

`params.yaml` is the single place values live; the dataclasses below only say which keys exist and
what type each has, so a misspelled or unknown key, a missing key or a wrong type stops a stage with
an error naming the parameter (`dvc exp run -S` already refuses unknown keys through Hydra's struct
mode; this catches hand edits). Sections that are handed to a library config (TRL's `SFTConfig`,
`transformers`' `Qwen2Config`) are plain dicts here: the library's own dataclass validates them.

The file is composed by Hydra from `conf/` (`conf/config.yaml` plus one `conf/profile/*.yaml`);
`dvc exp run -S profile=paper` swaps the profile. A test keeps the committed `params.yaml` equal to
the composition of the default profile.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from stages.errors import UserError

PARAMS_FILE = Path("params.yaml")


@dataclasses.dataclass(frozen=True)
class CountdownGenerator:
    """Seeded generator of solvable puzzles (the embedded stand-in for the hub sets)."""

    num_count: list[int]  # [min, max] count of numbers per puzzle
    low: int  # numbers are drawn uniformly from [low, high]
    high: int
    target_low: int  # targets are drawn among the reachable integers in [target_low, target_high]
    target_high: int
    think: bool  # warmstart completions carry the solver's steps in <think>…</think>


@dataclasses.dataclass(frozen=True)
class Countdown:
    """Countdown data: the task source, the warmstart source, the prompt and the splits."""

    prompt_template: str  # one template for training and evaluation; {nums} renders as a Python list
    tasks_source: str  # "generator", a hub dataset id, or a local .jsonl/.parquet file or folder
    tasks_split: str  # split of the task source to read
    train_rows: list[int]  # [start, stop) rows of the split used for training prompts
    eval_rows: list[int]  # [start, stop) rows of the split held out for evaluation
    n_eval: int  # seeded sample of the held-out rows that every model is evaluated on
    warmstart_source: str  # "generator", a hub dataset id, or a local folder with train/test files
    warmstart_train: int | None  # rows kept (generator: rows made); null keeps all
    warmstart_test: int | None
    generator: CountdownGenerator


@dataclasses.dataclass(frozen=True)
class Instruct:
    """Instruction data in the SmolTalk and UltraFeedback schemas."""

    smoltalk_source: str  # "generator", a hub dataset id, or a local folder
    ultrafeedback_source: str
    system_prompt: str  # shared by SFT, DPO, RL and evaluation (the sources' DPO bug, reference §6)
    sft_train: int  # rows kept (generator: rows made)
    sft_test: int
    prefs_train: int
    prefs_test: int
    gen_train: int
    gen_test: int
    sft_noise: float  # generator only: share of verbose or partly wrong SFT answers, as real chat data has


@dataclasses.dataclass(frozen=True)
class Pretrain:
    """Optional language-modelling pass on the prepared text before any post-training."""

    max_steps: int  # 0 skips it
    learning_rate: float
    batch_size: int
    max_length: int


@dataclasses.dataclass(frozen=True)
class BaseModel:
    """Where the base model comes from: built here from a config, or a hub id / local folder."""

    source: str  # "build", a hub model id, or a local folder
    vocab_size: int  # build only: BPE vocabulary trained on the prepared text
    config: dict[str, Any]  # build only: Qwen2Config fields
    pretrain: Pretrain


@dataclasses.dataclass(frozen=True)
class Sft:
    """A supervised fine-tuning run: TRL `SFTConfig` fields, passed through as they are."""

    trainer: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class RewardModel:
    """A reward model trained on preference pairs (stages/reward_model.py); `--kind` picks the loss."""

    encoder: str  # "build", a hub model id, or a local folder (loaded with a fresh one-output head)
    config: dict[str, Any]  # build only: Qwen2Config fields of the encoder
    trainer: dict[str, Any]  # TrainingArguments fields (pointwise) or TRL RewardConfig fields (bradley_terry)
    max_length: int  # tokens of prompt + response the reward model reads; the rest is truncated


@dataclasses.dataclass(frozen=True)
class Decoding:
    """One way of sampling completions."""

    n: int  # samples per prompt
    temperature: float  # 0 means greedy
    top_p: float
    max_new_tokens: int


@dataclasses.dataclass(frozen=True)
class Generate:
    backend: str  # "auto", "transformers" or "vllm"
    batch_size: int  # prompts per batch (transformers backend)
    greedy: Decoding
    sample: Decoding


@dataclasses.dataclass(frozen=True)
class Score:
    best_of: list[int]  # N values for best-of-N with the verifier and pass@k


@dataclasses.dataclass(frozen=True)
class Params:
    seed: int
    countdown: Countdown
    instruct: Instruct
    base_model: BaseModel
    sft_countdown: Sft
    reward_pointwise: RewardModel
    reward_bt: RewardModel
    generate: Generate
    score: Score


def _check_type(value: Any, kind: Any, where: str) -> Any:
    """Return `value` as `kind` (a dataclass, a plain type or a simple generic), or raise naming `where`."""
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, where)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        kind = next(option for option in options if option is not type(None))
        origin = typing.get_origin(kind)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"params: `{where}` must be a list, got {value!r}")
        (item,) = typing.get_args(kind)
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"params: `{where}` must be a mapping, got {value!r}")
        return dict(value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if kind is Any or (isinstance(value, kind) and not (kind is int and isinstance(value, bool))):
        return value
    raise UserError(f"params: `{where}` must be {kind.__name__}, got {value!r}")


def _build(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise UserError(f"params: `{where or 'params.yaml'}` must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    prefix = f"{where}." if where else ""
    unknown = sorted(set(data) - set(names))
    if unknown:
        raise UserError(f"params: unknown parameter `{prefix}{unknown[0]}` (known here: {', '.join(names)})")
    missing = [name for name in names if name not in data]
    if missing:
        raise UserError(f"params: missing parameter `{prefix}{missing[0]}`")
    return cls(**{name: _check_type(data[name], hints[name], prefix + name) for name in names})


def parse(data: dict[str, Any]) -> Params:
    """Validate a params mapping (as read from YAML) into `Params`."""
    return _build(Params, data, "")


def load(path: Path = PARAMS_FILE) -> Params:
    """Read and validate `params.yaml`."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run stages from the repository root") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {err}") from None
    return parse(data)
