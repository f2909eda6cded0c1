"""Batched generation against one prompt at a time, same model, same prompts, same settings.

    python -m benchmarks.bench_generate [--model models/sft_countdown] [--prompts 128] [--batch-size 128]

Greedy decoding of Countdown evaluation prompts with the transformers backend, after one warm-up call
(imports and first-call set-up would otherwise count against whichever run goes first); prints both
timings and the speed-up, and exits non-zero below the 5x the foundation issue asks for. On a shared
machine, set OMP_NUM_THREADS=1: torch's spinning threads make timings under load meaningless. Uses the pipeline's
SFT model when it exists (run `dvc repro` first), else the base model.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from pipeline import params
from posttrain.data_io import read_jsonl
from posttrain.schemas import COUNTDOWN_TASK
from stages import generate

REQUIRED_SPEEDUP = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    default = Path("models/sft_countdown") if Path("models/sft_countdown").exists() else Path("models/base")
    parser.add_argument("--model", type=Path, default=default)
    parser.add_argument("--tasks", type=Path, default=Path("data/countdown/eval.jsonl"))
    parser.add_argument("--prompts", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128)
    args = parser.parse_args()
    p = params.load()
    tasks = read_jsonl(args.tasks, COUNTDOWN_TASK)[: args.prompts]
    generate.generate(args.model, "countdown", tasks[:2], p, "greedy")  # warm-up: imports and first-call set-up
    timings = {}
    for batch_size in (args.batch_size, 1):
        run = dataclasses.replace(p, generate=dataclasses.replace(p.generate, backend="transformers",
                                                                  batch_size=batch_size))
        start = time.perf_counter()
        rows = generate.generate(args.model, "countdown", tasks, run, "greedy")
        timings[batch_size] = time.perf_counter() - start
        tokens = sum(r["completion_tokens"] for r in rows)
        print(f"batch size {batch_size:>4}: {timings[batch_size]:7.2f} s for {len(tasks)} prompts, "
              f"{tokens / timings[batch_size]:8.0f} new tokens/s", file=sys.stderr)
    speedup = timings[1] / timings[args.batch_size]
    print(f"model {args.model}: batched is {speedup:.1f}x faster than one prompt at a time "
          f"(required: {REQUIRED_SPEEDUP:.0f}x)")
    sys.exit(0 if speedup >= REQUIRED_SPEEDUP else 1)


if __name__ == "__main__":
    main()
