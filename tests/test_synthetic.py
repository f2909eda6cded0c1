"""Synthetic Countdown examples: verified, new puzzles only, the union's size, both formats, a clear shortage error."""

from __future__ import annotations

import json
import sys

import pytest
import yaml

from posttrain.countdown import puzzles
from posttrain.countdown import verifier as countdown
from posttrain.countdown.puzzles import key
from posttrain.data_io import read_jsonl, write_jsonl
from posttrain.errors import UserError
from posttrain.prompts import countdown_prompt, countdown_query_pattern, parse_countdown_query
from stages import synthetic
from tests.conftest import ROOT

TEMPLATE = "Numbers: {nums}\nTarget: {target}\n"
PATTERN = countdown_query_pattern(TEMPLATE)

# 30 distinct solvable puzzles: a + b + c for small a, b.
TASKS = [{"target": a + b + 4, "nums": [a, b, 4]} for a in range(1, 7) for b in range(a + 1, a + 6)]
WARMSTART_TRAIN = [{"query": countdown_prompt(TEMPLATE, t["nums"], t["target"]),
                    "completion": f"<answer>{' + '.join(map(str, t['nums']))}</answer>"} for t in TASKS[:6]]
WARMSTART_TEST = [{"query": countdown_prompt(TEMPLATE, t["nums"][::-1], t["target"]),  # same puzzle, other order
                   "completion": f"<answer>{' + '.join(map(str, t['nums']))}</answer>"} for t in TASKS[6:9]]
EVAL = [{"target": t["target"], "nums": sorted(t["nums"], reverse=True)} for t in TASKS[9:11]]


def puzzle_of(query: str) -> tuple[int, tuple[int, ...]]:
    nums, target = parse_countdown_query(PATTERN, query)
    return target, tuple(sorted(nums))


def run_cli(tmp_path, monkeypatch, n: int, think: bool, tasks: list[dict] = TASKS) -> dict:
    """Run `python -m stages.synthetic` in tmp_path with the default params, `synthetic` and the template replaced."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["countdown"]["prompt_template"] = TEMPLATE
    data["synthetic"] = {"n": n, "think": think}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    for name, rows in [("train", tasks), ("warmstart_train", WARMSTART_TRAIN), ("warmstart_test", WARMSTART_TEST),
                       ("eval", EVAL)]:
        write_jsonl(tmp_path / f"{name}.jsonl", rows)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", [
        "synthetic", "--train", "train.jsonl", "--warmstart", "warmstart_train.jsonl", "warmstart_test.jsonl",
        "--eval", "eval.jsonl", "--out", "out/synthetic.jsonl", "--union", "out/union.jsonl",
        "--summary", "out/summary.json"])
    synthetic.main()
    return json.loads((tmp_path / "out/summary.json").read_text())


def test_rows_are_verified_new_puzzles_and_the_union_adds_them(tmp_path, monkeypatch):
    summary = run_cli(tmp_path, monkeypatch, n=12, think=False)
    rows = read_jsonl(tmp_path / "out/synthetic.jsonl")
    union = read_jsonl(tmp_path / "out/union.jsonl")
    assert len(rows) == 12 and summary["requested"] == summary["written"] == 12
    puzzles = [puzzle_of(r["query"]) for r in rows]
    assert len(set(puzzles)) == 12
    rendered = {countdown_prompt(TEMPLATE, t["nums"], t["target"]) for t in TASKS}
    for row, (target, nums) in zip(rows, puzzles):
        assert row["query"] in rendered
        assert countdown.score(row["completion"], list(nums), target).correct
    forbidden = {puzzle_of(r["query"]) for r in WARMSTART_TRAIN + WARMSTART_TEST} | {key(r) for r in EVAL}
    assert forbidden.isdisjoint(puzzles)
    assert len(union) == len(WARMSTART_TRAIN) + 12 == summary["union"]
    assert sorted(map(json.dumps, union)) == sorted(map(json.dumps, WARMSTART_TRAIN + rows))
    assert union[:len(WARMSTART_TRAIN)] != WARMSTART_TRAIN  # shuffled, not appended
    assert summary["candidates_visited"] == 12 + summary["skipped_in_warmstart"] + summary["skipped_held_out"]


@pytest.mark.parametrize("think", [True, False])
def test_think_switches_the_completion_format(think):
    rows, _ = puzzles.synthesize(TASKS, set(), set(), 5, think, TEMPLATE, seed=0)
    for row in rows:
        assert row["completion"].startswith("<think>") == think
        assert row["completion"].endswith("</answer>")
        if think:
            steps = row["completion"].split("<think>")[1].split("</think>")[0]
            assert steps.count("=") == 2  # three numbers, two steps
            assert "</think>\n<answer>" in row["completion"]


def test_sample_is_seeded():
    first, _ = puzzles.synthesize(TASKS, set(), set(), 8, False, TEMPLATE, seed=1)
    again, _ = puzzles.synthesize(TASKS, set(), set(), 8, False, TEMPLATE, seed=1)
    other, _ = puzzles.synthesize(TASKS, set(), set(), 8, False, TEMPLATE, seed=2)
    assert first == again and first != other


def test_duplicates_unsolvable_and_oversized_puzzles_are_skipped_and_counted():
    tasks = [*TASKS[:3], {"target": 7, "nums": [4, 3]}, {"target": 7, "nums": [3, 4]},  # one puzzle twice
             {"target": 97, "nums": [1, 1, 1]}, {"target": 5, "nums": [1, 1, 1, 1, 1]}]
    # Four can be written; asking for five visits every task, and the error gives every count.
    with pytest.raises(UserError, match=r"only 4 of the 7 training tasks .*skipped duplicate 1, skipped too many "
                                        r"numbers 1, skipped unsolvable 1\)"):
        puzzles.synthesize(tasks, set(), set(), 5, False, TEMPLATE, seed=0)
    rows, summary = puzzles.synthesize(tasks, set(), set(), 4, False, TEMPLATE, seed=0)
    assert len(rows) == 4 == summary["written"] and (7, (3, 4)) in {puzzle_of(r["query"]) for r in rows}


def test_more_than_the_training_tasks_can_give_is_a_clear_error(tmp_path, monkeypatch):
    # 30 tasks, 9 in a warmstart file, 2 held out: 19 can be written.
    with pytest.raises(UserError, match=r"synthetic.n=20: only 19 of the 30 training tasks.*in warmstart 9"):
        run_cli(tmp_path, monkeypatch, n=20, think=True)
    assert not (tmp_path / "out").exists()
    run_cli(tmp_path, monkeypatch, n=19, think=True)


def test_warmstart_query_off_the_template_names_file_and_row(tmp_path):
    rows = [WARMSTART_TRAIN[0], {"query": "Use 1, 2, 3 to make 6", "completion": "<answer>1 + 2 + 3</answer>"}]
    with pytest.raises(UserError, match=r"ws.jsonl: row 1: field `query` does not follow"):
        puzzles.warmstart_puzzles(rows, TEMPLATE, "ws.jsonl")
