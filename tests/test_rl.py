"""The reward adapter (table-driven), and a two-step RLOO and GRPO run on a tiny model."""

from __future__ import annotations

import json

import pytest
import torch

from posttrain.errors import UserError
from posttrain.training import rewards, rl

NUMS, TARGET = [1, 2, 3], 6


@pytest.mark.parametrize("completion, reward", [
    ("<answer>1 + 2 + 3</answer>", 1.0),
    ("<answer>(3 - 1) * 3</answer>", 0.1),  # uses 3 twice
    ("<answer>1 * 2 + 3</answer>", 0.1),  # right numbers, wrong value
    ("<answer>9 ** 9 ** 9</answer>", 0.1),  # refused, never evaluated
    ("1 + 2 + 3", 0.0),
    ("", 0.0),
    ([{"role": "assistant", "content": "<answer>3 * 2 * 1</answer>"}], 1.0),  # conversational completion
    ([{"role": "assistant", "content": "no tag"}], 0.0),
])
def test_countdown_reward_per_completion(completion, reward):
    assert rewards.countdown_reward(prompts=["p"], completions=[completion], target=[TARGET], nums=[NUMS]) == [reward]


def test_countdown_reward_is_one_float_per_completion_and_ignores_trl_extras():
    completions = ["<answer>1 + 2 + 3</answer>", "<answer>4 + 4</answer>", "none", "<answer>5 * 2 - 2</answer>"]
    out = rewards.countdown_reward(
        prompts=["a", "a", "b", "b"], completions=completions, target=[6, 6, 8, 8],
        nums=[[1, 2, 3], [1, 2, 3], [5, 2, 2], [5, 2, 2]],
        completion_ids=[[1], [2], [3], [4]], trainer_state=None, log_extra=print, log_metric=print, source=["x"] * 4)
    assert out == [1.0, 0.1, 0.0, 1.0] and all(type(r) is float for r in out)
    assert rewards.countdown_reward(prompts=[], completions=[], target=[], nums=[]) == []


def test_countdown_reward_refuses_misaligned_columns():
    with pytest.raises(ValueError):
        rewards.countdown_reward(prompts=["p", "p"], completions=["x", "y"], target=[6], nums=[NUMS])


def test_reward_model_reward_scores_as_the_reward_model_stage_does(tiny_model, tmp_path):
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    from posttrain.training.reward_model import score_pairs

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(tiny_model, num_labels=1)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(tmp_path / "rm")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "rm")
    reward = rewards.reward_model_reward(tmp_path / "rm", batch_size=2)
    assert reward.__name__ == "reward_model_rm"
    responses = ["<answer>1 + 2 + 3</answer>", "x", "yy"]
    text = reward(prompts=["Say hi."] * 3, completions=responses, completion_ids=None, trainer_state=None)
    # batches pad differently: float sums differ in the 7th digit (CPU kernels pick their order by shape)
    assert text == pytest.approx(score_pairs(tmp_path / "rm", ["Say hi."] * 3, responses), rel=1e-4, abs=1e-6)
    assert len(set(text)) == 3 and all(type(r) is float for r in text)
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hi."}]
    turns = [[{"role": "assistant", "content": r}] for r in responses]
    assert reward(prompts=[chat] * 3, completions=turns) == pytest.approx(text, rel=1e-4, abs=1e-6)  # reads the user turn


def test_countdown_prompts_keep_the_puzzle_for_the_reward():
    ds = rl.countdown_dataset([{"target": 6, "nums": [1, 2, 3]}], "Numbers: {nums}\nTarget: {target}\n")
    assert ds[0] == {"prompt": "Numbers: [1, 2, 3]\nTarget: 6\n", "target": 6, "nums": [1, 2, 3]}


def completion_length(completions, **kwargs) -> list[float]:
    """A reward that differs within every group, so a randomly initialised policy gets a gradient."""
    return [len(rewards.completion_text(c)) / 10 for c in completions]


def _fields(**extra) -> dict:
    return {"num_generations": 2, "beta": 0.1, "learning_rate": 1e-2, "temperature": 1.0,
            "max_completion_length": 8, "per_device_train_batch_size": 4, "max_steps": 2, "logging_steps": 1,
            "gradient_checkpointing": False, "seed": 0, **extra}


@pytest.mark.parametrize("method", ["rloo", "grpo"])
def test_rl_trains_and_saves(method, tiny_model, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoTokenizer, GenerationConfig

    puzzles = [{"target": a + 5, "nums": [a, 2, 3]} for a in range(1, 9)]
    dataset = rl.countdown_dataset(puzzles, "Numbers: {nums}\nTarget: {target}\n")
    out, live = tmp_path / "out", tmp_path / "live"
    rl.train(method, f"{method}_countdown", _fields(), tiny_model, dataset,
             [rewards.countdown_reward, completion_length], out, live)
    before, after = load_file(tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert AutoTokenizer.from_pretrained(out).eos_token == "<|im_end|>"
    assert GenerationConfig.from_pretrained(out).eos_token_id == AutoTokenizer.from_pretrained(out).eos_token_id
    logged = json.loads((live / "metrics.json").read_text())
    flat = json.dumps(logged)
    assert all(key in flat for key in ("reward", "kl", "completions", "countdown_reward"))
    assert not (tmp_path / "out.tmp").exists()


@pytest.mark.parametrize("fields, message", [
    ({k: v for k, v in _fields().items() if k != "max_completion_length"}, "rloo_countdown.trainer.max_completion"),
    ({**_fields(), "num_generation": 4}, "rloo_countdown.trainer.num_generation"),
    ({**_fields(), "num_generations": 3}, "rloo_countdown.trainer"),  # 4 completions do not split into groups of 3
])
def test_bad_trainer_fields_fail_naming_the_parameter(fields, message, tiny_model, tmp_path):
    dataset = rl.countdown_dataset([{"target": 6, "nums": [1, 2, 3]}], "{nums} {target}")
    with pytest.raises(UserError, match=message):
        rl.train("rloo", "rloo_countdown", fields, tiny_model, dataset, [rewards.countdown_reward],
                 tmp_path / "out", None)
    assert not (tmp_path / "out").exists()


def test_unknown_method_fails():
    with pytest.raises(UserError, match="--method"):
        rl.trainer_classes("ppo")


def test_held_out_prompts_give_an_eval_reward_curve_from_step_0(tiny_model, tmp_path):
    puzzles = [{"target": a + 5, "nums": [a, 2, 3]} for a in range(1, 11)]
    dataset = rl.countdown_dataset(puzzles, "Numbers: {nums}\nTarget: {target}\n")
    train_part, held = rl.split_held_out(dataset, 2, "rloo_countdown", {"eval_strategy": "steps"})
    assert [r["target"] for r in held] == [14, 15] and len(train_part) == 8  # the last prompts, none trained on
    live = tmp_path / "live"
    fields = _fields(eval_strategy="steps", eval_steps=2, eval_on_start=True, per_device_eval_batch_size=4)
    rl.train("rloo", "rloo_countdown", fields, tiny_model, dataset, [rewards.countdown_reward, completion_length],
             tmp_path / "out", live, held_out=2)
    curve = (live / "plots" / "metrics" / "eval" / "reward.tsv").read_text().splitlines()
    assert len(curve) == 1 + 2  # header, then step 0 (before any update) and step 2
    assert "reward" in json.loads((live / "metrics.json").read_text())["eval"]


@pytest.mark.parametrize("held_out, extra, message", [
    (2, {}, "held_out` and `rloo_countdown.trainer.eval_strategy` go together"),
    (0, {"eval_strategy": "steps"}, "go together"),
    (4, {"eval_strategy": "steps"}, "rloo_countdown.held_out` is 4"),
])
def test_held_out_and_eval_schedule_must_agree(held_out, extra, message, tiny_model, tmp_path):
    dataset = rl.countdown_dataset([{"target": a, "nums": [a, 1, 2]} for a in range(4)], "{nums} {target}")
    with pytest.raises(UserError, match=message):
        rl.train("rloo", "rloo_countdown", _fields(**extra), tiny_model, dataset, [rewards.countdown_reward],
                 tmp_path / "out", None, held_out=held_out)


class _LengthJudge:
    """A judge whose calls are counted: the reward is the response's length."""

    name, model = "length", None

    def __init__(self):
        self.calls = 0

    def score(self, prompts, responses):
        self.calls += 1
        return [float(len(r)) for r in responses]


@pytest.mark.parametrize("eval_only", [False, True])
def test_a_gold_judge_is_logged_beside_the_reward_with_weight_0(eval_only, tiny_model, tmp_path):
    """Issue: reward over-optimisation made visible. The gold is scored on the held-out evaluations (and, when
    free, in training) and logged as rewards/gold_<name>/mean, next to the KL; the policy trains on the proxy only."""
    from safetensors.torch import load_file

    puzzles = [{"target": a + 5, "nums": [a, 2, 3]} for a in range(1, 11)]
    dataset = rl.countdown_dataset(puzzles, "Numbers: {nums}\nTarget: {target}\n")
    fields = _fields(eval_strategy="steps", eval_steps=2, eval_on_start=True, per_device_eval_batch_size=4)
    judge = _LengthJudge()
    runs = {}
    for name, gold in (("plain", []), ("gold", [rewards.judge_reward(judge, "length", eval_only=eval_only)])):
        live = tmp_path / name / "live"
        rl.train("rloo", "rloo_countdown", fields, tiny_model, dataset, [rewards.countdown_reward],
                 tmp_path / name / "out", live, held_out=2, logged_only=gold)
        runs[name] = (live, load_file(tmp_path / name / "out" / "model.safetensors"))
    live = runs["gold"][0] / "plots" / "metrics" / "eval"
    for curve in ("rewards/gold_length/mean.tsv", "rewards/countdown_reward/mean.tsv", "kl.tsv", "reward.tsv"):
        assert len((live / curve).read_text().splitlines()) == 1 + 2, curve  # steps 0 and 2
    # weight 0: the same updates as without the gold (same seed, same samples)
    assert all(torch.equal(runs["plain"][1][k], runs["gold"][1][k]) for k in runs["plain"][1])
    assert judge.calls == (2 if eval_only else 2 + 2)  # eval-only: the two evaluations; else every training step too


def test_a_seed_replaces_the_sections_trainer_seed(tiny_model, tmp_path):
    from safetensors.torch import load_file

    dataset = rl.countdown_dataset([{"target": a + 5, "nums": [a, 2, 3]} for a in range(1, 9)], "{nums} {target}")
    weights = {}
    for seed in (0, 1):
        rl.train("rloo", "rloo_countdown", _fields(), tiny_model, dataset, [rewards.countdown_reward, completion_length],
                 tmp_path / f"s{seed}", None, seed=seed)
        weights[seed] = load_file(tmp_path / f"s{seed}" / "model.safetensors")
    assert any(not torch.equal(weights[0][k], weights[1][k]) for k in weights[0])
