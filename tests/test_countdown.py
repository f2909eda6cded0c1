"""Table-driven tests of the Countdown verifier and solver, and of its metrics (pass@k, best-of-k, per-puzzle
outcomes) and the score_countdown stage (offline, CPU-only, well under 10 s)."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import shutil
import sys
import time
from math import comb
from pathlib import Path

import pytest

from posttrain import schemas
from posttrain.countdown.solver import Solution, make_puzzle, reachable_targets, solve
from posttrain.countdown.verifier import MAX_ANSWER_CHARS, Score, score
from posttrain.data_io import read_jsonl, write_jsonl
from posttrain.errors import UserError
from posttrain.evaluation import countdown as metrics
from stages import score_countdown
from tests.conftest import ROOT


def tagged(equation: str) -> str:
    return f"<think>working it out</think> <answer>{equation}</answer>"


# (completion, nums, target, reason); reward follows from the reason.
CASES = [
    # correct, with various parenthesizations and spacing
    (tagged("(12 + 5) * 2"), [12, 5, 2], 34, "correct"),
    (tagged("2 * (5 + 12)"), [12, 5, 2], 34, "correct"),
    (tagged("((12 + 5)) * (2)"), [12, 5, 2], 34, "correct"),
    (tagged("12*2+5*2"), [12, 2, 5, 2], 34, "correct"),
    (tagged("100 - 4 * 5 - 1"), [100, 4, 5, 1], 79, "correct"),
    (tagged("100 - (4 * 5 - 1)"), [100, 4, 5, 1], 81, "correct"),
    (tagged("8 / (3 - 8 / 3)"), [8, 3, 8, 3], 24, "correct"),  # exact rational intermediate
    (tagged("0 + 7"), [0, 7], 7, "correct"),  # a lone 0 is not a leading zero
    (tagged("  (12 + 5) * 2 \n"), [12, 5, 2], 34, "correct"),
    (tagged("(12\t+ 5)\n* 2"), [12, 5, 2], 34, "correct"),  # tabs and newlines count as spaces
    # the tag can sit anywhere; the last complete pair wins
    ("<answer>(12 + 5) * 2</answer> and that is all", [12, 5, 2], 34, "correct"),
    ("Answer below.\n<answer>(12 + 5) * 2</answer>\nDone, I hope.", [12, 5, 2], 34, "correct"),
    ("<answer>12 + 5 + 2</answer> no wait <answer>(12 + 5) * 2</answer>", [12, 5, 2], 34, "correct"),
    ("<answer>(12 + 5) * 2</answer> no wait <answer>12 + 5 + 2</answer>", [12, 5, 2], 34, "wrong_value"),
    ("<answer>junk <answer>(12 + 5) * 2</answer>", [12, 5, 2], 34, "correct"),
    ("<answer>(12 + 5) * 2</answer> then <answer>unclosed", [12, 5, 2], 34, "correct"),
    # no answer tag
    ("(12 + 5) * 2", [12, 5, 2], 34, "no_answer_tag"),
    ("<answer>(12 + 5) * 2", [12, 5, 2], 34, "no_answer_tag"),
    ("(12 + 5) * 2</answer>", [12, 5, 2], 34, "no_answer_tag"),
    ("<ANSWER>(12 + 5) * 2</ANSWER>", [12, 5, 2], 34, "no_answer_tag"),
    ("", [12, 5, 2], 34, "no_answer_tag"),
    # wrong or invalid
    (tagged("12 + 5 * 2"), [12, 5, 2], 34, "wrong_value"),
    (tagged(""), [12, 5, 2], 34, "empty_answer"),
    (tagged("   "), [12, 5, 2], 34, "empty_answer"),
    (tagged("(12 + 5) * 2 = 34"), [12, 5, 2], 34, "bad_character"),
    # flaws of the usual scorer (reference.md section 3)
    (tagged("9 ** 9 ** 9"), [9, 9, 9], 1, "syntax"),
    (tagged("1.5 * 4"), [1, 5, 4], 6, "bad_character"),
    (tagged("12 // 5 * 2"), [12, 5, 2], 4, "syntax"),
    (tagged("50 + 1 / 99 / 99 / 99"), [50, 1, 99, 99, 99], 50, "wrong_value"),
    # exploits
    (tagged("-3 + 5"), [3, 5], 2, "syntax"),
    (tagged("+3 + 5"), [3, 5], 8, "syntax"),
    (tagged("5 + -3"), [3, 5], 2, "syntax"),
    (tagged("03 + 5"), [3, 5], 8, "leading_zero"),
    (tagged("5 + 00"), [0, 5], 5, "leading_zero"),
    (tagged("12 + 12 + 5"), [12, 5, 2], 29, "numbers_mismatch"),  # reused
    (tagged("12 * 2"), [12, 5, 2], 24, "numbers_mismatch"),  # missing
    (tagged("12 + 5 * 2 + 1"), [12, 5, 2], 23, "numbers_mismatch"),  # extra
    (tagged("125 * 2"), [12, 5, 2], 250, "numbers_mismatch"),  # fused digits
    (tagged("12 / (5 - 5)"), [12, 5, 5], 0, "division_by_zero"),
    (tagged("(5 - 5) / (5 - 5)"), [5, 5, 5, 5], 1, "division_by_zero"),
    (tagged("12 / (5 - 5) * 0"), [12, 5, 5, 0], 0, "division_by_zero"),
    (tagged("12 / (5 - 5) +"), [12, 5, 5], 0, "syntax"),  # a syntax error beats arithmetic
    (tagged("\u0661\u0662 + 5 * 2"), [12, 5, 2], 22, "bad_character"),  # Arabic-Indic digits
    (tagged("\uff11\uff12 + 5 * 2"), [12, 5, 2], 22, "bad_character"),  # fullwidth digits
    (tagged("12\u00a0+ 5 * 2"), [12, 5, 2], 22, "bad_character"),  # non-breaking space
    (tagged("__import__('os')"), [12, 5, 2], 34, "bad_character"),
    (tagged("twelve + 5 * 2"), [12, 5, 2], 22, "bad_character"),
    (tagged("1e1 + 5"), [10, 5], 15, "bad_character"),
    (tagged("1_0 + 5"), [10, 5], 15, "bad_character"),
    (tagged("12 5 2"), [12, 5, 2], 34, "syntax"),
    (tagged("2(12 + 5)"), [12, 5, 2], 34, "syntax"),
    (tagged("(12 + 5) * 2)"), [12, 5, 2], 34, "syntax"),
    (tagged("((12 + 5) * 2"), [12, 5, 2], 34, "syntax"),
    (tagged("()"), [12, 5, 2], 34, "syntax"),
    (tagged("12 + 5 *"), [12, 5, 2], 34, "syntax"),
    (tagged("(" * 60 + "1" + ")" * 60), [1], 1, "correct"),  # nesting is never refused, only length
    (tagged("(" * 50 + "(12 + 5) * 2" + ")" * 50), [12, 5, 2], 34, "correct"),  # the redundant parens
    (tagged("(" * 4990 + "1" + ")" * 4990), [1], 1, "correct"),
    (tagged("(" * 4990 + "1 + 1" + ")" * 4990), [1], 1, "numbers_mismatch"),
    (tagged("1" + " " * MAX_ANSWER_CHARS + "+ 1"), [1, 1], 2, "too_long"),
]


@pytest.mark.parametrize(("completion", "nums", "target", "reason"), CASES)
def test_score_table(completion: str, nums: list[int], target: int, reason: str) -> None:
    result = score(completion, nums, target)
    assert result.reason == reason
    assert result.correct is (reason == "correct")
    expected_reward = {"correct": 1.0, "no_answer_tag": 0.0}.get(reason, 0.1)
    assert result.reward == expected_reward
    assert (result.answer is None) is (reason == "no_answer_tag")


def test_answer_is_stripped_text() -> None:
    assert score("<answer>\n (12 + 5) * 2 \n</answer>", [12, 5, 2], 34).answer == "(12 + 5) * 2"


def test_nums_order_and_type_do_not_matter() -> None:
    assert score(tagged("(12 + 5) * 2"), (2, 12, 5), 34).correct


def test_near_miss_is_exactly_wrong() -> None:
    # The usual scorer's 1e-5 float tolerance accepted this; exact arithmetic does not.
    nums = [50, 1, 99, 99, 99]
    assert score(tagged("50 + 1 / 99 / 99 / 99"), nums, 50).reward == 0.1
    assert score(tagged("50 * 1 + (99 - 99) * 99"), nums, 50).correct


# Adversarial inputs, each of which must be scored in a few ms.
ADVERSARIAL = [
    "<answer>" * 100_000,
    "<answer>" * 100_000 + "1</answer>",
    "</answer>" * 100_000,
    "<answer>" + "9" * 1_000_000 + "</answer>",
    "<answer>" + "(" * 10_000 + "1" + ")" * 10_000 + "</answer>",
    "<answer>" + "(" * 100 + "1" + ")" * 100 + "</answer>",
    "<answer>" + "9 ** 9 ** 9" + "</answer>",
    "<answer>" + "9*" * 99 + "9</answer>",
    "x" * 1_000_000,
]


@pytest.mark.parametrize("completion", ADVERSARIAL, ids=lambda c: repr(c[:20]) + f"..{len(c)}")
def test_adversarial_inputs_are_fast(completion: str) -> None:
    start = time.perf_counter()
    result = score(completion, [9, 9, 9], 1)
    assert time.perf_counter() - start < 0.05
    assert not result.correct


def test_score_is_frozen() -> None:
    result = score(tagged("(12 + 5) * 2"), [12, 5, 2], 34)
    assert isinstance(result, Score)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.reward = 0.0  # type: ignore[misc]


def test_score_is_deterministic_silent_and_leaves_global_random_alone(capsys) -> None:
    random.seed(1234)
    before = random.getstate()
    completions = [tagged("(12 + 5) * 2"), tagged("12 + 5 + 2"), "nothing"] * 100
    first = [score(c, [12, 5, 2], 34) for c in completions]
    second = [score(c, [12, 5, 2], 34) for c in completions]
    assert first == second
    assert random.getstate() == before
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


# ---- solver and generator ----


@pytest.mark.parametrize(
    ("nums", "target", "expression", "steps"),
    [
        ([12, 5, 2], 34, "(12 + 5) * 2", ("12 + 5 = 17", "17 * 2 = 34")),
        ([3, 3, 8, 8], 24, "8 / (3 - 8 / 3)", ("8 / 3 = 8/3", "3 - (8/3) = 1/3", "8 / (1/3) = 24")),
    ],
)
def test_solve_known(nums: list[int], target: int, expression: str, steps: tuple[str, ...]) -> None:
    assert solve(nums, target) == Solution(expression, steps)


@pytest.mark.parametrize(
    ("nums", "target"), [([1, 1, 1], 100), ([1, 1], 3), ([2, 3, 5, 7], 10_000), ([1, 1, 1, 1], 5)]
)
def test_solve_returns_none_when_unsolvable(nums: list[int], target: int) -> None:
    assert solve(nums, target) is None
    assert target not in reachable_targets(nums)


def test_solve_prefers_natural_intermediates() -> None:
    # 6 = 4 * 3 / 2 with natural steps, though (3 / 2) * 4 is found too in the rational search.
    solution = solve([3, 2, 4], 6)
    assert solution is not None
    assert all("/" not in step.split("=")[1] and "-" not in step.split("=")[1] for step in solution.steps)


@pytest.mark.parametrize("num_count", [3, 4])
def test_generated_puzzles_are_solved_and_verified(num_count: int) -> None:
    rng = random.Random(num_count)
    for _ in range(60):
        nums, target = make_puzzle(rng, num_count, 1, 99, 1, 100)
        assert len(nums) == num_count and all(1 <= n <= 99 for n in nums) and 1 <= target <= 100
        solution = solve(nums, target)
        assert solution is not None
        assert len(solution.steps) == num_count - 1
        assert score(f"<answer>{solution.expression}</answer>", nums, target).correct


def test_make_puzzle_is_seeded() -> None:
    first = [make_puzzle(random.Random(7), 4, 1, 50, 10, 200) for _ in range(3)]
    second = [make_puzzle(random.Random(7), 4, 1, 50, 10, 200) for _ in range(3)]
    assert first == second


def test_solve_is_fast_and_deterministic() -> None:
    start = time.perf_counter()
    answers = [solve([97, 89, 83, 79], 1) for _ in range(3)]
    assert (time.perf_counter() - start) / 3 < 0.05
    assert answers[0] == answers[1] == answers[2]


@pytest.mark.parametrize(
    "args",
    [
        (1, 1, 10, 1, 10),  # one number
        (5, 1, 10, 1, 10),  # beyond the exhaustive search's reach
        (3, 10, 1, 1, 10),  # low > high
        (3, 0, 10, 1, 10),  # numbers must be positive
        (3, 1, 10, 20, 10),  # target_low > target_high
        (2, 1, 1, 1000, 2000),  # 1 and 1 reach nothing that large
    ],
)
def test_make_puzzle_rejects_impossible_parameters(args: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        make_puzzle(random.Random(0), *args)


# ---------------------------------------------------------------- metrics: pass@k, best-of-k, outcomes
@pytest.mark.parametrize("n, c, k", [(8, 0, 1), (8, 8, 8), (8, 3, 1), (8, 3, 4), (10, 1, 10), (5, 2, 3)])
def test_pass_at_k_matches_enumeration(n, c, k):
    outcomes = [1] * c + [0] * (n - c)
    subsets = list(itertools.combinations(outcomes, k))
    assert metrics.pass_at_k(n, c, k) == pytest.approx(sum(max(s) for s in subsets) / len(subsets))


def test_expected_best_of_k_matches_enumeration():
    rng = random.Random(0)
    for _ in range(20):
        rewards = [rng.choice([0.0, 0.1, 1.0]) for _ in range(rng.randint(1, 8))]
        for k in range(1, len(rewards) + 1):
            subsets = list(itertools.combinations(rewards, k))
            expected = sum(max(s) for s in subsets) / comb(len(rewards), k)
            assert metrics.expected_best_of_k(rewards, k) == pytest.approx(expected)


KNOWN_TASKS = [{"target": 6, "nums": [1, 2, 3]}, {"target": 5, "nums": [2, 3]}]
KNOWN_GREEDY = [{"prompt_id": 0, "sample": 0, "decoding": "greedy", "completion_tokens": 5,
                 "text": "<answer>1 + 2 + 3</answer>"},
                {"prompt_id": 1, "sample": 0, "decoding": "greedy", "completion_tokens": 3, "text": "no idea"}]
KNOWN_POOL = [{"prompt_id": i, "sample": s, "decoding": "sweep", "completion_tokens": 4, "text": text,
               "temperature": 1.0}
              for i, texts in enumerate([["<answer>1 * 2 * 3</answer>", "<answer>3 + 3</answer>"],
                                         ["<answer>2 * 3</answer>", "<answer>2 + 3</answer>"]])
              for s, text in enumerate(texts)]


def test_score_metrics_from_known_completions():
    where = Path("x.jsonl")
    greedy = metrics.score_rows(KNOWN_TASKS, KNOWN_GREEDY, where)
    m = {**metrics.greedy_metrics(greedy),
         **metrics.pool_metrics(metrics.score_rows(KNOWN_TASKS, KNOWN_POOL, where), [1, 2], len(KNOWN_TASKS))}
    assert m["accuracy"] == 0.5 and m["score"] == 0.5 and m["format_rate"] == 0.5 and m["n"] == 2
    assert m["pass_at_1"] == 0.5 and m["pass_at_2"] == 1.0
    assert m["best_of_2_score"] == 1.0 and m["best_of_1_score"] == pytest.approx((0.55 + 0.55) / 2)
    assert metrics.greedy_outcomes(list(reversed(greedy))) == [{"prompt_id": 0, "value": 1.0},
                                                               {"prompt_id": 1, "value": 0.0}]


def _score_stage(tmp_path: Path, monkeypatch, *args: str) -> None:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    rest = {"prompt_tokens": 4, "finish": "stop", "model": "m"}
    write_jsonl(tmp_path / "tasks.jsonl", KNOWN_TASKS)
    write_jsonl(tmp_path / "greedy.jsonl", [{**r, **rest, "temperature": 0.0} for r in KNOWN_GREEDY])
    monkeypatch.setattr(sys, "argv", ["score_countdown", "--tasks", "tasks.jsonl", "--greedy", "greedy.jsonl",
                                      "--scores", "scores.jsonl", "--metrics", "m.json", *args])
    score_countdown.main()


def test_the_stage_writes_scores_metrics_and_outcomes(tmp_path, monkeypatch):
    _score_stage(tmp_path, monkeypatch, "--outcomes", "outcomes.jsonl")
    assert [r["correct"] for r in read_jsonl(tmp_path / "scores.jsonl", schemas.COUNTDOWN_SCORE)] == [True, False]
    assert read_jsonl(tmp_path / "outcomes.jsonl", schemas.OUTCOME) == [{"prompt_id": 0, "value": 1.0},
                                                                          {"prompt_id": 1, "value": 0.0}]
    result = json.loads((tmp_path / "m.json").read_text())
    assert schemas.check_metrics(result, schemas.COUNTDOWN_METRICS, "m.json") is None and result["accuracy"] == 0.5


def test_the_stage_needs_outcomes_with_greedy(tmp_path, monkeypatch):
    with pytest.raises(UserError, match="--greedy needs --outcomes"):
        _score_stage(tmp_path, monkeypatch)


def _greedy_file(tmp_path: Path, rows: list[dict]) -> None:
    rest = {"prompt_tokens": 4, "finish": "stop", "model": "m", "decoding": "greedy", "completion_tokens": 5,
            "temperature": 0.0}
    write_jsonl(tmp_path / "greedy.jsonl", [{**rest, **r} for r in rows])


def test_the_stage_refuses_a_greedy_file_with_puzzles_missing_or_repeated(tmp_path, monkeypatch):
    """Issue §3: 2 of 10 puzzles dropped and a correct one repeated twice more scored 0.500 (truth 0.300)."""
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    tasks = [{"target": 6, "nums": [1, 2, 3]}] * 10
    write_jsonl(tmp_path / "tasks.jsonl", tasks)
    right, wrong = "<answer>1 + 2 + 3</answer>", "<answer>1 + 2 * 3</answer>"
    full = [{"prompt_id": i, "sample": 0, "text": right if i < 3 else wrong} for i in range(10)]
    argv = ["score_countdown", "--tasks", "tasks.jsonl", "--greedy", "greedy.jsonl", "--scores", "s.jsonl",
            "--metrics", "m.json", "--outcomes", "o.jsonl"]
    monkeypatch.setattr(sys, "argv", argv)
    _greedy_file(tmp_path, [r for r in full if r["prompt_id"] not in (4, 7)] + [full[0], full[0]])
    with pytest.raises(UserError, match=r"greedy.jsonl: row 8: prompt_id 0 sample 0 appears twice"):
        score_countdown.main()
    _greedy_file(tmp_path, [r for r in full if r["prompt_id"] not in (4, 7)])
    with pytest.raises(UserError, match=r"greedy.jsonl: covers 8 of the 10 puzzles.*prompt_id 4 is the first missing"):
        score_countdown.main()
    _greedy_file(tmp_path, full + [{**full[1], "sample": 1}])
    with pytest.raises(UserError, match=r"greedy decoding gives one row per puzzle; prompt_id 1 has 2"):
        score_countdown.main()
    assert not (tmp_path / "m.json").exists()
    _greedy_file(tmp_path, full)
    score_countdown.main()
    assert json.loads((tmp_path / "m.json").read_text())["accuracy"] == pytest.approx(0.3)


def test_a_sample_pool_with_a_repeated_row_is_refused():
    pool = [{"prompt_id": 0, "sample": 0}, {"prompt_id": 0, "sample": 1}, {"prompt_id": 0, "sample": 1}]
    with pytest.raises(UserError, match=r"pool.jsonl: row 2: prompt_id 0 sample 1 appears twice"):
        metrics.check_coverage(pool, 1, Path("pool.jsonl"), one_per_puzzle=False)
