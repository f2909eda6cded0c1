"""Rewards already paid for: a SQLite file, one row per scored pair, committed as each score arrives.

Keyed by the SHA-256 of (judge, model, prompt, response) as cut to the input limit, so an interrupted or
repeated run pays for nothing twice; the texts are not stored, nor is the API key. SQLite's locking makes
concurrent writers (two stages at once) safe. Keep the file out of DVC's outs: DVC deletes a stage's outs
before running it.

A relative path is taken from the main workspace, not from the folder a stage runs in: `dvc exp run
--temp` and `--queue` run the pipeline in a temporary clone (under .dvc/tmp/exps/), where a relative
cache would start empty and every score be bought again. DVC sets `DVC_ROOT` for every stage it runs to
the root of the repository the run was started from (for a temporary or queued experiment too:
`dvc/repo/experiments/queue/base.py` overrides it "to point to the parent DVC repo root"), so the
workspace run, its experiments and a rerun all share one file. Outside DVC the path is relative to the
working directory.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path

from posttrain.errors import UserError

LOCK_TIMEOUT = 60  # seconds to wait for another process's lock on the file


def cache_path(path: str | Path) -> Path:
    """`path`, a relative one taken from DVC's main workspace (`$DVC_ROOT`) when DVC runs the stage."""
    path = Path(path)
    root = os.environ.get("DVC_ROOT")
    return Path(root) / path if root and not path.is_absolute() else path


class RewardCache:
    """Rewards already paid for, in SQLite, keyed by a hash of (judge, model, prompt, response)."""

    def __init__(self, path: str | Path):
        path = cache_path(path)
        deadline = time.monotonic() + LOCK_TIMEOUT
        while True:
            db = None
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(path, timeout=LOCK_TIMEOUT)  # waits out another process's write
                self.db = db
                self._set_up()
                return
            except sqlite3.OperationalError as err:
                # Turning a new file to WAL takes a lock that SQLite does not wait for (no busy handler):
                # a writer opening the file at that moment gets "database is locked" at once. Try again.
                if db is not None:
                    db.close()
                if "locked" not in str(err) or time.monotonic() > deadline:
                    raise UserError(f"{path}: cannot use as the judge's cache: {err}") from None
                time.sleep(0.05)
            except (OSError, sqlite3.Error) as err:
                raise UserError(f"{path}: cannot use as the judge's cache: {err}") from None

    def _set_up(self) -> None:
        self.db.execute("PRAGMA journal_mode=WAL")  # readers never block the writer; commits survive a kill
        self.db.execute("CREATE TABLE IF NOT EXISTS rewards (key TEXT PRIMARY KEY, judge TEXT, model TEXT, "
                        "reward REAL NOT NULL, scored_at REAL)")
        self.db.commit()

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
