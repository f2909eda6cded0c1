"""Data stages: loaders over hub-schema fixtures, schema errors, generators, and train/eval disjointness."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest

from pipeline import params
from posttrain.countdown import verifier as countdown
from posttrain.countdown.puzzles import key
from posttrain.data_io import load_rows, read_jsonl, write_jsonl
from posttrain.errors import UserError
from posttrain.prompts import countdown_prompt
from posttrain.schemas import COUNTDOWN_TASK, ULTRAFEEDBACK, WARMSTART
from stages import prepare_countdown, prepare_instruct
from tests.conftest import TINYZERO

GENERATOR = params.CountdownGenerator(num_count=[3, 4], low=1, high=20, target_low=1, target_high=100, think=True)


def countdown_cfg(**changes) -> params.Countdown:
    base = params.Countdown(
        prompt_template="Numbers: {nums}\nTarget: {target}\n", tasks_source="generator", tasks_revision=None,
        tasks_split="train", train_rows=[0, 300], eval_rows=[300, 400], n_eval=60, warmstart_source="generator",
        warmstart_revision=None, warmstart_train=200, warmstart_test=40, generator=GENERATOR)
    return dataclasses.replace(base, **changes)


def test_generated_countdown_is_solvable_verified_and_disjoint():
    files, summary = prepare_countdown.prepare(countdown_cfg(), seed=0)
    assert len(files["eval"]) == 60 and summary["tasks_eval"] == 60
    eval_keys = {key(r) for r in files["eval"]}
    assert eval_keys.isdisjoint(key(r) for r in files["train"])
    assert {len(r["nums"]) for r in files["train"]} == {3, 4}
    for name in ("warmstart_train", "warmstart_test"):
        for row in files[name]:
            nums = json.loads(row["query"].split("Numbers: ")[1].split("\n")[0])
            target = int(row["query"].split("Target: ")[1])
            assert (target, tuple(sorted(nums))) not in eval_keys
            assert row["completion"].startswith("<think>")
            assert countdown.score(row["completion"], nums, target).correct
    assert set(map(json.dumps, files["warmstart_train"])).isdisjoint(map(json.dumps, files["warmstart_test"]))


def test_generator_is_seeded():
    first, _ = prepare_countdown.prepare(countdown_cfg(), seed=3)
    again, _ = prepare_countdown.prepare(countdown_cfg(), seed=3)
    other, _ = prepare_countdown.prepare(countdown_cfg(), seed=4)
    assert first == again and first["eval"] != other["eval"]


def test_exhausted_puzzle_space_fails_fast_with_the_parameter():
    tiny = dataclasses.replace(GENERATOR, num_count=[3, 3], low=1, high=3, target_high=10)
    start = time.perf_counter()
    with pytest.raises(UserError, match="countdown.generator"):
        prepare_countdown.prepare(countdown_cfg(generator=tiny), seed=0)
    assert time.perf_counter() - start < 60


def test_hub_layout_countdown_and_warmstart(countdown_hub, warmstart_hub):
    """The paper path over local copies in the hub's layout: row ranges, verifier filter, re-rendered queries."""
    cfg = countdown_cfg(prompt_template=TINYZERO, tasks_source=str(countdown_hub), train_rows=[0, 200],
                        eval_rows=[200, 280], n_eval=50, warmstart_source=str(warmstart_hub),
                        warmstart_train=None, warmstart_test=None)
    files, summary = prepare_countdown.prepare(cfg, seed=0)
    eval_keys = {key(r) for r in files["eval"]}
    assert len(files["eval"]) == 50
    assert eval_keys.isdisjoint(key(r) for r in files["train"])
    assert summary["warmstart_train_dropped_wrong"] == 10  # every fourth fixture completion is wrong
    assert summary["warmstart_train"] + summary["warmstart_train_dropped_held_out"] == 30
    assert summary["warmstart_test"] + summary["warmstart_test_dropped_held_out"] == 10
    assert all(r["query"].startswith("A conversation between User and Assistant.") for r in files["warmstart_train"])


def test_training_rows_equal_to_a_held_out_puzzle_are_dropped(tmp_path, warmstart_hub):
    rows = [{"target": 6, "nums": [1, 2, 3]}, {"target": 6, "nums": [3, 2, 1]}, {"target": 7, "nums": [1, 2, 4]},
            {"target": 6, "nums": [2, 1, 3]}]
    path = tmp_path / "tasks.jsonl"
    write_jsonl(path, rows)
    cfg = countdown_cfg(prompt_template=TINYZERO, tasks_source=str(path), train_rows=[0, 3], eval_rows=[3, 4],
                        n_eval=1, warmstart_source=str(warmstart_hub), warmstart_train=None, warmstart_test=None)
    files, summary = prepare_countdown.prepare(cfg, seed=0)
    assert files["train"] == [{"target": 7, "nums": [1, 2, 4]}]
    assert summary["tasks_train_dropped_held_out"] == 2


def test_overlapping_row_ranges_are_refused():
    with pytest.raises(UserError, match="overlap"):
        prepare_countdown.prepare(countdown_cfg(train_rows=[0, 300], eval_rows=[250, 400]), seed=0)


@pytest.mark.parametrize("row, field", [
    ({"target": 5}, "nums"),
    ({"target": "5", "nums": [1, 4]}, "target"),
    ({"target": 5, "nums": [1, "4"]}, "nums"),
    ({"target": 5, "nums": []}, "nums"),
    ({"target": True, "nums": [1, 4]}, "target"),
])
def test_bad_row_names_file_row_and_field(tmp_path, row, field):
    path = tmp_path / "tasks.jsonl"
    write_jsonl(path, [{"target": 5, "nums": [1, 4]}, row])
    with pytest.raises(UserError, match=rf"tasks.jsonl: row 1: .*`{field}`"):
        read_jsonl(path, COUNTDOWN_TASK)
    with pytest.raises(UserError, match=rf"tasks.jsonl: row 1: .*`{field}`"):
        load_rows(str(path), "train", COUNTDOWN_TASK, "countdown.tasks_source")


def test_bad_parquet_row_in_hub_layout(tmp_path):
    from tests.conftest import write_hub_split

    write_hub_split(tmp_path / "ws", "train", [{"query": "q", "completion": "c"}, {"query": "q", "completion": None}])
    with pytest.raises(UserError, match=r"\[train\]: row 1: field `completion`"):
        load_rows(str(tmp_path / "ws"), "train", WARMSTART, "countdown.warmstart_source")


def test_invalid_json_line_is_named(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"query": "a", "completion": "b"}\n{"query": \n')
    with pytest.raises(UserError, match="x.jsonl: row 1: not valid JSON"):
        read_jsonl(path, WARMSTART)


def test_unreachable_hub_fails_at_once_naming_the_dataset(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    start = time.perf_counter()
    with pytest.raises(UserError, match=r"Jiayi-Pan/Countdown-Tasks-3to4.*-S countdown.tasks_source=DIR"):
        load_rows("Jiayi-Pan/Countdown-Tasks-3to4", "train", COUNTDOWN_TASK, "countdown.tasks_source")
    assert time.perf_counter() - start < 10


def instruct_cfg(**changes) -> params.Instruct:
    base = params.Instruct(smoltalk_source="generator", smoltalk_revision=None, ultrafeedback_source="generator",
                           ultrafeedback_revision=None, system_prompt="S",
                           sft_train=300, sft_test=50, prefs_train=200, prefs_test=50, gen_train=100, gen_test=30,
                           sft_noise=0.25, sft_verbose=0.5)
    return dataclasses.replace(base, **changes)


def test_generated_instruct_data_is_disjoint_and_in_schema():
    files, summary = prepare_instruct.prepare(instruct_cfg(), seed=0)
    assert {k: len(v) for k, v in files.items()} == {"sft_train": 300, "sft_test": 50, "prefs_train": 200,
                                                    "prefs_test": 50, "gen_train": 100, "gen_test": 30}
    test = {prepare_instruct.user_prompt(n, r) for n in prepare_instruct.TEST for r in files[n]}
    train = {prepare_instruct.user_prompt(n, r) for n in prepare_instruct.TRAIN for r in files[n]}
    assert test.isdisjoint(train)
    assert all(set(r) == set(ULTRAFEEDBACK) for r in files["prefs_train"])
    assert all(r["score_chosen"] > r["score_rejected"] for r in files["prefs_train"])


def test_hub_layout_instruct_first_turn_and_disjoint(instruct_hub):
    smol, uf = instruct_hub
    cfg = instruct_cfg(smoltalk_source=str(smol), ultrafeedback_source=str(uf), sft_train=1000, sft_test=1000,
                       prefs_train=1000, prefs_test=1000, gen_train=1000, gen_test=1000)
    files, summary = prepare_instruct.prepare(cfg, seed=0)
    assert all([m["role"] for m in r["messages"]] == ["user", "assistant"] for r in files["sft_train"])
    assert summary["sft_train_dropped_held_out"] == 5  # fixture questions 25..29 are also in the test split
    assert len(files["sft_train"]) == 25 and len(files["prefs_test"]) == 20


def test_mixing_generator_and_hub_is_refused(instruct_hub):
    smol, _ = instruct_hub
    with pytest.raises(UserError, match="both or neither"):
        prepare_instruct.prepare(instruct_cfg(smoltalk_source=str(smol)), seed=0)


def test_countdown_prompt_renders_nums_as_a_python_list():
    assert countdown_prompt(TINYZERO, [44, 19, 35], 98).count("Using the numbers [44, 19, 35], create an equation "
                                                               "that equals 98.") == 1
