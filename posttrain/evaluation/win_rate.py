"""Instruction-following metrics of one policy: the win rate against the reference model, and text metrics.

    python -m posttrain.evaluation.win_rate --prompts data/instruct/gen_test.jsonl \
        --policy-judged data/judged/<judge>/<model>.jsonl --reference-judged data/judged/<judge>/<reference>.jsonl \
        --policy-generations data/generations/instruct/<model>.jsonl \
        --reference-generations data/generations/instruct/<reference>.jsonl --out metrics/instruct/<judge>/<model>.json

`text_metrics` is called by the `generate_instruct` stage (stages/answer_instruct.py); `evaluate` by the
judge stages after judging (stages/judges.py `--win-rate-out`), or from this command line.

Win rate. A judge's rewards are comparable only between responses to the same prompt, so every metric
is per prompt. A prompt's reward is the mean of the judge's rewards over its samples (one with greedy
decoding), and its length the mean completion tokens. The policy wins a prompt when its reward is
higher: `win_rate` counts a tie half, `win_rate_ties_as_losses` is the seeds' convention. With several
samples a prompt's mean reward varies less than one response's, which moves `win_rate` away from 0.5;
`sample_win_rate` is the chance that one sampled response beats one reference response (all pairs of a
prompt's samples, ties half, averaged over prompts), the same as `win_rate` with one sample each. Both judged
files must score every prompt of `--prompts` and every sample of their generation file. Intervals are
percentile bootstraps over prompts (`stats.bootstrap_ci`, seeded by `seed` in params.yaml);
`lc_win_rate` is the length-controlled win rate of `stats.length_controlled_win_rate` (AlpacaEval
style: the predicted win rate at equal lengths).

Text metrics (002). `bleu_1/2/4`: sacrebleu corpus BLEU (`max_ngram_order` k, default 13a tokenizer)
of the model's responses against the reference responses (the first assistant turn) of held-out
SmolTalk rows; each generation row is a segment, matched to the reference row of its `prompt_id`, so
the generations may cover any subset of the file's rows. `perplexity`: exp of the mean token NLL of
the reference responses, `<|im_end|>` included, given the chat-templated prompt with the params system
prompt, over every row of the reference file.
"""

from __future__ import annotations

import argparse
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from pipeline import params
from posttrain.evaluation import stats
from posttrain.data_io import read_jsonl, write_json
from posttrain.schemas import ULTRAFEEDBACK
from posttrain.errors import UserError, run_main
from posttrain.prompts import chat_prompt, load_chat_tokenizer

N_BOOT = 2000  # resamples per interval: at 200-300 prompts an endpoint moves by ~0.002 (sd) between seeds
LEVEL = 0.95
EOS = "<|im_end|>"
TOKENS_PER_BATCH = 8192  # perplexity: padded tokens per forward pass (logits are tokens x vocabulary)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


JUDGED = {"prompt_id": _is_int, "sample": _is_int, "reward": lambda v: isinstance(v, (int, float))
          and not isinstance(v, bool) and np.isfinite(v), "judge": lambda v: isinstance(v, str),
          "judge_model": lambda v: v is None or isinstance(v, str)}  # as stages/judges.py writes them
GENERATED = {"prompt_id": _is_int, "sample": _is_int, "text": lambda v: isinstance(v, str),
             "completion_tokens": _is_int}


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


def win_metrics(n_prompts: int, policy_judged: list[dict], reference_judged: list[dict],
                policy_generations: list[dict], reference_generations: list[dict], paths: dict[str, Path],
                seed: int, n_boot: int = N_BOOT, level: float = LEVEL) -> dict:
    """The flat win-rate metrics of one policy (see the module docstring). `paths` names the inputs for
    errors: keys prompts, policy_judged, reference_judged, policy_generations, reference_generations."""
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
    if len(samples) != 1:
        raise UserError(f"{paths['policy_judged']}: prompts have different numbers of samples: {sorted(samples)}")

    result = stats.win_rate(reward, reference_reward)
    sample_win_rate = float(np.mean([
        stats.outcomes(np.repeat(pol, len(ref)), np.tile(ref, len(pol))).mean()
        for pol, ref in zip(per_prompt_values(policy_judged), per_prompt_values(reference_judged))]))
    lc = stats.length_controlled_win_rate(result.outcomes, length, reference_length)

    def lc_of(m: np.ndarray) -> float:
        return stats.length_controlled_win_rate(m[:, 0], m[:, 1], m[:, 2]).win_rate

    def interval(values, stat=np.mean) -> list[float]:
        return list(stats.bootstrap_ci(values, stat=stat, n_boot=n_boot, seed=seed, level=level))

    return {
        "n": n_prompts,
        "samples_per_prompt": samples.pop(),
        "judge": judge[0],
        "judge_model": judge[1],
        "model": paths["policy_generations"].stem,
        "reference": paths["reference_generations"].stem,
        "win_rate": result.win_rate,
        "win_rate_ci": interval(result.outcomes),
        "win_rate_ties_as_losses": result.win_rate_ties_as_losses,
        "wins": result.wins,
        "ties": result.ties,
        "losses": result.losses,
        "sample_win_rate": sample_win_rate,
        "lc_win_rate": lc.win_rate,
        "lc_win_rate_ci": interval(np.column_stack([result.outcomes, length, reference_length]), lc_of),
        "lc_length_coef": lc.length_coef,
        "mean_reward": float(reward.mean()),
        "mean_reward_ci": interval(reward),
        "reference_mean_reward": float(reference_reward.mean()),
        "mean_length": float(length.mean()),
        "reference_mean_length": float(reference_length.mean()),
        "ci_level": level,
    }


def first_turn(row: dict, index: int, where: Path) -> tuple[str, str]:
    """(prompt, reference response): the first user turn and the first assistant turn of a SmolTalk row."""
    user = next((m["content"] for m in row["messages"] if m["role"] == "user"), None)
    assistant = next((m["content"] for m in row["messages"] if m["role"] == "assistant"), None)
    if user is None or assistant is None:
        raise UserError(f"{where}: row {index}: field `messages` needs a user turn and an assistant turn")
    return user, assistant


def bleu(hypotheses: list[str], references: list[str], orders: tuple[int, ...] = (1, 2, 4)) -> dict[str, float]:
    """Corpus BLEU-k (0-100) of hypotheses against one reference each, for each k in `orders`."""
    from sacrebleu.metrics import BLEU

    return {f"bleu_{k}": float(BLEU(max_ngram_order=k).corpus_score(hypotheses, [references]).score)
            for k in orders}


def perplexity(model_dir: Path, system_prompt: str, prompts: list[str], responses: list[str]) -> dict:
    """exp(mean NLL per response token) of the model on the responses, `<|im_end|>` included, each given
    its chat-templated prompt; pooled over all tokens. A pair longer than the model's context keeps its
    first tokens (counted in `perplexity_truncated`)."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModelForCausalLM

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = load_chat_tokenizer(model_dir)
    # float32: the differences between methods can be small, and bf16 log-probs carry ~3 digits
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).to(device).eval()
    limit = getattr(model.config, "max_position_embeddings", None) or 10**9
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    examples, truncated = [], 0
    for prompt, response in zip(prompts, responses):
        prompt_ids = tokenizer(chat_prompt(tokenizer, system_prompt, prompt), add_special_tokens=False)["input_ids"]
        response_ids = tokenizer(response + EOS, add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + response_ids)[:limit]
        truncated += len(prompt_ids) + len(response_ids) > limit
        if len(ids) > len(prompt_ids):
            examples.append((ids, len(prompt_ids)))
    examples.sort(key=lambda e: len(e[0]))
    batches, start = [], 0
    while start < len(examples):  # sorted by length: the last of a batch is its longest
        stop = start + 1
        while stop < len(examples) and (stop + 1 - start) * len(examples[stop][0]) <= TOKENS_PER_BATCH:
            stop += 1
        batches.append(examples[start:stop])
        start = stop
    total_nll, total_tokens = 0.0, 0
    for batch in tqdm(batches, desc=f"perplexity {model_dir.name}", unit="batch"):
        width = max(len(ids) for ids, _ in batch)
        input_ids = torch.full((len(batch), width), pad)
        labels = torch.full((len(batch), width), -100)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (ids, n_prompt) in enumerate(batch):
            input_ids[row, :len(ids)] = torch.tensor(ids)
            labels[row, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
            mask[row, :len(ids)] = 1
        with torch.inference_mode():
            logits = model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits[:, :-1]
            target = labels[:, 1:].to(device)
            scored = target != -100
            nll = torch.nn.functional.cross_entropy(logits[scored].float(), target[scored], reduction="sum")
        total_nll += float(nll)
        total_tokens += int(scored.sum())
    return {"perplexity": float(np.exp(total_nll / total_tokens)), "perplexity_rows": len(examples),
            "perplexity_tokens": total_tokens, "perplexity_truncated": int(truncated)}


def text_metrics(reference_rows: list[dict], generation_rows: list[dict], model_dir: Path, system_prompt: str,
                 references_path: Path, generations_path: Path) -> dict:
    """BLEU of the generations against their references, and the model's perplexity on all references."""
    turns = [first_turn(row, i, references_path) for i, row in enumerate(reference_rows)]
    if not turns:
        raise UserError(f"{references_path}: no rows")
    if not generation_rows:
        raise UserError(f"{generations_path}: no rows")
    for index, row in enumerate(generation_rows):
        if not 0 <= row["prompt_id"] < len(turns):
            raise UserError(f"{generations_path}: row {index}: prompt_id {row['prompt_id']} is not a row of "
                            f"{references_path} ({len(turns)} rows)")
    hypotheses = [row["text"] for row in generation_rows]
    references = [turns[row["prompt_id"]][1] for row in generation_rows]
    return {
        "n": len(generation_rows),
        "n_prompts": len({row["prompt_id"] for row in generation_rows}),
        "model": model_dir.name,
        **bleu(hypotheses, references),
        **perplexity(model_dir, system_prompt, [t[0] for t in turns], [t[1] for t in turns]),
    }


def evaluate(prompts: Path, policy_judged: Path, reference_judged: Path, policy_generations: Path,
             reference_generations: Path, out: Path) -> dict:
    """Read the files, compute `win_metrics` with params' seed, write them to `out` and return them."""
    p = params.load()
    paths = {"prompts": prompts, "policy_judged": policy_judged, "reference_judged": reference_judged,
             "policy_generations": policy_generations, "reference_generations": reference_generations}
    n_prompts = len(read_jsonl(prompts, {"prompt": ULTRAFEEDBACK["prompt"]}))
    result = win_metrics(
        n_prompts, read_jsonl(policy_judged, JUDGED), read_jsonl(reference_judged, JUDGED),
        read_jsonl(policy_generations, GENERATED), read_jsonl(reference_generations, GENERATED),
        paths, seed=p.seed)
    write_json(out, result)
    print(", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
                    if not isinstance(v, list)))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m posttrain.evaluation.win_rate", description=__doc__.split("\n")[0])
    for name in ("prompts", "policy-judged", "reference-judged", "policy-generations", "reference-generations",
                 "out"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    args = parser.parse_args()
    evaluate(args.prompts, args.policy_judged, args.reference_judged, args.policy_generations,
             args.reference_generations, args.out)


if __name__ == "__main__":
    run_main(main)
