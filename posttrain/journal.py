"""A generation that survives a kill: rows written batch by batch, and a rerun that resumes after the last.

Generation in the paper profile answers thousands of prompts per model. The journal (`<out>.partial`,
beside the stage's output, which DVC deletes before rerunning the stage) holds the rows of every
finished batch and, after each, the random state the next batch starts from. A rerun asked to do the
same thing (the fingerprint: model weights, rendered prompts, decoding, seed, batch size, backend)
skips the finished batches, restores the random state, and so writes exactly the rows an
uninterrupted run would; a journal of anything else is discarded with one line. Rows are appended
before the state that counts them, so a kill between the two leaves rows the state does not count:
they are dropped on resume and the batch is generated again.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
from pathlib import Path
from typing import Any

from posttrain.training.checkpoints import fingerprint

ROWS, STATE = "rows.jsonl", "state.json"


class Journal:
    def __init__(self, folder: Path, settings: dict[str, Any], inputs: list[Path]):
        self.folder = folder
        self.key = fingerprint(settings, inputs)
        self.batches, self.rows, self.rng = 0, [], None
        state_path = folder / STATE
        if state_path.is_file():
            state = json.loads(state_path.read_text())
            if state.get("fingerprint") != self.key:
                print(f"{folder}: discarding a partial generation made with another model, prompts or settings")
                shutil.rmtree(folder)
            else:
                with open(folder / ROWS, encoding="utf-8") as f:
                    self.rows = [json.loads(line) for _, line in zip(range(state["rows"]), f)]
                self.batches = state["batches"]
                self.rng = base64.b64decode(state["rng"]) if state.get("rng") else None
                print(f"{folder}: resuming after {self.batches} batches ({len(self.rows)} rows)")
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / ROWS, "w", encoding="utf-8") as f:  # rows past the last state were never counted
            f.writelines(json.dumps(row) + "\n" for row in self.rows)

    def commit(self, rows: list[Any], rng: bytes | None) -> None:
        """Record one finished batch: its rows, then the state that counts them (atomically)."""
        with open(self.folder / ROWS, "a", encoding="utf-8") as f:
            f.writelines(json.dumps(row) + "\n" for row in rows)
            f.flush()
            os.fsync(f.fileno())
        self.rows += rows
        self.batches += 1
        state = {"fingerprint": self.key, "batches": self.batches, "rows": len(self.rows),
                 "rng": base64.b64encode(rng).decode() if rng is not None else None}
        tmp = self.folder / (STATE + ".tmp")
        tmp.write_text(json.dumps(state))
        os.replace(tmp, self.folder / STATE)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def partial_dir(out: Path) -> Path:
    """Where the journal of the generation writing `out` lives: a sibling, which DVC does not delete."""
    return out.with_name(out.name + ".partial")
