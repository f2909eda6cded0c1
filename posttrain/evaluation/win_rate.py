"""The win rate of one policy against the reference model, on judged instruction prompts.

`evaluate` reads the files (the judge stage calls it after judging, `stages/judges.py --win-rate-out`);
`win_rate_result` computes from rows: the flat metrics (`schemas.WIN_RATE_METRICS` and more) and the
per-prompt outcomes behind them (`schemas.OUTCOME` values, for the report's paired comparisons).

A judge's rewards are comparable only between responses to the same prompt, so every metric is per
prompt. A prompt's reward is the mean of the judge's rewards over its samples (one with greedy decoding),
and its length the mean completion tokens. The policy wins a prompt when its reward is higher: `win_rate`
counts a tie half, `win_rate_ties_as_losses` is the seeds' convention. With several samples a prompt's
mean reward varies less than one response's, which moves `win_rate` away from 0.5; `sample_win_rate` is
the chance that one sampled response beats one reference response (all pairs of a prompt's samples, ties
half, averaged over prompts), the same as `win_rate` with one sample each. Both judged files must score
every prompt of the prompt file and every sample of their generation file. Both judged files must hold as
many samples for every prompt (a mean over unequal samples would weigh prompts unequally). Intervals:
`win_rate_ci` is the Wilson interval of the per-prompt outcomes (`stats.proportion_ci`, which keeps
its coverage near 0 and 1); `lc_win_rate` is the length-controlled win rate of
`stats.length_controlled_win_rate` (AlpacaEval style: the predicted win rate at equal lengths) with
its sandwich Wald interval; `mean_reward_ci` a percentile bootstrap over prompts (`stats.bootstrap_ci`,
seeded by the caller's `seed`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from posttrain.data_io import read_jsonl
from posttrain.errors import UserError
from posttrain.evaluation import stats
from posttrain.schemas import GENERATION, INSTRUCT_PROMPT, JUDGED

N_BOOT = 2000  # resamples per interval: at 200-300 prompts an endpoint moves by ~0.002 (sd) between seeds
LEVEL = 0.95


def _ids(ids) -> str:
    ids = sorted(ids)
    return ", ".join(map(str, ids[:5])) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")


def per_prompt_mean(rows: list[dict], field: str, where: Path) -> dict[int, float]:
    """The mean of `field` over each prompt's samples; a repeated (prompt_id, sample) is an error."""
    seen, values = set(), defaultdict(list)
    for index, row in enumerate(rows):
        key = (row["prompt_id"], row["sample"])
        if key in seen:
            raise UserError(f"{where}: row {index}: prompt_id {key[0]} sample {key[1]} appears twice")
        seen.add(key)
        values[row["prompt_id"]].append(row[field])
    return {prompt: float(np.mean(v)) for prompt, v in values.items()}


def per_prompt_values(rows: list[dict], field: str = "reward") -> list[np.ndarray]:
    """Each prompt's values over its samples, in prompt_id order."""
    values = defaultdict(list)
    for row in rows:
        values[row["prompt_id"]].append(row[field])
    return [np.array(values[prompt], dtype=float) for prompt in sorted(values)]


def judge_name(rows: list[dict], where: Path) -> tuple[str, str | None]:
    """(judge, judge_model): one of each per file, so rewards from two reward models never mix."""
    names = {(row["judge"], row["judge_model"]) for row in rows}
    if len(names) != 1:
        raise UserError(f"{where}: fields `judge`, `judge_model` must name one judge, found {sorted(names, key=str)}")
    return names.pop()


def check_coverage(n_prompts: int, prompts_path: Path,
                   pairs: list[tuple[Path, list[dict], Path, list[dict]]]) -> None:
    """Each (judged file, its generation file) pair: the judged file scores every prompt of the prompt
    file, and exactly the (prompt_id, sample) rows of its generation file."""
    expected = set(range(n_prompts))
    for judged_path, judged_rows, gen_path, gen_rows in pairs:
        ids = {row["prompt_id"] for row in judged_rows}
        if ids != expected:
            problems = [f"missing {_ids(expected - ids)}"] if expected - ids else []
            problems += [f"not rows of the prompt file: {_ids(ids - expected)}"] if ids - expected else []
            raise UserError(f"{judged_path}: must score every prompt of {prompts_path} "
                            f"(prompt_id 0..{n_prompts - 1}); " + "; ".join(problems))
        judged_keys = {(r["prompt_id"], r["sample"]) for r in judged_rows}
        gen_keys = {(r["prompt_id"], r["sample"]) for r in gen_rows}
        if judged_keys != gen_keys:
            prompt, sample = min(judged_keys ^ gen_keys)
            has = judged_path if (prompt, sample) in judged_keys else gen_path
            raise UserError(f"{judged_path} and {gen_path} must hold the same (prompt_id, sample) rows; "
                            f"prompt_id {prompt} sample {sample} is only in {has}")


def win_rate_result(n_prompts: int, policy_judged: list[dict], reference_judged: list[dict],
                    policy_generations: list[dict], reference_generations: list[dict], paths: dict[str, Path],
                    seed: int, n_boot: int = N_BOOT, level: float = LEVEL) -> tuple[dict, list[float]]:
    """The flat win-rate metrics of one policy (see the module docstring), and its outcome on each prompt
    against the reference (1 win, 0.5 tie, 0 loss; prompt_id order), the values `win_rate` averages.
    `paths` names the inputs for errors and the metrics' `model` and `reference`: keys prompts,
    policy_judged, reference_judged, policy_generations, reference_generations."""
    if n_prompts == 0:
        raise UserError(f"{paths['prompts']}: no prompts")
    check_coverage(n_prompts, paths["prompts"], [
        (paths["policy_judged"], policy_judged, paths["policy_generations"], policy_generations),
        (paths["reference_judged"], reference_judged, paths["reference_generations"], reference_generations)])
    judge, reference_judge = (judge_name(policy_judged, paths["policy_judged"]),
                              judge_name(reference_judged, paths["reference_judged"]))
    if judge != reference_judge:
        raise UserError(f"{paths['policy_judged']} and {paths['reference_judged']} were scored by different "
                        f"judges: {judge} and {reference_judge} (judge, judge_model)")

    def column(rows: list[dict], field: str, where: Path) -> np.ndarray:
        means = per_prompt_mean(rows, field, where)
        return np.array([means[i] for i in range(n_prompts)])

    reward = column(policy_judged, "reward", paths["policy_judged"])
    reference_reward = column(reference_judged, "reward", paths["reference_judged"])
    length = column(policy_generations, "completion_tokens", paths["policy_generations"])
    reference_length = column(reference_generations, "completion_tokens", paths["reference_generations"])
    samples = set(Counter(row["prompt_id"] for row in policy_judged).values())
    for key, rows in (("policy_judged", policy_judged), ("reference_judged", reference_judged)):
        counts = Counter(row["prompt_id"] for row in rows)
        if len(set(counts.values())) != 1:  # a mean over unequal samples would weigh prompts unequally
            usual = Counter(counts.values()).most_common(1)[0][0]
            first = min(i for i, c in counts.items() if c != usual)
            raise UserError(f"{paths[key]}: prompts have different numbers of samples ({sorted(set(counts.values()))}); "
                            f"prompt_id {first} has {counts[first]}, most have {usual}")

    result = stats.win_rate(reward, reference_reward)
    sample_win_rate = float(np.mean([
        stats.outcomes(np.repeat(pol, len(ref)), np.tile(ref, len(pol))).mean()
        for pol, ref in zip(per_prompt_values(policy_judged), per_prompt_values(reference_judged))]))
    lc = stats.length_controlled_win_rate(result.outcomes, length, reference_length, level)

    def interval(values, stat=np.mean) -> list[float]:
        return list(stats.bootstrap_ci(values, stat=stat, n_boot=n_boot, seed=seed, level=level))

    metrics = {
        "n": n_prompts,
        "samples_per_prompt": samples.pop(),
        "judge": judge[0],
        "judge_model": judge[1],
        "model": paths["policy_generations"].stem,
        "reference": paths["reference_generations"].stem,
        "win_rate": result.win_rate,
        "win_rate_ci": list(stats.proportion_ci(result.outcomes, level)),
        "win_rate_ties_as_losses": result.win_rate_ties_as_losses,
        "wins": result.wins,
        "ties": result.ties,
        "losses": result.losses,
        "sample_win_rate": sample_win_rate,
        "lc_win_rate": lc.win_rate,
        "lc_win_rate_ci": list(lc.ci),
        "lc_length_coef": lc.length_coef,
        "mean_reward": float(reward.mean()),
        "mean_reward_ci": interval(reward),
        "reference_mean_reward": float(reference_reward.mean()),
        "mean_length": float(length.mean()),
        "reference_mean_length": float(reference_length.mean()),
        "ci_level": level,
    }
    return metrics, result.outcomes.tolist()


def evaluate(prompts: Path, policy_judged: Path, reference_judged: Path, policy_generations: Path,
             reference_generations: Path, seed: int) -> tuple[dict, list[float]]:
    """Read the files (`schemas.INSTRUCT_PROMPT`, `JUDGED`, `GENERATION` rows) and return
    `win_rate_result`'s metrics and per-prompt outcomes."""
    paths = {"prompts": prompts, "policy_judged": policy_judged, "reference_judged": reference_judged,
             "policy_generations": policy_generations, "reference_generations": reference_generations}
    return win_rate_result(
        len(read_jsonl(prompts, INSTRUCT_PROMPT)), read_jsonl(policy_judged, JUDGED),
        read_jsonl(reference_judged, JUDGED), read_jsonl(policy_generations, GENERATION),
        read_jsonl(reference_generations, GENERATION), paths, seed=seed)
