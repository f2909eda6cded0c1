"""The verifier against an independent oracle on tens of thousands of random and mutated answers.

The oracle parses with Python's `ast` (parse only, nothing is evaluated) and folds a whitelist of
nodes with exact fractions. The two must agree on every input: cases nobody wrote by hand.
"""

from __future__ import annotations

import ast
import random
import re
import time
from collections import Counter
from fractions import Fraction

from posttrain.countdown import verifier as countdown

ALPHABET = list("0123456789+-*/() ") + ["**", "//", ".", "1.5", "-", "\t", "\n", "e", "_", "٣", "１", "x", "<", ">"]


def oracle(answer: str) -> tuple[Fraction | None, list[int]] | None:
    """(exact value or None on a division by zero, literals) of a valid answer; None if invalid."""
    answer = answer.strip(" \t\r\n")
    if not answer or len(answer) > countdown.MAX_ANSWER_CHARS or not re.fullmatch(r"[0-9+\-*/() \t\r\n]+", answer):
        return None
    if re.search(r"(?<![0-9])0[0-9]", answer):  # a leading zero
        return None
    try:
        tree = ast.parse(re.sub(r"[\t\r\n]", " ", answer), mode="eval")
    except SyntaxError:
        return None
    literals: list[int] = []
    zero_division = False

    def fold(node: ast.AST) -> Fraction:
        nonlocal zero_division
        if isinstance(node, ast.Constant) and type(node.value) is int:
            literals.append(node.value)
            return Fraction(node.value)
        if not (isinstance(node, ast.BinOp) and type(node.op) in (ast.Add, ast.Sub, ast.Mult, ast.Div)):
            raise ValueError(type(node).__name__)  # unary minus, **, //, calls, tuples...
        left, right = fold(node.left), fold(node.right)
        if isinstance(node.op, ast.Div) and right == 0:
            zero_division = True
            return Fraction(0)
        return {ast.Add: left + right, ast.Sub: left - right, ast.Mult: left * right,
                ast.Div: left / right if right else Fraction(0)}[type(node.op)]

    try:
        value = fold(tree.body)
    except ValueError:
        return None
    return (None if zero_division else value), literals


def random_expression(rng: random.Random, nums: list[int]) -> str:
    items = [str(n) for n in nums]
    rng.shuffle(items)
    while len(items) > 1:
        i = rng.randrange(len(items) - 1)
        joined = f"{items[i]}{rng.choice(['', ' '])}{rng.choice('+-*/')}{rng.choice(['', ' '])}{items[i + 1]}"
        items[i:i + 2] = [f"({joined})" if rng.random() < 0.5 else joined]
    return items[0]


def mutate(rng: random.Random, text: str) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 3)):
        where = min(rng.randrange(len(chars) + 1), max(len(chars) - 1, 0))
        kind = rng.random()
        if kind < 0.4 or not chars:
            chars.insert(where, rng.choice(ALPHABET))
        elif kind < 0.7:
            del chars[where]
        else:
            chars[where] = rng.choice(ALPHABET)
    return "".join(chars)


def test_verifier_agrees_with_the_oracle_on_random_answers():
    rng = random.Random(2026)
    n_correct = 0
    slowest = 0.0
    for _ in range(30_000):
        nums = [rng.randint(0, 30) for _ in range(rng.randint(2, 4))]
        answer = random_expression(rng, nums)
        if rng.random() < 0.6:
            answer = mutate(rng, answer)
        parsed = oracle(answer)
        value = parsed[0] if parsed else None
        # Aim the target at the answer's own value most of the time, so that many answers are correct.
        if value is not None and value.denominator == 1 and rng.random() < 0.8:
            target = int(value)
        else:
            target = rng.randint(0, 60)
        expected = parsed is not None and parsed[0] == target and Counter(parsed[1]) == Counter(nums)
        completion = f"<think>{mutate(rng, 'try 1 + 2')}</think> <answer>{answer}</answer>"
        start = time.perf_counter()
        result = countdown.score(completion, nums, target)
        slowest = max(slowest, time.perf_counter() - start)
        assert result.correct == expected, (answer, nums, target, result)
        assert result.reward == (1.0 if expected else 0.1)
        n_correct += expected
    assert n_correct > 3_000  # the sample holds many correct answers, not only junk
    assert slowest < 0.01
