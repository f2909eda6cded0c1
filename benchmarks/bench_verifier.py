"""Throughput of the Countdown verifier on a realistic mix, and its worst case on adversarial inputs.

    python -m benchmarks.bench_verifier [--calls 200000]

Scores a seeded mix of completions (correct, wrong, no tag, long thinking, malformed) on one core and
compares scores/second with the usual TinyZero scorer's ~41,000/s on this machine; exits with status 1
if slower. Then times each adversarial input and reports the worst case in ms (limit: 5 ms).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as `python benchmarks/bench_verifier.py`: make `stages` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from posttrain.countdown.verifier import score
from posttrain.countdown.solver import make_puzzle, solve

REFERENCE_SCORES_PER_SECOND = 41_000  # the usual eval-based scorer, measured on this machine
ADVERSARIAL_LIMIT_MS = 5.0
SEED = 0
PUZZLES = 500

ADVERSARIAL = {
    "100k unclosed <answer>": "<answer>" * 100_000,
    "100k <answer> then a close": "<answer>" * 100_000 + "1</answer>",
    "100k </answer>": "</answer>" * 100_000,
    "1 MB of digits": "<answer>" + "9" * 1_000_000 + "</answer>",
    "10k nested parens": "<answer>" + "(" * 10_000 + "1" + ")" * 10_000 + "</answer>",
    "4,999 nested parens (at the length cap)": "<answer>" + "(" * 4_999 + "1" + ")" * 4_999 + "</answer>",
    "100 nested parens": "<answer>" + "(" * 100 + "1" + ")" * 100 + "</answer>",
    "4,999 products (at the length cap)": "<answer>" + "9*" * 4_999 + "9</answer>",
    "4,999 divisions (at the length cap)": "<answer>" + "9/" * 4_999 + "7</answer>",
    "9 ** 9 ** 9": "<answer>9 ** 9 ** 9</answer>",
    "99 products": "<answer>" + "9*" * 99 + "9</answer>",
    "1 MB without tags": "x" * 1_000_000,
}


def build_mix(rng: random.Random) -> list[tuple[str, list[int], int]]:
    """Completions a policy model plausibly writes, several per seeded puzzle."""
    filler = "Let me try combining the largest numbers first and see how close I get. "
    mix = []
    for i in range(PUZZLES):
        nums, target = make_puzzle(rng, 3 + i % 2, 1, 99, 1, 100)
        solution = solve(nums, target)
        assert solution is not None  # make_puzzle only returns solvable puzzles
        think = ", ".join(solution.steps)
        wrong = " + ".join(str(n) for n in nums)
        mix += [
            (f"<think>{think}</think> <answer>{solution.expression}</answer>", nums, target),
            (f"<think>{think}</think>\n<answer>{wrong}</answer>", nums, target),
            (f"<think>{filler * 30}{think}</think> <answer>{solution.expression}</answer>", nums, target),
            (f"<think>{think}</think> The answer is {solution.expression}.", nums, target),
            (f"<think>{think}</think> <answer>{solution.expression} = {target}</answer>", nums, target),
            (f"<think>{think}</think> <answer>{wrong} + 1</answer>", nums, target),
            (f"<think>{think}</think> <answer>({wrong}</answer>", nums, target),
            (f"<answer>{wrong}</answer> wait, <answer>{solution.expression}</answer>\nDone.", nums, target),
        ]
    rng.shuffle(mix)
    return mix


def throughput(mix: list[tuple[str, list[int], int]], calls: int) -> float:
    """Scores per second over `calls` calls, cycling through the mix."""
    batch = (mix * (calls // len(mix) + 1))[:calls]
    start = time.perf_counter()
    for completion, nums, target in batch:
        score(completion, nums, target)
    return calls / (time.perf_counter() - start)


def worst_case_ms(completion: str, repeats: int = 5) -> float:
    worst = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        score(completion, [9, 9, 9], 1)
        worst = max(worst, time.perf_counter() - start)
    return worst * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200_000)
    args = parser.parse_args()

    mix = build_mix(random.Random(SEED))
    reasons: dict[str, int] = {}
    for completion, nums, target in mix:
        reason = score(completion, nums, target).reason
        reasons[reason] = reasons.get(reason, 0) + 1
    print(f"mix: {len(mix)} completions, reasons {dict(sorted(reasons.items()))}")

    rate = throughput(mix, args.calls)
    ratio = rate / REFERENCE_SCORES_PER_SECOND
    print(f"throughput: {rate:,.0f} scores/s over {args.calls:,} calls "
          f"({ratio:.2f}x the usual scorer's {REFERENCE_SCORES_PER_SECOND:,}/s)")

    worst = {name: worst_case_ms(completion) for name, completion in ADVERSARIAL.items()}
    for name, ms in worst.items():
        print(f"adversarial: {ms:8.3f} ms  {name}")
    print(f"adversarial worst case: {max(worst.values()):.3f} ms (limit {ADVERSARIAL_LIMIT_MS:.0f} ms)")

    if rate < REFERENCE_SCORES_PER_SECOND or max(worst.values()) > ADVERSARIAL_LIMIT_MS:
        print("FAIL: slower than the usual scorer or an adversarial input too slow", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
