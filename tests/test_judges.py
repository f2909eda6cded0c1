"""Judges: the reward parser and input cut, the API judge against a scripted local server (retries, cache,
in-flight bound, the key kept secret, a killed run resumed), the checker and local reward-model judges."""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from posttrain import judges
from posttrain.data_io import read_jsonl, write_jsonl
from posttrain.errors import UserError
from posttrain.judges import api
from stages import judges as stage
from tests import fake_openai_server as fake
from tests.conftest import ROOT
from tests.fake_openai_server import FakeRewardServer, expected_reward

SECRET = "nvapi-TEST-SECRET-7f3a9c"
MODEL = "nvidia/llama-3.1-nemotron-70b-reward"
# Small waits, so the whole file runs in seconds; the defaults are for the real API.
FAST = {"timeout": 0.5, "backoff": 0.01, "max_backoff": 0.05, "progress": False}


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(judges.KEY_VARIABLE, SECRET)


def _api(server: FakeRewardServer, cache: Path | None, **settings) -> judges.ApiJudge:
    return judges.make_judge("nemotron", model=MODEL, base_url=server.base_url, cache=cache, **{**FAST, **settings})


def _pairs(n: int) -> tuple[list[str], list[str]]:
    return [f"Prompt {i}: write a haiku about the number {i}." for i in range(n)], [f"Answer {i}" * (1 + i % 3)
                                                                                    for i in range(n)]


def _generation(prompt_id: int, sample: int, text: str, completion_tokens: int = 3) -> dict:
    """A `schemas.GENERATION` row, as stages.generate writes it."""
    return {"prompt_id": prompt_id, "sample": sample, "text": text, "prompt_tokens": 7,
            "completion_tokens": completion_tokens, "finish": "stop", "decoding": "instruct", "temperature": 0.0,
            "model": "policy"}


def _assert_secret_nowhere(folder: Path, *texts: str) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
    for text in texts:
        assert SECRET not in text


def _cached(cache: Path) -> int:
    if not cache.exists():
        return 0
    with sqlite3.connect(cache, timeout=10) as db:
        try:
            return db.execute("SELECT COUNT(*) FROM rewards").fetchone()[0]
        except sqlite3.OperationalError:  # the table is not made yet
            return 0


# --- parsing, cutting, waiting ------------------------------------------------------------------------------

def _reply(content=None, logprobs=None) -> dict:
    return {"choices": [{"message": {"role": "assistant", "content": content}, "logprobs": logprobs}]}


@pytest.mark.parametrize("body, expected", [
    (_reply("reward:-18.73"), -18.73),
    (_reply("reward: 3"), 3.0),
    (_reply("reward:1.5e-2"), 0.015),
    (_reply("reward:-18.73", {"content": [{"token": "reward", "logprob": -18.75}]}), -18.75),  # logprobs first
    (_reply("no number", {"content": [{"token": "reward:-2.5", "logprob": -0.01}]}), -2.5),
    (_reply("reward:4", {"content": [{"token": "other", "logprob": -1.0}]}), 4.0),  # logprobs without a reward
    (_reply("reward:4", {"content": None}), 4.0),
    (_reply("I cannot rate this."), None),
    (_reply(None), None),
    (_reply("reward:nan"), None),
    (_reply("reward", {"content": [{"token": "reward", "logprob": True}]}), None),
    (_reply("reward", {"content": [{"token": "reward", "logprob": float("inf")}]}), None),
    ({"choices": []}, None),
    ({"error": "busy"}, None),
    ([], None),
    ("reward:3", None),
])
def test_parse_reward(body, expected):
    assert judges.parse_reward(body) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize("prompt_len, response_len, limit, kept_prompt, kept_response", [
    (100, 50, 200, 100, 50),  # fits: unchanged
    (1000, 50, 200, 150, 50),  # the response fits beside a quarter of the budget: whole
    (30, 1000, 200, 30, 170),  # a short prompt is kept whole, the response cut at its end
    (1000, 1000, 200, 50, 150),  # both long: the prompt keeps its quarter
])
def test_fit_to_limit_keeps_the_response_and_cuts_the_prompt_in_the_middle(prompt_len, response_len, limit,
                                                                         kept_prompt, kept_response):
    prompt = "S" + "p" * (prompt_len - 2) + "E"
    response = "R" + "r" * (response_len - 1)
    p, r = judges.fit_to_limit(prompt, response, limit)
    assert (len(p), len(r)) == (kept_prompt, kept_response)
    assert p[0] == "S" and p[-1] == "E"  # the instruction's start and the question's end survive
    assert r == response[:kept_response]
    if kept_prompt < prompt_len:
        assert "[...]" in p


def test_retry_delay_doubles_with_jitter_and_honours_retry_after():
    import random

    rng = random.Random(0)
    for attempt in range(8):
        cap = min(0.1 * 2 ** attempt, 2.0)
        assert cap / 2 <= judges.retry_delay(attempt, None, 0.1, 2.0, 30.0, rng) < cap
    assert judges.retry_delay(0, 7.0, 0.1, 2.0, 30.0, rng) == 7.0
    assert judges.retry_delay(0, 600.0, 0.1, 2.0, 30.0, rng) == 30.0  # a server asking for too long is capped
    assert api.parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert api.parse_retry_after({"retry-after": "3"}) == 3.0
    assert 0 < api.parse_retry_after({"retry-after": time.strftime("%a, %d %b %Y %H:%M:%S GMT",
                                                                 time.gmtime(time.time() + 60))}) <= 61
    assert api.parse_retry_after({}) is None


# --- the API judge against a scripted server ------------------------------------------------------------------

SCRIPTS = {  # what the server answers a pair on its first, second, ... request
    0: [fake.RATE_LIMITED, fake.LOGPROBS],
    1: [fake.RATE_LIMITED_AFTER, fake.CONTENT],
    2: [fake.SERVER_ERROR, fake.UNAVAILABLE, fake.LOGPROBS_TOKEN],
    3: [fake.SLOW, fake.LOGPROBS],
    4: [fake.BAD_JSON, fake.CONTENT],
    5: [fake.NO_REWARD, fake.LOGPROBS],
}


def test_every_score_is_right_and_bought_once_through_every_failure(tmp_path, caplog):
    prompts, responses = _pairs(12)
    index = {(p, r): i for i, (p, r) in enumerate(zip(prompts, responses))}

    def script(pair, attempt):
        steps = SCRIPTS.get(index[pair], [fake.LOGPROBS])
        return steps[min(attempt, len(steps) - 1)]

    caplog.set_level(logging.DEBUG)
    cache = tmp_path / "cache.sqlite"
    with FakeRewardServer(script, delay_s=0.05, slow_s=1.0, retry_after="1") as server:
        judge = _api(server, cache, concurrency=3)
        # a duplicate pair is requested once
        rewards = judge.score(prompts + prompts[:2], responses + responses[:2])
        assert rewards == pytest.approx([expected_reward(p, r) for p, r in zip(prompts + prompts[:2],
                                                                                responses + responses[:2])])
        assert set(server.paid.values()) == {1} and len(server.paid) == 12
        assert {index[pair]: n for pair, n in server.requests.items() if n > 1} == {
            0: 2, 1: 2, 2: 3, 3: 2, 4: 2, 5: 2}
        assert server.max_in_flight <= 3
        first, second = [t for t, pair, _ in server.log if index[pair] == 1]
        assert second - first >= 0.95  # Retry-After: 1, though the backoff is 10 ms
        assert server.authorization == {f"Bearer {SECRET}"} and server.models == {MODEL}
        before = server.total
        assert judges.make_judge("nemotron", model=MODEL, base_url=server.base_url, cache=cache,
                                 **FAST).score(prompts, responses) == pytest.approx(rewards[:12])
        assert server.total == before  # all from the cache
    assert _cached(cache) == 12
    _assert_secret_nowhere(tmp_path, caplog.text)


def test_requests_in_flight_never_exceed_the_bound(tmp_path):
    prompts, responses = _pairs(20)
    with FakeRewardServer(delay_s=0.1) as server:
        _api(server, None, concurrency=4).score(prompts, responses)
        assert server.max_in_flight == 4  # bounded, and the bound is used


def test_failed_pairs_stop_the_run_and_a_rerun_pays_only_for_them(tmp_path):
    prompts, responses = _pairs(8)
    bad = {(prompts[2], responses[2]): fake.NO_REWARD, (prompts[5], responses[5]): fake.SERVER_ERROR}
    cache = tmp_path / "cache.sqlite"
    with FakeRewardServer(lambda pair, attempt: bad.get(pair, fake.LOGPROBS)) as server:
        with pytest.raises(judges.JudgeFailed) as failed:
            _api(server, cache, max_retries=2, malformed_retries=1).score(prompts, responses)
        assert server.requests[prompts[2], responses[2]] == 2  # 1 + malformed_retries
        assert server.requests[prompts[5], responses[5]] == 3  # 1 + max_retries
    message = str(failed.value)
    assert "2 of 8" in message and "1 malformed reply" in message and "1 HTTP 500" in message
    assert "rerun requests only the failed ones" in message
    assert _cached(cache) == 6
    with FakeRewardServer() as server:
        rewards = _api(server, cache).score(prompts, responses)
        assert set(server.requests) == set(bad)
    assert rewards == pytest.approx([expected_reward(p, r) for p, r in zip(prompts, responses)])


def test_an_input_over_the_limit_is_cut_and_shrunk_when_the_api_refuses_it(tmp_path):
    prompt = "Summarize: " + "word " * 3000 + "What is the gist?"
    with FakeRewardServer(max_chars=1000) as server:
        # (1000 - 64) tokens * 1 character a token = 936 characters, within what this server takes
        judge = _api(server, None, input_tokens=1000, chars_per_token=1.0)
        [reward] = judge.score([prompt], ["A short answer."])
        [(sent_prompt, sent_response)] = server.paid
    assert len(sent_prompt) + len(sent_response) <= 1000 and sent_response == "A short answer."
    assert sent_prompt.startswith("Summarize:") and sent_prompt.endswith("What is the gist?")
    assert reward == expected_reward(sent_prompt, sent_response)
    assert sum(server.requests.values()) == 1  # no shrinking needed
    with FakeRewardServer(max_chars=300) as server:  # a tighter API than the rule assumed: halved until it fits
        _api(server, None, input_tokens=1000, chars_per_token=1.0).score([prompt], ["A short answer."])
        assert sum(server.requests.values()) == 3 and len(server.paid) == 1


def test_a_refused_key_stops_at_once_and_the_key_is_never_shown(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    prompts, responses = _pairs(30)
    with FakeRewardServer(lambda pair, attempt: fake.UNAUTHORIZED, delay_s=0.02) as server:
        with pytest.raises(UserError) as refused:
            _api(server, tmp_path / "cache.sqlite", concurrency=2).score(prompts, responses)
        assert server.total < 10  # not 30 refused requests
    assert "401" in str(refused.value) and judges.KEY_VARIABLE in str(refused.value)
    _assert_secret_nowhere(tmp_path, str(refused.value), caplog.text, repr(refused.value))


def test_a_missing_key_names_the_variable(monkeypatch):
    monkeypatch.delenv(judges.KEY_VARIABLE)
    with pytest.raises(UserError, match=judges.KEY_VARIABLE):
        judges.make_judge("nemotron", model=MODEL, base_url="http://127.0.0.1:9/v1")


def _write_rows(args: tuple[str, int]) -> str | None:
    """A writer process: opens the cache and puts 10 rewards from `offset`; the error it met, if any."""
    path, offset = args
    try:
        cache = judges.RewardCache(path)
        for i in range(offset, offset + 10):
            cache.put(judges.RewardCache.key("j", "m", f"p{i}", "r"), "j", "m", float(i))
        cache.close()
    except Exception as err:  # noqa: BLE001 - reported to the test, which fails on it
        return f"{type(err).__name__}: {err}"
    return None


def test_the_cache_takes_concurrent_writers(tmp_path):
    """Writers that open a new cache file at the same moment: SQLite refuses one of them at once ("database is
    locked": turning the file to WAL does not wait) unless the cache tries again: 3 of 60 such starts failed."""
    import multiprocessing

    keys = [judges.RewardCache.key("j", "m", f"p{i}", "r") for i in range(35)]
    with multiprocessing.get_context("fork").Pool(6) as pool:
        for trial in range(60):
            path = str(tmp_path / f"cache{trial}.sqlite")
            errors = [e for e in pool.map(_write_rows, [(path, k * 5) for k in range(6)]) if e]  # overlapping keys
            assert not errors, errors
            cache = judges.RewardCache(path)
            assert cache.get(keys) == {key: float(i) for i, key in enumerate(keys)}
            cache.close()


# --- the stage ---------------------------------------------------------------------------------------------

def _stage_files(tmp_path: Path, n_prompts: int, n_samples: int) -> tuple[Path, Path, list[str], list[str]]:
    prompts, responses = _pairs(n_prompts * n_samples)
    prompts = prompts[:n_prompts]
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p, "prompt_id": f"{i:064x}"} for i, p in enumerate(prompts)])
    rows = [_generation(i, s, responses[i * n_samples + s]) for i in range(n_prompts) for s in range(n_samples)]
    write_jsonl(tmp_path / "gen.jsonl", rows)
    return tmp_path / "prompts.jsonl", tmp_path / "gen.jsonl", prompts, [r["text"] for r in rows]


def _cli(server: FakeRewardServer, prompts: Path, gens: Path, out: Path, cache: Path) -> list[str]:
    return [sys.executable, "-m", "stages.judges", "--judge", "nemotron", "--model", MODEL, "--base-url",
            server.base_url, "--cache", str(cache), "--prompts", str(prompts), "--generations", str(gens),
            "--out", str(out), "--concurrency", "2", "--timeout", "5", "--backoff", "0.01"]


def test_a_killed_run_resumes_from_its_cache(tmp_path):
    prompts_file, gens, prompts, texts = _stage_files(tmp_path, 4, 3)
    pairs = [(prompts[i // 3], texts[i]) for i in range(12)]
    out, cache = tmp_path / "judged" / "nemotron" / "x.jsonl", tmp_path / "cache" / "judges.sqlite"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with FakeRewardServer(hold_after=5) as server, open(tmp_path / "run1.log", "w") as log:
        run = subprocess.Popen(_cli(server, prompts_file, gens, out, cache), cwd=ROOT, env=env, stdout=log,
                               stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while not (_cached(cache) == 5 and server.in_flight == 2) and time.monotonic() < deadline:
            assert run.poll() is None, (tmp_path / "run1.log").read_text()
            time.sleep(0.05)
        run.send_signal(signal.SIGKILL)
        run.wait()
        first_paid = set(server.paid)
    assert _cached(cache) == 5 and len(first_paid) == 5 and not out.exists()
    with FakeRewardServer() as server:
        done = subprocess.run(_cli(server, prompts_file, gens, out, cache), cwd=ROOT, env=env, capture_output=True,
                              text=True, timeout=60, check=False)
        assert done.returncode == 0, done.stderr
        assert set(server.requests) == set(pairs) - first_paid and set(server.requests.values()) == {1}
    rows = read_jsonl(out)
    assert [(r["prompt_id"], r["sample"]) for r in rows] == [(i, s) for i in range(4) for s in range(3)]
    assert [r["reward"] for r in rows] == pytest.approx([expected_reward(*pair) for pair in pairs])
    assert {r["judge"] for r in rows} == {"nemotron"} and {r["judge_model"] for r in rows} == {MODEL}
    _assert_secret_nowhere(tmp_path, done.stdout, done.stderr)


def test_the_stage_scores_with_the_checker(tmp_path, monkeypatch, capsys):
    import random

    from posttrain.instruct.tasks import make_task, reference_response

    rng = random.Random(0)
    tasks = [make_task(rng) for _ in range(5)]
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": t.prompt} for t in tasks])
    write_jsonl(tmp_path / "gen.jsonl", [_generation(i, s, reference_response(t.prompt) if s == 0 else "no idea")
                                         for i, t in enumerate(tasks) for s in range(2)])
    monkeypatch.setattr(sys, "argv", ["judges", "--judge", "checker", "--prompts", str(tmp_path / "prompts.jsonl"),
                                      "--generations", str(tmp_path / "gen.jsonl"), "--out", str(tmp_path / "o.jsonl")])
    stage.main()
    rows = read_jsonl(tmp_path / "o.jsonl")
    assert [r["reward"] for r in rows] == [10.0, 1.0] * 5
    assert rows[0] == {"prompt_id": 0, "sample": 0, "reward": 10.0, "judge": "checker", "judge_model": None}
    with pytest.raises(UserError, match="matches no instruction task family"):
        judges.make_judge("checker").score(["Tell me a story."], ["Once upon a time."])


def test_the_stage_takes_its_judge_from_params(tmp_path, monkeypatch):
    import yaml

    from tests.conftest import ROOT

    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["evaluation"]["judges"] = {"grader": {"kind": "checker"}, "rm": {"kind": "reward_model"},
                                    "odd": {"kind": "oracle"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    monkeypatch.chdir(tmp_path)
    import random

    from posttrain.instruct.tasks import make_task

    write_jsonl(tmp_path / "p.jsonl", [{"prompt": make_task(random.Random(0)).prompt}])
    write_jsonl(tmp_path / "g.jsonl", [_generation(0, 0, "hi")])
    files = ["--prompts", "p.jsonl", "--generations", "g.jsonl", "--out", "o.jsonl"]
    monkeypatch.setattr(sys, "argv", ["judges", "--from-params", "grader", *files])
    stage.main()
    assert read_jsonl(tmp_path / "o.jsonl")[0]["judge"] == "checker"
    for name, message in [("rm", "list it in `evaluation.reward_judges`"), ("odd", "evaluation.judges.odd.kind"),
                          ("missing", "no judge `evaluation.judges.missing`")]:
        monkeypatch.setattr(sys, "argv", ["judges", "--from-params", name, *files])
        with pytest.raises(UserError, match=message):
            stage.main()


@pytest.mark.parametrize("argv, message", [
    (["--judge", "nemotron"], "needs --model, --base-url and --cache"),
    (["--judge", "checker", "--model", "m"], "takes no setting model"),
    (["--judge", "reward_model"], "needs --model"),
])
def test_the_stage_refuses_incomplete_settings(tmp_path, monkeypatch, argv, message):
    write_jsonl(tmp_path / "p.jsonl", [{"prompt": "x"}])
    write_jsonl(tmp_path / "g.jsonl", [_generation(1, 0, "y")])
    monkeypatch.setattr(sys, "argv", ["judges", *argv, "--prompts", str(tmp_path / "p.jsonl"),
                                      "--generations", str(tmp_path / "g.jsonl"), "--out", str(tmp_path / "o")])
    with pytest.raises(UserError, match=message):
        stage.main()
    with pytest.raises(UserError, match="prompt_id 1 is not a row"):
        judges.judge_generations(judges.make_judge("checker"), [{"prompt": "x"}], read_jsonl(tmp_path / "g.jsonl"))
    with pytest.raises(UserError, match="unknown judge"):
        judges.make_judge("gpt4")


# --- local reward models ---------------------------------------------------------------------------------------

PROMPTS = ["Say hi.", "Write 'cat' backwards.", "x " * 300, "Say hi."]
RESPONSES = ["hi", "tac", "a long answer " * 100, "Hello there! hi"]


def test_reward_model_judge_reads_the_pipelines_qwen2_reward_model(tiny_model, tmp_path):
    import torch
    from transformers import AutoConfig, AutoTokenizer, Qwen2ForSequenceClassification

    from posttrain.training.reward_model import score_pairs

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    config = AutoConfig.from_pretrained(tiny_model, num_labels=1, pad_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    Qwen2ForSequenceClassification(config).save_pretrained(tmp_path / "rm")
    tokenizer.save_pretrained(tmp_path / "rm")
    judge = judges.make_judge("reward_model", model=str(tmp_path / "rm"), batch_size=2)
    assert judge.max_length == 256  # the model's positions; the tokenizer sets no lower limit
    rewards = judge.score(PROMPTS, RESPONSES)  # the long pair is cut, not an error
    assert rewards == pytest.approx(score_pairs(tmp_path / "rm", PROMPTS, RESPONSES, batch_size=4), abs=1e-5)
    assert len(set(rewards)) == len(rewards)
    assert judges.make_judge("reward_model", model=str(tmp_path / "rm"), max_length=16).max_length == 16


def test_reward_model_judge_reads_an_off_the_shelf_text_pair_classifier(tmp_path):
    """A tiny stand-in for OpenAssistant/reward-model-deberta-v3-large: DeBERTa-v2 with one output, a
    tokenizer without a chat template, so (prompt, response) goes in as a text pair."""
    import torch
    from transformers import BertTokenizer, DebertaV2Config, DebertaV2ForSequenceClassification

    words = sorted({w.strip(".'?") for text in PROMPTS + RESPONSES for w in text.lower().split()} | {".", "'"})
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    tokenizer = BertTokenizer(vocab={w: i for i, w in enumerate(vocab)})
    torch.manual_seed(0)
    model = DebertaV2ForSequenceClassification(DebertaV2Config(
        vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=64, relative_attention=True, position_biased_input=False, type_vocab_size=0,
        pos_att_type=["p2c", "c2p"], num_labels=1, pad_token_id=0))
    model.save_pretrained(tmp_path / "deberta")
    tokenizer.save_pretrained(tmp_path / "deberta")
    judge = judges.make_judge("reward_model", model=str(tmp_path / "deberta"))
    assert judge._tokenizer.chat_template is None and judge.max_length == 64
    rewards = judge.score(PROMPTS, RESPONSES)
    assert len(rewards) == 4 and len(set(rewards)) == 4  # the prompt counts: pairs 0 and 3 differ
    assert judge.score(PROMPTS[:1], RESPONSES[:1]) == pytest.approx(rewards[:1], abs=1e-5)


def test_judge_stage_writes_the_win_rate_and_the_per_prompt_outcomes(tmp_path, monkeypatch):
    """`--win-rate-out`: the policy's win rate in the judging process, as `posttrain.evaluation.win_rate.evaluate`
    gives it, and `--outcomes-out`: the per-prompt outcomes it averages, as the report pairs them (each prompt's
    mean reward against the reference's, `stats.outcomes`)."""
    import random
    import shutil

    from pipeline import params
    from posttrain import schemas
    from posttrain.evaluation import stats, win_rate
    from posttrain.instruct.tasks import make_task, reference_response

    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    tasks = [make_task(random.Random(i)) for i in range(6)]
    write_jsonl("p.jsonl", [{"prompt": t.prompt} for t in tasks])
    write_jsonl("ref.jsonl", [_generation(i, 0, "no idea", 2) for i in range(6)])
    write_jsonl("pol.jsonl", [_generation(i, 0, reference_response(t.prompt) if i % 2 else "no idea", 5)
                              for i, t in enumerate(tasks)])
    win_args = ["--reference-judged", "ref_j.jsonl", "--reference-generations", "ref.jsonl",
                "--win-rate-out", "win.json", "--outcomes-out", "outcomes/checker-pol.jsonl"]
    for argv in (["--generations", "ref.jsonl", "--out", "ref_j.jsonl"],
                 ["--generations", "pol.jsonl", "--out", "pol_j.jsonl", *win_args]):
        monkeypatch.setattr(sys, "argv", ["judges", "--judge", "checker", "--prompts", "p.jsonl", *argv])
        stage.main()
    read_jsonl("pol_j.jsonl", schemas.JUDGED)
    metrics, outcomes = win_rate.evaluate(Path("p.jsonl"), Path("pol_j.jsonl"), Path("ref_j.jsonl"),
                                          Path("pol.jsonl"), Path("ref.jsonl"), seed=params.load().seed)
    written = json.loads(Path("win.json").read_text())
    assert written == json.loads(json.dumps(metrics))
    assert schemas.check_metrics(written, schemas.WIN_RATE_METRICS, "win.json") is None
    assert written["win_rate"] > 0.5
    rows = read_jsonl("outcomes/checker-pol.jsonl", schemas.OUTCOME)
    assert rows == [{"prompt_id": i, "value": o} for i, o in enumerate(outcomes)]
    assert [r["value"] for r in rows] == [0.5, 1.0] * 3  # the odd prompts answered right, the even ones tied
    assert sum(r["value"] for r in rows) / len(rows) == written["win_rate"]
    policy = win_rate.per_prompt_mean(read_jsonl("pol_j.jsonl", schemas.JUDGED), "reward", Path("pol_j.jsonl"))
    reference = win_rate.per_prompt_mean(read_jsonl("ref_j.jsonl", schemas.JUDGED), "reward", Path("ref_j.jsonl"))
    ids = sorted(policy.keys() & reference.keys())
    assert [r["value"] for r in rows] == stats.outcomes([policy[i] for i in ids], [reference[i] for i in ids]).tolist()
    for dropped in ("--outcomes-out", "--win-rate-out"):
        argv = [a for k, a in zip([None, *win_args], win_args) if dropped not in (k, a)]
        monkeypatch.setattr(sys, "argv", ["judges", "--judge", "checker", "--prompts", "p.jsonl", "--generations",
                                          "pol.jsonl", "--out", "x.jsonl", *argv])
        with pytest.raises(UserError, match="go together"):
            stage.main()
