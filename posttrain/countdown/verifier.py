"""Countdown verifier: score a model's completion against a puzzle's numbers and target.

`score(completion, nums, target)` is a pure function (no I/O, no randomness, no `eval`) that returns a
frozen `Score`. Reward scale, as in TinyZero: 1.0 correct, 0.1 an answer tag with a wrong or invalid
equation (the "format score"), 0.0 no answer tag.

Policy
- The answer is the text between the LAST `</answer>` in the completion and the last `<answer>` before
  it, wherever it sits (lines after it do not matter). Tags are case-sensitive. `completion` is the
  model's output only; strip the prompt before calling.
- The answer, stripped of ASCII whitespace, may hold only ASCII digits, `+ - * /`, `( )` and ASCII
  whitespace; tabs and newlines count as spaces. Unicode digits (Arabic-Indic, fullwidth) are rejected.
- Integer literals have no leading zeros (`0` alone is fine, `05` is not). There is no unary plus or
  minus, no `**`, `//`, `.`, exponent notation or `_` separators.
- The literals must equal `nums` as a multiset: each number used exactly once, all of them used.
- The value is computed exactly (ints, and `fractions.Fraction` only when a division is not exact) and
  must equal `target` exactly. Division by zero makes the equation wrong, never an exception.
- Work is bounded by the input's length, never refused for its shape: tag search is two `str.rfind`
  calls; the parser is an iterative shunting-yard (no recursion), so parentheses may nest as deep as
  the answer is long (a correct equation in 500 redundant pairs is correct); a first pass checks the
  syntax and the literals without arithmetic, so arithmetic only ever runs on `len(nums)` numbers; and
  answers over `MAX_ANSWER_CHARS` (far beyond any equation a policy writes within its token budget)
  are rejected before parsing, so no completion costs more than a few ms.

Reasons (`Score.reason`), checked in this order:
  "no_answer_tag"     no complete `<answer>...</answer>` pair (reward 0.0)
  "too_long"          stripped answer longer than MAX_ANSWER_CHARS
  "empty_answer"      nothing between the tags
  "bad_character"     any character outside the allowed set
  "leading_zero"      a literal like `05`
  "syntax"            anything else the grammar rejects (`**`, `//`, unary minus, `()`, unbalanced)
  "numbers_mismatch"  literals differ from `nums` as a multiset
  "division_by_zero"  the equation divides by zero somewhere
  "wrong_value"       well-formed, right numbers, value != target
  "correct"           reward 1.0
Within one answer, "leading_zero" and "syntax" report whichever the left-to-right parse meets first.

Flaws of the usual TinyZero scorer fixed here (reference.md section 3):
- it `eval`s the string, so `9 ** 9 ** 9` runs for minutes: here `**` is a syntax error and work is
  bounded by the length cap;
- `1.5 * 4` for nums [1, 5, 4] scored 1.0 because `\\d+` split the decimal: `.` is a bad character here,
  as are `**` and `//` syntax errors;
- a 1e-5 float tolerance accepted near misses like `50 + 1 / 99 / 99 / 99`: here equality is exact;
- only the last line was searched, so a correct answer followed by another line scored 0, and the
  `<answer>(.*?)</answer>` regex was quadratic on thousands of unclosed tags: here `rfind` is linear;
- it drew from the global `random` state and printed 1 input in 64: this module does neither.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

REWARD_CORRECT = 1.0
REWARD_FORMAT = 0.1  # an answer tag is present but the equation is wrong or invalid
REWARD_NONE = 0.0

# An equation over four numbers is ~20 characters. The cap only bounds the parse's time (linear in
# the length: ~2 ms at the cap, see benchmarks/bench_verifier.py); it admits ~5,000 redundant
# parenthesis pairs around a four-number equation, far past anything a policy writes as an answer.
MAX_ANSWER_CHARS = 10_000

_OPEN, _CLOSE = "<answer>", "</answer>"
_WHITESPACE = " \t\r\n"
# Explicit ranges, not \d or \s: those match Unicode digits and spaces.
_ALLOWED = re.compile(r"[0-9+\-*/() \t\r\n]*")
# Whitespace matches nothing here, so findall skips it; characters were already checked by _ALLOWED.
_TOKEN = re.compile(r"[0-9]+|[-+*/()]")
_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


@dataclass(frozen=True, slots=True)
class Score:
    """The verdict on one completion; `answer` is the stripped text inside the tags, or None."""

    correct: bool
    reward: float
    reason: str
    answer: str | None


class _Invalid(Exception):
    """Raised inside the parser; carries the `reason` string."""


def score(completion: str, nums: Sequence[int], target: int) -> Score:
    """Score one completion against a Countdown puzzle (see the module docstring for the policy)."""
    answer = extract_answer(completion)
    if answer is None:
        return Score(False, REWARD_NONE, "no_answer_tag", None)
    reason = check_equation(answer, nums, target)
    if reason == "correct":
        return Score(True, REWARD_CORRECT, reason, answer)
    return Score(False, REWARD_FORMAT, reason, answer)


def extract_answer(completion: str) -> str | None:
    """The stripped text of the last complete `<answer>...</answer>` pair, or None if there is none."""
    end = completion.rfind(_CLOSE)
    if end < 0:
        return None
    start = completion.rfind(_OPEN, 0, end)
    if start < 0:
        return None
    return completion[start + len(_OPEN) : end].strip(_WHITESPACE)


def check_equation(answer: str, nums: Sequence[int], target: int) -> str:
    """The reason string for an extracted answer: "correct" or why it is not."""
    if len(answer) > MAX_ANSWER_CHARS:
        return "too_long"
    if not answer:
        return "empty_answer"
    if _ALLOWED.fullmatch(answer) is None:
        return "bad_character"
    tokens = _TOKEN.findall(answer)
    try:
        _, literals = _evaluate(tokens, arithmetic=False)  # syntax and literals first: no big numbers
    except _Invalid as err:
        return err.args[0]
    if sorted(literals) != sorted(nums):
        return "numbers_mismatch"
    value, _ = _evaluate(tokens)
    if value is None:
        return "division_by_zero"
    return "correct" if value == target else "wrong_value"


def _evaluate(tokens: list[str], arithmetic: bool = True) -> tuple[int | Fraction | None, list[int]]:
    """Value and literals of an infix expression, by shunting-yard evaluation.

    The value is None when some division was by zero; it propagates so that a later syntax error
    still wins (every syntax error is found, whatever the arithmetic did). Without `arithmetic` only the
    syntax and the literals are checked (every value is None), in time linear in the tokens.
    """
    reduce = _reduce if arithmetic else _skip
    values: list[int | Fraction | None] = []
    ops: list[str] = []
    literals: list[int] = []
    expect_operand = True
    for tok in tokens:
        if expect_operand:
            if tok == "(":
                ops.append(tok)
            elif tok[0].isdigit():  # tokens are ASCII by now
                if len(tok) > 1 and tok[0] == "0":
                    raise _Invalid("leading_zero")
                number = int(tok)
                literals.append(number)
                values.append(number)
                expect_operand = False
            else:  # an operator where a number belongs: unary sign, `**`, `//`, `()`
                raise _Invalid("syntax")
        elif tok == ")":
            while ops and ops[-1] != "(":
                reduce(values, ops.pop())
            if not ops:
                raise _Invalid("syntax")  # unbalanced `)`
            ops.pop()
        elif tok in _PRECEDENCE:
            precedence = _PRECEDENCE[tok]
            while ops and ops[-1] != "(" and _PRECEDENCE[ops[-1]] >= precedence:
                reduce(values, ops.pop())  # >= makes the four operators left-associative
            ops.append(tok)
            expect_operand = True
        else:  # a number or `(` right after an operand: implicit products like `2(3)` or `1 2`
            raise _Invalid("syntax")
    if expect_operand:  # empty, or ends in an operator
        raise _Invalid("syntax")
    while ops:
        op = ops.pop()
        if op == "(":
            raise _Invalid("syntax")  # unbalanced `(`
        reduce(values, op)
    return values[0], literals


def _skip(values: list[int | Fraction | None], op: str) -> None:
    """`_reduce` without the arithmetic: the syntax pass keeps only the stack's shape."""
    values.pop()
    values[-1] = None


def _reduce(values: list[int | Fraction | None], op: str) -> None:
    """Apply `op` to the top two values, exactly; ints stay ints unless a division is not exact."""
    b = values.pop()
    a = values.pop()
    if a is None or b is None:
        values.append(None)
    elif op == "+":
        values.append(a + b)
    elif op == "-":
        values.append(a - b)
    elif op == "*":
        values.append(a * b)
    elif b == 0:
        values.append(None)
    elif type(a) is int and type(b) is int and a % b == 0:
        values.append(a // b)  # exact, also for negatives: Python's % agrees with //
    else:
        values.append(Fraction(a) / b)
