"""Seeded instruction tasks and their checker: the embedded profile's SmolTalk, UltraFeedback and judge.

The embedded profile trains a tiny model from scratch, offline, in minutes. In place of SmolTalk and
UltraFeedback it uses short tasks from ten families (defined in `posttrain.instruct.families`), each
small enough for such a model to learn; in place of the Nemotron reward model it uses `check`, which
grades a response from the prompt text alone: every prompt carries its own ground truth.

    family          example prompt                                           reference
    repeat          Repeat the word 'moon' 3 times, separated by spaces.     moon moon moon
    reverse         Write the word 'lamp' backwards.                         pmal
    uppercase       Convert 'frog' to all capital letters.                   FROG
    spell           Write the letters of 'kite' separated by dashes.         k-i-t-e
    acronym         Write the acronym of 'ship tree road'.                   STR
    list_items      List 3 colors, one per line.                             red / blue / green, one a line
    sort            Sort these words alphabetically: pen, duck, rose.        duck, pen, rose
    arithmetic      What is 7 + 5? Answer with the number alone.             12
    count_letters   Count the letter 'p' in the word 'apple'. Reply ...      2
    n_words         Describe a cat in exactly 3 words.                       soft small playful

Scores use UltraFeedback's 1-10 scale:

    10     exact and concise (up to trivial case or punctuation, where the task allows it)
    7      right content in another format, or with at most 30 characters of extra text
    6, 5   right content wrapped in chatter (up to 120 extra characters, more)
    4, 3   partly wrong: one letter, item, word or count off (concise, with extra text)
    1      wrong or empty

A correct answer wrapped in chatter counts as `correct` yet scores well below the concise one, as a
judge that prefers direct answers would: DPO, RL and a length penalty then have something to fix
beyond correctness. `build_datasets` writes rows in the hub datasets' exact schemas, so the later
stages read one format in every profile, and no test prompt appears in a training split.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from posttrain.instruct import families as fam
from posttrain.instruct.families import CORE, EXACT, PARTIAL, WRONG

FAMILIES: tuple[str, ...] = tuple(f.name for f in fam.FAMILIES)
NOISE_KINDS = ("verbose", "partial", "format", "wrong")
MAX_INSPECT = 4096  # characters of a response that are graded: bounds the work on a huge one
MAX_PROMPT = 1000  # longer prompts are none of ours, and a crafted one could demand a huge reference

_BY_NAME = {f.name: f for f in fam.FAMILIES}
_LEVEL_OF_KIND = {"verbose": CORE, "format": CORE, "partial": PARTIAL, "wrong": WRONG}


@dataclass(frozen=True)
class Task:
    family: str
    prompt: str


@dataclass(frozen=True)
class Check:
    score: float  # 1-10, UltraFeedback's scale
    correct: bool  # the core content is right, however verbose
    reason: str


def _parse(prompt: str) -> tuple[fam.Family, dict[str, Any]]:
    text = prompt.strip()
    if len(text) <= MAX_PROMPT:
        for family in fam.FAMILIES:
            try:
                spec = family.match(text)
            except ValueError as err:
                raise ValueError(f"prompt {prompt!r}: {err}") from None
            if spec is not None:
                return family, spec
    raise ValueError(f"prompt {prompt[:200]!r} matches no instruction task family")


def family_of(prompt: str) -> str:
    """The name of the family a prompt belongs to; ValueError if none."""
    return _parse(prompt)[0].name


def n_unique_prompts() -> dict[str, int]:
    """How many distinct prompts each family can make."""
    return {f.name: f.n_prompts for f in fam.FAMILIES}


def make_task(rng: random.Random, family: str | None = None) -> Task:
    """A random task: the family uniform unless given, then a prompt uniform over its templates and values."""
    if family is not None and family not in _BY_NAME:
        raise ValueError(f"unknown task family {family!r}; known: {', '.join(FAMILIES)}")
    chosen = rng.choice(fam.FAMILIES) if family is None else _BY_NAME[family]
    return Task(chosen.name, chosen.prompt_at(rng.randrange(chosen.n_prompts)))


def reference_response(prompt: str) -> str:
    """The ideal answer: correct and nothing else."""
    family, spec = _parse(prompt)
    return family.reference(spec)


def _score(level: str, extra_chars: int) -> float:
    if level == EXACT:
        return 10.0
    if level == CORE:
        return 7.0 if extra_chars <= 30 else 6.0 if extra_chars <= 120 else 5.0
    if level == PARTIAL:
        return 4.0 if extra_chars <= 30 else 3.0
    return 1.0


def check(prompt: str, response: str) -> Check:
    """Grade a response to one of our prompts; ValueError if the prompt is not one of ours."""
    family, spec = _parse(prompt)
    text = response.strip()
    if not text:
        return Check(1.0, False, "empty response")
    grade = family.grade(spec, text[:MAX_INSPECT])
    extra = max(0, len(text) - len(family.reference(spec)))
    return Check(_score(grade.level, extra), grade.level in (EXACT, CORE), grade.reason)


def _verbose(reference: str, rng: random.Random) -> str:
    pre = rng.choice(fam.PREAMBLES)
    post = " ".join(rng.sample(fam.POSTAMBLES, rng.choice((1, 1, 2))))
    if "\n" in reference or rng.random() < 0.5:
        return f"{pre}\n{reference}\n{post}"
    return f"{pre} {reference}. {post}"


def noisy_response(prompt: str, rng: random.Random, kind: str | None = None) -> str:
    """A flawed answer of the given kind (random if None), one of NOISE_KINDS:

    verbose: the right answer inside chat filler; format: the right content in another format (a
    sentence, other separators, lower case); partial: one letter, item, word or count off; wrong.
    """
    family, spec = _parse(prompt)
    if kind is None:
        kind = rng.choice(NOISE_KINDS)
    if kind not in _LEVEL_OF_KIND:
        raise ValueError(f"unknown noise kind {kind!r}; known: {', '.join(NOISE_KINDS)}")
    for _ in range(20):  # a random flaw can land on another level (a mutation that is still a word)
        if kind == "verbose":
            response = _verbose(family.reference(spec), rng)
        else:
            response = getattr(family, kind)(spec, rng)
        if family.grade(spec, response).level == _LEVEL_OF_KIND[kind]:
            return response
    if kind == "wrong":
        return ""
    raise ValueError(f"prompt {prompt!r}: could not make a {kind!r} answer")


def _unique_tasks(rng: random.Random, total: int) -> list[Task]:
    """`total` distinct prompts, spread as evenly over the families as their sizes allow, shuffled."""
    sizes = n_unique_prompts()
    if total > sum(sizes.values()):
        raise ValueError(f"asked for {total} unique prompts; the task generator makes only {sum(sizes.values())}")
    quotas, left = {}, total
    for i, name in enumerate(sorted(sizes, key=lambda n: (sizes[n], n))):  # small families fill up first
        quotas[name] = min(sizes[name], -(-left // (len(sizes) - i)))
        left -= quotas[name]
    assert left == 0, "quotas must cover the request when it fits the capacity"
    tasks = [Task(f.name, f.prompt_at(i)) for f in fam.FAMILIES for i in rng.sample(range(f.n_prompts), quotas[f.name])]
    rng.shuffle(tasks)
    return tasks


def _turn(prompt: str, response: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]


def _smoltalk_row(task: Task, response: str) -> dict[str, Any]:
    return {"messages": _turn(task.prompt, response), "source": f"embedded/{task.family}"}


def _ultrafeedback_row(task: Task, rng: random.Random) -> dict[str, Any]:
    """A preference pair: the reference against a flawed answer, or two flaws of different scores."""
    prompt = task.prompt
    if rng.random() < 0.5:
        pair = [reference_response(prompt), noisy_response(prompt, rng)]
    else:
        pair = [noisy_response(prompt, rng, kind) for kind in rng.sample(NOISE_KINDS, 2)]
    scores = [check(prompt, r).score for r in pair]
    if scores[0] == scores[1]:  # two flaws can tie (a long format answer and a verbose one)
        pair, scores = [reference_response(prompt), pair[1]], [10.0, scores[1]]
    (score_chosen, chosen), (score_rejected, rejected) = sorted(zip(scores, pair), reverse=True)
    return {
        "prompt": prompt,
        "prompt_id": hashlib.sha256(prompt.encode("utf-8")).hexdigest(),
        "chosen": _turn(prompt, chosen),
        "rejected": _turn(prompt, rejected),
        "messages": _turn(prompt, chosen),
        "score_chosen": score_chosen,
        "score_rejected": score_rejected,
    }


def build_datasets(seed: int, n_sft: int, n_prefs_train: int, n_prefs_test: int, n_gen_train: int,
                   n_gen_test: int, sft_noise: float, n_sft_test: int | None = None,
                   sft_verbose: float = 0.5) -> dict[str, list[dict]]:
    """SmolTalk-schema and UltraFeedback-schema splits made from the task families.

    Keys: smoltalk_train (n_sft rows, a fraction `sft_noise` of them flawed: a share `sft_verbose` of
    those verbose, the rest partly wrong),
    smoltalk_test (n_sft_test rows, default n_gen_test, reference answers), ultrafeedback_train_prefs,
    ultrafeedback_test_prefs, ultrafeedback_train_gen, ultrafeedback_test_gen. As on the hub, the
    UltraFeedback prefs and gen splits of one side share prompts; SmolTalk's prompts are its own.
    Test prompts are drawn first and never appear in a training split.
    """
    n_sft_test = n_gen_test if n_sft_test is None else n_sft_test
    sizes = {"n_sft": n_sft, "n_sft_test": n_sft_test, "n_prefs_train": n_prefs_train,
             "n_prefs_test": n_prefs_test, "n_gen_train": n_gen_train, "n_gen_test": n_gen_test}
    for name, size in sizes.items():
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {size!r}")
    if not 0.0 <= sft_noise <= 1.0:
        raise ValueError(f"sft_noise must be in [0, 1], got {sft_noise!r}")
    if not 0.0 <= sft_verbose <= 1.0:
        raise ValueError(f"sft_verbose must be in [0, 1], got {sft_verbose!r}")
    rng = random.Random(seed)
    pools, start = [], 0
    sizes_in_order = (max(n_prefs_test, n_gen_test), n_sft_test, max(n_prefs_train, n_gen_train), n_sft)
    tasks = _unique_tasks(rng, sum(sizes_in_order))
    for size in sizes_in_order:
        pools.append(tasks[start:start + size])
        start += size
    uf_test, sft_test, uf_train, sft_train = pools
    noisy = set(rng.sample(range(n_sft), round(sft_noise * n_sft)))
    # the flaws of real chat data: chatty (the right answer in filler), or slightly off
    kinds = {i: "verbose" if rng.random() < sft_verbose else "partial" for i in sorted(noisy)}
    return {
        "smoltalk_train": [_smoltalk_row(t, noisy_response(t.prompt, rng, kinds[i]) if i in noisy
                                         else reference_response(t.prompt)) for i, t in enumerate(sft_train)],
        "smoltalk_test": [_smoltalk_row(t, reference_response(t.prompt)) for t in sft_test],
        "ultrafeedback_train_prefs": [_ultrafeedback_row(t, rng) for t in uf_train[:n_prefs_train]],
        "ultrafeedback_test_prefs": [_ultrafeedback_row(t, rng) for t in uf_test[:n_prefs_test]],
        "ultrafeedback_train_gen": [_ultrafeedback_row(t, rng) for t in uf_train[:n_gen_train]],
        "ultrafeedback_test_gen": [_ultrafeedback_row(t, rng) for t in uf_test[:n_gen_test]],
    }
