"""The comparison report: every method's metrics side by side, with paired tests, the sources' numbers and plots.

    python -m stages.report --metrics metrics --scores data/scores/countdown --judged data/judged --out metrics/report

Reads the metrics JSON files (the numbers of record), the per-puzzle and per-prompt rows for paired tests,
and the DVCLive curves, and writes `<out>/report.md` (read it first), one CSV per table and `<out>/plots/`.
A model whose files are missing is left out; a malformed file stops the stage naming it. The output folder
is built beside `<out>` and renamed into place, so a failed run leaves the last report whole.

Paired tests compare two methods on the same items: Countdown puzzles (greedy correctness) against
`sft_countdown`, instruction prompts (the outcome against the reference: 1 win, 0.5 tie, 0 loss) against
`sft_instruct`. Δ is the mean difference with a paired bootstrap interval; p is the exact sign test
(McNemar on correctness), `*` where p < 0.05. The CSVs also hold the paired bootstrap p-value.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
import shutil
from pathlib import Path

import numpy as np

from pipeline import params
from posttrain.evaluation import stats
from posttrain.data_io import read_jsonl, write_text
from posttrain.errors import UserError, run_main
from posttrain.evaluation.win_rate import JUDGED, per_prompt_mean

SEED, N_BOOT, ALPHA = 0, 10000, 0.05  # fixed, so the report is the same file on every run
COUNTDOWN_BASELINE, INSTRUCT_BASELINE = "sft_countdown", "sft_instruct"
COUNTDOWN_ORDER = ["base", "sft_countdown", "sft_synthetic", "rloo_countdown", "grpo_countdown"]
INSTRUCT_ORDER = ["base", "sft_instruct", "sft_instruct_lora", "sft_instruct_lp", "dpo", "dpo_lora",
                  "rloo_instruct_deberta_rm", "rloo_instruct_reward_pointwise", "rloo_instruct_reward_bt",
                  "grpo_instruct_reward_pointwise", "grpo_instruct_reward_bt"]
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
TRAIN_PANELS = [("loss", ["loss", "train/loss", "eval/loss"]), ("reward", ["reward", "eval/reward"]),
                ("KL", ["kl"]), ("mean completion tokens", ["completions/mean_length"]),
                ("DPO reward margin", ["rewards/margins", "eval/rewards/margins"]), ("accuracy", ["eval/accuracy"])]
SCORE_ROW = {"prompt_id": lambda v: isinstance(v, int), "sample": lambda v: isinstance(v, int),
             "decoding": lambda v: isinstance(v, str), "correct": lambda v: isinstance(v, bool)}
KEYS = {"countdown": ["n", "accuracy", "accuracy_ci", "score", "score_ci", "format_rate", "completion_tokens"],
        "sweep": ["n", "samples_per_prompt", "temperature"],
        "instruct": ["n", "win_rate", "win_rate_ci", "win_rate_ties_as_losses", "lc_win_rate", "lc_win_rate_ci",
                     "mean_reward", "mean_length"],
        "text": ["n", "bleu_1", "bleu_2", "bleu_4", "perplexity"], "reward_model": ["n", "pairwise_accuracy"]}


# ---------------------------------------------------------------- reading
def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def read_metrics(path: Path, keys: list[str]) -> dict:
    """One flat metrics JSON; a key it lacks, or a value of the wrong kind, is an error naming the file."""
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read metrics: {err}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path}: metrics must be a JSON object")
    for key in keys + [k for k in data if re.fullmatch(r"(pass_at|best_of)_\d+(_score)?(_ci)?", k)]:
        value = data.get(key)
        ok = (isinstance(value, list) and len(value) == 2 and all(map(_number, value))) if key.endswith("_ci") \
            else _number(value)
        if not ok:
            raise UserError(f"{path}: key `{key}` is missing or not a number{' pair' * key.endswith('_ci')}")
    return data


def read_folder(folder: Path, kind: str) -> dict[str, dict]:
    return {p.stem: read_metrics(p, KEYS[kind]) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


def per_item(path: Path, schema: dict, field: str, decoding: str | None = None) -> dict[int, float] | None:
    """A JSONL file's per-prompt mean of `field` (rows of one decoding), or None where the file is missing."""
    if not path.is_file():
        return None
    rows = [r for r in read_jsonl(path, schema) if decoding is None or r["decoding"] == decoding]
    return per_prompt_mean(rows, field, path)


def read_curve(path: Path) -> tuple[list[float], list[float]]:
    """A DVCLive TSV (columns `step` and the metric) as (steps, values)."""
    try:
        rows = list(csv.reader(io.StringIO(path.read_text()), delimiter="\t"))[1:]
        return [float(r[0]) for r in rows], [float(r[1]) for r in rows]
    except (OSError, ValueError, IndexError) as err:
        raise UserError(f"{path}: not a DVCLive TSV (step, value): {err}") from None


# ---------------------------------------------------------------- tables (pure)
def order(names, preferred: list[str]) -> list[str]:
    return sorted(names, key=lambda n: (preferred.index(n) if n in preferred else len(preferred), n))


def source(model: str, table: dict[str, str]) -> str:
    return table.get(model) or next((v for k, v in table.items() if k.endswith("_") and model.startswith(k)), "—")


def paired(a: dict[int, float] | None, b: dict[int, float] | None) -> dict:
    """Paired comparison of a with b on the items both hold: Δ = mean(a - b), its interval, and p-values."""
    common = sorted(a.keys() & b.keys()) if a is not None and b is not None else []
    if not common:
        return {}
    x, y = [a[i] for i in common], [b[i] for i in common]
    test = stats.paired_bootstrap(x, y, n_boot=N_BOOT, seed=SEED)
    return {"delta": test.diff, "delta_ci": list(test.ci), "p_sign": stats.sign_test(x, y),
            "p_bootstrap": test.p_value, "n_paired": len(common)}


def countdown_rows(metrics: dict[str, dict], correct: dict[str, dict | None]) -> list[dict]:
    base = correct.get(COUNTDOWN_BASELINE)
    return [{"model": m, **{k: metrics[m][k] for k in KEYS["countdown"]},
             **(paired(correct.get(m), base) if m != COUNTDOWN_BASELINE else {}),
             "sources": source(m, SOURCES_COUNTDOWN)} for m in order(metrics, COUNTDOWN_ORDER)]


def best_of_n_rows(sweep: dict[str, dict]) -> list[dict]:
    """One row per (model, temperature, N), in long form."""
    rows = []
    for name, m in sweep.items():
        for k in sorted(int(key[len("pass_at_"):]) for key in m if re.fullmatch(r"pass_at_\d+", key)):
            rows.append({"model": name.split("-t")[0], "temperature": m["temperature"], "N": k, "n": m["n"],
                         "samples_per_prompt": m["samples_per_prompt"], "pass_at_n": m[f"pass_at_{k}"],
                         "pass_at_n_ci": m.get(f"pass_at_{k}_ci"), "best_of_n_score": m.get(f"best_of_{k}_score"),
                         "best_of_n_score_ci": m.get(f"best_of_{k}_score_ci")})
    return sorted(rows, key=lambda r: (r["model"], r["temperature"], r["N"]))


def instruct_rows(metrics: dict[str, dict], text: dict[str, dict], outcome: dict[str, dict | None]) -> list[dict]:
    base = outcome.get(INSTRUCT_BASELINE)
    return [{"model": m, **{k: metrics[m].get(k) for k in KEYS["instruct"] + ["ties", "reference_mean_length"]},
             **{k: text.get(m, {}).get(k) for k in KEYS["text"][1:]},
             **(paired(outcome.get(m), base) if m != INSTRUCT_BASELINE else {}),
             "sources": source(m, SOURCES_INSTRUCT)} for m in order(metrics, INSTRUCT_ORDER)]


def outcomes_vs(policy: dict[int, float] | None, reference: dict[int, float] | None) -> dict[int, float] | None:
    """Per prompt: 1 the policy's mean reward beats the reference's, 0.5 a tie, 0 a loss."""
    if policy is None or reference is None or not policy.keys() & reference.keys():
        return None
    ids = sorted(policy.keys() & reference.keys())
    return dict(zip(ids, stats.outcomes([policy[i] for i in ids], [reference[i] for i in ids]).tolist()))


# ---------------------------------------------------------------- rendering
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


def delta(row: dict) -> str:
    return ci(row, "delta", sign=True) if "delta" in row else "—"


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


def training_stages(train: Path) -> list[str]:
    """The stages that logged DVCLive curves under `train` (one folder each)."""
    return sorted(p.name for p in train.glob("*") if p.is_dir()) if train.is_dir() else []


def held_out_reward_rows(train: Path) -> list[dict]:
    """Per RL stage that evaluated held-out prompts: their mean reward before training and at the end."""
    rows = []
    for stage in training_stages(train):
        tsv = train / stage / "plots" / "metrics" / "eval" / "reward.tsv"
        if tsv.is_file():
            _, values = read_curve(tsv)
            if len(values) >= 2:
                rows.append({"stage": stage, "evaluations": len(values), "start": values[0], "end": values[-1],
                             "change": values[-1] - values[0]})
    return rows


def markdown(reference: str, countdown: list[dict], best_of: list[dict], instruct: dict[str, list[dict]],
             reward_models: list[dict], held_out: list[dict], files: list[str]) -> str:
    def ns(rows: list[dict]) -> str:
        return ", ".join(map(str, sorted({r["n"] for r in rows}))) or "none"

    out = ["# Post-training methods compared", "",
           f"- Countdown: greedy decoding on n = {ns(countdown)} held-out puzzles; Δ and p against "
           f"`{COUNTDOWN_BASELINE}` on the same puzzles (exact McNemar test).",
           f"- Instruction following: win rate against the reference `{reference}` (`evaluation.reference`) on "
           f"n = {ns([r for rows in instruct.values() for r in rows])} prompts, judges: "
           f"{', '.join(f'`{j}`' for j in instruct) or 'none'}; Δ and p against `{INSTRUCT_BASELINE}` "
           "(sign test of per-prompt outcomes).",
           f"- Intervals are 95% percentile bootstraps over items; `*` marks p < {ALPHA}.",
           "- *sources*: the seeds' numbers for Qwen2.5-0.5B (reference.md §3, §5). Other model, data and "
           "judge: compare directions, not absolute values.",
           "", "## 1. Countdown", "", countdown_md(countdown) if countdown else "No Countdown metrics.\n",
           "## 2. Best-of-N with the verifier", "",
           "pass@N is best-of-N accuracy (the verifier picks a correct sample whenever one exists); sources: "
           f"{SOURCE_BEST_OF_N}.", "", best_of_n_md(best_of) if best_of else "No sweep.\n",
           "## 3. Instruction following", "",
           "Sources count ties as losses (our *ties as losses* column); 001 measured against the base model, "
           "002 and 003 against Qwen2.5-0.5B-Instruct; 001's RLOO with the DeBERTa reward: 0.695. "
           "BLEU (0-100) and perplexity on held-out SmolTalk references do not depend on the judge.", ""]
    for judge, rows in instruct.items():
        out += [f"### Judge `{judge}`", "", instruct_md(rows)]
    out += ["## 4. Reward models", "", md_table(
        ["reward model", "pairwise accuracy", "n pairs"],
        [[r["model"], num(r["pairwise_accuracy"]), str(r["n"])] for r in reward_models]) if reward_models
        else "No reward models.\n", "## 5. RL: reward on held-out prompts", "",
        "Each RL stage samples its `held_out` prompts (kept out of training) with the training settings before "
        "the first update and every `eval_steps`: one fixed prompt set, so the change is the policy's.", "",
        md_table(["stage", "reward at step 0", "at the end", "change", "evaluations"],
                 [[r["stage"], num(r["start"]), num(r["end"]), num(r["change"], sign=True), str(r["evaluations"])]
                  for r in held_out]) if held_out else "No held-out RL evaluations.\n", "## 6. Files", ""]
    return "\n".join(out + [f"- [{f}]({f})" for f in files]) + "\n"


# ---------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: the same bytes on every run
    _pyplot().close(fig)


def _errors(rows: list[dict], key: str) -> list[list[float]]:
    """Below and above each value, to its 95% interval (none drawn where the row has no interval)."""
    bounds = [r.get(f"{key}_ci") or [r[key], r[key]] for r in rows]
    return [[max(0.0, r[key] - b[0]) for r, b in zip(rows, bounds)],
            [max(0.0, b[1] - r[key]) for r, b in zip(rows, bounds)]]


def plot_bars(path: Path, rows: list[dict], key: str, xlabel: str, chance: float | None = None) -> None:
    """Horizontal bars of `key` per model, with its 95% interval."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.4 * len(rows)))
    ax.barh(range(len(rows)), [r[key] for r in rows], xerr=_errors(rows, key), capsize=3, color="tab:blue")
    ax.set_yticks(range(len(rows)), [r["model"] for r in rows])
    ax.invert_yaxis()
    if chance is not None:
        ax.axvline(chance, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel=xlabel, xlim=(0, 1))
    _save(fig, path)


def plot_best_of_n(path: Path, rows: list[dict]) -> None:
    """pass@N against temperature, one line per (model, N), with 95% intervals."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for (model, k) in sorted({(r["model"], r["N"]) for r in rows}):
        line = [r for r in rows if (r["model"], r["N"]) == (model, k)]
        ax.errorbar([r["temperature"] for r in line], [r["pass_at_n"] for r in line],
                    yerr=_errors(line, "pass_at_n"), marker="o", capsize=3, label=f"{model} N={k}")
    ax.set(xlabel="temperature", ylabel="pass@N (best-of-N accuracy)", ylim=(0, 1.03))
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_training(path: Path, folder: Path) -> bool:
    """One panel per TRAIN_PANELS entry that the stage logged (curves of at least two points)."""
    panels = []
    for title, names in TRAIN_PANELS:
        curves = [(n, read_curve(folder / f"{n}.tsv")) for n in names if (folder / f"{n}.tsv").is_file()]
        curves = [(n, c) for n, c in curves if len(c[0]) >= 2]  # `train/loss` is one summary point
        if curves:
            panels.append((title, curves))
    if not panels:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels):
        for name, (steps, values) in curves:
            ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=name)
        ax.set(title=title, xlabel="step")
        ax.legend(fontsize=7)
    fig.suptitle(path.stem.removeprefix("training_"))
    _save(fig, path)
    return True


# ---------------------------------------------------------------- the stage
def build(metrics: Path, scores: Path, judged: Path, out: Path, reference: str, judges: list[str]) -> None:
    """Read everything, then write the report's files under `out` (a fresh folder)."""
    countdown = read_folder(metrics / "countdown", "countdown")
    correct = {m: per_item(scores / f"{m}.jsonl", SCORE_ROW, "correct", "greedy") for m in countdown}
    cd_rows = countdown_rows(countdown, correct)
    bo_rows = best_of_n_rows(read_folder(metrics / "countdown" / "sweep", "sweep"))
    text = read_folder(metrics / "instruct_text", "text")
    found = [p.name for p in sorted((metrics / "instruct").glob("*")) if p.is_dir()]
    instruct = {}
    for judge in [j for j in judges if j in found] + [j for j in found if j not in judges]:
        by_model = read_folder(metrics / "instruct" / judge, "instruct")
        ref = per_item(judged / judge / "reference.jsonl", JUDGED, "reward")
        outcome = {m: outcomes_vs(per_item(judged / judge / f"{m}.jsonl", JUDGED, "reward"), ref) for m in by_model}
        instruct[judge] = instruct_rows(by_model, text, outcome)
    rm = read_folder(metrics / "reward_model", "reward_model")
    rm_rows = [{"model": m, "n": rm[m]["n"], "pairwise_accuracy": rm[m]["pairwise_accuracy"]} for m in sorted(rm)]

    (out / "plots").mkdir(parents=True)
    held_rows = held_out_reward_rows(metrics / "train")
    tables = {"countdown.csv": cd_rows, "best_of_n.csv": bo_rows, "reward_models.csv": rm_rows,
              "rl_held_out_reward.csv": held_rows,
              **{f"instruct_{j}.csv": rows for j, rows in instruct.items()}}
    files = [name for name, rows in tables.items() if rows]
    for name in files:
        write_text(out / name, csv_text(tables[name]))
    if cd_rows:
        plot_bars(out / "plots" / "countdown_accuracy.png", cd_rows, "accuracy", "Countdown greedy accuracy")
        files.append("plots/countdown_accuracy.png")
    if bo_rows:
        plot_best_of_n(out / "plots" / "best_of_n.png", bo_rows)
        files.append("plots/best_of_n.png")
    for judge, rows in instruct.items():
        plot_bars(out / "plots" / f"win_rates_{judge}.png", rows, "win_rate", f"win rate vs {reference} ({judge})",
                  chance=0.5)
        files.append(f"plots/win_rates_{judge}.png")
    train = metrics / "train"
    for stage in training_stages(train):
        if plot_training(out / "plots" / f"training_{stage}.png", train / stage / "plots" / "metrics"):
            files.append(f"plots/training_{stage}.png")
    write_text(out / "report.md", markdown(reference, cd_rows, bo_rows, instruct, rm_rows, held_rows, files))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--metrics", type=Path, required=True, help="the metrics folder")
    parser.add_argument("--scores", type=Path, required=True, help="per-puzzle Countdown scores")
    parser.add_argument("--judged", type=Path, required=True, help="per-prompt judge rewards, one folder per judge")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    p = params.load()
    staging, old = args.out.with_name(args.out.name + ".tmp"), args.out.with_name(args.out.name + ".old")
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)
    try:
        build(args.metrics, args.scores, args.judged, staging, p.evaluation.reference,
              [*p.evaluation.judges, *p.evaluation.reward_judges])
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if args.out.exists():
        args.out.rename(old)
    staging.rename(args.out)
    shutil.rmtree(old, ignore_errors=True)
    print((args.out / "report.md").read_text())


if __name__ == "__main__":
    run_main(main)
