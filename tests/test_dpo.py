"""The preference examples DPO sees, its errors, and a two-step full and LoRA run on a tiny model."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from pipeline import params
from posttrain.errors import UserError
from stages import dpo

SYSTEM = "You are a helpful assistant."
SAVING = params.Checkpoints(steps=500, save_total_limit=2)


def pref_row(i: int, chosen: str = "HI", rejected: str = "hi there friend") -> dict:
    prompt = f"Say hi {i} times."
    return {"prompt": prompt, "prompt_id": f"{i:064x}",
            "chosen": [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}],
            "rejected": [{"role": "user", "content": prompt}, {"role": "assistant", "content": rejected}],
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": chosen}],
            "score_chosen": 9.0, "score_rejected": 2.0}


def write_prefs(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def section(lora: params.Lora | None = None, **trainer) -> params.Dpo:
    return params.Dpo(beta=0.1, loss_type="sigmoid", lora=lora, trainer={
        "learning_rate": 1e-2, "per_device_train_batch_size": 2, "per_device_eval_batch_size": 2, "max_steps": 2,
        "max_length": 64, "logging_steps": 1, "gradient_checkpointing": False, "seed": 0, **trainer})


@pytest.mark.parametrize("system, roles", [(SYSTEM, ["system", "user"]), ("", ["user"])])
def test_the_example_carries_the_params_system_prompt(system, roles, tmp_path):
    ds = dpo.load_preferences(write_prefs(tmp_path / "p.jsonl", [pref_row(1)]), system)
    example = ds[0]
    assert [m["role"] for m in example["prompt"]] == roles
    assert example["prompt"][0]["content"] == (system or "Say hi 1 times.")
    assert example["prompt"][-1] == {"role": "user", "content": "Say hi 1 times."}
    assert example["chosen"] == [{"role": "assistant", "content": "HI"}]
    assert example["rejected"] == [{"role": "assistant", "content": "hi there friend"}]


def test_the_tokenized_pair_is_the_chat_template_rendering(tiny_model):
    """What the trainer trains on: the system prompt in the prompt ids, each answer closed by <|im_end|>."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    example = dpo.preference_example(pref_row(1), SYSTEM)
    prompt = tokenizer.apply_chat_template(example["prompt"], tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(example["prompt"] + example["chosen"], tokenize=False)
    assert prompt.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>") and prompt.endswith("<|im_start|>assistant\n")
    assert full == prompt + "HI<|im_end|>\n"


@pytest.mark.parametrize("row, message", [
    ({k: v for k, v in pref_row(1).items() if k != "rejected"}, "row 1: missing field `rejected`"),
    ({**pref_row(1), "chosen": "HI"}, "row 1: field `chosen` has a bad value"),
    ({**pref_row(1), "chosen": [{"role": "user", "content": "x"}, {"role": "assistant", "content": " \n"}]},
     "row 1: field `chosen` has an empty assistant message"),
    ({**pref_row(1), "rejected": [{"role": "user", "content": "x"}]},
     "row 1: field `rejected` does not end with an assistant message"),
])
def test_a_bad_row_names_file_row_and_field(row, message, tmp_path):
    path = write_prefs(tmp_path / "bad.jsonl", [pref_row(0), row])
    with pytest.raises(UserError, match=f"bad.jsonl: {message}"):
        dpo.load_preferences(path, SYSTEM)


@pytest.mark.parametrize("dpo_section, message", [
    (section(beta=0.5), "`dpo.trainer.beta`: set it once, as `dpo.beta`"),
    (section(loss_type="ipo"), "`dpo.trainer.loss_type`"),
    (params.Dpo(beta=0.1, loss_type="sigmod", lora=None, trainer={}), "`dpo.loss_type` must be one of"),
    (params.Dpo(beta=0.1, loss_type=["sigmoid", "sfft"], lora=None, trainer={}), "`dpo.loss_type` must be one of"),
    (section(learning_rat=1e-3), "unknown parameter `dpo.trainer.learning_rat`"),
])
def test_bad_params_fail_naming_the_parameter(dpo_section, message, tmp_path):
    with pytest.raises(UserError, match=message):
        dpo.dpo_args("dpo", dpo_section, tmp_path, has_eval=False, saving=SAVING)


def test_beta_and_loss_type_reach_the_config(tmp_path):
    args = dpo.dpo_args("dpo", params.Dpo(beta=0.3, loss_type="ipo", lora=None, trainer={"max_length": 32}),
                        tmp_path, has_eval=True, saving=SAVING)
    assert (args.beta, args.loss_type, args.max_length, args.eval_strategy) == (0.3, ["ipo"], 32, "epoch")
    rpo = dpo.dpo_args("dpo", params.Dpo(beta=0.1, loss_type=["sigmoid", "sft"], lora=None, trainer={}),
                       tmp_path, has_eval=False, saving=SAVING)
    assert rpo.loss_type == ["sigmoid", "sft"]


def test_the_loss_types_are_trls():
    """The stage's copy of TRL's loss types (TRL exports no list) against the names `DPOConfig.loss_type` documents."""
    import dataclasses

    from trl import DPOConfig

    field = next(f for f in dataclasses.fields(DPOConfig) if f.name == "loss_type")
    documented = field.metadata["help"].split("Possible values are:")[1].split(".")[0]
    assert tuple(re.findall(r"`'(\w+)'`", documented)) == dpo.LOSS_TYPES


def first_logged(live: Path, metric: str) -> float:
    rows = (live / "plots" / "metrics" / f"{metric}.tsv").read_text().splitlines()
    return float(rows[1].split("\t")[1])


@pytest.fixture
def prefs(tmp_path: Path) -> tuple[Path, Path]:
    train = write_prefs(tmp_path / "train.jsonl", [pref_row(i) for i in range(4)])
    test = write_prefs(tmp_path / "test.jsonl", [pref_row(i) for i in range(10, 12)])
    return train, test


def test_full_dpo_trains_against_the_starting_model_and_saves(tiny_model, prefs, tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    built = []
    build = dpo.build_trainer
    monkeypatch.setattr(dpo, "build_trainer", lambda *a: built.append(build(*a)) or built[-1])
    out, live = tmp_path / "out", tmp_path / "live"
    dpo.train("dpo", section(), SYSTEM, tiny_model, *prefs, out, live, SAVING)
    before, after = load_file(tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    assert any(not torch.equal(before[k], after[k]) for k in before)
    ref = built[0].ref_model.state_dict()  # loaded by TRL from the same path, frozen
    assert all(torch.equal(before[k], ref[k]) for k in before)
    AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token == "<|im_end|>"
    assert GenerationConfig.from_pretrained(out).eos_token_id == tokenizer.eos_token_id
    # Before the first update the policy is the reference, so every implied reward is exactly 0.
    assert first_logged(live, "rewards/margins") == first_logged(live, "rewards/chosen") == 0.0
    assert all((live / "plots" / "metrics" / f"{m}.tsv").exists()
               for m in ("loss", "rewards/accuracies", "eval/loss", "eval/rewards/margins"))
    assert not (tmp_path / "out.tmp").exists()


def test_lora_dpo_saves_the_merged_model_and_an_adapter_on_the_start(tiny_model, prefs, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    lora = params.Lora(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    out, live = tmp_path / "out", tmp_path / "live"
    dpo.train("dpo_lora", section(lora), SYSTEM, tiny_model, prefs[0], None, out, live, SAVING)
    assert first_logged(live, "rewards/margins") == 0.0  # the reference: the start, the adapter disabled
    adapter = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(tiny_model)
    before, after = load_file(tiny_model / "model.safetensors"), load_file(out / "model.safetensors")
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed and all(("q_proj" in k or "v_proj" in k) and k.endswith("weight") for k in changed)
    AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert tokenizer.eos_token == "<|im_end|>"
    assert GenerationConfig.from_pretrained(out).eos_token_id == tokenizer.eos_token_id


def test_pairs_whose_prompt_fills_max_length_are_counted_as_dropped(tiny_model, tmp_path, capsys):
    rows = [pref_row(1), {**pref_row(2), "prompt": "Say hi " * 40}]
    train = write_prefs(tmp_path / "train.jsonl", rows)
    trainer = dpo.build_trainer("dpo", section(), SYSTEM, tiny_model, train, None, tmp_path / "work", None, SAVING)
    assert len(trainer.train_dataset) == 1
    assert "dpo: 1 training pairs (1 dropped" in capsys.readouterr().out
