"""Countdown puzzles as data: their identity, a seeded generator, and warmstart rows the verifier accepts.

A puzzle is a row `{target, nums}` (`schemas.COUNTDOWN_TASK`); a warmstart row is `{query,
completion}` (`schemas.WARMSTART`), its query rendered from the prompt template. Every completion
written or kept here is one the verifier scores correct.
"""

from __future__ import annotations

import random

from tqdm import tqdm

from posttrain.countdown import solver, verifier
from posttrain.errors import UserError
from posttrain.prompts import countdown_prompt, countdown_query_pattern, parse_countdown_query

Puzzle = tuple[int, tuple[int, ...]]


def key(row: dict) -> Puzzle:
    """Puzzles are the same when target and the multiset of numbers are."""
    return row["target"], tuple(sorted(row["nums"]))


def generate_tasks(cfg, n: int, rng: random.Random) -> list[dict]:
    """`n` distinct solvable puzzles, or a UserError when the parameters allow fewer.

    `cfg` has `num_count` ([min, max] numbers per puzzle), `low`, `high` (the numbers' range) and
    `target_low`, `target_high` (the targets').
    """
    low_count, high_count = cfg.num_count
    seen: set[Puzzle] = set()
    rows = []
    misses = 0
    with tqdm(total=n, desc="countdown puzzles", mininterval=2) as bar:
        while len(rows) < n:
            try:
                row_nums, target = solver.make_puzzle(
                    rng, rng.randint(low_count, high_count), cfg.low, cfg.high, cfg.target_low, cfg.target_high
                )
            except ValueError as err:  # settings that make no puzzle, or (rare draws) too few
                raise UserError(f"countdown.generator: {err}") from None
            row = {"target": target, "nums": row_nums}
            if key(row) in seen:
                misses += 1
                if misses > 20_000:  # consecutive repeats: the space of distinct puzzles is nearly spent
                    raise UserError(
                        f"countdown.generator: only {len(rows)} distinct puzzles found, {n} asked for by "
                        "countdown.train_rows/eval_rows; widen the number or target ranges"
                    )
                continue
            seen.add(key(row))
            rows.append(row)
            misses = 0
            bar.update()
    return rows


def check_puzzles(rows: list[tuple[int, dict]], where: str, solvable: bool) -> None:
    """Each (row index, row) a puzzle of at most `solver.MAX_NUMS` numbers and, with `solvable`, one the
    solver solves; a `UserError` naming `where` and the row otherwise. Solving takes a few ms a puzzle."""
    for index, row in rows:
        if len(row["nums"]) > solver.MAX_NUMS:
            raise UserError(f"{where}: row {index}: field `nums` has {len(row['nums'])} numbers; a Countdown puzzle "
                            f"here has at most {solver.MAX_NUMS}")
        if solvable and solver.solve(row["nums"], row["target"]) is None:
            raise UserError(f"{where}: row {index}: unsolvable: no equation of {row['nums']} makes {row['target']}")


def solved_completion(row: dict, think: bool) -> str:
    """A warmstart completion written by the exhaustive solver: its steps, then the equation."""
    solution = solver.solve(row["nums"], row["target"])
    assert solution is not None, row  # generated puzzles are solvable by construction
    reasoning = f"<think>{', '.join(solution.steps)}</think>\n" if think else ""
    return f"{reasoning}<answer>{solution.expression}</answer>"


def verified_warmstart(rows: list[dict], template: str, held_out: set[Puzzle], where: str) -> tuple[list[dict], dict]:
    """Keep the rows whose completion the verifier accepts, with their query re-rendered from the template."""
    pattern = countdown_query_pattern(template)
    kept, counts = [], {"unparsed": 0, "wrong": 0, "held_out": 0}
    for row in rows:
        puzzle = parse_countdown_query(pattern, row["query"])
        if puzzle is None:
            counts["unparsed"] += 1
            continue
        nums, target = puzzle
        if (target, tuple(sorted(nums))) in held_out:
            counts["held_out"] += 1
        elif not verifier.score(row["completion"], nums, target).correct:
            counts["wrong"] += 1
        else:
            kept.append({"query": countdown_prompt(template, nums, target), "completion": row["completion"]})
    if rows and counts["unparsed"] > len(rows) // 2:
        raise UserError(
            f"{where}: {counts['unparsed']} of {len(rows)} queries do not follow `countdown.prompt_template`"
        )
    return kept, counts


def warmstart_puzzles(rows: list[dict], template: str, where: str) -> set[Puzzle]:
    """The puzzles a warmstart file's queries ask for; a query off the template is an error.

    `verified_warmstart` re-renders every query from the template, so an unparsed one means the file
    and the template disagree, and skipping it could let its puzzle in twice.
    """
    pattern = countdown_query_pattern(template)
    puzzles = set()
    for index, row in enumerate(rows):
        puzzle = parse_countdown_query(pattern, row["query"])
        if puzzle is None:
            raise UserError(f"{where}: row {index}: field `query` does not follow `countdown.prompt_template`")
        nums, target = puzzle
        puzzles.add((target, tuple(sorted(nums))))
    return puzzles


def synthesize(tasks: list[dict], excluded: set[Puzzle], held_out: set[Puzzle], n: int, think: bool,
               template: str, seed: int) -> tuple[list[dict], dict]:
    """`n` verified warmstart rows for distinct puzzles of `tasks` outside `excluded` and `held_out`.

    Completions are the solver's (`think`: with its steps). Candidates are visited in a seeded order
    until `n` are written, so the skip counts cover only the candidates visited. Raises a UserError
    when the tasks cannot give `n`.
    """
    if n < 0:
        raise UserError(f"params: synthetic.n must be >= 0, got {n}")
    order = list(range(len(tasks)))
    random.Random(seed).shuffle(order)
    rows: list[dict] = []
    seen: set[Puzzle] = set()
    counts = {"skipped_duplicate": 0, "skipped_in_warmstart": 0, "skipped_held_out": 0,
              "skipped_too_many_numbers": 0, "skipped_unsolvable": 0, "dropped_wrong": 0}
    for index in order:
        if len(rows) == n:
            break
        task = tasks[index]
        puzzle = key(task)
        if puzzle in seen:
            counts["skipped_duplicate"] += 1
            continue
        seen.add(puzzle)
        if puzzle in held_out:
            counts["skipped_held_out"] += 1
        elif puzzle in excluded:
            counts["skipped_in_warmstart"] += 1
        elif len(task["nums"]) > solver.MAX_NUMS:
            counts["skipped_too_many_numbers"] += 1
        elif solver.solve(task["nums"], task["target"]) is None:
            counts["skipped_unsolvable"] += 1
        else:
            # solved_completion solves again (a few ms at most): one writer of the warmstart's format.
            completion = solved_completion(task, think)
            if verifier.score(completion, task["nums"], task["target"]).correct:
                rows.append({"query": countdown_prompt(template, task["nums"], task["target"]),
                             "completion": completion})
            else:
                counts["dropped_wrong"] += 1
    if len(rows) < n:
        details = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items() if v)
        raise UserError(
            f"synthetic.n={n}: only {len(rows)} of the {len(tasks)} training tasks could be made into "
            f"verified examples ({details or 'none skipped'}); lower synthetic.n or widen the training rows"
        )
    return rows, {"requested": n, "written": len(rows), "candidates_visited": sum(counts.values()) + len(rows),
                  **counts}
