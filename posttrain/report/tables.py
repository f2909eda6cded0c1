"""The report's tables as rows (one dict per method), with paired tests against a baseline, and as CSV.

Paired tests compare two methods on the same items: Countdown puzzles (greedy correctness) against
`sft_countdown`, instruction prompts (the outcome against the reference: 1 win, 0.5 tie, 0 loss) against
`sft_instruct`. Δ is the mean difference with a paired bootstrap interval; p is the exact sign test
(McNemar on correctness); the CSVs also hold the paired bootstrap p-value.
"""

from __future__ import annotations

import csv
import io

from posttrain import schemas
from posttrain.evaluation import stats

SEED, N_BOOT = 0, 10000  # fixed, so the report is the same file on every run
COUNTDOWN_BASELINE, INSTRUCT_BASELINE = "sft_countdown", "sft_instruct"
# Which of `schemas.WIN_RATE_METRICS` the instruction tables show, in their column order (after `n`).
INSTRUCT_COLUMNS = ["win_rate", "win_rate_ci", "win_rate_ties_as_losses", "lc_win_rate", "lc_win_rate_ci",
                    "mean_reward", "mean_length", "ties", "reference_mean_length"]
# The sources' results (reference.md §3, §5), all on Qwen2.5-0.5B: beside ours for direction, not level.
# Countdown: the sources' "accuracy" is the reference score (0.1 credit included), our `score` column.
SOURCES_COUNTDOWN = {"sft_countdown": "0.37 (001); 0.316 (003)", "sft_synthetic": "0.3835 (001)",
                     "rloo_countdown": "0.400 (003)", "grpo_countdown": "none",
                     "distill_": "0.348 (1.5B teacher) / 0.338 (3B) (003)"}
SOURCE_BEST_OF_N = "0.811 with N = 10, temperature ~0.7 best (001, Fig. 5)"
# Instruction win rates, ties as losses: 001 against the base model, 002 and 003 against Qwen2.5-0.5B-Instruct.
SOURCES_INSTRUCT = {"base": "0.500 (002)", "sft_instruct": "0.495 (001); 0.438 (002); 0.535 (003, system prompt)",
                    "sft_instruct_lora": "0.575 (001)", "sft_instruct_lp": "0.549 (002)",
                    "dpo": "0.605 (001); 0.593 (002); 0.395 (003)", "dpo_lora": "0.665 (001)",
                    "rloo_instruct_deberta_rm": "0.695 (001, DeBERTa reward model)",
                    "rloo_instruct_reward_pointwise": "0.530 (001, DistilBERT regression)",
                    "rloo_instruct_reward_bt": "0.535 (001, Siamese Bradley-Terry)",
                    "grpo_instruct_": "0.611 (002)"}


def order(names, preferred: list[str]) -> list[str]:
    """`names` in the order of `preferred`, any others after them by name."""
    return sorted(names, key=lambda n: (preferred.index(n) if n in preferred else len(preferred), n))


def source(model: str, table: dict[str, str]) -> str:
    """The sources' number for a model; a key ending in `_` covers every model it prefixes."""
    return table.get(model) or next((v for k, v in table.items() if k.endswith("_") and model.startswith(k)), "—")


def paired(a: dict[int, float] | None, b: dict[int, float] | None) -> dict:
    """Paired comparison of a with b, scored on the same items: Δ = mean(a - b), its interval, p-values and
    the paired n. Scored on different items (a model on 1,000 puzzles, the baseline on 500), a Δ on the
    shared ones would sit beside an n it was not computed on: refused, with the two counts."""
    if a is None or b is None or not a or not b:
        return {}
    if a.keys() != b.keys():
        return {"refused": f"items differ: {len(a)} vs {len(b)}, {len(a.keys() & b.keys())} shared"}
    common = sorted(a)
    x, y = [a[i] for i in common], [b[i] for i in common]
    test = stats.paired_bootstrap(x, y, n_boot=N_BOOT, seed=SEED)
    return {"delta": test.diff, "delta_ci": list(test.ci), "p_sign": stats.sign_test(x, y),
            "p_bootstrap": test.p_value, "n_paired": len(common)}


def countdown_rows(metrics: dict[str, dict], correct: dict[str, dict | None], models: list[str]) -> list[dict]:
    """One row per model (in the order of `models`), with its greedy correctness paired against the baseline's."""
    base = correct.get(COUNTDOWN_BASELINE)
    return [{"model": m, **{k: metrics[m][k] for k in schemas.COUNTDOWN_METRICS},
             **(paired(correct.get(m), base) if m != COUNTDOWN_BASELINE else {}),
             "sources": source(m, SOURCES_COUNTDOWN)} for m in order(metrics, models)]


def best_of_n_rows(sweep: dict[str, dict], best_of: list[int]) -> list[dict]:
    """One row per (model, temperature, N) for N in `best_of`, in long form."""
    rows = []
    for name, m in sweep.items():
        for k in sorted(best_of):
            pass_at, _, score, _ = schemas.pool_keys(k)
            rows.append({"model": name.split("-t")[0], "temperature": m["temperature"], "N": k, "n": m["n"],
                         "samples_per_prompt": m["samples_per_prompt"], "pass_at_n": m[pass_at],
                         "pass_at_n_ci": m[f"{pass_at}_ci"], "best_of_n_score": m[score],
                         "best_of_n_score_ci": m[f"{score}_ci"]})
    return sorted(rows, key=lambda r: (r["model"], r["temperature"], r["N"]))


def instruct_rows(metrics: dict[str, dict], text: dict[str, dict], outcome: dict[str, dict | None],
                  models: list[str]) -> list[dict]:
    """One row per model (in the order of `models`) under one judge: its win-rate metrics, text metrics
    (None where it has none) and its per-prompt outcomes paired against the baseline's."""
    base = outcome.get(INSTRUCT_BASELINE)
    return [{"model": m, "n": metrics[m]["n"], **{k: metrics[m][k] for k in INSTRUCT_COLUMNS},
             **{k: text.get(m, {}).get(k) for k in schemas.TEXT_METRICS[1:]},
             **(paired(outcome.get(m), base) if m != INSTRUCT_BASELINE else {}),
             "sources": source(m, SOURCES_INSTRUCT)} for m in order(metrics, models)]


def reward_model_rows(metrics: dict[str, dict]) -> list[dict]:
    return [{"model": m, "n": metrics[m]["n"], "pairwise_accuracy": metrics[m]["pairwise_accuracy"]}
            for m in sorted(metrics)]


def csv_text(rows: list[dict]) -> str:
    """CSV of the rows, each `<key>_ci` pair as two columns `<key>_ci_lo`, `<key>_ci_hi`."""
    flat = []
    for row in rows:
        flat.append({})
        for key, value in row.items():
            if key.endswith("_ci"):
                flat[-1][f"{key}_lo"], flat[-1][f"{key}_hi"] = value or (None, None)
            else:
                flat[-1][key] = value
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, list(dict.fromkeys(k for r in flat for k in r)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(flat)
    return buffer.getvalue()


def overoptimisation_rows(curves: list[dict]) -> list[dict]:
    """One row per RL run with a gold judge: start and end of the proxy and the gold, and the verdict.

    Over-optimised means the proxy rose from the first evaluation to the last while the gold did not end
    above where it started, or ended below its own peak (Gao et al.'s picture: the gold turns over as the
    KL grows). Both are held-out means of one sample set per evaluation, so a small change is noise."""
    rows = []
    for c in curves:
        proxy, gold = c["proxy"], c["gold"]
        peak = max(range(len(gold)), key=gold.__getitem__)
        if proxy[-1] <= proxy[0]:
            verdict = "the proxy did not rise"
        elif gold[-1] <= gold[0]:
            verdict = "over-optimised: the proxy rose, the gold stalled or fell"
        elif peak < len(gold) - 1:
            # DVCLive's step counts log calls, not optimizer steps: the evaluation's number cannot be misread.
            verdict = f"over-optimising: the proxy rose, the gold peaked at evaluation {peak + 1} of {len(gold)}"
        else:
            verdict = "the proxy and the gold rose together"
        rows.append({"stage": c["stage"], "proxy": c["proxy_name"], "gold": c["gold_name"],
                     "evaluations": len(gold), "kl_end": c["kl"][-1], "proxy_start": proxy[0], "proxy_end": proxy[-1],
                     "gold_start": gold[0], "gold_end": gold[-1], "gold_peak": gold[peak], "verdict": verdict})
    return rows


def seed_rows(metrics: dict[str, dict], correct: dict[str, dict | None], models: list[str],
              seeds: list[int]) -> list[dict]:
    """Per Countdown method trained once per seed (the main run, then `<model>-s<seed>` for each of `seeds`):
    each seed's accuracy, their mean with a between-seed t interval, and Δ against the baseline trained with
    the same seeds, tested with the seed-to-seed and item-to-item spread both counted (`stats.seeds_test`,
    items paired within each seed). A seed scored on other puzzles than the baseline's is refused."""
    rows = []
    runs = {m: [(("main", m))] + [(f"s{s}", f"{m}-s{s}") for s in seeds] for m in models}
    base = runs.get(COUNTDOWN_BASELINE, [])
    for model in models:
        present = [(label, name) for label, name in runs[model] if name in metrics]
        if len(present) < 2:
            continue
        accuracy = [metrics[name]["accuracy"] for _, name in present]
        low, high = stats.between_seed_ci(accuracy)
        row = {"model": model, "seeds": " / ".join(label for label, _ in present),
               "accuracy_by_seed": " / ".join(f"{a:.3f}" for a in accuracy), "mean": sum(accuracy) / len(accuracy),
               "mean_ci": [low, high], "n": metrics[present[0][1]]["n"]}
        pairs = [(correct.get(name), correct.get(base_name)) for (label, name), (base_label, base_name)
                 in zip(runs[model], base) if name in metrics and base_name in metrics]
        if model != COUNTDOWN_BASELINE and len(pairs) >= 2 and all(a and b for a, b in pairs):
            if any(a.keys() != b.keys() for a, b in pairs):
                row["refused"] = "a seed's puzzles differ from the baseline's"
            else:
                items = sorted(pairs[0][0])
                test = stats.seeds_test([[a[i] for i in items] for a, _ in pairs], [[b[i] for i in items] for _, b in pairs])
                row |= {"delta": test.diff, "delta_ci": list(test.ci), "p": test.p_value, "df": test.df,
                        "n_paired": len(items), "seeds_paired": len(pairs)}
        rows.append(row)
    return rows
