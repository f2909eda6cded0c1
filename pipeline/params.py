"""The schema of `params.yaml`, and the loader every stage reads it through.

`params.yaml` is the single place values live; the dataclasses below only say which keys exist and
what type each has, so a misspelled or unknown key, a missing key or a wrong type stops a stage with
an error naming the parameter (`dvc exp run -S` already refuses a key params.yaml does not hold; this
catches hand edits). Sections that are handed to a library config (TRL's `SFTConfig`,
`transformers`' `Qwen2Config`) are plain dicts here: the library's own dataclass validates them.

The file is composed by Hydra from `conf/` (`conf/config.yaml` plus one `conf/profile/*.yaml`);
`python -m pipeline.compose_params profile=NAME` swaps the profile (DVC's Hydra integration is off:
`dvc exp run -S` edits this file in place, keeping the profile and edits the user chose). A test keeps the committed `params.yaml` equal to
the composition of the default profile.

Why a hand-written checker and not Hydra's structured configs (`OmegaConf.structured(Params)`):
OmegaConf 2.3, the version Hydra 1.3 takes, refuses unions of containers, and `dpo.loss_type` is
`str | list[str]` as TRL's `DPOConfig` takes it; it also merges into frozen dataclasses only by
unfreezing every section. The ~50 lines below check the same things (unknown, missing and mistyped
keys, naming the parameter) on the frozen dataclasses the stages read.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from posttrain.errors import UserError

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
    tasks_revision: str | None  # hub commit or tag of tasks_source; null: the default branch (or not the hub)
    tasks_split: str  # split of the task source to read
    train_rows: list[int]  # [start, stop) rows of the split used for training prompts
    eval_rows: list[int]  # [start, stop) rows of the split held out for evaluation
    n_eval: int  # seeded sample of the held-out rows that every model is evaluated on
    warmstart_source: str  # "generator", a hub dataset id, or a local folder with train/test files
    warmstart_revision: str | None
    warmstart_train: int | None  # rows kept (generator: rows made); null keeps all
    warmstart_test: int | None
    generator: CountdownGenerator


@dataclasses.dataclass(frozen=True)
class Instruct:
    """Instruction data in the SmolTalk and UltraFeedback schemas."""

    smoltalk_source: str  # "generator", a hub dataset id, or a local folder
    smoltalk_revision: str | None  # hub commit or tag; null: the default branch (or not the hub)
    ultrafeedback_source: str
    ultrafeedback_revision: str | None
    system_prompt: str  # shared by SFT, DPO, RL and evaluation (the sources' DPO bug, reference §6)
    sft_train: int  # rows kept (generator: rows made)
    sft_test: int
    prefs_train: int
    prefs_test: int
    gen_train: int
    gen_test: int
    sft_noise: float  # generator only: share of verbose or partly wrong SFT answers, as real chat data has
    sft_verbose: float  # generator only: the verbose share of those flawed answers (the rest partly wrong)


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
    revision: str | None  # hub commit or tag of `source`; null: the default branch (or not the hub)
    vocab_size: int  # build only: BPE vocabulary trained on the prepared text
    config: dict[str, Any]  # build only: Qwen2Config fields
    pretrain: Pretrain


@dataclasses.dataclass(frozen=True)
class HubModel:
    """A model the pull_model stage copies to models/<name>: a hub repo at a revision, or a local folder."""

    id: str  # a hub model id (`owner/name`), or a local folder in the hub's layout
    revision: str | None  # hub commit or tag (a full commit sha pins it); null: the default branch (or not the hub)


@dataclasses.dataclass(frozen=True)
class Launch:
    """How training stages start: `accelerate launch` with these settings (pipeline/launch.py)."""

    num_processes: int  # one per GPU; on a CPU, processes that train data-parallel over gloo
    config_file: str | None  # an accelerate config file (DDP, FSDP or DeepSpeed); null: accelerate's defaults


@dataclasses.dataclass(frozen=True)
class Checkpoints:
    """How often training stages save a checkpoint that a rerun resumes from (posttrain/training/checkpoints.py).

    Not a DVC params dependency of any stage: checkpoints do not change what a stage writes, so changing
    these reruns nothing. A section's own `trainer.save_steps` / `save_total_limit` takes precedence."""

    steps: int  # optimizer steps between two checkpoints: a kill loses at most this much work
    save_total_limit: int  # checkpoints kept on the way (the newest; with early stopping, the best too)


@dataclasses.dataclass(frozen=True)
class Lora:
    """PEFT LoRA adapters; the trained adapter is merged onto the base its own config records."""

    r: int
    alpha: int
    dropout: float
    target_modules: list[str]


@dataclasses.dataclass(frozen=True)
class LengthPenalty:
    """002's penalty lambda * E[max(0, len(sample) - len(reference))^2]; posttrain/training/length_penalty.py: how it trains."""

    weight: float  # lambda; 0 turns the term off
    every: int  # optimizer steps between two penalty terms (002: 100)
    samples: int  # prompts of the current batch sampled for one penalty term
    temperature: float
    max_new_tokens: int


@dataclasses.dataclass(frozen=True)
class Sft:
    """A supervised fine-tuning run: TRL `SFTConfig` fields, passed through as they are, and its options."""

    trainer: dict[str, Any]
    lora: Lora | None  # null: full-parameter
    early_stopping_patience: int | None  # evaluations without a lower eval_loss before stopping; null: off
    length_penalty: LengthPenalty | None  # null: plain SFT


@dataclasses.dataclass(frozen=True)
class Dpo:
    """Direct preference optimisation from the SFT model (TRL `DPOTrainer`)."""

    beta: float
    loss_type: str | list[str]  # TRL DPOConfig loss type(s) ("sigmoid" is the paper's); a list adds them up
    lora: Lora | None  # null: full-parameter
    trainer: dict[str, Any]  # the other DPOConfig fields: learning rate, epochs, batch, ...


@dataclasses.dataclass(frozen=True)
class Rl:
    """An RLOO or GRPO run: TRL `RLOOConfig`/`GRPOConfig` fields (stages/rl.py names the required ones)."""

    held_out: int  # the last prompts of the file, kept out of training: the reward on fixed prompts (0: none)
    # instruct RL: a judge of `evaluation.judges` scored beside the reward with weight 0 (the gold against the
    # trained proxy: over-optimisation curves); null: none. An API judge scores the held-out evaluations only.
    gold_judge: str | None
    trainer: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class RlRun:
    """One RL run on instructions: the method (its `<method>_instruct` section) and its reward model."""

    method: str  # rloo or grpo
    reward: str  # the reward model, the folder models/<reward> (a trained one, or one pulled from the hub)


@dataclasses.dataclass(frozen=True)
class Synthetic:
    """Solver-written, verified Countdown examples added to the warmstart (001 added 1,600 from GPT-4o)."""

    n: int  # examples added; their puzzles come from the training split, never the held-out one
    think: bool  # completions carry the solver's steps in <think>, as the warmstart's do


@dataclasses.dataclass(frozen=True)
class Distill:
    """Distillation: each teacher answers Countdown training prompts; a student is trained on the answers."""

    teachers: dict[str, str]  # name -> model folder, a stage's output (paper: models/<name>, pulled)
    student: str  # the model folder the student starts from
    prompts: int  # seeded sample of the training prompts each teacher answers
    verified_only: bool  # keep only answers the verifier accepts


@dataclasses.dataclass(frozen=True)
class RewardModel:
    """A reward model trained on preference pairs (stages/reward_model.py); `--kind` picks the loss."""

    encoder: str  # a model folder a stage makes (paper: models/distilbert, pulled; embedded: models/base)
    config: dict[str, Any] | None  # Qwen2Config fields: a fresh encoder over the folder's tokenizer; null: its weights
    trainer: dict[str, Any]  # TrainingArguments fields (pointwise) or TRL RewardConfig fields (bradley_terry)
    max_length: int  # tokens of prompt + response the reward model reads; the rest is truncated


@dataclasses.dataclass(frozen=True)
class Decoding:
    """One way of sampling completions: these settings and no others (no model's own generation defaults)."""

    n: int  # samples per prompt
    temperature: float  # 0 means greedy
    top_p: float
    max_new_tokens: int
    repetition_penalty: float  # CTRL's penalty on tokens already in the prompt or completion; 1.0 is off (001: 1.1)
    chat_template: bool  # Countdown: the prompt as the single user turn of the model's chat template (instruction
    #                      prompts always go through it)


@dataclasses.dataclass(frozen=True)
class Sweep:
    """Pools of `n` samples per prompt, one per temperature, for best-of-N with the verifier."""

    n: int
    top_p: float
    max_new_tokens: int
    temperatures: list[float]
    prompts: int  # the first `prompts` held-out puzzles (all of them when there are fewer)
    repetition_penalty: float
    chat_template: bool

    def at(self, temperature: float) -> Decoding:
        return Decoding(n=self.n, temperature=temperature, top_p=self.top_p, max_new_tokens=self.max_new_tokens,
                        repetition_penalty=self.repetition_penalty, chat_template=self.chat_template)


@dataclasses.dataclass(frozen=True)
class Generate:
    backend: str  # "auto", "transformers" or "vllm"
    batch_size: int  # prompts per batch (transformers backend)
    greedy: Decoding
    teacher: Decoding  # distillation: a teacher answering training prompts (003: top_p 0.8, temperature 0.7)
    instruct: Decoding  # instruction-following evaluation (001: temperature 0.2, top_p 0.9)
    sweep: Sweep  # best-of-N pools at several temperatures (001, Fig. 5)


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Instruction-following evaluation: the reference every policy is compared with, and the judges."""

    reference: str  # the reference model's folder (paper: models/qwen_instruct, pulled)
    judges: dict[str, dict[str, Any]]  # judges that read no local model: name -> {kind: checker|nemotron, ...}
    reward_judges: list[str]  # reward models as judges, each the folder models/<name> (trained or pulled)
    countdown_models: list[str]  # the models evaluated on Countdown, each the folder models/<name>
    instruct_models: list[str]  # the models evaluated on instructions, each the folder models/<name>
    seed_models: list[str]  # Countdown models trained again per `train_seeds`, each models/<name>-s<seed>
    text_rows: int  # held-out SmolTalk prompts each model answers for BLEU (perplexity reads all of them)


@dataclasses.dataclass(frozen=True)
class Score:
    best_of: list[int]  # N values for best-of-N with the verifier and pass@k


@dataclasses.dataclass(frozen=True)
class Params:
    seed: int
    train_seeds: list[int]  # replicates of the Countdown methods beyond the main run (its trainer seeds)
    countdown: Countdown
    instruct: Instruct
    base_model: BaseModel
    hub_models: dict[str, HubModel]  # name -> model copied to models/<name> (stages/pull_model.py)
    launch: Launch
    checkpoints: Checkpoints
    sft_countdown: Sft
    synthetic: Synthetic
    sft_synthetic: Sft
    distill: Distill
    sft_distill: Sft
    sft_instruct: Sft
    sft_instruct_lora: Sft
    sft_instruct_lp: Sft
    dpo: Dpo
    dpo_lora: Dpo
    rloo_countdown: Rl
    grpo_countdown: Rl
    rloo_instruct: Rl
    grpo_instruct: Rl
    rl_instruct_runs: dict[str, RlRun]  # <method>-<reward> -> the run (dvc.yaml's rl_instruct stages)
    reward_pointwise: RewardModel
    reward_bt: RewardModel
    generate: Generate
    score: Score
    evaluation: Evaluation


def _check_type(value: Any, kind: Any, where: str) -> Any:
    """Return `value` as `kind` (a dataclass, a plain type or a simple generic), or raise naming `where`."""
    origin = typing.get_origin(kind)
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, where)
    if origin in (types.UnionType, typing.Union):
        options = typing.get_args(kind)
        if value is None and type(None) in options:
            return None
        options = [option for option in options if option is not type(None)]
        for option in options[:-1]:  # the first type the value fits; the last one's error otherwise
            try:
                return _check_type(value, option, where)
            except UserError:
                pass
        kind = options[-1]
        if dataclasses.is_dataclass(kind):
            return _build(kind, value, where)
        origin = typing.get_origin(kind)
    if origin is list:
        if not isinstance(value, list):
            raise UserError(f"params: `{where}` must be a list, got {value!r}")
        (item,) = typing.get_args(kind)
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise UserError(f"params: `{where}` must be a mapping, got {value!r}")
        _, item = typing.get_args(kind)
        return {k: _check_type(v, item, f"{where}.{k}") for k, v in value.items()}
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
    """Validate a params mapping (as read from YAML) into `Params`: its keys and types, then its values."""
    from pipeline.checks import check_values

    p = _build(Params, data, "")
    check_values(p)
    return p


def section(p: Params, name: str, kind: type, what: str) -> Any:
    """The section `name` of `p`, which a stage's `--section` names; it must be a `kind` (`what` says which)."""
    value = getattr(p, name, None) if name in {f.name for f in dataclasses.fields(Params)} else None
    if not isinstance(value, kind):
        raise UserError(f"--section {name}: not {what} section of params.yaml")
    return value


class _Yaml12Floats(yaml.SafeLoader):
    """YAML with `1e-4` read as the float it is in YAML 1.2 (and in OmegaConf, which composes params.yaml).

    PyYAML follows YAML 1.1, where a float needs a dot (`1.0e-4`) and `1e-4` is the string "1e-4": a
    learning rate written that way by hand would reach TRL as a string. Accepting it is kinder than
    refusing it.
    """


_Yaml12Floats.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"), list("-+0123456789"))


def load(path: Path = PARAMS_FILE) -> Params:
    """Read and validate `params.yaml`."""
    try:
        data = yaml.load(path.read_text(), Loader=_Yaml12Floats)  # a SafeLoader: plain data only
    except FileNotFoundError:
        raise UserError(f"{path}: not found; run stages from the repository root") from None
    except yaml.YAMLError as err:
        raise UserError(f"{path}: not valid YAML: {err}") from None
    return parse(data)

