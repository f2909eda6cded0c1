"""The SFT stage: prompt formats, full / LoRA / length-penalty runs on a tiny model, early stopping,
the length penalty's pure parts, and that the penalty shortens what the model generates."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from pipeline import params
from posttrain import generation
from posttrain.data_io import write_jsonl
from posttrain.errors import UserError
from posttrain.training.length_penalty import check, excess_length_penalty, reinforce_surrogate, response_lengths
from stages import sft

ROOT = Path(__file__).resolve().parent.parent
SYSTEM = "Expert AI: be concise."
SAVING = params.Checkpoints(steps=500, save_total_limit=2)


def conversation(user: str, answer: str, system: str | None = "Be brief.") -> dict:
    turns = [{"role": "system", "content": system}] if system else []
    return {"messages": [*turns, {"role": "user", "content": user}, {"role": "assistant", "content": answer},
                         {"role": "user", "content": "And more?"}, {"role": "assistant", "content": "More."}],
            "source": "test"}


def write_conversations(path: Path, n: int = 40) -> Path:
    write_jsonl(path, [conversation(f"Say {i}.", " ".join(str(i) for _ in range(1 + i % 5))) for i in range(n)])
    return path


def fields(**extra) -> dict:
    return {"max_steps": 2, "per_device_train_batch_size": 4, "learning_rate": 1e-2, "logging_steps": 1,
            "max_length": 64, "seed": 0, **extra}


def assert_trained_and_saved(base: Path, out: Path) -> None:
    """Weights moved away from the base; the folder loads as a model whose tokenizer stops at <|im_end|>."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    before = AutoModelForCausalLM.from_pretrained(base).state_dict()
    after = AutoModelForCausalLM.from_pretrained(out).state_dict()
    assert before.keys() == after.keys() and any(not torch.equal(before[k], after[k]) for k in before)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token == "<|im_end|>"
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.generation_config.eos_token_id == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert not out.with_name(out.name + ".tmp").exists() and not out.with_name(out.name + ".checkpoints").exists()


# --- prompt formats ---------------------------------------------------------------------------------

def test_first_turn_gets_the_params_system_prompt_in_place_of_the_data_one():
    example = sft.to_prompt_completion(conversation("Question?", "Answer."), SYSTEM)
    assert example == {"prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Question?"}],
                       "completion": [{"role": "assistant", "content": "Answer."}]}


def test_empty_system_prompt_gives_the_single_turn_format():
    example = sft.to_prompt_completion(conversation("Question?", "Answer."), "")
    assert example["prompt"] == [{"role": "user", "content": "Question?"}]
    assert sft.to_prompt_completion(conversation("Question?", "Answer.", system=None), "") == example


@pytest.mark.parametrize("system_prompt", [SYSTEM, ""])
def test_sft_prompt_is_the_text_generation_feeds_the_model(tiny_model, system_prompt):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    example = sft.to_prompt_completion(conversation("Question?", "Answer."), system_prompt)
    trained_on = tokenizer.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
    assert [trained_on] == generation.render_prompts("instruct", [{"prompt": "Question?"}], tokenizer,
                                                     prompt_template="", system_prompt=system_prompt)
    assert (SYSTEM in trained_on) == bool(system_prompt) and "Be brief." not in trained_on


def test_warmstart_rows_stay_raw_text():
    row = {"query": "Numbers: [1, 2]\nTarget: 3\n", "completion": "<answer>1 + 2</answer>"}
    assert sft.to_prompt_completion(row, SYSTEM) == {"prompt": row["query"], "completion": row["completion"]}


def test_a_conversation_without_an_answered_user_turn_names_its_row(tmp_path):
    write_jsonl(tmp_path / "bad.jsonl", [conversation("Q?", "A."),
                                         {"messages": [{"role": "assistant", "content": "Hi."}], "source": "x"}])
    with pytest.raises(UserError, match=r"bad.jsonl: row 1"):
        sft.load_examples(tmp_path / "bad.jsonl", SYSTEM)


# --- training runs ----------------------------------------------------------------------------------

def test_full_sft_trains_and_saves(tiny_model, tmp_path):
    train = write_conversations(tmp_path / "train.jsonl")
    sft.train("sft_instruct", fields(), tiny_model, train, None, tmp_path / "out", tmp_path / "live",
              system_prompt=SYSTEM, saving=SAVING)
    assert_trained_and_saved(tiny_model, tmp_path / "out")
    assert (tmp_path / "live" / "metrics.json").exists()


def test_lora_sft_merges_onto_the_base_its_adapter_records(tiny_model, tmp_path):
    train = write_conversations(tmp_path / "train.jsonl")
    lora = params.Lora(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    sft.train("sft_instruct_lora", fields(learning_rate=5e-2), tiny_model, train, None, tmp_path / "out", None,
              system_prompt=SYSTEM, lora=lora, saving=SAVING)
    assert_trained_and_saved(tiny_model, tmp_path / "out")
    adapter = json.loads((tmp_path / "out" / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_model)
    assert adapter["r"] == 4 and set(adapter["target_modules"]) == {"q_proj", "v_proj"}


def test_length_penalty_sft_trains_saves_and_logs_the_penalty(tiny_model, tmp_path):
    train = write_conversations(tmp_path / "train.jsonl")
    lp = params.LengthPenalty(weight=0.01, every=1, samples=3, temperature=1.0, max_new_tokens=8)
    state = sft.train("sft_instruct_lp", fields(), tiny_model, train, None, tmp_path / "out", tmp_path / "live",
                      system_prompt=SYSTEM, length_penalty=lp, saving=SAVING)
    assert_trained_and_saved(tiny_model, tmp_path / "out")
    logged = [entry for entry in state.log_history if "length_penalty" in entry]
    assert len(logged) == 2 and all(0 < entry["sampled_length"] <= 8 for entry in logged)
    assert all(entry["length_penalty"] >= 0 and entry["reference_length"] > 0 for entry in logged)
    assert {"length_penalty", "sampled_length"} <= json.loads((tmp_path / "live" / "metrics.json").read_text()).keys()
    assert len((tmp_path / "live" / "plots" / "metrics" / "length_penalty.tsv").read_text().splitlines()) == 3


def test_early_stopping_keeps_the_best_checkpoint(tiny_model, tmp_path):
    """Train on long answers, validate on short ones: eval_loss falls, then rises, and training stops."""
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from posttrain.training.config import trainer_args

    long = [conversation(f"Count {i}.", "1 2 3 4 5 6 7 8 9 10 11 12") for i in range(64)]
    write_jsonl(tmp_path / "train.jsonl", long)
    write_jsonl(tmp_path / "eval.jsonl", [conversation(f"Count {i}.", "1") for i in range(100, 116)])
    every_step = fields(max_steps=30, learning_rate=3e-2, lr_scheduler_type="constant", eval_strategy="steps",
                        eval_steps=1, save_strategy="steps", save_steps=1, per_device_eval_batch_size=16)
    state = sft.train("sft_instruct", every_step, tiny_model, tmp_path / "train.jsonl", tmp_path / "eval.jsonl",
                      tmp_path / "out", None, system_prompt=SYSTEM, early_stopping_patience=1, saving=SAVING)
    losses = [entry["eval_loss"] for entry in state.log_history if "eval_loss" in entry]
    assert state.global_step < 30 and len(losses) == state.global_step  # stopped early
    assert state.best_metric == min(losses) and losses[-1] > min(losses)
    # The saved weights are the best checkpoint's: they score the best eval_loss again
    args = trainer_args(SFTConfig, {"per_device_eval_batch_size": 16, "max_length": 64},
                        "test", tmp_path / "eval_run", completion_only_loss=True, eos_token=sft.EOS)
    eval_set = sft.load_examples(tmp_path / "eval.jsonl", SYSTEM)
    rescored = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tmp_path / "out"), args=args,
                          processing_class=AutoTokenizer.from_pretrained(tmp_path / "out"),
                          train_dataset=eval_set, eval_dataset=eval_set).evaluate()
    assert rescored["eval_loss"] == pytest.approx(state.best_metric, rel=1e-4)
    assert_trained_and_saved(tiny_model, tmp_path / "out")


def test_early_stopping_without_a_validation_set_names_the_parameter(tiny_model, tmp_path):
    train = write_conversations(tmp_path / "train.jsonl")
    with pytest.raises(UserError, match=r"`sft_instruct\.early_stopping_patience`"):
        sft.train("sft_instruct", fields(), tiny_model, train, None, tmp_path / "out", None,
                  early_stopping_patience=2, saving=SAVING)


@pytest.mark.parametrize("change, name", [
    (dict(samples=1), "samples"), (dict(every=0), "every"), (dict(temperature=0.0), "temperature"),
    (dict(weight=-1.0), "weight"), (dict(max_new_tokens=0), "max_new_tokens"),
])
def test_bad_length_penalty_settings_name_the_parameter(change, name):
    lp = params.LengthPenalty(**{**dict(weight=0.1, every=1, samples=2, temperature=1.0, max_new_tokens=8), **change})
    with pytest.raises(UserError, match=rf"`sft_instruct_lp\.length_penalty\.{name}`"):
        check(lp, "sft_instruct_lp.length_penalty")


# --- the length penalty's pure parts ----------------------------------------------------------------

STOP = 9


@pytest.mark.parametrize("ids, mask, length", [
    ([4, 5, STOP, 0], [1, 1, 1, 1], 3),  # counted through the stop token, padding after it ignored
    ([4, 5, 6, 7], [1, 1, 1, 1], 4),  # no stop: every token (a sample cut at max_new_tokens)
    ([1, 2, 4, STOP, 10, 0], [0, 0, 1, 1, 1, 0], 2),  # a reference: only the completion counts, up to the stop
    ([STOP, 2, 4, STOP], [0, 0, 1, 1], 2),  # a stop token in the prompt does not end the response
    ([1, 2, 0, 0], [0, 0, 0, 0], 0),
])
def test_response_lengths(ids, mask, length):
    assert response_lengths(torch.tensor([ids]), torch.tensor([mask], dtype=torch.bool), STOP).tolist() == [length]


@pytest.mark.parametrize("sampled, reference, penalty", [(10, 4, 36.0), (4, 4, 0.0), (2, 7, 0.0), (5, 4, 1.0)])
def test_excess_length_penalty(sampled, reference, penalty):
    assert excess_length_penalty(torch.tensor([sampled]), torch.tensor([reference])).tolist() == [penalty]


def test_reinforce_surrogate_pushes_down_the_sample_that_overshoots_more():
    log_probs = torch.tensor([-3.0, -3.0, -3.0], requires_grad=True)
    penalties = excess_length_penalty(torch.tensor([20, 5, 6]), torch.tensor([5, 5, 5]))  # 225, 0, 1
    reinforce_surrogate(log_probs, penalties).backward()
    step = -log_probs.grad  # gradient descent on the loss moves the log-probs this way
    assert step[0] < 0 < step[1] and step[2] > 0  # the long sample loses probability, the short ones gain
    assert log_probs.grad.sum().item() == pytest.approx(0.0, abs=1e-4)  # the baseline: no net push


def test_reinforce_surrogate_is_zero_when_all_penalties_are_equal():
    log_probs = torch.tensor([-1.0, -2.0], requires_grad=True)
    loss = reinforce_surrogate(log_probs, torch.tensor([4.0, 4.0]))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(log_probs.grad, torch.zeros(2))


# --- the check: lambda > 0 yields shorter generations ---------------------------------------

def generated_lengths(model_dir: Path, users: list[str], do_sample: bool) -> torch.Tensor:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": u}], tokenize=False,
                                             add_generation_prompt=True) for u in users]
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
    stop = tokenizer.convert_tokens_to_ids(sft.EOS)
    torch.manual_seed(0)
    out = model.generate(**batch, do_sample=do_sample, temperature=1.0 if do_sample else None, top_p=1.0,
                         max_new_tokens=24, eos_token_id=stop, pad_token_id=tokenizer.pad_token_id)
    sample = out[:, batch["input_ids"].shape[1]:]
    return response_lengths(sample, torch.ones_like(sample, dtype=torch.bool), stop).float()


def test_length_penalty_shortens_generations_on_the_embedded_profile(tiny_model, tmp_path):
    """SFT data whose answers are long (60%) or short: the same run with lambda = 0 and lambda > 0.

    Both start from one SFT warm start: a model that has not yet learned to stop samples up to
    max_new_tokens every time, and equal penalties leave the baseline-corrected term no signal. The
    embedded profile's penalty settings, with a larger lambda applied every step so 30 steps show it.
    """
    rng = random.Random(0)
    write_jsonl(tmp_path / "train.jsonl", [
        conversation(f"Say hi {i}.", "1 2 3 4 5 6 7 8" if rng.random() < 0.6 else "1", system=None)
        for i in range(400) if i % 4])
    held_out = [f"Say hi {i}." for i in range(0, 400, 4)] * 2
    steps = {"per_device_train_batch_size": 16, "learning_rate": 1e-2, "lr_scheduler_type": "constant",
             "max_length": 64, "logging_steps": 10, "seed": 0}
    sft.train("sft_instruct_lp", {**steps, "max_steps": 60}, tiny_model, tmp_path / "train.jsonl", None,
              tmp_path / "warm", None, saving=SAVING)
    profile = params.load(ROOT / "params.yaml").sft_instruct_lp.length_penalty
    assert profile.weight > 0
    lengths = {}
    for weight in (0.0, 0.03):
        lp = params.LengthPenalty(weight=weight, every=1, samples=profile.samples,
                                  temperature=profile.temperature, max_new_tokens=24)
        sft.train("sft_instruct_lp", {**steps, "max_steps": 30}, tmp_path / "warm", tmp_path / "train.jsonl",
                  None, tmp_path / f"lp{weight}", None, length_penalty=lp, saving=SAVING)
        lengths[weight] = (generated_lengths(tmp_path / f"lp{weight}", held_out, do_sample=True).mean(),
                           generated_lengths(tmp_path / f"lp{weight}", held_out, do_sample=False).mean())
    (sampled_0, greedy_0), (sampled_lp, greedy_lp) = lengths[0.0], lengths[0.03]
    assert sampled_lp < 0.6 * sampled_0, lengths  # 6 seeds tried: ratios 0.19-0.41
    assert greedy_lp <= greedy_0, lengths
