"""Distillation data: seeded prompt sample, teacher answers filtered by the verifier, bad rows named;
pulling a model folder (local copy, cache when offline, unreachable hub)."""

from __future__ import annotations

import json
import sys
import time
import types

import pytest
import yaml

from pipeline import params
from posttrain import hub
from posttrain.countdown import verifier as countdown
from posttrain.data_io import read_jsonl, write_jsonl
from posttrain.errors import UserError
from posttrain.prompts import countdown_prompt
from stages import distill, pull_model
from tests.conftest import ROOT

TEMPLATE = "Numbers: {nums}\nTarget: {target}\n"
TASKS = [{"target": a + b + 4, "nums": [a, b, 4]} for a in range(1, 7) for b in range(a + 1, a + 6)]
PROMPTS = [{"target": 9, "nums": [2, 3, 4]}, {"target": 24, "nums": [2, 3, 4]}, {"target": 10, "nums": [5, 2, 1]}]


def gen(prompt_id: int, text: str, sample: int = 0) -> dict:
    """A row as stages.generate writes it."""
    return {"prompt_id": prompt_id, "sample": sample, "text": text, "prompt_tokens": 9, "completion_tokens": 12,
            "finish": "stop", "n": 1, "temperature": 0.7, "top_p": 0.8, "max_new_tokens": 64, "decoding": "teacher",
            "backend": "transformers", "model": "teacher"}


GENERATIONS = [
    gen(0, "<think>2 + 3 = 5, 5 + 4 = 9</think>\n<answer>2 + 3 + 4</answer>\n\n"),  # right, trailing whitespace
    gen(1, "<answer>2 + 3 + 4</answer>"),  # wrong value
    gen(2, "The answer is 5 * 2 * 1"),  # no answer tag
    gen(2, "<answer>5 * 2 * 1</answer>", sample=1),  # right
]


def run_cli(tmp_path, monkeypatch, argv: list[str], prompts: int = 10, verified_only: bool = True) -> None:
    """Run `python -m stages.distill ...` in tmp_path with the default params, `distill` and the template replaced."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["countdown"]["prompt_template"] = TEMPLATE
    data["distill"].update(prompts=prompts, verified_only=verified_only)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["distill", *argv])
    distill.main()


def test_prompts_are_a_seeded_sample_of_the_training_tasks(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "train.jsonl", TASKS)
    run_cli(tmp_path, monkeypatch, ["prompts", "--train", "train.jsonl", "--out", "d/prompts.jsonl"])
    rows = read_jsonl(tmp_path / "d/prompts.jsonl")
    assert len(rows) == 10 and all(r in TASKS for r in rows) and len({json.dumps(r) for r in rows}) == 10
    assert rows == distill.sample_prompts(TASKS, 10, seed=0)
    assert rows != distill.sample_prompts(TASKS, 10, seed=1)
    with pytest.raises(UserError, match=r"distill.prompts=31 .* 30 training tasks"):
        distill.sample_prompts(TASKS, 31, seed=0)


def test_collect_keeps_only_verified_answers(tmp_path, monkeypatch):
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    write_jsonl(tmp_path / "gens.jsonl", GENERATIONS)
    run_cli(tmp_path, monkeypatch, ["collect", "--prompts", "prompts.jsonl", "--generations", "gens.jsonl",
                                    "--out", "d/teacher.jsonl", "--summary", "m/distill_teacher.json"])
    rows = read_jsonl(tmp_path / "d/teacher.jsonl")
    summary = json.loads((tmp_path / "m/distill_teacher.json").read_text())
    assert rows == [
        {"query": countdown_prompt(TEMPLATE, [2, 3, 4], 9),
         "completion": "<think>2 + 3 = 5, 5 + 4 = 9</think>\n<answer>2 + 3 + 4</answer>"},
        {"query": "Numbers: [5, 2, 1]\nTarget: 10\n", "completion": "<answer>5 * 2 * 1</answer>"},
    ]
    for row, task in zip(rows, [PROMPTS[0], PROMPTS[2]]):
        assert countdown.score(row["completion"], task["nums"], task["target"]).correct
    assert summary == {"prompts": 3, "teacher_answers": 4, "verified": 2, "kept": 2, "accuracy": 0.5,
                       "format_rate": 0.75}


def test_collect_without_the_filter_keeps_every_answer():
    rows, summary = distill.collect(PROMPTS, GENERATIONS, TEMPLATE, verified_only=False, where="g")
    assert [r["completion"] for r in rows] == [g["text"].rstrip() for g in GENERATIONS]
    assert summary["kept"] == 4 and summary["verified"] == 2


def test_collect_with_no_verified_answer_is_an_error():
    wrong = [gen(0, "<answer>2 * 3 * 4</answer>"), gen(1, "no idea"), gen(2, "<answer>5 + 2 + 1</answer>")]
    with pytest.raises(UserError, match=r"g.jsonl: none of the 3 teacher answers is kept \(distill.verified_only=True"):
        distill.collect(PROMPTS, wrong, TEMPLATE, verified_only=True, where="g.jsonl")


@pytest.mark.parametrize("bad, message", [
    ({"prompt_id": 1, "sample": 0}, r"row 1: missing field `text`"),
    ({**gen(1, "x"), "prompt_id": "1"}, r"row 1: field `prompt_id` has a bad value"),
    ({**gen(1, "x"), "text": None}, r"row 1: field `text` has a bad value"),
    (gen(7, "x"), r"row 1: field `prompt_id` is 7, but the prompt file has 3 rows"),
    (gen(0, "x"), r"row 1: field `sample`: prompt 0 sample 0 appears twice"),
])
def test_bad_generation_rows_name_file_row_and_field(tmp_path, monkeypatch, bad, message):
    write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    write_jsonl(tmp_path / "gens.jsonl", [GENERATIONS[0], bad, *GENERATIONS[1:]])
    with pytest.raises(UserError, match=r"gens.jsonl: " + message):
        run_cli(tmp_path, monkeypatch, ["collect", "--prompts", "prompts.jsonl", "--generations", "gens.jsonl",
                                        "--out", "d/t.jsonl", "--summary", "m/t.json"])
    assert not (tmp_path / "d").exists()


def test_generations_of_other_prompts_are_refused():
    with pytest.raises(UserError, match=r"g: 1 of the 3 prompts have no answer"):
        distill.collect(PROMPTS, GENERATIONS[:2], TEMPLATE, verified_only=True, where="g")


def model_folder(path, extra: bool = True):
    """A folder in the hub's layout: the files a model needs, and some it does not."""
    path.mkdir(parents=True)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json"):
        (path / name).write_text("{}")
    (path / "model-00001-of-00002.safetensors").write_bytes(b"\0" * 16)
    (path / "model-00002-of-00002.safetensors").write_bytes(b"\1" * 16)
    if extra:
        (path / "README.md").write_text("card")
        (path / "pytorch_model.bin").write_bytes(b"\0")
        (path / ".cache").mkdir()
        (path / ".cache" / "x.lock").write_text("")
    return path


KEPT = ["config.json", "generation_config.json", "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors", "tokenizer.json", "tokenizer_config.json"]


def test_pull_model_copies_a_local_folder_whole_and_only_the_model_files(tmp_path, monkeypatch):
    source = model_folder(tmp_path / "download")
    out = tmp_path / "models" / "hub" / "teacher"
    out.mkdir(parents=True)
    (out / "stale.safetensors").write_text("old")
    hub_models = {"teacher": params.HubModel(id=str(source), revision=None)}
    monkeypatch.setattr(params, "load", lambda: types.SimpleNamespace(hub_models=hub_models))
    monkeypatch.setattr(sys, "argv", ["pull_model", "--name", "teacher", "--out", str(out)])
    pull_model.main()
    assert sorted(p.name for p in out.iterdir()) == sorted([*KEPT, "source.json"])
    assert (out / "model-00002-of-00002.safetensors").read_bytes() == b"\1" * 16
    assert [p.name for p in out.parent.iterdir()] == ["teacher"]  # no temporary folder left


def test_pull_model_without_weights_fails_and_keeps_the_old_folder(tmp_path):
    source = model_folder(tmp_path / "download")
    for weights in [*source.glob("*.safetensors"), *source.glob("*.bin")]:
        weights.unlink()
    out = tmp_path / "hub" / "teacher"
    model_folder(out, extra=False)
    with pytest.raises(UserError, match=r"`hub_models.teacher`=.*no weights"):
        hub.pull(str(source), out, "hub_models.teacher")
    assert sorted(p.name for p in out.iterdir()) == KEPT
    assert [p.name for p in out.parent.iterdir()] == ["teacher"]


def test_pull_model_offline_reads_the_hub_cache(tmp_path, monkeypatch):
    import huggingface_hub.constants

    commit = "a" * 40
    repo = tmp_path / "cache" / "models--Org--Teacher"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    model_folder(repo / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "hub" / "teacher"
    assert hub.pull("Org/Teacher", out, "hub_models.teacher") == KEPT
    with pytest.raises(UserError, match=r"`hub_models.other`='Org/Missing': cannot download the model"):
        hub.pull("Org/Missing", tmp_path / "hub" / "other", "hub_models.other")
    assert [p.name for p in out.parent.iterdir()] == ["teacher"]


def test_pull_model_from_an_unreachable_hub_fails_at_once_naming_the_id(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"Qwen/Qwen2.5-3B-Instruct.*-S hub_models.qwen_3b=DIR"):
        hub.pull("Qwen/Qwen2.5-3B-Instruct", tmp_path / "hub" / "qwen_3b", "hub_models.qwen_3b")
    assert time.perf_counter() - start < 10
    assert list((tmp_path / "hub").iterdir()) == []


def test_pull_model_copy_of_a_saved_model_loads_with_transformers(tiny_model, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "hub" / "tiny"
    names = hub.pull(str(tiny_model), out, "hub_models.tiny")
    assert set(names) == {p.name for p in tiny_model.iterdir() if p.is_file()}  # save_pretrained writes nothing extra
    tokenizer = AutoTokenizer.from_pretrained(out)
    model = AutoModelForCausalLM.from_pretrained(out)
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).endswith("<|im_end|>\n")
    assert model.num_parameters() == AutoModelForCausalLM.from_pretrained(tiny_model).num_parameters()
