"""The API judge across runs: experiments share the workspace's cache, and a dead endpoint stops the run.

Against the scripted server in tests/fake_openai_server.py: a second "workspace" (DVC's temporary clone
for `dvc exp run --temp` and `--queue`) pays for nothing already cached; a server that never answers or
always says 503 stops the run within `stall_timeout` (plus one request's `timeout`), not after every
pair's retries; a slow but live one is not stopped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from posttrain.judges import ApiJudge, JudgeFailed
from tests import fake_openai_server as fake
from tests.conftest import copy_repo
from tests.fake_openai_server import FakeRewardServer, expected_reward

PAIRS = [(f"Question {i}?", f"Answer number {i}.") for i in range(16)]


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("NVIDIA_API_KEY", "test-key")


def judge(server: FakeRewardServer, cache: str | Path | None = "cache/judges.sqlite", **settings) -> ApiJudge:
    return ApiJudge("fake/reward", server.base_url, cache=cache, progress=False, **settings)


def score(j: ApiJudge, pairs=PAIRS) -> list[float]:
    return j.score([p for p, _ in pairs], [r for _, r in pairs])


def test_a_temporary_clone_uses_the_main_workspaces_cache(api_key, tmp_path, monkeypatch):
    """DVC sets DVC_ROOT to the main workspace for every stage, a temp or queued experiment's included."""
    workspace, clone = tmp_path / "workspace", tmp_path / "workspace" / ".dvc" / "tmp" / "exps" / "tmpabc"
    clone.mkdir(parents=True)
    monkeypatch.setenv("DVC_ROOT", str(workspace))
    with FakeRewardServer() as server:
        monkeypatch.chdir(workspace)
        assert score(judge(server)) == [expected_reward(*p) for p in PAIRS]
        assert server.total == len(PAIRS)
        monkeypatch.chdir(clone)
        assert score(judge(server)) == [expected_reward(*p) for p in PAIRS]
        assert server.total == len(PAIRS)  # nothing bought twice
    assert (workspace / "cache" / "judges.sqlite").exists() and not (clone / "cache").exists()


def test_outside_dvc_a_relative_cache_is_the_working_directorys(api_key, tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_ROOT", raising=False)
    monkeypatch.chdir(tmp_path)
    with FakeRewardServer() as server:
        score(judge(server), PAIRS[:2])
    assert (tmp_path / "cache" / "judges.sqlite").exists()


JUDGE_STAGE = """\
import json, os
os.environ["NVIDIA_API_KEY"] = "test-key"
from posttrain.judges import ApiJudge
pairs = {pairs!r}
judge = ApiJudge("fake/reward", {url!r}, cache="cache/judges.sqlite", progress=False)
json.dump({{"rewards": judge.score([p for p, _ in pairs], [r for _, r in pairs])}}, open("scores.json", "w"))
"""


@pytest.mark.slow
def test_no_dvc_exp_run_form_pays_twice(tmp_path):
    """The workspace run buys every score; `--temp`, `--queue` and a forced rerun buy none again."""
    def run(*cmd: str) -> None:
        env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
        env.pop("DVC_ROOT", None)
        result = subprocess.run(cmd, cwd=dest, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"{' '.join(cmd)}:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"

    with FakeRewardServer() as server:
        dest = copy_repo(tmp_path / "repo")
        (dest / "dvc.lock").unlink(missing_ok=True)
        (dest / "judge.py").write_text(JUDGE_STAGE.format(pairs=PAIRS[:6], url=server.base_url))
        (dest / "dvc.yaml").write_text("stages:\n  judge:\n    cmd: python judge.py\n    deps: [judge.py]\n"
                                       "    metrics:\n    - scores.json: {cache: false}\n")
        with open(dest / ".gitignore", "a") as f:
            f.write("\n/cache/\n")
        run("git", "init", "-q")
        run("git", "add", "-A")
        run("git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "judge")
        run("dvc", "exp", "run")
        assert server.total == 6 and (dest / "cache" / "judges.sqlite").exists()
        run("dvc", "exp", "run", "--temp", "-f")
        run("dvc", "exp", "run", "--queue", "-f")
        run("dvc", "exp", "run", "--run-all")
        run("dvc", "exp", "run", "-f")
        assert server.total == 6, f"bought again: {server.total - 6} requests"
    assert json.loads((dest / "scores.json").read_text())["rewards"] == [expected_reward(*p) for p in PAIRS[:6]]


# --- the circuit breaker ---------------------------------------------------------------------------------

# Without the breaker, each pair would retry 8 times (0.5 s timeouts or 503s, waits up to 2 s): ~15 s a pair,
# 4 rounds of 4 pairs, about a minute; with it, the run stops after `stall_timeout` (+ one `timeout`).
RETRYING = dict(concurrency=4, timeout=0.5, max_retries=8, backoff=0.5, max_backoff=2.0, stall_timeout=1.5)


@pytest.mark.parametrize("server_kwargs, cause", [
    (dict(hold_after=0), "timeout"),  # accepts the connection, never answers
    (dict(script=lambda pair, attempt: fake.UNAVAILABLE), "HTTP 503"),
])
def test_a_dead_endpoint_stops_the_run_in_bounded_time(api_key, tmp_path, server_kwargs, cause):
    with FakeRewardServer(**server_kwargs) as server:
        start = time.monotonic()
        with pytest.raises(JudgeFailed) as err:
            score(judge(server, tmp_path / "judges.sqlite", **RETRYING))
        elapsed = time.monotonic() - start
    assert elapsed < RETRYING["stall_timeout"] + RETRYING["timeout"] + 1.5, elapsed
    message = str(err.value)
    assert "\n" not in message and "no reward from" in message and "0 of 16 pairs scored" in message
    assert cause in message and "stall_timeout" in message


def test_a_slow_but_live_endpoint_is_not_stopped(api_key, tmp_path):
    """The breaker counts the time since the last reward, not the run's length (here longer than it)."""
    with FakeRewardServer(delay_s=0.4) as server:
        start = time.monotonic()
        rewards = score(judge(server, tmp_path / "judges.sqlite", **RETRYING))
        assert time.monotonic() - start > RETRYING["stall_timeout"]
    assert rewards == [expected_reward(*p) for p in PAIRS]


def test_the_scores_bought_before_the_endpoint_died_are_kept(api_key, tmp_path):
    with FakeRewardServer(hold_after=5) as server:  # 5 answers, then silence
        with pytest.raises(JudgeFailed, match="5 of 16 pairs scored"):
            score(judge(server, tmp_path / "judges.sqlite", **RETRYING))
    with FakeRewardServer() as server:
        assert score(judge(server, tmp_path / "judges.sqlite")) == [expected_reward(*p) for p in PAIRS]
        assert server.total == len(PAIRS) - 5


def test_stall_timeout_must_be_positive(api_key):
    with pytest.raises(Exception, match="stall_timeout > 0"):
        ApiJudge("fake/reward", "http://127.0.0.1:9/v1", stall_timeout=0)
