"""Reward models: pairwise accuracy, the scorer, and a two-step run of each kind on a tiny built encoder."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from pipeline import params
from posttrain.data_io import write_jsonl
from posttrain.training import reward_model as scoring
from stages import reward_model

TINY_ENCODER = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                "num_key_value_heads": 1, "max_position_embeddings": 128, "tie_word_embeddings": False}
PROMPTS = ["Say hi.", "Numbers: [1, 2, 3]\nTarget: 6\n", "Say hi.", "Write 'cat' backwards.", "x" * 400]
RESPONSES = ["hi", "<answer>1 + 2 + 3</answer>", "Hello there! hi", "tac", "a long answer " * 30]
SAVING = params.Checkpoints(steps=500, save_total_limit=2)


@pytest.mark.parametrize("chosen, rejected, expected", [
    ([2.0], [1.0], 1.0),
    ([1.0], [2.0], 0.0),
    ([1.0], [1.0], 0.5),  # a tie is a coin flip
    ([3.0, 0.0, 5.0, -1.0], [1.0, 0.0, 6.0, -2.0], (1 + 0.5 + 0 + 1) / 4),
    ([0.1, 0.1], [0.1, 0.1], 0.5),
])
def test_pairwise_accuracy_counts_ties_as_half(chosen, rejected, expected):
    assert scoring.pairwise_accuracy(chosen, rejected) == pytest.approx(expected)


@pytest.mark.parametrize("chosen, rejected", [([], []), ([1.0], [1.0, 2.0])])
def test_pairwise_accuracy_refuses_empty_or_unmatched(chosen, rejected):
    with pytest.raises(ValueError):
        scoring.pairwise_accuracy(chosen, rejected)


@pytest.mark.parametrize("score, target", [(1.0, 0.0), (10.0, 1.0), (5.5, 0.5), (7.0, 6 / 9)])
def test_scores_map_to_unit_interval(score, target):
    assert scoring.normalized_score(score) == pytest.approx(target)


def _cfg(trainer: dict, encoder: Path, config: dict | None = TINY_ENCODER) -> params.RewardModel:
    """A section whose encoder is the folder `encoder`: a fresh Qwen2 of `config` over its tokenizer, or its weights."""
    return params.RewardModel(encoder=str(encoder), config=config, trainer=trainer, max_length=64)


@pytest.fixture(scope="module")
def built_scorer(tiny_model, tmp_path_factory) -> Path:
    """An untrained reward model built over the tiny model's tokenizer and saved as the stage saves one."""
    model, tokenizer = scoring.build_encoder(_cfg({}, tiny_model), "reward_test", tiny_model, seed=0)
    out = tmp_path_factory.mktemp("rm") / "scorer"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def test_encode_renders_the_chat_turn_and_truncates(built_scorer):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(built_scorer)
    ids = scoring.encode(tokenizer, PROMPTS[:1], RESPONSES[:1], 64)["input_ids"]
    assert tokenizer.decode(ids[0]) == "<|im_start|>user\nSay hi.<|im_end|>\n<|im_start|>assistant\nhi<|im_end|>\n"
    assert tokenizer.model_max_length == 64
    assert max(len(i) for i in scoring.encode(tokenizer, PROMPTS, RESPONSES, 64)["input_ids"]) == 64


def test_score_pairs_is_one_float_per_pair_and_batch_size_invariant(built_scorer):
    one = scoring.score_pairs(built_scorer, PROMPTS, RESPONSES, batch_size=1)
    four = scoring.score_pairs(built_scorer, PROMPTS, RESPONSES, batch_size=4)
    assert len(one) == len(PROMPTS) and all(isinstance(s, float) for s in one)
    assert four == pytest.approx(one, abs=1e-5)
    assert len(set(one)) > 1  # the scores depend on the text


@pytest.fixture
def tiny_distilbert(tmp_path) -> Path:
    """A tiny `distilbert-base-uncased` stand-in: a DistilBERT body (no head) and a BERT tokenizer, saved."""
    from transformers import BertTokenizer, DistilBertConfig, DistilBertModel

    words = sorted({w.strip(".'?") for text in PROMPTS + RESPONSES for w in text.lower().split()} | {".", "'"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)}, model_max_length=32)
    torch.manual_seed(0)
    DistilBertModel(DistilBertConfig(vocab_size=len(tokenizer), dim=32, hidden_dim=64, n_layers=1,
                                     n_heads=2)).save_pretrained(tmp_path / "distilbert")
    tokenizer.save_pretrained(tmp_path / "distilbert")
    return tmp_path / "distilbert"


def test_score_pairs_reads_an_encoder_with_a_text_pair_tokenizer(tiny_distilbert):
    """Any one-output classifier folder works, such as an encoder loaded with a fresh head."""
    from transformers import AutoTokenizer

    model, tokenizer = scoring.build_encoder(_cfg({}, tiny_distilbert, config=None), "reward_test",
                                                  tiny_distilbert, seed=0)
    ids = scoring.encode(tokenizer, ["say hi."], ["hi"], 32)["input_ids"][0]
    assert tokenizer.convert_ids_to_tokens(ids) == ["[CLS]", "say", "hi", ".", "[SEP]", "hi", "[SEP]"]
    model.save_pretrained(tiny_distilbert.parent / "rm")
    AutoTokenizer.from_pretrained(tiny_distilbert).save_pretrained(tiny_distilbert.parent / "rm")
    one = scoring.score_pairs(tiny_distilbert.parent / "rm", PROMPTS, RESPONSES, batch_size=1)
    assert len(one) == len(PROMPTS) and len(set(one)) > 1
    four = scoring.score_pairs(tiny_distilbert.parent / "rm", PROMPTS, RESPONSES, batch_size=4)
    assert four == pytest.approx(one, abs=1e-5)


def _pairs(n: int, start: int = 0) -> list[dict]:
    def turn(prompt: str, answer: str) -> list[dict]:
        return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]

    rows = []
    for i in range(start, start + n):
        word = f"{'cat' if i % 2 else 'dog'}{i}"
        prompt, good, bad = f"Write '{word}' backwards.", word[::-1], "Sure! Here you go: something else."
        rows.append({"prompt": prompt, "prompt_id": f"{i:064x}", "chosen": turn(prompt, good),
                     "rejected": turn(prompt, bad), "messages": turn(prompt, good),
                     "score_chosen": 10.0, "score_rejected": 1.0 + i % 3})
    return rows


@pytest.mark.parametrize("kind", reward_model.KINDS)
@pytest.mark.parametrize("encoder", ["build", "distilbert"])
def test_each_kind_trains_and_writes_its_outputs(kind, encoder, tiny_model, tiny_distilbert, tmp_path):
    from safetensors.torch import load_file

    write_jsonl(tmp_path / "train.jsonl", _pairs(16))
    write_jsonl(tmp_path / "test.jsonl", _pairs(6, start=100))
    trainer = {"max_steps": 2, "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4,
               "learning_rate": 1e-2, "logging_steps": 1, "seed": 0}
    if kind == "bradley_terry":
        trainer["gradient_checkpointing"] = False  # TRL's default; pointless for a model this small
    folder = tiny_model if encoder == "build" else tiny_distilbert
    cfg = _cfg(trainer, folder, config=TINY_ENCODER if encoder == "build" else None)
    out, metrics, live = tmp_path / "rm", tmp_path / "metrics.json", tmp_path / "live"
    result = reward_model.train(kind, "reward_test", cfg, folder, tmp_path / "train.jsonl",
                                tmp_path / "test.jsonl", out, metrics, live, seed=0, saving=SAVING)

    initial, _ = scoring.build_encoder(cfg, "reward_test", folder, seed=0)
    after = load_file(out / "model.safetensors")
    assert any(not torch.equal(initial.state_dict()[k], after[k]) for k in after)
    assert json.loads(metrics.read_text()) == result
    assert set(result) == {"pairwise_accuracy", "n", "ties"} and result["n"] == 6
    assert 0.0 <= result["pairwise_accuracy"] <= 1.0
    assert (live / "metrics.json").exists() and not (tmp_path / "rm.tmp").exists()
    scores = scoring.score_pairs(out, ["Say hi."], ["hi"])
    assert len(scores) == 1


def test_an_unknown_trainer_field_names_the_parameter(tiny_model, tmp_path):
    from posttrain.errors import UserError

    write_jsonl(tmp_path / "pairs.jsonl", _pairs(4))
    with pytest.raises(UserError, match="reward_test.trainer.no_such_field"):
        reward_model.train("pointwise", "reward_test", _cfg({"no_such_field": 1}, tiny_model), tiny_model,
                           tmp_path / "pairs.jsonl", tmp_path / "pairs.jsonl", tmp_path / "rm",
                           tmp_path / "m.json", None, seed=0, saving=SAVING)


def test_the_encoder_folder_must_be_the_sections_and_exist(tiny_model, tmp_path):
    """`--model` is `<section>.encoder` (DVC tracks that parameter), and a folder that exists: never a hub id."""
    from posttrain.errors import UserError

    write_jsonl(tmp_path / "pairs.jsonl", _pairs(4))
    files = (tmp_path / "pairs.jsonl", tmp_path / "pairs.jsonl", tmp_path / "rm", tmp_path / "m.json", None, 0, SAVING)
    named = rf"--model models/other is not `reward_test.encoder` \({re.escape(str(tiny_model))}\)"
    with pytest.raises(UserError, match=named):
        reward_model.train("pointwise", "reward_test", _cfg({}, tiny_model), Path("models/other"), *files)
    missing = tmp_path / "models" / "distilbert"
    with pytest.raises(UserError, match=rf"^{re.escape(str(missing))}: no such model folder \(from --model\)$"):
        reward_model.train("pointwise", "reward_test", _cfg({}, missing, config=None), missing, *files)
    assert not (tmp_path / "rm").exists()
