"""A reward model behind an OpenAI-compatible chat endpoint (Nemotron, reference §5): the client, its
retries, the input limit and the reply's parser. The key is read from $NVIDIA_API_KEY only.

- Cache: `posttrain.judges.cache.RewardCache` (a SQLite file), one row per scored pair, so an
  interrupted or repeated run pays for nothing twice.
- Failures: transient errors (429, 408, 409, 5xx, timeouts, lost connections) are retried up to
  `max_retries` times with exponential backoff and jitter, waiting what a Retry-After header asks (up to
  `max_wait`); a reply with no parsable reward is retried `malformed_retries` times; an input the API
  rejects (400, 413, 422) is retried with the character budget halved, `shrink_retries` times. A pair still
  without a reward is a failure, never a made-up score: every other pair is still scored and cached, then
  the run stops with `JudgeFailed` counting the failures by cause; a rerun requests only the failed pairs.
  A refused key or unknown model (401, 403, 404) stops the run at once.
- Dead endpoint: a circuit breaker. When no reward has arrived for `stall_timeout` seconds (300), the
  run stops with `JudgeFailed` (the rewards already bought stay cached), whatever the number of pairs:
  the retries above alone took 151 s for 4 pairs of a dead endpoint, and hours for 300. A request in
  flight is still waited for, up to `timeout`, so the stage ends within `stall_timeout + timeout`. 300 s
  is more than a live but rate-limited endpoint leaves between two replies (its Retry-After is honoured
  up to `max_wait`, 120 s).
- Input limit: the API takes `input_tokens` tokens (4,096) with the chat template; without its tokenizer
  the texts are cut to `(input_tokens - 64) * chars_per_token` characters (64 tokens for the template;
  3 characters a token, below the ~4 of English text for a Llama 3 tokenizer). The response is kept whole
  when it fits beside a quarter of the budget for the prompt, else cut at its end (as a truncating
  tokenizer would); the prompt gets the rest, cut from the middle, where its start (the instruction) and
  its end (the question) survive.
- The key never leaves the process: it is not in the cache, the outputs or any message (text from the
  server is redacted before it is shown, and errors are raised without their chained cause).

Why the retry loop is written here rather than taken from a library: the openai client's own retries
(`max_retries`) follow a fixed schedule (0.5 s doubling to 8 s) that is not a parameter, and it is given
`max_retries=0`; httpx (its transport) retries only failed connections, never an HTTP status; urllib3's
`Retry` belongs to a transport the openai client does not use; tenacity is not a dependency. None of them
models what this loop does per pair: three separate budgets (transient, malformed reply, input too long),
halving the input and resending on 400/413/422, a fatal short-circuit on 401/403/404 that stops every
other worker, and a wait that a stopping run can cut short (`_stop`). The schedule is tested against a
scripted server (tests/fake_openai_server.py).
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from contextlib import closing, nullcontext
from pathlib import Path
from typing import Any

from posttrain.errors import UserError
from posttrain.judges.base import JudgeFailed, same_length
from posttrain.judges.cache import RewardCache, cache_path

KEY_VARIABLE = "NVIDIA_API_KEY"
TEMPLATE_TOKENS = 64  # what the chat template adds around the two turns, with room to spare
RETRY_STATUSES = {408, 409, 429} | set(range(500, 600))
SHRINK_STATUSES = {400, 413, 422}  # the usual answers to an input over the limit
FATAL_STATUSES = {401, 403, 404}  # a bad key or model: every other request would fail the same way
_REWARD = re.compile(r"reward\s*:\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)")


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


def parse_retry_after(headers) -> float | None:
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
                 input_tokens: int = 4096, chars_per_token: float = 3.0, stall_timeout: float = 300.0,
                 progress: bool = True):
        import openai

        key = os.environ.get(KEY_VARIABLE, "").strip()
        if not key:
            raise UserError(f"judge {name}: set the API key in the environment variable {KEY_VARIABLE} "
                            f"(it is read from there only, never from a file)")
        if concurrency < 1 or input_tokens <= TEMPLATE_TOKENS or chars_per_token <= 0 or not stall_timeout > 0:
            raise UserError(f"judge {name}: need concurrency >= 1, input_tokens > {TEMPLATE_TOKENS}, "
                            f"chars_per_token > 0 and stall_timeout > 0")
        self.name, self.model, self.base_url = name, model, base_url
        self.cache = cache_path(cache) if cache is not None else None  # in the main workspace under DVC
        self.concurrency, self.progress = concurrency, progress
        self.max_retries, self.malformed_retries, self.shrink_retries = max_retries, malformed_retries, shrink_retries
        self.backoff, self.max_backoff, self.max_wait = backoff, max_backoff, max_wait
        self.stall_timeout = stall_timeout
        self._last_error = "none"  # the latest failed attempt, for the circuit breaker's message
        self.max_chars = int((input_tokens - TEMPLATE_TOKENS) * chars_per_token)
        self._key = key
        self._client = openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)
        self._stop = threading.Event()
        self._rng = random.Random()  # jitter only: it changes when requests go, never what they return

    def score(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        same_length(prompts, responses)
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
        last_reward, scored = time.monotonic(), 0
        try:
            pending = {pool.submit(self._score_one, *pair): key for key, pair in todo.items()}
            while pending:
                left = last_reward + self.stall_timeout - time.monotonic()
                if left <= 0:  # the circuit breaker (module docstring)
                    kept = f"the {scored} scored are cached in {self.cache}" if cache else "no cache was given"
                    raise JudgeFailed(f"judge {self.name}: no reward from {self.base_url} for {self.stall_timeout:g} s "
                                      f"({scored} of {len(todo)} pairs scored; last error: {self._last_error}); "
                                      f"the endpoint looks down: rerun when it is back ({kept}), or raise "
                                      f"`stall_timeout`")
                done, _ = wait(pending, timeout=left, return_when=FIRST_COMPLETED)
                for future in done:
                    key = pending.pop(future)
                    try:
                        rewards[key] = future.result()
                    except _PairFailed as err:
                        failures[key] = err
                    except _Fatal as err:
                        raise UserError(f"judge {self.name}: {err}") from None
                    else:
                        last_reward, scored = time.monotonic(), scored + 1
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
                self._last_error = detail
                transient += 1
                if transient > self.max_retries:
                    raise _PairFailed(f"HTTP {status}", detail) from None
                attempt, retry_after = transient - 1, parse_retry_after(err.response.headers)
            except openai.APIConnectionError as err:  # timeouts included
                self._last_error = "timeout" if isinstance(err, openai.APITimeoutError) else "connection error"
                transient += 1
                if transient > self.max_retries:
                    cause = "timeout" if isinstance(err, openai.APITimeoutError) else "connection error"
                    raise _PairFailed(cause, self._redact(str(err))) from None
                attempt = transient - 1
            self._stop.wait(retry_delay(attempt, retry_after, self.backoff, self.max_backoff, self.max_wait,
                                        self._rng))

    def _redact(self, text: str) -> str:
        return text.replace(self._key, f"${KEY_VARIABLE}")

