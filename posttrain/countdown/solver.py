"""Exhaustive Countdown solver and solvable-puzzle generator (pure; randomness only from a passed rng).

`solve(nums, target)` searches every way to combine all the numbers, each exactly once, with
`+ - * /` under exact arithmetic, the same rules `posttrain.countdown.verifier.score` checks. It works bottom-up
over subsets of the numbers (bitmasks): for each subset it keeps one way to reach each distinct value,
so equal values reached two ways are explored once. That makes 4 numbers a few ms.

It searches twice: first allowing only non-negative integer intermediates (the classic game's rule,
and the kind of steps a model can imitate), then, only if that fails, any exact rational. So a
returned solution has fractional or negative steps only when no other kind exists.

`make_puzzle` draws numbers and picks a target uniformly among the integers in range that the full
(rational) search reaches, so every puzzle it makes has a solution the verifier accepts.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

# Exhaustive search grows super-exponentially: 4 numbers take a few ms, 5 already ~0.2 s a search.
MAX_NUMS = 4
MAX_DRAWS = 1000  # redraws of the numbers before make_puzzle gives up on a target range

Value = int | Fraction
# How a value was reached: a leaf index, or (op, left mask, left value, right mask, right value).
Node = int | tuple[str, int, Value, int, Value]

_PREC_ATOM, _PREC_ADD, _PREC_MUL = 3, 1, 2


@dataclass(frozen=True, slots=True)
class Solution:
    """An infix equation using each number once, and its steps in order, like "12 + 5 = 17"."""

    expression: str
    steps: tuple[str, ...]


def solve(nums: Sequence[int], target: int) -> Solution | None:
    """A deterministic solution of the puzzle, or None if none exists."""
    _check_nums(nums)
    for naturals_only in (True, False):
        tables = _reachable(tuple(nums), naturals_only)
        full = (1 << len(nums)) - 1
        if target in tables[full]:
            expression, _, steps = _render(nums, tables, full, target)
            return Solution(expression, tuple(steps))
    return None


def reachable_targets(nums: Sequence[int]) -> set[int]:
    """Every integer some equation over all of `nums` (each once, exact rationals) evaluates to."""
    _check_nums(nums)
    top = _reachable(tuple(nums), naturals_only=False)[(1 << len(nums)) - 1]
    return {int(v) for v in top if v.denominator == 1}


def make_puzzle(
    rng: random.Random,
    num_count: int,
    low: int,
    high: int,
    target_low: int,
    target_high: int,
) -> tuple[list[int], int]:
    """Draw `num_count` numbers uniformly from [low, high] and a solvable target in [target_low, target_high].

    Numbers are redrawn when no target in range is reachable; after MAX_DRAWS tries it gives up.
    """
    if not 2 <= num_count <= MAX_NUMS:
        raise ValueError(f"num_count must be between 2 and {MAX_NUMS}, got {num_count}")
    if low < 1 or low > high:
        raise ValueError(f"need 1 <= low <= high for the numbers, got low={low}, high={high}")
    if target_low > target_high:
        raise ValueError(f"need target_low <= target_high, got {target_low} > {target_high}")
    for _ in range(MAX_DRAWS):
        nums = [rng.randint(low, high) for _ in range(num_count)]
        # Sorted so the pick depends only on the rng, not on set iteration order.
        targets = sorted(t for t in reachable_targets(nums) if target_low <= t <= target_high)
        if targets:
            return nums, rng.choice(targets)
    raise ValueError(
        f"no target in [{target_low}, {target_high}] is reachable with {num_count} numbers from "
        f"[{low}, {high}] after {MAX_DRAWS} draws; widen the target range"
    )


def _check_nums(nums: Sequence[int]) -> None:
    if not 1 <= len(nums) <= MAX_NUMS:
        raise ValueError(f"need 1 to {MAX_NUMS} numbers, got {len(nums)}")


def _reachable(nums: tuple[int, ...], naturals_only: bool) -> list[dict[Value, Node]]:
    """For every subset (bitmask) of `nums`, each value it reaches mapped to one way to reach it.

    Values stay Python ints unless a division is inexact (ints are several times faster than
    Fraction); int and Fraction hash alike, so a value is never stored twice.
    """
    size = 1 << len(nums)
    tables: list[dict[Value, Node]] = [{} for _ in range(size)]
    for i, n in enumerate(nums):
        tables[1 << i][n] = i
    # Increasing masks visit every proper subset before its superset.
    for mask in range(1, size):
        if mask & (mask - 1) == 0:
            continue  # a single number, already filled in
        table = tables[mask]
        lowest = mask & -mask
        sub = (mask - 1) & mask
        while sub:
            # Each unordered split once (the left side holds the lowest bit); `-` and `/` try both orders.
            if sub & lowest:
                rest = mask ^ sub
                for a in tables[sub]:
                    for b in tables[rest]:
                        for op, x, xm, y, ym in (
                            ("+", a, sub, b, rest),
                            ("*", a, sub, b, rest),
                            ("-", a, sub, b, rest),
                            ("-", b, rest, a, sub),
                            ("/", a, sub, b, rest),
                            ("/", b, rest, a, sub),
                        ):
                            value = _apply(op, x, y)
                            if value is None or value in table:
                                continue
                            if naturals_only and (value < 0 or type(value) is not int):
                                continue
                            table[value] = (op, xm, x, ym, y)
            sub = (sub - 1) & mask
    return tables


def _apply(op: str, x: Value, y: Value) -> Value | None:
    """x op y exactly; None for division by zero."""
    if op == "+":
        return x + y
    if op == "*":
        return x * y
    if op == "-":
        return x - y
    if y == 0:
        return None
    if type(x) is int and type(y) is int and x % y == 0:
        return x // y
    result = Fraction(x) / y
    return int(result) if result.denominator == 1 else result


def _render(
    nums: Sequence[int], tables: list[dict[Value, Node]], mask: int, value: Value
) -> tuple[str, int, list[str]]:
    """(expression, precedence of its top operator, steps in post-order) for one table entry."""
    node = tables[mask][value]
    if isinstance(node, int):
        return str(nums[node]), _PREC_ATOM, []
    op, left_mask, left, right_mask, right = node
    left_expr, left_prec, left_steps = _render(nums, tables, left_mask, left)
    right_expr, right_prec, right_steps = _render(nums, tables, right_mask, right)
    prec = _PREC_ADD if op in "+-" else _PREC_MUL
    # Minimal parentheses: a lower-precedence operand always needs them; so does the right operand
    # of `-` or `/` at the same precedence (a - (b + c), a / (b * c)). Right-hand `+` and `*`
    # regroup freely because the arithmetic is exact.
    if left_prec < prec:
        left_expr = f"({left_expr})"
    if right_prec < prec or (right_prec == prec and op in "-/"):
        right_expr = f"({right_expr})"
    step = f"{_show(left, operand=True)} {op} {_show(right, operand=True)} = {_show(value)}"
    return f"{left_expr} {op} {right_expr}", prec, left_steps + right_steps + [step]


def _show(value: Value, operand: bool = False) -> str:
    """An int as digits, a fraction as `a/b`; an operand that is not a natural number is
    parenthesized so that "8 / (1/3) = 24" and "4 * (-2) = -8" read unambiguously."""
    text = str(value) if type(value) is int else f"{value.numerator}/{value.denominator}"
    if operand and (value < 0 or type(value) is not int):
        return f"({text})"
    return text
