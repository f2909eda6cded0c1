"""A scripted OpenAI-compatible reward endpoint on 127.0.0.1, for testing the API judge offline.

`POST /v1/chat/completions` reads the (user, assistant) pair and answers what `script(pair, attempt)`
says: a reward in logprobs (NVIDIA's shape or a `reward:<x>` token), in the content only, a 429 with or
without Retry-After, a 5xx, a reply slower than the client's timeout, malformed JSON, or content with no
reward. The server counts requests and paid replies per pair, the largest number of requests in flight,
and the Authorization headers it saw, so tests can check what a client bought and how.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

Pair = tuple[str, str]

# The actions a script may return for one request.
LOGPROBS = "logprobs"  # NVIDIA's shape: logprobs token "reward" whose logprob is the reward, and the content
LOGPROBS_TOKEN = "logprobs_token"  # a logprobs token "reward:<x>", content saying something else
CONTENT = "content"  # "reward:<x>" in the message content only, no logprobs
RATE_LIMITED = "429"
RATE_LIMITED_AFTER = "429_retry_after"  # with `Retry-After: <retry_after>`
SERVER_ERROR = "500"
UNAVAILABLE = "503"
SLOW = "slow"  # the reward, but after `slow_s` seconds (beyond the client's timeout)
BAD_JSON = "bad_json"  # status 200, a body that is not JSON
NO_REWARD = "no_reward"  # status 200, valid JSON, content with no reward in it
TOO_LONG = "400"  # what an API says to an input over its limit
UNAUTHORIZED = "401"  # echoing the Authorization header it got, as a careless server might


def expected_reward(prompt: str, response: str) -> float:
    """The reward the server gives a pair: distinct per pair, exact in two decimals."""
    return round(len(prompt) * 0.25 - len(response) * 1.5 + (sum(map(ord, prompt + response)) % 100) / 100, 2)


class FakeRewardServer:
    """Start with `with FakeRewardServer(script) as server:`; `server.base_url` ends in /v1."""

    def __init__(self, script: Callable[[Pair, int], str] | None = None, *, delay_s: float = 0.0,
                 slow_s: float = 2.0, retry_after: str = "1", hold_after: int | None = None,
                 max_chars: int | None = None):
        self.script = script or (lambda pair, attempt: LOGPROBS)
        self.delay_s = delay_s  # every reply waits this long, so that requests overlap
        self.slow_s = slow_s
        self.retry_after = retry_after
        self.hold_after = hold_after  # requests after this many block until `release()`
        self.max_chars = max_chars  # a longer (prompt + response) gets TOO_LONG
        self.lock = threading.Lock()
        self.requests: Counter[Pair] = Counter()  # every request received
        self.paid: Counter[Pair] = Counter()  # replies that carried a reward and were sent in time
        self.log: list[tuple[float, Pair, str]] = []  # (time, pair, action)
        self.authorization: set[str] = set()
        self.models: set[str] = set()
        self.in_flight = 0
        self.max_in_flight = 0
        self.total = 0
        self.released = threading.Event()

    def __enter__(self) -> FakeRewardServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_POST(self) -> None:
                server._handle(self)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def release(self) -> None:
        self.released.set()

    def _handle(self, h: BaseHTTPRequestHandler) -> None:
        body = json.loads(h.rfile.read(int(h.headers["Content-Length"])))
        pair = (body["messages"][0]["content"], body["messages"][1]["content"])
        with self.lock:
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.total += 1
            number = self.total
            attempt = self.requests[pair]
            self.requests[pair] += 1
            self.authorization.add(h.headers.get("Authorization", ""))
            self.models.add(body["model"])
        try:
            if self.hold_after is not None and number > self.hold_after:
                self.released.wait(30)
                action = UNAVAILABLE
            elif self.max_chars is not None and len(pair[0]) + len(pair[1]) > self.max_chars:
                action = TOO_LONG
            else:
                action = self.script(pair, attempt)
            with self.lock:
                self.log.append((time.monotonic(), pair, action))
            time.sleep(self.delay_s)
            self._reply(h, pair, action)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (its timeout, or the test killed it)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _reply(self, h: BaseHTTPRequestHandler, pair: Pair, action: str) -> None:
        reward = expected_reward(*pair)
        headers = {}
        if action in (LOGPROBS, LOGPROBS_TOKEN, CONTENT, SLOW, NO_REWARD):
            content = {LOGPROBS: f"reward:{reward}", LOGPROBS_TOKEN: "see logprobs", CONTENT: f"reward:{reward}",
                       SLOW: f"reward:{reward}", NO_REWARD: "I cannot rate this."}[action]
            logprobs = {LOGPROBS: {"content": [{"token": "reward", "logprob": reward, "top_logprobs": []}]},
                        LOGPROBS_TOKEN: {"content": [{"token": f"reward:{reward}", "logprob": -0.01,
                                                      "top_logprobs": []}]}}.get(action)
            status, payload = 200, json.dumps({
                "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "fake",
                "choices": [{"index": 0, "finish_reason": "length", "logprobs": logprobs,
                             "message": {"role": "assistant", "content": content}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
            if action == SLOW:
                time.sleep(self.slow_s)
        elif action == BAD_JSON:
            status, payload = 200, '{"choices": [{"message": {"content": "reward:1'
        elif action in (RATE_LIMITED, RATE_LIMITED_AFTER):
            status, payload = 429, json.dumps({"error": {"message": "Too many requests"}})
            if action == RATE_LIMITED_AFTER:
                headers["Retry-After"] = self.retry_after
        elif action == TOO_LONG:
            status, payload = 400, json.dumps({"error": {"message": "input is longer than 4096 tokens"}})
        elif action == UNAUTHORIZED:
            status, payload = 401, json.dumps({"error": {"message": f"bad {h.headers.get('Authorization')}"}})
        else:
            status, payload = int(action), json.dumps({"error": {"message": f"status {action}"}})
        data = payload.encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(data)
        h.wfile.flush()
        if action in (LOGPROBS, LOGPROBS_TOKEN, CONTENT):  # a slow reply comes after the client gave up
            with self.lock:
                self.paid[pair] += 1
