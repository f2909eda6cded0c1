"""`report.md`: the report's tables (rows from `tables`) rendered as markdown, with what each one measures."""

from __future__ import annotations

from posttrain.report.tables import COUNTDOWN_BASELINE, INSTRUCT_BASELINE, SOURCE_BEST_OF_N

ALPHA = 0.05  # `*` marks a p-value below it


def num(v, digits: int = 3, sign: bool = False) -> str:
    return "n/a" if v is None else f"{v:{'+' if sign else ''}.{digits}f}"


def ci(row: dict, key: str, digits: int = 3, sign: bool = False) -> str:
    bounds = row.get(f"{key}_ci")
    interval = f" [{num(bounds[0], digits, sign)}, {num(bounds[1], digits, sign)}]" if bounds else ""
    return num(row.get(key), digits, sign) + interval


def p_value(p: float | None) -> str:
    return "—" if p is None else ("<0.001" if p < 0.001 else f"{p:.3f}") + ("*" if p < ALPHA else "")


def md_table(headers: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows]) + "\n"


def delta(row: dict) -> str:
    """Δ with its interval and the paired n it was computed on, or why there is none."""
    if "refused" in row:
        return f"refused ({row['refused']})"
    return f"{ci(row, 'delta', sign=True)} (n = {row['n_paired']})" if "delta" in row else "—"


def countdown_md(rows: list[dict]) -> str:
    return md_table(
        ["method", "accuracy [95% CI]", "score [95% CI]", "format rate", "tokens", "n", "Δ accuracy vs SFT [95% CI]",
         "p", "sources (their 'accuracy' is our score)"],
        [[r["model"], ci(r, "accuracy"), ci(r, "score"), num(r["format_rate"]), num(r["completion_tokens"], 1),
          str(r["n"]), delta(r), p_value(r.get("p_sign")), r["sources"]] for r in rows])


def best_of_n_md(rows: list[dict]) -> str:
    return md_table(["model", "temperature", "N", "pass@N [95% CI]", "best-of-N score [95% CI]", "n"],
                    [[r["model"], f"{r['temperature']:g}", str(r["N"]), ci(r, "pass_at_n"), ci(r, "best_of_n_score"),
                      str(r["n"])] for r in rows])


def instruct_md(rows: list[dict]) -> str:
    def bleu(r: dict) -> str:
        return "n/a" if r["bleu_1"] is None else "/".join(num(r[f"bleu_{k}"], 1) for k in (1, 2, 4))

    return md_table(
        ["method", "win rate [95% CI]", "ties as losses", "LC win rate [95% CI]", "mean reward",
         "mean length (reference)", "BLEU-1/2/4", "perplexity", "n", "Δ win rate vs SFT [95% CI]", "p", "sources"],
        [[r["model"], ci(r, "win_rate"), num(r["win_rate_ties_as_losses"]), ci(r, "lc_win_rate"),
          num(r["mean_reward"]), f"{num(r['mean_length'], 1)} ({num(r['reference_mean_length'], 1)})", bleu(r),
          num(r["perplexity"], 2), str(r["n"]), delta(r), p_value(r.get("p_sign")), r["sources"]] for r in rows])


def seeds_md(rows: list[dict]) -> str:
    def test(r: dict) -> str:
        if "refused" in r:
            return f"refused ({r['refused']})"
        if "delta" not in r:
            return "—"
        return f"{ci(r, 'delta', sign=True)} (seeds {r['seeds_paired']}, n = {r['n_paired']}, df {r['df']:.1f})"

    return md_table(["method", "seeds", "accuracy by seed", "mean [95% CI between seeds]", "n",
                     "Δ vs SFT across seeds [95% CI]", "p"],
                    [[r["model"], r["seeds"], r["accuracy_by_seed"], ci(r, "mean"), str(r["n"]), test(r),
                      p_value(r.get("p"))] for r in rows])


def markdown(reference: str, countdown: list[dict], best_of: list[dict], instruct: dict[str, list[dict]],
             reward_models: list[dict], held_out: list[dict], files: list[str],
             overoptimisation: list[dict] = (), seeds: list[dict] = ()) -> str:
    """The whole report: one section per table, each empty one saying so, then the list of `files`."""
    def ns(rows: list[dict]) -> str:
        return ", ".join(map(str, sorted({r["n"] for r in rows}))) or "none"

    out = ["# Post-training methods compared", "",
           (f"- Countdown: greedy decoding on n = {ns(countdown)} held-out puzzles; Δ and p against "
           f"`{COUNTDOWN_BASELINE}` on the same puzzles (exact McNemar test)."),
           (f"- Instruction following: win rate against the reference `{reference}` (`evaluation.reference`) on "
           f"n = {ns([r for rows in instruct.values() for r in rows])} prompts, judges: "
           f"{', '.join(f'`{j}`' for j in instruct) or 'none'}; Δ and p against `{INSTRUCT_BASELINE}` "
           "(sign test of per-prompt outcomes)."),
           ("- Intervals are 95%: Wilson intervals for rates (accuracy, pass@N, win rate), the LC win rate's from "
           "its fit (sandwich), percentile bootstraps over items for mean rewards and paired Δ; "
           f"`*` marks p < {ALPHA}."),
           ("- *sources*: the seeds' numbers for Qwen2.5-0.5B (reference.md §3, §5). Other model, data and "
           "judge: compare directions, not absolute values."),
           "", "## 1. Countdown", "", countdown_md(countdown) if countdown else "No Countdown metrics.\n",
           "### Across training seeds", "",
           ("Each method trained again per seed of `train_seeds` (main: the sections' own seed). The interval of "
           "the mean is a t interval over seeds; Δ pairs the puzzles within each seed and counts both the "
           "seed-to-seed and the puzzle-to-puzzle spread (two-way random effects, Satterthwaite's df)."), "",
           seeds_md(list(seeds)) if seeds else "No replicates (`train_seeds` is empty).\n",
           "## 2. Best-of-N with the verifier", "",
           ("pass@N is best-of-N accuracy (the verifier picks a correct sample whenever one exists); sources: "
           f"{SOURCE_BEST_OF_N}."), "", best_of_n_md(best_of) if best_of else "No sweep.\n",
           "## 3. Instruction following", "",
           ("Sources count ties as losses (our *ties as losses* column); 001 measured against the base model, "
           "002 and 003 against Qwen2.5-0.5B-Instruct; 001's RLOO with the DeBERTa reward: 0.695. "
           "BLEU (0-100) and perplexity on held-out SmolTalk references do not depend on the judge."), ""]
    for judge, rows in instruct.items():
        out += [f"### Judge `{judge}`", "", instruct_md(rows)]
    out += ["## 4. Reward models", "", md_table(
        ["reward model", "pairwise accuracy", "n pairs"],
        [[r["model"], num(r["pairwise_accuracy"]), str(r["n"])] for r in reward_models]) if reward_models
        else "No reward models.\n", "## 5. RL: reward on held-out prompts", "",
        ("Each RL stage samples its `held_out` prompts (kept out of training) with the training settings before "
        "the first update and every `eval_steps`: one fixed prompt set, so the change is the policy's."), "",
        md_table(["stage", "reward at step 0", "at the end", "change", "evaluations"],
                 [[r["stage"], num(r["start"]), num(r["end"]), num(r["change"], sign=True), str(r["evaluations"])]
                  for r in held_out]) if held_out else "No held-out RL evaluations.\n",
        "## 6. Reward over-optimisation: the proxy against the gold", "",
        ("Instruction RL trains on a reward model (the proxy); its `gold_judge` scores the same held-out samples "
        "with weight 0. Over-optimised: the proxy rose from the first evaluation to the last while the gold "
        "ended no higher than it started, or below its peak (plots/overoptimisation.png: both against the KL)."),
        "", md_table(["stage", "proxy", "gold", "KL at the end", "proxy: start → end", "gold: start → end (peak)",
                      "verdict"],
                     [[r["stage"], f"`{r['proxy']}`", f"`{r['gold']}`", num(r["kl_end"], 4),
                       f"{num(r['proxy_start'])} → {num(r['proxy_end'])}",
                       f"{num(r['gold_start'])} → {num(r['gold_end'])} ({num(r['gold_peak'])})", r["verdict"]]
                      for r in overoptimisation]) if overoptimisation else "No RL run logged a gold judge.\n",
        "## 7. Files", ""]
    return "\n".join(out + [f"- [{f}]({f})" for f in files]) + "\n"
