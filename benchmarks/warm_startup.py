"""A model stage's start-up with and without pipeline.warm, side by side in one run.

    python -m benchmarks.warm_startup [--rounds 3]

Runs three stage commands of a finished `dvc repro` (a generation, a reward-model judging and a
training stage; outputs go to a temporary folder, the workspace is left alone) alternately with
`POSTTRAIN_WARM=0` (each stage its own Python, as before pipeline.warm) and `POSTTRAIN_WARM=1` (a fork of
the warm server), and reads each run's `start-up: <s> s before ...` line (posttrain/startup.py). The
generation and judging stages run to the end (their wall time is printed too); the training stage is
killed once it has printed its start-up, since its training is the same either way. The warm server is
started once before the first round, so the "warm" column is what every stage but a run's first pays.
Medians over `--rounds`.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import stage_times


def commands(tmp: Path) -> dict[str, tuple[list[str], bool]]:
    """name: (command, run to the end)."""
    python = [sys.executable, "-m"]
    return {
        "generation (generate_countdown@sft_countdown)": (
            [*python, "pipeline.warm", "stages.generate", "--model", "models/sft_countdown", "--task", "countdown",
             "--prompts", "data/countdown/eval.jsonl", "--decoding", "greedy", "--out", str(tmp / "gen.jsonl")], True),
        "judging (judge_reference_rm@reward_bt)": (
            [*python, "pipeline.warm", "stages.judges", "--judge", "reward_model", "--model", "models/reward_bt",
             "--prompts", "data/instruct/gen_test.jsonl", "--generations", "data/generations/instruct/reference.jsonl",
             "--out", str(tmp / "judged.jsonl")], True),
        "training (sft_countdown@sft_countdown)": (
            [*python, "pipeline.launch", "stages.sft", "--section", "sft_countdown", "--model", "models/base",
             "--train", "data/countdown/warmstart_train.jsonl", "--eval", "data/countdown/warmstart_test.jsonl",
             "--out", str(tmp / "sft"), "--live", str(tmp / "live")], False),
    }


def run(command: list[str], to_end: bool, warm: bool) -> tuple[float, float | None]:
    """(start-up seconds, wall seconds or None where the run was stopped at its start-up line)."""
    env = {**os.environ, "POSTTRAIN_WARM": "1" if warm else "0"}
    began = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = None
    for line in proc.stderr:
        seconds = stage_times.startup_seconds(line) if seconds is None else seconds
        if seconds is not None:
            if not to_end:
                proc.send_signal(signal.SIGKILL)
                break
    proc.wait()
    if seconds is None:
        raise SystemExit(f"error: no start-up line from {' '.join(command)} (exit {proc.returncode}): "
                         "run `dvc repro` first")
    return seconds, (time.perf_counter() - began) if to_end else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        jobs = commands(tmp)
        first = next(iter(jobs.values()))
        run(*first, warm=True)  # starts the warm server: its one-off imports are no stage's start-up here
        results = {name: {False: [], True: []} for name in jobs}
        for round_ in range(args.rounds):
            for name, (command, to_end) in jobs.items():
                for warm in (False, True):
                    results[name][warm].append(run(command, to_end, warm))
                    print(f"round {round_ + 1}: {name}, warm {warm}: start-up {results[name][warm][-1][0]:.1f} s",
                          file=sys.stderr)
    print(f"median of {args.rounds} rounds, seconds:")
    print("| stage | start-up, own Python | start-up, warm fork | whole stage, own Python | whole stage, warm fork |")
    print("|---|---|---|---|---|")
    for name, by in results.items():
        cells = [f"{statistics.median(s for s, _ in by[w]):.1f}" for w in (False, True)]
        walls = [by[w][0][1] for w in (False, True)]
        cells += ["(stopped)" if wall is None else f"{statistics.median(t for _, t in by[w]):.1f}"
                  for w, wall in zip((False, True), walls)]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
