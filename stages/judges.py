"""Judges: one scalar reward per (prompt, response), chosen by name, and a stage that scores generations.

    python -m stages.judges --judge nemotron --model nvidia/llama-3.1-nemotron-70b-reward \
        --base-url https://integrate.api.nvidia.com/v1 --cache cache/judges.sqlite \
        --prompts data/instruct/gen_test.jsonl --generations data/generations/instruct/sft-greedy.jsonl \
        --out data/judged/nemotron/sft-greedy.jsonl

    checker       the embedded profile's grader, `instruct_tasks.check(prompt, response).score` (1-10).
    reward_model  a local one-output sequence classifier by folder or hub id: the pipeline's own reward
                  models, or an off-the-shelf one such as `OpenAssistant/reward-model-deberta-v3-large`
                  (`reward_model.encode` gives a tokenizer without a chat template the text pair
                  `[CLS] prompt [SEP] response [SEP]`); batched, cut at the model's maximum length.
    nemotron      an OpenAI-compatible reward endpoint (reference §5); the key only from $NVIDIA_API_KEY.

The output has one row per generation row: `prompt_id`, `sample`, `reward`, `judge`, `judge_model`.

The API judge, in detail:
- Cache: a SQLite file (`--cache`), one row per scored pair, committed as each score arrives, keyed by the
  SHA-256 of (judge, model, prompt, response) as cut to the input limit, so an interrupted or repeated run
  pays for nothing twice; the texts are not stored, nor is the key. SQLite's locking makes concurrent
  writers (two stages at once) safe. Keep the file out of DVC's outs: DVC deletes a stage's outs before
  running it (`cache/` is ignored by git and is no stage's output).
- Failures: transient errors (429, 408, 409, 5xx, timeouts, lost connections) are retried up to
  `max_retries` times with exponential backoff and jitter, waiting what a Retry-After header asks (up to
  `max_wait`); a reply with no parsable reward is retried `malformed_retries` times; an input the API
  rejects (400, 413, 422) is retried with the character budget halved, `shrink_retries` times. A pair still
  without a reward is a failure, never a made-up score: every other pair is still scored and cached, then
  the run stops with `JudgeFailed` counting the failures by cause, and writes no output; a rerun requests
  only the failed pairs. A refused key or unknown model (401, 403, 404) stops the run at once.
- Retries are ours (the client gets `max_retries=0`) so that their schedule is a parameter and is tested
  against a scripted server; the client's own schedule is fixed (0.5 s doubling to 8 s).
- Input limit: the API takes `input_tokens` tokens (4,096) with the chat template; without its tokenizer
  the texts are cut to `(input_tokens - 64) * chars_per_token` characters (64 tokens for the template;
  3 characters a token, below the ~4 of English text for a Llama 3 tokenizer). The response is kept whole
  when it fits beside a quarter of the budget for the prompt, else cut at its end (as a truncating
  tokenizer would); the prompt gets the rest, cut from the middle, where its start (the instruction) and
  its end (the question) survive.
- The key never leaves the process: it is not in the cache, the outputs or any message (text from the
  server is redacted before it is shown, and errors are raised without their chained cause).
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import json
import math
import os
import random
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import closing, nullcontext
from pathlib import Path
from typing import Any, Protocol

from posttrain.data_io import read_jsonl, require_model_dir, write_jsonl
from posttrain.schemas import ULTRAFEEDBACK
from posttrain.errors import UserError, run_main

KEY_VARIABLE = "NVIDIA_API_KEY"
TEMPLATE_TOKENS = 64  # what the chat template adds around the two turns, with room to spare
RETRY_STATUSES = {408, 409, 429} | set(range(500, 600))
SHRINK_STATUSES = {400, 413, 422}  # the usual answers to an input over the limit
FATAL_STATUSES = {401, 403, 404}  # a bad key or model: every other request would fail the same way
_REWARD = re.compile(r"reward\s*:\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")


class Judge(Protocol):
    name: str
    model: str | None

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """One reward per (prompt, response), in order."""


class JudgeFailed(UserError):
    """Some pairs got no reward after all retries; the others are cached."""


class CheckerJudge:
    """The embedded profile's deterministic grader; a prompt that is none of its tasks is a UserError."""

    name, model = "checker", None

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        from posttrain.instruct.tasks import check

        _same_length(prompts, responses)
        try:
            return [check(p, r).score for p, r in zip(prompts, responses)]
        except ValueError as err:
            raise UserError(f"checker: {err}") from None


class RewardModelJudge:
    """A one-output sequence classifier; `max_length` caps the model's own limit (None: the model's)."""

    name = "reward_model"

    def __init__(self, model: str, batch_size: int = 32, max_length: int | None = None):
        from posttrain.training.reward_model import load_scorer

        require_model_dir(model, "--model")  # a folder a stage made (a trained or pulled model), never a hub id
        self.model = model
        self.batch_size = batch_size
        self._model, self._tokenizer = load_scorer(model)
        limit = min(self._tokenizer.model_max_length,
                    getattr(self._model.config, "max_position_embeddings", None) or 10**9)
        self.max_length = limit if max_length is None else min(limit, max_length)

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        from posttrain.training.reward_model import score_with

        _same_length(prompts, responses)
        return score_with(self._model, self._tokenizer, prompts, responses, self.batch_size, self.max_length)


def parse_reward(body: Any) -> float | None:
    """The reward in an OpenAI-schema reply, or None: from logprobs first, else from the content.

    A logprobs entry is either a token `reward:<x>`, or NVIDIA's token `reward` whose logprob is the reward.
    """
    try:
        choice = body["choices"][0]
        entries = (choice.get("logprobs") or {}).get("content") or []
        content = (choice.get("message") or {}).get("content")
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    for entry in entries:
        token = entry.get("token") if isinstance(entry, dict) else None
        if not isinstance(token, str):
            continue
        found = _REWARD.fullmatch(token.strip())
        if found:
            return _finite(float(found[1]))
        logprob = entry.get("logprob")
        if token.strip() == "reward" and isinstance(logprob, (int, float)) and not isinstance(logprob, bool):
            return _finite(float(logprob))
    found = _REWARD.search(content) if isinstance(content, str) else None
    return _finite(float(found[1])) if found else None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def fit_to_limit(prompt: str, response: str, max_chars: int) -> tuple[str, str]:
    """Cut (prompt, response) to `max_chars` characters in all, by the rule in the module docstring."""
    if len(prompt) + len(response) <= max_chars:
        return prompt, response
    response = response[:max_chars - min(len(prompt), max_chars // 4)]
    return _cut_middle(prompt, max_chars - len(response)), response


def _cut_middle(text: str, n: int, marker: str = "\n[...]\n") -> str:
    if len(text) <= n:
        return text
    if n <= len(marker):
        return text[:n]
    head = (n - len(marker) + 1) // 2
    tail = n - len(marker) - head
    return text[:head] + marker + (text[-tail:] if tail else "")


def retry_delay(attempt: int, retry_after: float | None, backoff: float, max_backoff: float, max_wait: float,
                rng: random.Random) -> float:
    """Seconds before retry `attempt` (0-based): the server's Retry-After if it gave one, else
    `backoff * 2**attempt` capped at `max_backoff`, times a jitter in [0.5, 1) so that workers spread out."""
    if retry_after is not None:
        return min(max(retry_after, 0.0), max_wait)
    return min(backoff * 2 ** attempt, max_backoff) * rng.uniform(0.5, 1.0)


def _retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date), as the openai client reads them."""
    import email.utils

    for name, divisor in (("retry-after-ms", 1000), ("retry-after", 1)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) / divisor
            return seconds if math.isfinite(seconds) else None
        except ValueError:
            date = email.utils.parsedate_tz(value)
            if date is not None:
                return email.utils.mktime_tz(date) - time.time()
    return None


class RewardCache:
    """Rewards already paid for, in SQLite, keyed by a hash of (judge, model, prompt, response)."""

    def __init__(self, path: str | Path):
        try:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(path, timeout=60)  # waits out another process's write
            self.db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; commits survive a kill
            self.db.execute("CREATE TABLE IF NOT EXISTS rewards (key TEXT PRIMARY KEY, judge TEXT, model TEXT, "
                            "reward REAL NOT NULL, scored_at REAL)")
            self.db.commit()
        except (OSError, sqlite3.Error) as err:
            raise UserError(f"{path}: cannot use as the judge's cache: {err}") from None

    @staticmethod
    def key(judge: str, model: str | None, prompt: str, response: str) -> str:
        return hashlib.sha256(json.dumps([judge, model, prompt, response]).encode()).hexdigest()

    def get(self, keys: Sequence[str]) -> dict[str, float]:
        found: dict[str, float] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # SQLite's limit on bound parameters
            chunk = unique[start:start + 500]
            found.update(self.db.execute(f"SELECT key, reward FROM rewards WHERE key IN "
                                         f"({','.join('?' * len(chunk))})", chunk).fetchall())
        return found

    def put(self, key: str, judge: str, model: str | None, reward: float) -> None:
        with self.db:  # one transaction, committed: flushed before the next score is waited for
            self.db.execute("INSERT OR REPLACE INTO rewards VALUES (?, ?, ?, ?, ?)",
                            (key, judge, model, reward, time.time()))

    def close(self) -> None:
        self.db.close()


class _PairFailed(Exception):
    def __init__(self, cause: str, detail: str):
        super().__init__(f"{cause}: {detail}")
        self.cause = cause


class _Fatal(Exception):
    pass


class ApiJudge:
    """A reward model behind an OpenAI-compatible chat endpoint (Nemotron); see the module docstring."""

    def __init__(self, model: str, base_url: str, cache: str | Path | None = None, name: str = "nemotron",
                 concurrency: int = 4, timeout: float = 60.0, max_retries: int = 8, malformed_retries: int = 2,
                 shrink_retries: int = 2, backoff: float = 1.0, max_backoff: float = 60.0, max_wait: float = 120.0,
                 input_tokens: int = 4096, chars_per_token: float = 3.0, progress: bool = True):
        import openai

        key = os.environ.get(KEY_VARIABLE, "").strip()
        if not key:
            raise UserError(f"judge {name}: set the API key in the environment variable {KEY_VARIABLE} "
                            f"(it is read from there only, never from a file)")
        if concurrency < 1 or input_tokens <= TEMPLATE_TOKENS or chars_per_token <= 0:
            raise UserError(f"judge {name}: need concurrency >= 1, input_tokens > {TEMPLATE_TOKENS} and "
                            f"chars_per_token > 0")
        self.name, self.model, self.base_url = name, model, base_url
        self.cache = Path(cache) if cache is not None else None
        self.concurrency, self.progress = concurrency, progress
        self.max_retries, self.malformed_retries, self.shrink_retries = max_retries, malformed_retries, shrink_retries
        self.backoff, self.max_backoff, self.max_wait = backoff, max_backoff, max_wait
        self.max_chars = int((input_tokens - TEMPLATE_TOKENS) * chars_per_token)
        self._key = key
        self._client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)
        self._stop = threading.Event()
        self._rng = random.Random()  # jitter only: it changes when requests go, never what they return

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        _same_length(prompts, responses)
        limited = [fit_to_limit(p, r, self.max_chars) for p, r in zip(prompts, responses)]
        keys = [RewardCache.key(self.name, self.model, p, r) for p, r in limited]
        cache = RewardCache(self.cache) if self.cache is not None else None
        with closing(cache) if cache else nullcontext():
            rewards = cache.get(keys) if cache else {}
            todo = {k: pair for k, pair in zip(keys, limited) if k not in rewards}  # each distinct pair once
            failures = self._request_all(todo, rewards, cache)
        if failures:
            causes = ", ".join(f"{n} {cause}" for cause, n in Counter(e.cause for e in failures.values()).items())
            kept = (f"the {len(todo) - len(failures)} scored are cached in {self.cache}, so a rerun requests only "
                    f"the failed ones") if cache else "no cache was given, so a rerun pays for all again"
            raise JudgeFailed(f"judge {self.name}: {len(failures)} of {len(todo)} pairs sent got no reward after "
                              f"retries ({causes}); {kept}. First: {self._redact(str(next(iter(failures.values()))))}")
        return [rewards[k] for k in keys]

    def _request_all(self, todo: dict[str, tuple[str, str]], rewards: dict[str, float],
                     cache: RewardCache | None) -> dict[str, _PairFailed]:
        """Score `todo` with at most `concurrency` requests in flight, caching each reward as it arrives."""
        from tqdm import tqdm

        failures: dict[str, _PairFailed] = {}
        self._stop.clear()
        pool = ThreadPoolExecutor(self.concurrency)
        bar = tqdm(total=len(todo), desc=f"judging with {self.model}", unit="pair", disable=not self.progress)
        try:
            pending = {pool.submit(self._score_one, *pair): key for key, pair in todo.items()}
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    key = pending.pop(future)
                    try:
                        rewards[key] = future.result()
                    except _PairFailed as err:
                        failures[key] = err
                    except _Fatal as err:
                        raise UserError(f"judge {self.name}: {err}") from None
                    else:
                        if cache:
                            cache.put(key, self.name, self.model, rewards[key])
                    bar.update()
                    bar.set_postfix(failed=len(failures))
        finally:
            self._stop.set()  # on an error or ^C, workers stop at their next attempt or wait
            pool.shutdown(wait=True, cancel_futures=True)
            bar.close()
        return failures

    def _score_one(self, prompt: str, response: str) -> float:
        """One pair's reward, retrying as the module docstring says; `_PairFailed` or `_Fatal` if none."""
        import openai

        transient = malformed = shrunk = 0
        while True:
            if self._stop.is_set():
                raise _PairFailed("cancelled", "the run stopped")
            retry_after = None
            try:
                raw = self._client.chat.completions.with_raw_response.create(
                    model=self.model, messages=[{"role": "user", "content": prompt},
                                                {"role": "assistant", "content": response}])
                try:
                    reward = parse_reward(json.loads(raw.text))
                except ValueError:
                    reward = None
                if reward is not None:
                    return reward
                malformed += 1
                if malformed > self.malformed_retries:
                    raise _PairFailed("malformed reply", f"no reward in {self._redact(raw.text[:200])!r}")
                attempt = malformed - 1
            except openai.APIStatusError as err:
                status, detail = err.status_code, f"HTTP {err.status_code}: {self._redact(err.message)[:300]}"
                if status in FATAL_STATUSES:
                    raise _Fatal(f"{self.base_url} refused the request ({detail}); check {KEY_VARIABLE} and the "
                                 f"model name {self.model!r}") from None
                if status in SHRINK_STATUSES:
                    shrunk += 1
                    if shrunk > self.shrink_retries:
                        raise _PairFailed(f"rejected (HTTP {status})", detail) from None
                    budget = max(1, (len(prompt) + len(response)) // 2)
                    prompt, response = fit_to_limit(prompt, response, budget)
                    continue
                if status not in RETRY_STATUSES:
                    raise _PairFailed(f"HTTP {status}", detail) from None
                transient += 1
                if transient > self.max_retries:
                    raise _PairFailed(f"HTTP {status}", detail) from None
                attempt, retry_after = transient - 1, _retry_after(err.response.headers)
            except openai.APIConnectionError as err:  # timeouts included
                transient += 1
                if transient > self.max_retries:
                    cause = "timeout" if isinstance(err, openai.APITimeoutError) else "connection error"
                    raise _PairFailed(cause, self._redact(str(err))) from None
                attempt = transient - 1
            self._stop.wait(retry_delay(attempt, retry_after, self.backoff, self.max_backoff, self.max_wait,
                                        self._rng))

    def _redact(self, text: str) -> str:
        return text.replace(self._key, f"${KEY_VARIABLE}")


def _same_length(prompts: Sequence[str], responses: Sequence[str]) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")


JUDGES = {"checker": CheckerJudge, "reward_model": RewardModelJudge, "nemotron": ApiJudge}


def make_judge(name: str, **settings: Any) -> Judge:
    """The judge called `name`, built with `settings` (the keyword arguments of its class)."""
    if name not in JUDGES:
        raise UserError(f"unknown judge {name!r}; known: {', '.join(JUDGES)}")
    parameters = inspect.signature(JUDGES[name]).parameters
    allowed = set(parameters) - {"name"}
    unknown = sorted(set(settings) - allowed)
    if unknown:
        raise UserError(f"judge {name} takes no setting {', '.join(unknown)} (it takes: {', '.join(sorted(allowed))})")
    missing = [p for p, v in parameters.items() if v.default is inspect.Parameter.empty and p not in settings]
    if missing:
        raise UserError(f"judge {name} needs the setting {', '.join(missing)}")
    return JUDGES[name](**settings)


GENERATION = {"prompt_id": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "sample": lambda v: isinstance(v, int) and not isinstance(v, bool),
              "text": lambda v: isinstance(v, str)}


def judge_generations(judge: Judge, prompt_rows: list[dict], generation_rows: list[dict],
                      where: str = "generations") -> list[dict]:
    """One output row per generation row: its prompt_id and sample, the reward, and who gave it."""
    for index, row in enumerate(generation_rows):
        if not 0 <= row["prompt_id"] < len(prompt_rows):
            raise UserError(f"{where}: row {index}: prompt_id {row['prompt_id']} is not a row of the "
                            f"{len(prompt_rows)} prompts")
    rewards = judge.score([prompt_rows[r["prompt_id"]]["prompt"] for r in generation_rows],
                          [r["text"] for r in generation_rows])
    return [{"prompt_id": r["prompt_id"], "sample": r["sample"], "reward": reward, "judge": judge.name,
             "judge_model": judge.model} for r, reward in zip(generation_rows, rewards)]


def judge_from_params(name: str, overrides: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The kind and settings of `evaluation.judges.<name>` in params.yaml (command-line options override)."""
    from pipeline import params

    judges = params.load().evaluation.judges
    if name not in judges:
        raise UserError(f"params: no judge `evaluation.judges.{name}` (known: {', '.join(judges)})")
    spec = dict(judges[name])
    kind = spec.pop("kind", None)
    if kind not in JUDGES:
        raise UserError(f"params: `evaluation.judges.{name}.kind` must be one of {', '.join(JUDGES)}, got {kind!r}")
    if kind == "reward_model":  # its folder must be a dependency of the judge stages, which dvc.yaml gives only there
        raise UserError(f"params: `evaluation.judges.{name}` is a reward model: list it in "
                        "`evaluation.reward_judges` (it is then read from models/<name>)")
    spec = {**spec, **overrides}
    if "cache" in spec:
        spec["cache"] = Path(spec["cache"])
    return kind, spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--judge", choices=list(JUDGES), help="a judge kind, with its settings as options")
    which.add_argument("--from-params", metavar="NAME",
                       help="the judge `evaluation.judges.NAME` of params.yaml: its kind and settings")
    parser.add_argument("--model", help="reward_model: its folder; nemotron: the API's model name")
    parser.add_argument("--base-url", help="nemotron: the OpenAI-compatible endpoint")
    parser.add_argument("--cache", type=Path, help="nemotron: SQLite file of rewards already paid for")
    parser.add_argument("--prompts", type=Path, required=True, help="UltraFeedback-schema prompt rows")
    parser.add_argument("--generations", type=Path, required=True, help="rows as stages.generate writes them")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--concurrency", type=int, help="nemotron: requests in flight at most")
    parser.add_argument("--timeout", type=float, help="nemotron: seconds before a request is retried")
    parser.add_argument("--max-retries", type=int, help="nemotron: retries of a transient error")
    parser.add_argument("--backoff", type=float, help="nemotron: first retry's wait in seconds, doubling")
    parser.add_argument("--input-tokens", type=int, help="nemotron: the API's input limit")
    parser.add_argument("--batch-size", type=int, help="reward_model: pairs per forward pass")
    parser.add_argument("--max-length", type=int, help="reward_model: tokens read at most")
    win = parser.add_argument_group("win rate: then, in the same process, `posttrain.evaluation.win_rate`'s metrics of "
                                    "these generations against the reference's, judged by the same judge")
    win.add_argument("--win-rate-out", type=Path, help="the metrics JSON")
    win.add_argument("--reference-judged", type=Path, help="the reference's judged rows")
    win.add_argument("--reference-generations", type=Path, help="the reference's generation rows")
    args = parser.parse_args()
    win_args = (args.win_rate_out, args.reference_judged, args.reference_generations)
    if any(win_args) and not all(win_args):
        raise UserError("--win-rate-out, --reference-judged and --reference-generations go together")
    settings = {k: v for k, v in vars(args).items()
                if v is not None and k not in ("judge", "from_params", "prompts", "generations", "out", "win_rate_out",
                                               "reference_judged", "reference_generations")}
    if args.from_params:
        args.judge, settings = judge_from_params(args.from_params, settings)
    if args.judge == "nemotron" and not all(settings.get(k) is not None for k in ("model", "base_url", "cache")):
        raise UserError("--judge nemotron needs --model, --base-url and --cache (the cache is what lets a "
                        "rerun skip the pairs already paid for)")
    if args.judge == "reward_model" and settings.get("model") is None:
        raise UserError("--judge reward_model needs --model (a folder or hub id)")
    prompt_rows = read_jsonl(args.prompts, {"prompt": ULTRAFEEDBACK["prompt"]})
    generation_rows = read_jsonl(args.generations, GENERATION)
    judge = make_judge(args.judge, **settings)
    rows = judge_generations(judge, prompt_rows, generation_rows, str(args.generations))
    write_jsonl(args.out, rows)
    mean = sum(r["reward"] for r in rows) / len(rows) if rows else float("nan")
    print(f"{args.judge}: {len(rows)} rewards, mean {mean:.3f} -> {args.out}")
    if args.win_rate_out:  # one process where a second stage would pay DVC's and Python's start-up again
        from posttrain.evaluation import win_rate as eval_instruct

        eval_instruct.evaluate(args.prompts, args.out, args.reference_judged, args.generations,
                               args.reference_generations, args.win_rate_out)


if __name__ == "__main__":
    run_main(main)
