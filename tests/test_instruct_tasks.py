"""Table-driven tests of the embedded instruction tasks, their checker and datasets (offline, CPU-only, < 10 s)."""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
import time

import pytest

from posttrain.instruct import families as instruct_families
from posttrain.instruct.tasks import (FAMILIES, NOISE_KINDS, Check, Task, build_datasets, check, family_of, make_task,
                                   n_unique_prompts, noisy_response, reference_response)

# (family, prompt, reference): the module docstring's table
EXAMPLES = [
    ("repeat", "Repeat the word 'moon' 3 times, separated by spaces.", "moon moon moon"),
    ("reverse", "Write the word 'lamp' backwards.", "pmal"),
    ("uppercase", "Convert 'frog' to all capital letters.", "FROG"),
    ("spell", "Write the letters of 'kite' separated by dashes.", "k-i-t-e"),
    ("acronym", "Write the acronym of 'ship tree road'.", "STR"),
    ("list_items", "List 3 colors, one per line.", "red\nblue\ngreen"),
    ("sort", "Sort these words alphabetically: pen, duck, rose.", "duck, pen, rose"),
    ("arithmetic", "What is 7 + 5? Answer with the number alone.", "12"),
    ("count_letters", "Count the letter 'p' in the word 'apple'. Reply with just the number.", "2"),
    ("n_words", "Describe a cat in exactly 3 words.", "soft small playful"),
]
PROMPT = {family: prompt for family, prompt, _ in EXAMPLES}

# (family, response, score, correct): responses a model might give, graded by hand
CASES = [
    ("repeat", "moon moon moon", 10, True),
    ("repeat", "Moon moon moon.", 10, True),
    ("repeat", "moon, moon, moon", 7, True),
    ("repeat", "moon moon", 4, False),
    ("repeat", "moon moon moon moon moon", 1, False),
    ("repeat", "star star star", 1, False),
    ("reverse", "pmal", 10, True),
    ("reverse", "PMAL", 10, True),
    ("reverse", "'pmal'", 10, True),
    ("reverse", "The reverse of 'lamp' is 'pmal'.", 7, True),
    ("reverse", "pmla", 4, False),
    ("reverse", "pmal plam mpal", 4, False),  # several guesses are not an answer
    ("reverse", "lamp", 1, False),
    ("uppercase", "FROG", 10, True),
    ("uppercase", "FROG.", 10, True),
    ("uppercase", "The word in capitals is FROG.", 7, True),
    ("uppercase", "Frog", 4, False),
    ("uppercase", "FROGS", 4, False),
    ("uppercase", "frog", 1, False),  # no case tolerance where case is the task
    ("spell", "k-i-t-e", 10, True),
    ("spell", "K-I-T-E", 10, True),
    ("spell", "The answer is k-i-t-e.", 7, True),
    ("spell", "k-i-t", 4, False),
    ("spell", "kite", 1, False),
    ("acronym", "STR", 10, True),
    ("acronym", "str", 7, True),
    ("acronym", "The acronym is STR.", 7, True),
    ("acronym", "SRT", 4, False),
    ("acronym", "Ship Tree Road", 1, False),
    ("list_items", "red\nblue\ngreen", 10, True),
    ("list_items", "Pink\nBlack\nWhite.", 10, True),  # any three colors will do
    ("list_items", "red, blue, green", 7, True),
    ("list_items", "- red\n- blue\n- green", 7, True),
    ("list_items", "red\nblue", 4, False),
    ("list_items", "red\nblue\ngreen\npink", 4, False),
    ("list_items", "red\nred\nblue", 4, False),
    ("list_items", "red, blue, green, yellow, orange, purple, pink, brown", 1, False),
    ("list_items", "cat\ndog\ncow", 1, False),
    ("sort", "duck, pen, rose", 10, True),
    ("sort", "Duck, Pen, Rose.", 10, True),
    ("sort", "duck pen rose", 7, True),
    ("sort", "The words pen, duck, rose in order are duck, pen, rose.", 6, True),  # the last three count
    ("sort", "duck, rose, pen", 4, False),
    ("sort", "duck, rose", 4, False),
    ("sort", "rose, pen, duck", 1, False),
    ("arithmetic", "12", 10, True),
    ("arithmetic", " 12.\n", 10, True),
    ("arithmetic", "7 + 5 = 12", 7, True),
    ("arithmetic", "Sure! Here is the answer: 12. Let me know if you need anything else.", 6, True),
    ("arithmetic", "12 or maybe 13", 4, False),  # the last number counts
    ("arithmetic", "11", 4, False),
    ("arithmetic", "15", 1, False),
    ("arithmetic", "twelve", 1, False),
    ("arithmetic", "1" * 5000, 1, False),  # a digit run too long to be an answer
    ("arithmetic", "7-5=12", 7, True),
    ("count_letters", "2", 10, True),
    ("count_letters", "The letter 'p' appears 2 times.", 7, True),
    ("count_letters", "3", 4, False),
    ("count_letters", "0", 1, False),
    ("n_words", "soft small playful", 10, True),
    ("n_words", "Fluffy curious independent.", 10, True),  # any three words will do
    ("n_words", "Fluffy, curious, independent.", 7, True),
    ("n_words", "Sure! Here it is: soft small playful. Hope this helps!", 6, True),
    ("n_words", "soft small", 4, False),
    ("n_words", "A cat is a small soft animal.", 1, False),
    ("n_words", "cat cat cat", 1, False),
    ("n_words", "Hope this helps", 1, False),  # chat filler is not a description
] + [(family, response, 1, False) for family in FAMILIES for response in ("", "  \n ")]

# what each kind of flawed answer scores: (lowest, highest, correct)
NOISE_EXPECTED = {"verbose": (5, 6, True), "format": (6, 7, True), "partial": (3, 4, False), "wrong": (1, 1, False)}
assert set(NOISE_EXPECTED) == set(NOISE_KINDS)

UNPARSEABLE = [
    "",
    "Tell me a joke.",
    "Repeat the word 'moon' 3 times",
    "Repeat the word 'moon' 500 times, separated by spaces.",  # a count the checker refuses
    "Write the word 'Lamp' backwards.",
    "List 3 planets, one per line.",
    "List 10 colors, one per line.",
    "Sort these words alphabetically: pen, pen, rose.",
    "What is 7 / 5? Answer with the number alone.",
    "Repeat the word '" + "a" * 5000 + "' 3 times, separated by spaces.",
]


@pytest.mark.parametrize("family,prompt,reference", EXAMPLES)
def test_docstring_examples(family, prompt, reference):
    assert family_of(prompt) == family
    assert reference_response(prompt) == reference
    assert check(prompt, reference) == Check(10.0, True, check(prompt, reference).reason)


@pytest.mark.parametrize("family,response,score,correct", CASES)
def test_check_cases(family, response, score, correct):
    got = check(PROMPT[family], response)
    assert (got.score, got.correct) == (score, correct), got.reason
    assert isinstance(got.score, float) and got.reason


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_is_exact_and_every_noise_kind_scores_lower(family):
    rng = random.Random(family)
    for _ in range(150):
        task = make_task(rng, family)
        assert task.family == family == family_of(task.prompt)
        reference = reference_response(task.prompt)
        assert check(task.prompt, reference) == Check(10.0, True, check(task.prompt, reference).reason)
        for kind, (low, high, correct) in NOISE_EXPECTED.items():
            response = noisy_response(task.prompt, rng, kind)
            got = check(task.prompt, response)
            assert low <= got.score <= high and got.correct == correct, (task.prompt, kind, response, got)
        assert noisy_response(task.prompt, rng) != reference


@pytest.mark.parametrize("prompt", UNPARSEABLE)
def test_unparseable_prompt_raises_naming_it(prompt):
    for call in (lambda: check(prompt, "x"), lambda: reference_response(prompt), lambda: family_of(prompt),
                 lambda: noisy_response(prompt, random.Random(0))):
        with pytest.raises(ValueError, match=re.escape(repr(prompt[:20])[:-1])):
            call()


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="unknown task family"):
        make_task(random.Random(0), "poetry")
    with pytest.raises(ValueError, match="unknown noise kind"):
        noisy_response(PROMPT["repeat"], random.Random(0), "rude")


def test_results_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Task("repeat", "x").prompt = "y"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        check(PROMPT["repeat"], "moon").score = 10.0  # type: ignore[misc]


def test_make_task_is_uniform_over_families_and_seeded():
    draws = [make_task(random.Random(7)) for _ in range(3)]
    assert draws[0] == draws[1] == draws[2]
    rng = random.Random(0)
    counts = {f: 0 for f in FAMILIES}
    for _ in range(3000):
        counts[make_task(rng).family] += 1
    assert all(200 <= c <= 400 for c in counts.values()), counts


@pytest.mark.parametrize("family", instruct_families.FAMILIES, ids=lambda f: f.name)
def test_prompts_are_distinct_and_match_exactly_one_family(family):
    indices = range(family.n_prompts) if family.n_prompts < 5000 else random.Random(0).sample(
        range(family.n_prompts), 2000)
    prompts = [family.prompt_at(i) for i in indices]
    assert len(set(prompts)) == len(prompts)
    for prompt in prompts[:300]:
        assert [f.name for f in instruct_families.FAMILIES if f.match(prompt) is not None] == [family.name]


def test_enough_unique_prompts():
    sizes = n_unique_prompts()
    assert len(sizes) >= 8 and min(sizes.values()) >= 100
    assert sum(sizes.values()) >= 22_000


def test_chatter_cannot_pass_for_an_answer():
    chatter = " ".join(instruct_families.PREAMBLES + instruct_families.POSTAMBLES)
    words = {w.lower() for w in re.findall(r"[A-Za-z]+", chatter)}
    vocabulary = set(instruct_families.LETTER_WORDS)
    assert not re.search(r"\d", chatter) and not words & vocabulary
    assert all(len(w) > 1 for w in words)
    assert not vocabulary & instruct_families.CHATTER_MARKERS


@pytest.mark.parametrize("family", FAMILIES)
def test_huge_response_is_checked_fast(family):
    prompt = PROMPT[family]
    reference = reference_response(prompt)
    start = time.perf_counter()
    for response in (reference + " " + "x" * 1_000_000, (reference + " ") * 200_000, "\n" * 1_000_000):
        assert check(prompt, response).score <= 5
    assert time.perf_counter() - start < 0.5


SIZES = dict(n_sft=400, n_prefs_train=200, n_prefs_test=60, n_gen_train=150, n_gen_test=40, sft_noise=0.25)
TRAIN = ("smoltalk_train", "ultrafeedback_train_prefs", "ultrafeedback_train_gen")
TEST = ("smoltalk_test", "ultrafeedback_test_prefs", "ultrafeedback_test_gen")


@pytest.fixture(scope="module")
def data():
    return build_datasets(seed=3, **SIZES)


def prompts_of(rows: list[dict]) -> set[str]:
    return {r["prompt"] if "prompt" in r else r["messages"][0]["content"] for r in rows}


def test_split_names_and_sizes(data):
    assert {k: len(v) for k, v in data.items()} == {
        "smoltalk_train": 400, "smoltalk_test": 40, "ultrafeedback_train_prefs": 200,
        "ultrafeedback_test_prefs": 60, "ultrafeedback_train_gen": 150, "ultrafeedback_test_gen": 40}


def is_turn(messages: list, prompt: str) -> bool:
    return (isinstance(messages, list) and [set(m) for m in messages] == [{"role", "content"}] * 2
            and [m["role"] for m in messages] == ["user", "assistant"] and messages[0]["content"] == prompt
            and isinstance(messages[1]["content"], str))


@pytest.mark.parametrize("split", ["smoltalk_train", "smoltalk_test"])
def test_smoltalk_schema(data, split):
    for row in data[split]:
        assert set(row) == {"messages", "source"}
        prompt = row["messages"][0]["content"]
        assert is_turn(row["messages"], prompt)
        assert row["source"] == f"embedded/{family_of(prompt)}"


@pytest.mark.parametrize("split", ["ultrafeedback_train_prefs", "ultrafeedback_test_prefs",
                                   "ultrafeedback_train_gen", "ultrafeedback_test_gen"])
def test_ultrafeedback_schema_and_scores(data, split):
    for row in data[split]:
        assert list(row) == ["prompt", "prompt_id", "chosen", "rejected", "messages", "score_chosen", "score_rejected"]
        prompt = row["prompt"]
        assert row["prompt_id"] == hashlib.sha256(prompt.encode()).hexdigest()
        assert is_turn(row["chosen"], prompt) and is_turn(row["rejected"], prompt) and row["messages"] == row["chosen"]
        assert isinstance(row["score_chosen"], float) and isinstance(row["score_rejected"], float)
        assert 1 <= row["score_rejected"] < row["score_chosen"] <= 10
        assert check(prompt, row["chosen"][1]["content"]).score == row["score_chosen"]
        assert check(prompt, row["rejected"][1]["content"]).score == row["score_rejected"]


def test_test_prompts_never_in_training(data):
    train = set().union(*(prompts_of(data[s]) for s in TRAIN))
    test = set().union(*(prompts_of(data[s]) for s in TEST))
    assert train and test and not train & test
    assert len(prompts_of(data["smoltalk_train"])) == 400  # no prompt twice within a split


def test_sft_noise_fraction_and_families(data):
    rows = data["smoltalk_train"]
    noisy = [r for r in rows if r["messages"][1]["content"] != reference_response(r["messages"][0]["content"])]
    assert abs(len(noisy) / len(rows) - SIZES["sft_noise"]) < 0.02
    assert all(3 <= check(r["messages"][0]["content"], r["messages"][1]["content"]).score <= 6 for r in noisy)
    assert len({r["source"] for r in rows}) >= 8
    for row in data["smoltalk_test"]:
        assert row["messages"][1]["content"] == reference_response(row["messages"][0]["content"])


@pytest.mark.parametrize("verbose", [0.0, 0.9])
def test_sft_verbose_share_of_the_flawed_answers(verbose):
    rows = build_datasets(seed=3, **{**SIZES, "sft_noise": 0.5, "sft_verbose": verbose})["smoltalk_train"]
    checks = [check(r["messages"][0]["content"], r["messages"][1]["content"]) for r in rows]
    chatty = sum(c.correct and c.score < 10 for c in checks)  # right content in filler
    partly_wrong = sum(not c.correct for c in checks)
    assert chatty + partly_wrong == 200
    assert abs(chatty / 200 - verbose) < 0.08


def test_seed_determinism(data):
    assert build_datasets(seed=3, **SIZES) == data
    assert build_datasets(seed=4, **SIZES) != data


def test_full_size_request_fits():
    made = build_datasets(seed=0, n_sft=20_000, n_prefs_train=0, n_prefs_test=0, n_gen_train=0, n_gen_test=2_000,
                          sft_noise=0.0, n_sft_test=0)
    assert len(prompts_of(made["smoltalk_train"])) == 20_000


@pytest.mark.parametrize("change,message", [
    (dict(n_sft=10_000_000), "unique prompts"),
    (dict(n_prefs_train=-1), "n_prefs_train"),
    (dict(sft_noise=1.5), "sft_noise"),
    (dict(sft_verbose=-0.1), "sft_verbose"),
])
def test_bad_sizes_raise(change, message):
    with pytest.raises(ValueError, match=message):
        build_datasets(seed=0, **{**SIZES, **change})
