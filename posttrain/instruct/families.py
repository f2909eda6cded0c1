"""The task families behind `posttrain.instruct.tasks`: templates, ground truth, grading, flawed answers.

Each family enumerates its prompt space by index (so unique prompts are drawn without rejection),
reads its ground truth back out of the prompt text with one regex per template, writes the reference
answer, grades a response to one of four levels, and writes the flawed answers that stand in for
real chat data: partly wrong, right content in the wrong format, plain wrong.

Levels: `exact` (the reference, up to the family's tolerance), `core` (the right answer inside other
text or in another format), `partial` (close: one letter, one item or one count off), `wrong`.
`instruct_tasks.check` turns a level and the response's extra length into a 1-10 score.

Where a response offers several answers, the last one counts (numbers, `sort`, `repeat`, `n_words`),
or several distinct candidates earn `partial` at best: listing guesses is not answering.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

EXACT, CORE, PARTIAL, WRONG = "exact", "core", "partial", "wrong"

# A few dozen short common nouns: small enough for a ~5M-parameter model to learn their spelling.
WORDS = (
    "apple", "bell", "bird", "boat", "book", "bread", "cake", "chair", "cloud", "coat", "door", "duck",
    "fish", "flag", "frog", "gift", "glass", "hand", "hat", "horse", "house", "kite", "lamp", "leaf",
    "lion", "milk", "moon", "nest", "pen", "pig", "plant", "rain", "ring", "road", "rock", "rose",
    "salt", "ship", "shoe", "sock", "star", "stone", "sun", "table", "tree", "wind", "wolf", "train",
)
CATEGORIES = {
    "colors": ("red", "blue", "green", "yellow", "orange", "purple", "pink", "brown", "black", "white"),
    "animals": ("cat", "dog", "horse", "cow", "sheep", "lion", "tiger", "bear", "rabbit", "mouse"),
    "fruits": ("apple", "banana", "cherry", "grape", "lemon", "mango", "peach", "pear", "plum", "melon"),
    "vegetables": ("carrot", "potato", "onion", "pepper", "pea", "bean", "corn", "cabbage", "lettuce", "spinach"),
    "instruments": ("piano", "guitar", "violin", "drum", "flute", "harp", "trumpet", "cello", "banjo", "organ"),
    "sports": ("soccer", "tennis", "golf", "hockey", "rugby", "cricket", "boxing", "rowing", "skiing", "cycling"),
}
# Six descriptors per topic: `n_words` asks for 2-5, and a partly wrong answer gives one more.
TOPICS = {
    "a cat": "soft small playful curious quiet furry", "a dog": "loyal friendly playful brave happy furry",
    "the sea": "vast blue deep salty calm wild", "winter": "cold snowy dark quiet long white",
    "summer": "hot sunny bright long lazy warm", "the sun": "bright hot yellow warm distant huge",
    "the moon": "pale round silent distant bright cold", "a forest": "green quiet dense tall shady old",
    "a city": "busy loud bright crowded tall modern", "rain": "wet gray cool soft steady calm",
    "snow": "white cold soft quiet bright fresh", "coffee": "hot bitter dark strong rich fresh",
    "music": "loud soft joyful rhythmic lively warm", "a garden": "green fresh colorful quiet sunny lush",
    "a river": "long cool fast clear wide calm", "the night": "dark quiet cold calm still deep",
    "a book": "thick old long useful wise rich", "fire": "hot bright red wild warm fast",
    "a mountain": "tall steep rocky cold huge old", "bread": "warm soft fresh golden tasty simple",
    "the wind": "cold strong fast wild loud fresh", "a friend": "kind loyal honest warm funny caring",
    "a storm": "loud dark wild wet fierce cold", "the desert": "hot dry vast sandy quiet empty",
}
# Every word above, for the tasks on one word's letters: more words, more prompts for those families.
LETTER_WORDS = tuple(sorted({*WORDS, *(x for xs in CATEGORIES.values() for x in xs),
                             *(w for ws in TOPICS.values() for w in ws.split())}))
GENERIC_DESCRIPTORS = "good simple clear nice calm plain".split()  # for a topic the generator never asks
# The chat filler of verbose answers. No digits, no one-letter words and no vocabulary word, so it
# can never be mistaken for an answer; its marker words let `n_words` skip filler sentences.
PREAMBLES = ("Sure! Here is the answer:", "Of course! Here you go:", "Great question! The answer is:",
             "Certainly! Here it is:")
POSTAMBLES = ("Let me know if you need anything else.", "Hope this helps!",
              "Feel free to ask if you have more questions.", "Thanks for asking, this was fun to work out.")
CHATTER_MARKERS = frozenset("sure here answer course question certainly let hope helps ask questions "
                            "thanks asking".split())

MAX_COUNT = 20  # largest N a prompt may ask for: bounds the reference a crafted prompt can demand

_FIELDS = {"w": r"[a-z]+", "n": r"\d{1,3}", "a": r"\d{1,4}", "b": r"\d{1,4}", "op": r"[-+*]", "c": r"[a-z]",
           "category": r"[a-z]+", "layout": r"one per line|separated by commas",
           "topic": r"[a-z]+(?: [a-z]+)?", "words": r"[a-z]+(?:, [a-z]+){1,9}", "phrase": r"[a-z]+(?: [a-z]+){1,9}"}
_WORD = re.compile(r"[A-Za-z]+")
_DASHED = re.compile(r"[A-Za-z](?:-[A-Za-z])+")
_INT = re.compile(r"(?<!\d)-?\d{1,12}(?!\d)")  # a longer digit run is no answer, and int() of it is slow
_SEGMENT_END = re.compile(r"\n|:\s+|(?<=[.!?;])\s+")
_PHRASE_WORD = re.compile(r"[A-Za-z]+(?:['-][A-Za-z]+)*$")


@dataclass(frozen=True)
class Grade:
    level: str  # EXACT, CORE, PARTIAL or WRONG
    reason: str


def bare(text: str) -> str:
    """The text without surrounding quotes and a final period: trivial wrapping nobody grades."""
    return text.strip().strip("\"'`").rstrip(".!").strip().strip("\"'`")


def one_edit(a: str, b: str) -> bool:
    """Whether `a` and `b` differ by exactly one substitution, insertion, deletion or adjacent swap."""
    if a == b or abs(len(a) - len(b)) > 1:
        return False
    if len(a) == len(b):
        diff = [i for i, (x, y) in enumerate(zip(a, b)) if x != y]
        return len(diff) == 1 or (len(diff) == 2 and diff[1] == diff[0] + 1
                                  and a[diff[0]] == b[diff[1]] and a[diff[1]] == b[diff[0]])
    short, long_ = sorted((a, b), key=len)
    i = next((i for i, (x, y) in enumerate(zip(short, long_)) if x != y), len(short))
    return short[i:] == long_[i + 1:]


def mutate(word: str, rng: random.Random) -> str:
    """`word` with one letter replaced or two neighbours swapped: a near miss."""
    i = rng.randrange(len(word))
    if rng.random() < 0.5 and i + 1 < len(word) and word[i] != word[i + 1]:
        return word[:i] + word[i + 1] + word[i] + word[i + 2:]
    letters = string.ascii_uppercase if word[i].isupper() else string.ascii_lowercase
    return word[:i] + rng.choice(letters.replace(word[i], "")) + word[i + 1:]


def nth_permutation(i: int, vocab: tuple[str, ...], k: int) -> tuple[str, ...]:
    """The i-th ordered choice of k distinct items (a bijection on range(P(len(vocab), k)))."""
    left, out = list(vocab), []
    for _ in range(k):
        i, pos = divmod(i, len(left))
        out.append(left.pop(pos))
    return tuple(out)


def n_permutations(n: int, k: int) -> int:
    out = 1
    for j in range(k):
        out *= n - j
    return out


def grade_candidates(cands: list[str], target: str, near: Callable[[str], bool], what: str) -> Grade:
    """Grade the answer-like tokens found in a response: one right answer, a near miss, or neither."""
    distinct = set(cands)
    if distinct == {target}:
        return Grade(CORE, f"right {what} {target!r} with other text")
    if target in distinct:
        return Grade(PARTIAL, f"right {what} {target!r} among other candidates")
    if any(near(t) for t in distinct):
        return Grade(PARTIAL, f"near miss of {what} {target!r}")
    return Grade(WRONG, f"expected {what} {target!r}")


def grade_number(text: str, answer: int) -> Grade:
    if bare(text) == str(answer):
        return Grade(EXACT, "exact number")
    numbers = _INT.findall(text)
    if not numbers:
        return Grade(WRONG, f"no number; expected {answer}")
    last = int(numbers[-1])
    if last == answer:
        return Grade(CORE, f"right number {answer} with other text")
    if abs(last - answer) == 1:
        return Grade(PARTIAL, f"off by one: {last}, expected {answer}")
    return Grade(WRONG, f"{last}, expected {answer}")


def words_lower(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


class Family:
    """One task family. Subclasses fill in the class attributes and the methods below."""

    name: str
    templates: tuple[str, ...]

    def __init__(self) -> None:
        self.patterns = [re.compile("".join(re.escape(lit) + (f"(?P<{f}>{_FIELDS[f]})" if f else "")
                                            for lit, f, _, _ in string.Formatter().parse(t)))
                         for t in self.templates]

    @property
    def n_prompts(self) -> int:
        return len(self.templates) * self.n_specs()

    def prompt_at(self, i: int) -> str:
        spec_index, t = divmod(i, len(self.templates))
        return self.templates[t].format(**self.render(self.spec_at(spec_index)))

    def match(self, prompt: str) -> dict[str, Any] | None:
        for pattern in self.patterns:
            if m := pattern.fullmatch(prompt):
                return self.parse(m.groupdict())
        return None

    def render(self, spec: dict[str, Any]) -> dict[str, str]:
        return {k: str(v) for k, v in spec.items()}

    def parse(self, fields: dict[str, str]) -> dict[str, Any]:
        return dict(fields)

    def format(self, spec: dict[str, Any], rng: random.Random) -> str:
        return f"The answer is {self.reference(spec)}."

    def n_specs(self) -> int:
        raise NotImplementedError

    def spec_at(self, i: int) -> dict[str, Any]:
        raise NotImplementedError

    def reference(self, spec: dict[str, Any]) -> str:
        raise NotImplementedError

    def grade(self, spec: dict[str, Any], text: str) -> Grade:
        raise NotImplementedError

    def partial(self, spec: dict[str, Any], rng: random.Random) -> str:
        raise NotImplementedError

    def wrong(self, spec: dict[str, Any], rng: random.Random) -> str:
        raise NotImplementedError


def _count(fields: dict[str, str]) -> int:
    n = int(fields["n"])
    if not 1 <= n <= MAX_COUNT:
        raise ValueError(f"asks for {n}; the checker handles 1 to {MAX_COUNT}")
    return n


class _OneWord(Family):
    """A family whose spec is one word of LETTER_WORDS."""

    def n_specs(self) -> int:
        return len(LETTER_WORDS)

    def spec_at(self, i: int) -> dict[str, Any]:
        return {"w": LETTER_WORDS[i]}

    def other_word(self, spec: dict[str, Any], rng: random.Random) -> str:
        return rng.choice([w for w in LETTER_WORDS if w != spec["w"]])


class Repeat(_OneWord):
    name = "repeat"
    templates = ("Repeat the word '{w}' {n} times, separated by spaces.",
                 "Write '{w}' {n} times in a row, separated by spaces.",
                 "Say the word '{w}' exactly {n} times, with spaces between.")
    counts = range(2, 7)

    def n_specs(self) -> int:
        return len(LETTER_WORDS) * len(self.counts)

    def spec_at(self, i: int) -> dict[str, Any]:
        n, w = divmod(i, len(LETTER_WORDS))
        return {"w": LETTER_WORDS[w], "n": self.counts[n]}

    def parse(self, fields: dict[str, str]) -> dict[str, Any]:
        return {"w": fields["w"], "n": _count(fields)}

    def reference(self, spec: dict[str, Any]) -> str:
        return " ".join([spec["w"]] * spec["n"])

    def grade(self, spec: dict[str, Any], text: str) -> Grade:
        if bare(text).lower() == self.reference(spec):
            return Grade(EXACT, "exact repetition")
        runs, run = [], 0  # lengths of the runs of the word, punctuation between them ignored
        for token in words_lower(text) + [""]:
            if token == spec["w"]:
                run += 1
            elif run:
                runs, run = runs + [run], 0
        if not runs:
            return Grade(WRONG, f"the word {spec['w']!r} is missing")
        if runs[-1] == spec["n"]:
            return Grade(CORE, f"right count {spec['n']} with other text or separators")
        if abs(runs[-1] - spec["n"]) == 1:
            return Grade(PARTIAL, f"{runs[-1]} in a row, expected {spec['n']}")
        return Grade(WRONG, f"{runs[-1]} in a row, expected {spec['n']}")

    def partial(self, spec: dict[str, Any], rng: random.Random) -> str:
        return " ".join([spec["w"]] * rng.choice([k for k in (spec["n"] - 1, spec["n"] + 1) if k >= 1]))

    def format(self, spec: dict[str, Any], rng: random.Random) -> str:
        return rng.choice([", ", "\n"]).join([spec["w"]] * spec["n"])

    def wrong(self, spec: dict[str, Any], rng: random.Random) -> str:
        return " ".join([self.other_word(spec, rng)] * spec["n"])


class Reverse(_OneWord):
    name = "reverse"
    templates = ("Reverse the letters of the word '{w}'.", "Write the word '{w}' backwards.",
                 "What is '{w}' spelled backwards?")

    def reference(self, spec: dict[str, Any]) -> str:
        return spec["w"][::-1]

    def grade(self, spec: dict[str, Any], text: str) -> Grade:
        w, target = spec["w"], spec["w"][::-1]
        if bare(text).lower() == target:
            return Grade(EXACT, "exact reversal")
        # answer-like: the reversal, a near miss of it, or another shuffle of the letters (not the echo)
        cands = [t for t in words_lower(text)
                 if t != w and (t == target or one_edit(t, target) or sorted(t) == sorted(w))]
        return grade_candidates(cands, target, lambda t: one_edit(t, target), "reversal")

    def partial(self, spec: dict[str, Any], rng: random.Random) -> str:
        return mutate(spec["w"][::-1], rng)

    def wrong(self, spec: dict[str, Any], rng: random.Random) -> str:
        return rng.choice([spec["w"], self.other_word(spec, rng)[::-1]])


class Uppercase(_OneWord):
    name = "uppercase"
    templates = ("Write the word '{w}' in uppercase letters.", "Convert '{w}' to all capital letters.",
                 "Rewrite '{w}' in capitals.")

    def reference(self, spec: dict[str, Any]) -> str:
        return spec["w"].upper()

    def grade(self, spec: dict[str, Any], text: str) -> Grade:
        w, target = spec["w"], spec["w"].upper()
        if bare(text) == target:  # case is the task here, so no case tolerance
            return Grade(EXACT, "exact uppercase")
        cands = [t for t in _WORD.findall(text) if (t.isupper() and len(t) > 1) or (t.lower() == w and t != w)]
        return grade_candidates(cands, target, lambda t: t.lower() == w or one_edit(t, target), "word")

    def partial(self, spec: dict[str, Any], rng: random.Random) -> str:
        target = spec["w"].upper()
        i = rng.randrange(len(target))
        return rng.choice([target[:i] + target[i].lower() + target[i + 1:], spec["w"].capitalize()])

    def wrong(self, spec: dict[str, Any], rng: random.Random) -> str:
        return rng.choice([spec["w"], self.other_word(spec, rng).upper()])


class Spell(_OneWord):
    name = "spell"
    templates = ("Spell the word '{w}' with a dash between each letter.",
                 "Write the letters of '{w}' separated by dashes.",
                 "Spell out '{w}' letter by letter, joined with dashes.")

    def reference(self, spec: dict[str, Any]) -> str:
        return "-".join(spec["w"])

    def grade(self, spec: dict[str, Any], text: str) -> Grade:
        target = self.reference(spec)
        if bare(text).lower() == target:
            return Grade(EXACT, "exact spelling")
        cands = [t.lower() for t in _DASHED.findall(text)]
        return grade_candidates(cands, target, lambda t: one_edit(t.replace("-", ""), spec["w"]), "spelling")

    def partial(self, spec: dict[str, Any], rng: random.Random) -> str:
        return "-".join(mutate(spec["w"], rng))

    def wrong(self, spec: dict[str, Any], rng: random.Random) -> str:
        return rng.choice([spec["w"], "-".join(self.other_word(spec, rng))])


class Acronym(Family):
    name = "acronym"
    templates = ("Write the acronym of '{phrase}'.", "Form an acronym from the first letters of '{phrase}'.",
                 "What acronym do the words '{phrase}' make?")

    def n_specs(self) -> int:
        return n_permutations(len(WORDS), 3)

    def spec_at(self, i: int) -> dict[str, Any]:
        return {"phrase": " ".join(nth_permutation(i, WORDS, 3))}

    def reference(self, spec: dict[str, Any]) -> str:
        return "".join(w[0] for w in spec["phrase"].split()).upper()

    def grade(self, spec: dict[str, Any], text: str) -> Grade:
        target, answer = self.reference(spec), bare(text)
        if answer == target:
            return Grade(EXACT, "exact acronym")
        if answer.isalpha() and answer.upper() == target:
            return Grade(CORE, f"right acronym {target!r} not in capitals")
        cands = [t for t in _WORD.findall(text) if t.isupper() and len(t) > 1]
        if answer.isalpha() and answer.islower():
            cands.append(answer.upper())
        return grade_candidates(cands, target, lambda t: one_edit(t, target), "acronym")

    def partial(self, spec: dict[str, Any], rng: random.Random) -> str:
        return mutate(self.reference(spec), rng)

    def format(self, spec: dict[str, Any], rng: random.Random) -> str:
        return self.reference(spec).lower()

    def wrong(self, spec: dict[str, Any], rng: random.Random) -> str:
        words = spec["phrase"].split()
        return rng.choice(["".join(w[-1] for w in words).upper(), words[0].upper()])


class ListItems(Family):
    name = "list_items"
    templates = ("List {n} {category}, {layout}.", "Name {n} {category}, {layout}.",
                 "Give me {n} {category}, {layout}.")
    counts = range(2, 7)
    layouts = {"one per line": "\n", "separated by commas": ", "}

    def n_specs(self) -> int:
        return len(CATEGORIES) * len(self.counts) * len(self.layouts)

    def spec_at(self, i: int) -> dict[str, Any]:
        i, layout = divmod(i, len(self.layouts))
        category, n = divmod(i, len(self.counts))
        return {"n": self.counts[n], "category": list(CATEGORIES)[category], "layout": list(self.layouts)[layout]}

    def parse(self, fields: dict[str, str]) -> dict[str, Any]:
        if fields["category"] not in CATEGORIES:
            raise ValueError(f"unknown category {fields['category']!r}")
        n = _count(fields)
        if n > len(CATEGORIES[fields["category"]]) - 1:
            raise ValueError(f"asks for {n} {fields['category']}; the checker knows too few to grade that")
        return {**fields, "n": n}

    def reference(self, spec: dict[str, Any]) -> str:
        return self.layouts[spec["layout"]].join(CATEGORIES[spec["category"]][: spec["n"]])

    def grade(self, spec: dict[str, Any], text: str) -> Grade:
        items, n = CATEGORIES[spec["category"]], spec["n"]
        sep = self.layouts[spec["layout"]].strip() or "\n"
        pieces = [p.strip().rstrip(".").lower() for p in bare(text).split(sep)]
        if len(pieces) == n == len(set(pieces)) and all(p in items for p in pieces):
            return Grade(EXACT, f"{n} distinct {spec['category']}, {spec['layout']}")
        found = [t for t in words_lower(text) if t in items]
        distinct = len(set(found))
        if len(found) == distinct == n:
            return Grade(CORE, f"{n} distinct {spec['category']} with other text or another layout")
        if distinct and (abs(distinct - n) == 1 or distinct == n):
            return Grade(PARTIAL, f"{distinct} distinct {spec['category']} in {len(found)}, expected {n}")
        return Grade(WRONG, f"{distinct} distinct {spec['category']}, expected {n}")

    def partial(self, spec: dict[str, Any], rng: random.Random) -> str:
        items, n = list(CATEGORIES[spec["category"]][: spec["n"] + 1]), spec["n"]
        others = [x for c, xs in CATEGORIES.items() if c != spec["category"] for x in xs]
        options = [items[:n] + items[n:n + 1], items[: n - 1] + [rng.choice(others)]]
        if n > 1:
            options.append(items[: n - 1])
        return self.layouts[spec["layout"]].join(rng.choice(options))

    def format(self, spec: dict[str, Any], rng: random.Random) -> str:
        other = next(sep for layout, sep in self.layouts.items() if layout != spec["layout"])
        return other.join(CATEGORIES[spec["category"]][: spec["n"]])

    def wrong(self, spec: dict[str, Any], rng: random.Random) -> str:
        other = rng.choice([c for c in CATEGORIES if c != spec["category"]])
        return self.layouts[spec["layout"]].join(CATEGORIES[other][: spec["n"]])


class Sort(Family):
    name = "sort"
    templates = ("Sort these words alphabetically: {words}.", "Put these words in alphabetical order: {words}.",
                 "Arrange in alphabetical order: {words}.")

    def n_specs(self) -> int:
        return n_permutations(len(WORDS), 3)

    def spec_at(self, i: int) -> dict[str, Any]:
        return {"words": nth_permutation(i, WORDS, 3)}

    def render(self, spec: dict[str, Any]) -> dict[str, str]:
        return {"words": ", ".join(spec["words"])}

    def parse(self, fields: dict[str, str]) -> dict[str, Any]:
        words = tuple(fields["words"].split(", "))
        if len(set(words)) != len(words):
            raise ValueError("repeats a word to sort")
        return {"words": words}

    def reference(self, spec: dict[str, Any]) -> str:
        return ", ".join(sorted(spec["words"]))

    def grade(self, spec: dict[str, Any], text: str) -> Grade:
        target, k = sorted(spec["words"]), len(spec["words"])
        if bare(text).lower() == ", ".join(target):
            return Grade(EXACT, "exact order")
        seq = [t for t in words_lower(text) if t in target]
        tail = seq[-k:]  # a restated question may come first; the answer is the last k words
        if tail == target:
            return Grade(CORE, "right order with other text or separators")
        swapped = [i for i in range(k) if i < len(tail) and tail[i] != target[i]]
        if sorted(tail) == target and len(swapped) == 2 and swapped[1] == swapped[0] + 1:
            return Grade(PARTIAL, "two neighbouring words swapped")
        if len(seq) == k - 1 == len(set(seq)) and seq == sorted(seq):
            return Grade(PARTIAL, "in order but one word missing")
        return Grade(WRONG, f"expected {', '.join(target)!r}")

    def partial(self, spec: dict[str, Any], rng: random.Random) -> str:
        words = sorted(spec["words"])
        i = rng.randrange(len(words) - 1)
        if rng.random() < 0.5:
            return ", ".join(words[:i] + words[i + 1:])
        return ", ".join(words[:i] + [words[i + 1], words[i]] + words[i + 2:])

    def format(self, spec: dict[str, Any], rng: random.Random) -> str:
        return rng.choice([" ", "\n"]).join(sorted(spec["words"]))

    def wrong(self, spec: dict[str, Any], rng: random.Random) -> str:
        return ", ".join(sorted(spec["words"], reverse=True))


class Arithmetic(Family):
    name = "arithmetic"
    templates = ("What is {a} {op} {b}? Answer with the number alone.",
                 "Compute {a} {op} {b}. Reply with just the number.",
                 "Calculate {a} {op} {b} and give only the number.")
    # Small operands; subtraction never goes below zero, so every answer is a plain natural number.
    specs = ([(a, "+", b) for a in range(1, 21) for b in range(1, 21)]
             + [(a, "-", b) for a in range(1, 21) for b in range(0, a + 1)]
             + [(a, "*", b) for a in range(1, 13) for b in range(1, 13)])
    ops: dict[str, Callable[[int, int], int]] = {"+": lambda a, b: a + b, "-": lambda a, b: a - b,
                                                 "*": lambda a, b: a * b}

    def n_specs(self) -> int:
        return len(self.specs)

    def spec_at(self, i: int) -> dict[str, Any]:
        a, op, b = self.specs[i]
        return {"a": a, "op": op, "b": b}

    def parse(self, fields: dict[str, str]) -> dict[str, Any]:
        return {"a": int(fields["a"]), "op": fields["op"], "b": int(fields["b"])}

    def answer(self, spec: dict[str, Any]) -> int:
        return self.ops[spec["op"]](spec["a"], spec["b"])

    def reference(self, spec: dict[str, Any]) -> str:
        return str(self.answer(spec))

    def grade(self, spec: dict[str, Any], text: str) -> Grade:
        return grade_number(text, self.answer(spec))

    def partial(self, spec: dict[str, Any], rng: random.Random) -> str:
        answer = self.answer(spec)
        return str(answer + 1 if answer == 0 or rng.random() < 0.5 else answer - 1)

    def format(self, spec: dict[str, Any], rng: random.Random) -> str:
        return f"{spec['a']} {spec['op']} {spec['b']} = {self.answer(spec)}"

    def wrong(self, spec: dict[str, Any], rng: random.Random) -> str:
        answer = self.answer(spec)
        return str(answer + rng.randint(2, 9) if answer < 10 or rng.random() < 0.5 else answer - rng.randint(2, 9))


class CountLetters(Family):
    name = "count_letters"
    templates = ("How many times does the letter '{c}' appear in '{w}'? Answer with the number alone.",
                 "Count the letter '{c}' in the word '{w}'. Reply with just the number.",
                 "How many '{c}' letters are in the word '{w}'? Give only the number.")
    # each letter of each word, and one vowel the word lacks, so that 0 is sometimes the answer
    specs = [(w, c) for w in LETTER_WORDS
             for c in sorted(set(w)) + [v for v in "aeiou" if v not in w][:1]]

    def n_specs(self) -> int:
        return len(self.specs)

    def spec_at(self, i: int) -> dict[str, Any]:
        w, c = self.specs[i]
        return {"c": c, "w": w}

    def reference(self, spec: dict[str, Any]) -> str:
        return str(spec["w"].count(spec["c"]))

    def grade(self, spec: dict[str, Any], text: str) -> Grade:
        return grade_number(text, spec["w"].count(spec["c"]))

    def partial(self, spec: dict[str, Any], rng: random.Random) -> str:
        count = spec["w"].count(spec["c"])
        return str(count + 1 if count == 0 or rng.random() < 0.5 else count - 1)

    def wrong(self, spec: dict[str, Any], rng: random.Random) -> str:
        return str(spec["w"].count(spec["c"]) + rng.randint(2, 5))


class NWords(Family):
    name = "n_words"
    templates = ("Describe {topic} in exactly {n} words.", "Use exactly {n} words to describe {topic}.",
                 "In exactly {n} words, describe {topic}.")
    counts = range(2, 6)

    def n_specs(self) -> int:
        return len(TOPICS) * len(self.counts)

    def spec_at(self, i: int) -> dict[str, Any]:
        topic, n = divmod(i, len(self.counts))
        return {"topic": list(TOPICS)[topic], "n": self.counts[n]}

    def parse(self, fields: dict[str, str]) -> dict[str, Any]:
        return {"topic": fields["topic"], "n": _count(fields)}

    def descriptors(self, spec: dict[str, Any]) -> list[str]:
        return TOPICS[spec["topic"]].split() if spec["topic"] in TOPICS else GENERIC_DESCRIPTORS

    def reference(self, spec: dict[str, Any]) -> str:
        return " ".join(self.descriptors(spec)[: spec["n"]])

    def grade(self, spec: dict[str, Any], text: str) -> Grade:
        n, tokens = spec["n"], bare(text).split()
        if (len(tokens) == n == len({t.lower() for t in tokens}) and all(_PHRASE_WORD.match(t) for t in tokens)
                and not any(t.lower() in CHATTER_MARKERS for t in tokens)):
            return Grade(EXACT, f"exactly {n} distinct words")
        # the last sentence or line that is not chat filler carries the answer
        segments = [_WORD.findall(s) for s in _SEGMENT_END.split(text)]
        segments = [s for s in segments if s and not any(w.lower() in CHATTER_MARKERS for w in s)]
        if not segments:
            return Grade(WRONG, "no description")
        last = segments[-1]
        count = len({w.lower() for w in last})
        if len(last) == count == n:
            return Grade(CORE, f"{n} distinct words with other text or punctuation")
        if abs(count - n) == 1 and len(last) == count:
            return Grade(PARTIAL, f"{count} words, expected {n}")
        return Grade(WRONG, f"{len(last)} words, expected {n}")

    def partial(self, spec: dict[str, Any], rng: random.Random) -> str:
        k = rng.choice([k for k in (spec["n"] - 1, spec["n"] + 1) if k >= 1])
        return " ".join(self.descriptors(spec)[:k])

    def format(self, spec: dict[str, Any], rng: random.Random) -> str:
        return ", ".join(self.descriptors(spec)[: spec["n"]])

    def wrong(self, spec: dict[str, Any], rng: random.Random) -> str:
        return f"{spec['topic'].capitalize()} is something that many people enjoy and like to talk about."


FAMILIES: tuple[Family, ...] = (Repeat(), Reverse(), Uppercase(), Spell(), Acronym(), ListItems(), Sort(),
                                Arithmetic(), CountLetters(), NWords())
