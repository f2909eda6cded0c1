"""Instruction metrics: the win rate and per-prompt outcomes on hand-written judged files, coverage errors, BLEU
and perplexity."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

from posttrain import schemas
from posttrain.data_io import read_jsonl, write_jsonl
from posttrain.errors import UserError
from posttrain.evaluation import text_metrics, win_rate

ROOT = Path(__file__).resolve().parent.parent

# Policy: two samples per prompt; reference: one. Per-prompt means 4, 1, 1, 5 against 2, 1, 3, 4.5:
# win, tie, loss, win.
POLICY_REWARDS = {0: [3.0, 5.0], 1: [1.0, 1.0], 2: [0.0, 2.0], 3: [6.0, 4.0]}
REFERENCE_REWARDS = {0: [2.0], 1: [1.0], 2: [3.0], 3: [4.5]}
POLICY_TOKENS = {0: [10, 20], 1: [30, 30], 2: [5, 15], 3: [40, 60]}
REFERENCE_TOKENS = {0: [12], 1: [30], 2: [8], 3: [20]}


def judged(rewards: dict[int, list[float]], judge: str = "checker", model: str | None = None) -> list[dict]:
    return [{"prompt_id": p, "sample": s, "reward": r, "judge": judge, "judge_model": model}
            for p, rs in rewards.items() for s, r in enumerate(rs)]


def generated(tokens: dict[int, list[int]]) -> list[dict]:
    return [{"prompt_id": p, "sample": s, "text": f"answer {p}.{s}", "prompt_tokens": 4, "completion_tokens": t,
             "finish": "stop", "decoding": "instruct", "temperature": 0.0, "model": "m"}
            for p, ts in tokens.items() for s, t in enumerate(ts)]


PATHS = {k: Path(f"{k}.jsonl") for k in ("prompts", "policy_judged", "reference_judged", "policy_generations",
                                         "reference_generations")}


def result(policy=POLICY_REWARDS, reference=REFERENCE_REWARDS, policy_tokens=POLICY_TOKENS,
           reference_tokens=REFERENCE_TOKENS, n_prompts=4, reference_judge=("checker", None)) -> tuple[dict, list]:
    return win_rate.win_rate_result(n_prompts, judged(policy), judged(reference, *reference_judge),
                                    generated(policy_tokens), generated(reference_tokens), PATHS, seed=0, n_boot=200)


def metrics(**change) -> dict:
    return result(**change)[0]


def test_win_rate_on_a_small_example():
    m = metrics()
    assert (m["n"], m["samples_per_prompt"], m["judge"], m["judge_model"]) == (4, 2, "checker", None)
    assert (m["wins"], m["ties"], m["losses"]) == (2, 1, 1)
    assert m["win_rate"] == pytest.approx(2.5 / 4)
    assert m["win_rate_ties_as_losses"] == pytest.approx(2 / 4)
    # sample against reference: 3>2, 5>2 | 1=1, 1=1 | 0<3, 2<3 | 6>4.5, 4<4.5
    assert m["sample_win_rate"] == pytest.approx((1 + 0.5 + 0 + 0.5) / 4)
    assert m["mean_reward"] == pytest.approx((4 + 1 + 1 + 5) / 4)
    assert m["reference_mean_reward"] == pytest.approx((2 + 1 + 3 + 4.5) / 4)
    assert m["mean_length"] == pytest.approx((15 + 30 + 10 + 50) / 4)
    assert m["reference_mean_length"] == pytest.approx((12 + 30 + 8 + 20) / 4)
    assert 0 <= m["win_rate_ci"][0] <= m["win_rate"] <= m["win_rate_ci"][1] <= 1
    assert m["mean_reward_ci"][0] <= m["mean_reward"] <= m["mean_reward_ci"][1]
    assert 0 < m["lc_win_rate"] < 1 and len(m["lc_win_rate_ci"]) == 2
    assert (m["model"], m["reference"]) == ("policy_generations", "reference_generations")
    json.dumps(m)  # plain JSON types only
    assert schemas.check_metrics(m, schemas.WIN_RATE_METRICS, "m") is None
    assert result()[1] == [1.0, 0.5, 0.0, 1.0]  # per prompt, in prompt_id order: win, tie, loss, win


def test_a_policy_judged_against_itself_wins_half():
    m = metrics(policy=REFERENCE_REWARDS, policy_tokens=REFERENCE_TOKENS)
    assert (m["win_rate"], m["win_rate_ties_as_losses"], m["ties"]) == (0.5, 0.0, 4)
    assert m["lc_win_rate"] == pytest.approx(0.5)


@pytest.mark.parametrize("change, message", [
    ({"reference": {0: [2.0], 1: [1.0], 2: [3.0]}}, "reference_judged.jsonl: must score every prompt.*missing 3"),
    ({"policy": {**POLICY_REWARDS, 7: [1.0, 1.0]}, "policy_tokens": {**POLICY_TOKENS, 7: [1, 1]}},
     "policy_judged.jsonl: must score every prompt.*not rows of the prompt file: 7"),
    ({"n_prompts": 5}, "policy_judged.jsonl: must score every prompt.*missing 4"),
    ({"policy_tokens": {**POLICY_TOKENS, 3: [40]}}, "prompt_id 3 sample 1 is only in policy_judged.jsonl"),
    ({"reference_judge": ("nemotron", None)}, r"different judges: \('checker', None\) and \('nemotron', None\)"),
    ({"reference_judge": ("checker", "models/reward_bt")}, "different judges"),
    ({"policy": {**POLICY_REWARDS, 3: [6.0]}, "policy_tokens": {**POLICY_TOKENS, 3: [40]}},
     "different numbers of samples"),
    # issue §3: a reference with unequal samples per prompt was averaged silently
    ({"reference": {**REFERENCE_REWARDS, 2: [3.0, 1.0]}, "reference_tokens": {**REFERENCE_TOKENS, 2: [8, 9]}},
     r"reference_judged.jsonl: prompts have different numbers of samples \(\[1, 2\]\); prompt_id 2 has 2, most have 1"),
])
def test_mismatched_files_are_user_errors(change, message):
    with pytest.raises(UserError, match=message):
        metrics(**change)


def test_a_repeated_sample_is_a_user_error():
    rows = judged(POLICY_REWARDS)
    with pytest.raises(UserError, match=r"policy_judged.jsonl: row 8: prompt_id 0 sample 0 appears twice"):
        win_rate.per_prompt_mean(rows + rows[:1], "reward", PATHS["policy_judged"])


def test_evaluate_reads_the_files(tmp_path):
    files = {"prompts": [{"prompt": f"Prompt {i}"} for i in range(4)], "policy_judged": judged(POLICY_REWARDS),
             "reference_judged": judged(REFERENCE_REWARDS), "policy_generations": generated(POLICY_TOKENS),
             "reference_generations": generated(REFERENCE_TOKENS)}
    for name, rows in files.items():
        write_jsonl(tmp_path / f"{name}.jsonl", rows)
    m, outcomes = win_rate.evaluate(*(tmp_path / f"{name}.jsonl" for name in files), seed=0)
    assert m["win_rate"] == pytest.approx(0.625) and m["reference"] == "reference_generations"
    assert outcomes == [1.0, 0.5, 0.0, 1.0]
    write_jsonl(tmp_path / "policy_generations.jsonl", [{k: v for k, v in row.items() if k != "decoding"}
                                                        for row in files["policy_generations"]])
    with pytest.raises(UserError, match="policy_generations.jsonl: row 0: missing field `decoding`"):
        win_rate.evaluate(*(tmp_path / f"{name}.jsonl" for name in files), seed=0)


def test_bleu_of_identical_text_is_100():
    texts = ["the cat sat on the mat by the door", "a quick brown fox jumps over the lazy dog"]
    assert text_metrics.bleu(texts, texts) == pytest.approx({"bleu_1": 100.0, "bleu_2": 100.0, "bleu_4": 100.0})
    other = text_metrics.bleu(["the cat sat on a mat", "a fox jumps"], texts)
    assert 0 < other["bleu_4"] < other["bleu_2"] < other["bleu_1"] < 100


SMOLTALK_ROWS = [{"messages": [{"role": "user", "content": f"Say hi {i} times."},
                               {"role": "assistant", "content": "hi " * (i + 1)}], "source": "fixture"}
                 for i in range(5)]


def test_text_metrics_on_the_tiny_model(tiny_model, monkeypatch):
    generations = [{"prompt_id": i, "sample": 0, "text": "hi " * (i + 1), "completion_tokens": i + 2}
                   for i in (0, 2, 4)]
    m = text_metrics.text_metrics(SMOLTALK_ROWS, generations, tiny_model, "You are a helpful assistant.",
                                   Path("refs.jsonl"), Path("gens.jsonl"))
    assert (m["n"], m["n_prompts"], m["perplexity_rows"], m["perplexity_truncated"]) == (3, 3, 5, 0)
    assert m["bleu_1"] == pytest.approx(100.0)
    assert math.isfinite(m["perplexity"]) and m["perplexity"] > 1
    # padding must not change the numbers: one row per batch gives the same perplexity
    monkeypatch.setattr(text_metrics, "TOKENS_PER_BATCH", 1)
    prompts = [r["messages"][0]["content"] for r in SMOLTALK_ROWS]
    responses = [r["messages"][1]["content"] for r in SMOLTALK_ROWS]
    alone = text_metrics.perplexity(tiny_model, "You are a helpful assistant.", prompts, responses)
    assert alone["perplexity"] == pytest.approx(m["perplexity"], rel=1e-4)
    assert alone["perplexity_tokens"] == m["perplexity_tokens"]


def test_text_metrics_errors_name_file_and_row(tiny_model):
    with pytest.raises(UserError, match=r"gens.jsonl: row 0: prompt_id 9 is not a row of refs.jsonl"):
        text_metrics.text_metrics(SMOLTALK_ROWS, [{"prompt_id": 9, "sample": 0, "text": "x", "completion_tokens": 1}],
                                   tiny_model, "", Path("refs.jsonl"), Path("gens.jsonl"))
    no_answer = [{"messages": [{"role": "user", "content": "Hi?"}], "source": "fixture"}]
    with pytest.raises(UserError, match=r"refs.jsonl: row 0: .*assistant turn"):
        text_metrics.text_metrics(no_answer, [], tiny_model, "", Path("refs.jsonl"), Path("gens.jsonl"))


def test_answer_stage_answers_both_prompt_sets_then_scores_text_in_one_process(tiny_model, tmp_path, monkeypatch):
    from stages import answer_instruct

    write_jsonl(tmp_path / "refs.jsonl", SMOLTALK_ROWS)
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": "Say hi."}, {"prompt": "Count to two."}])
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(sys, "argv", ["answer_instruct", "--model", str(tiny_model), "--prompts",
                                      str(tmp_path / "prompts.jsonl"), "--out", str(tmp_path / "answers.jsonl"),
                                      "--references", str(tmp_path / "refs.jsonl"), "--limit", "1",
                                      "--reference-answers", str(tmp_path / "gens.jsonl"),
                                      "--text-metrics", str(tmp_path / "text.json")])
    answer_instruct.main()
    answers = read_jsonl(tmp_path / "answers.jsonl")
    assert [(r["prompt_id"], r["decoding"]) for r in answers] == [(0, "instruct"), (1, "instruct")]
    rows = read_jsonl(tmp_path / "gens.jsonl")
    assert [(r["prompt_id"], r["sample"], r["decoding"]) for r in rows] == [(0, 0, "instruct")]  # the generation rows
    m = json.loads((tmp_path / "text.json").read_text())
    assert m["n"] == 1 and m["perplexity"] > 1 and m["model"] == tiny_model.name
    assert m["perplexity_rows"] == len(SMOLTALK_ROWS)  # perplexity reads every reference, BLEU only the answered
