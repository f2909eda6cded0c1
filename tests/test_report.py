"""The report stage on a small fake tree of metrics, per-item outcomes and training curves (no data/ at all)."""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import pytest

from posttrain import schemas
from posttrain.errors import UserError
from posttrain.evaluation.countdown import greedy_metrics, greedy_outcomes, pool_metrics
from posttrain.evaluation.win_rate import win_rate_result
from posttrain.report import markdown, tables
from stages import report

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"
N_PUZZLES, N_PROMPTS = 20, 10
# Greedy correctness per puzzle: base never right; sft_synthetic the same as sft_countdown puzzle for puzzle.
CORRECT = {"base": [False] * N_PUZZLES, "sft_countdown": [i % 5 != 0 for i in range(N_PUZZLES)],
           "sft_synthetic": [i % 5 != 0 for i in range(N_PUZZLES)]}
# Judge rewards per prompt: sft_instruct ties the reference everywhere, base is the same as sft_instruct,
# dpo beats the reference on every prompt.
REWARDS = {"reference": [5.0] * N_PROMPTS, "sft_instruct": [5.0] * N_PROMPTS, "base": [5.0] * N_PROMPTS,
           "dpo": [8.0] * N_PROMPTS}


def _write(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, list):
        path.write_text("".join(json.dumps(row) + "\n" for row in data))
    elif isinstance(data, dict):
        path.write_text(json.dumps(data))
    else:
        path.write_text(data)


def make_tree(root: Path) -> None:
    """metrics/ as the pipeline lays it out (outcomes under metrics/*_outcomes), made with the library's own
    metric functions."""
    for model, correct in CORRECT.items():
        rows = [{"prompt_id": i, "sample": 0, "decoding": "greedy", "correct": c, "reward": 1.0 if c else 0.1,
                 "reason": "correct" if c else "wrong_value", "completion_tokens": 12 + i % 3}
                for i, c in enumerate(correct)]
        _write(root / "metrics/countdown_outcomes" / f"{model}.jsonl", greedy_outcomes(rows))
        _write(root / "metrics/countdown" / f"{model}.json", greedy_metrics(rows))
    for t in (0.7, 1.0):
        pool = [{"prompt_id": i, "sample": s, "reward": 1.0 if (i + s) % (3 if t < 1 else 4) == 0 else 0.1,
                 "temperature": t} for i in range(N_PUZZLES) for s in range(10)]
        _write(root / "metrics/countdown/sweep" / f"sft_countdown-t{t}.json", pool_metrics(pool, [1, 3, 5, 10],
                                                                                       N_PUZZLES))
    prompts = root / "data/instruct/gen_test.jsonl"

    def judged(model: str, judge: str) -> list[dict]:
        return [{"prompt_id": i, "sample": 0, "reward": r, "judge": judge, "judge_model": None}
                for i, r in enumerate(REWARDS[model])]

    generations = {m: [{"prompt_id": i, "sample": 0, "text": "x", "completion_tokens": 10 + (i + len(m)) % 4}
                       for i in range(N_PROMPTS)] for m in REWARDS}
    for judge in ("checker", "reward_bt"):
        for model in ("base", "sft_instruct", "dpo"):
            paths = {"prompts": prompts, "policy_judged": Path(f"{model}.jsonl"),
                     "reference_judged": Path("reference.jsonl"), "policy_generations": Path(f"{model}.jsonl"),
                     "reference_generations": Path("reference.jsonl")}
            metrics, outcomes = win_rate_result(N_PROMPTS, judged(model, judge), judged("reference", judge),
                                                generations[model], generations["reference"], paths, seed=0,
                                                n_boot=200)
            _write(root / "metrics/instruct" / judge / f"{model}.json", metrics)
            _write(root / "metrics/instruct_outcomes" / f"{judge}-{model}.jsonl",
                   [{"prompt_id": i, "value": o} for i, o in enumerate(outcomes)])
    for model, bleu in (("sft_instruct", 20.0), ("dpo", 18.5)):  # base has no text metrics: shown as n/a
        _write(root / "metrics/instruct_text" / f"{model}.json",
               {"n": N_PROMPTS, "bleu_1": bleu, "bleu_2": bleu / 2, "bleu_4": bleu / 4, "perplexity": 3.5})
    _write(root / "metrics/reward_model/reward_bt.json", {"n": 50, "pairwise_accuracy": 0.72})
    curves = root / "metrics/train/sft_countdown/plots/metrics"
    _write(curves / "loss.tsv", "step\tloss\n" + "".join(f"{s}\t{3 / (s + 1)}\n" for s in range(0, 20, 2)))
    _write(curves / "eval/loss.tsv", "step\tloss\n5\t1.2\n10\t0.9\n15\t0.8\n")
    _write(curves / "train/loss.tsv", "step\tloss\n20\t1.1\n")  # the one-point summary: not a curve
    curves = root / "metrics/train/rloo_countdown/plots/metrics"
    for name, value in (("reward", 0.3), ("kl", 0.01), ("completions/mean_length", 14.0)):
        _write(curves / f"{name}.tsv", f"step\t{name.split('/')[-1]}\n" + "".join(
            f"{s}\t{value * (1 + s / 10)}\n" for s in range(8)))
    _write(curves / "eval/reward.tsv", "step\treward\n0\t0.21\n5\t0.23\n9\t0.25\n")  # held-out prompts


@pytest.fixture
def tree(tmp_path: Path, monkeypatch) -> Path:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    make_tree(tmp_path)
    return tmp_path


def run_report(monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["report", "--metrics", "metrics", "--outcomes-countdown",
                                      "metrics/countdown_outcomes", "--outcomes-instruct", "metrics/instruct_outcomes",
                                      "--out", "metrics/report"])
    report.main()


def read_csv(path: Path) -> dict[str, dict]:
    with open(path) as f:
        return {row["model"]: row for row in csv.DictReader(f)}


def test_report_holds_every_table_csv_and_plot(tree, monkeypatch):
    run_report(monkeypatch)
    out = tree / "metrics/report"
    text = (out / "report.md").read_text()
    cd = read_csv(out / "countdown.csv")
    sft = cd["sft_countdown"]
    assert float(sft["accuracy"]) == pytest.approx(0.8)
    assert f"| sft_countdown | 0.800 [{float(sft['accuracy_ci_lo']):.3f}, {float(sft['accuracy_ci_hi']):.3f}] |" in text
    assert "| base | 0.000 [0.000, 0.161] |" in text and "| sft_synthetic | 0.800 [" in text  # Wilson: never [0, 0]
    assert "0.37 (001); 0.316 (003)" in text and "0.3835 (001)" in text and "0.811" in text
    assert "`models/sft_instruct`" in text and "`checker`, `reward_bt`" in text  # params' reference and judges
    assert "n = 20 held-out puzzles" in text and "n = 10 prompts" in text
    for judge in ("checker", "reward_bt"):
        assert f"### Judge `{judge}`" in text
        rows = read_csv(out / f"instruct_{judge}.csv")
        assert list(rows) == ["base", "sft_instruct", "dpo"]
        assert float(rows["dpo"]["win_rate"]) == 1.0 and float(rows["sft_instruct"]["win_rate"]) == 0.5
        assert rows["base"]["bleu_4"] == "" and float(rows["dpo"]["bleu_4"]) == pytest.approx(18.5 / 4)
        assert (out / f"plots/win_rates_{judge}.png").read_bytes().startswith(PNG)
    assert "| dpo | 1.000 [0.722, 1.000] |" in text and "| n/a | n/a | 10 |" in text  # base: no BLEU, no perplexity
    assert "| reward_bt | 0.720 | 50 |" in text
    assert "| rloo_countdown | 0.210 | 0.250 | +0.040 | 3 |" in text  # held-out reward: step 0 and the end
    assert [r["stage"] for r in csv.DictReader(open(out / "rl_held_out_reward.csv"))] == ["rloo_countdown"]
    best = list(csv.DictReader(open(out / "best_of_n.csv")))
    assert [(r["temperature"], r["N"]) for r in best] == [(t, n) for t in ("0.7", "1.0") for n in ("1", "3", "5", "10")]
    assert all(0 <= float(r["pass_at_n_ci_lo"]) <= float(r["pass_at_n"]) <= float(r["pass_at_n_ci_hi"]) for r in best)
    assert list(read_csv(out / "reward_models.csv")) == ["reward_bt"]
    plots = ["countdown_accuracy", "best_of_n", "training_sft_countdown", "training_rloo_countdown"]
    for name in plots:
        assert (out / f"plots/{name}.png").read_bytes().startswith(PNG)
        assert f"(plots/{name}.png)" in text
    assert sorted(p.name for p in (out / "plots").iterdir()) == sorted(
        [f"{n}.png" for n in plots] + ["win_rates_checker.png", "win_rates_reward_bt.png"])
    assert not (tree / "metrics/report.tmp").exists() and not (tree / "metrics/report.old").exists()


def test_paired_p_values_are_one_for_identical_and_small_for_different_methods(tree, monkeypatch):
    run_report(monkeypatch)
    out = tree / "metrics/report"
    cd = read_csv(out / "countdown.csv")
    assert float(cd["sft_synthetic"]["delta"]) == 0 and float(cd["sft_synthetic"]["p_sign"]) == 1.0
    assert float(cd["sft_synthetic"]["p_bootstrap"]) == 1.0
    assert float(cd["base"]["delta"]) == pytest.approx(-0.8)
    assert float(cd["base"]["p_sign"]) == pytest.approx(2 * 0.5**16)  # exact McNemar: 16 discordant, all one way
    assert float(cd["base"]["p_bootstrap"]) < 0.001 and cd["sft_countdown"]["p_sign"] == ""
    rows = read_csv(out / "instruct_checker.csv")
    assert float(rows["base"]["p_sign"]) == 1.0 and float(rows["dpo"]["p_sign"]) == pytest.approx(2 * 0.5**10)
    assert float(rows["dpo"]["delta"]) == 0.5 and int(rows["dpo"]["n_paired"]) == N_PROMPTS
    text = (out / "report.md").read_text()
    assert "| -0.800 [-0.950, -0.600] (n = 20) | <0.001* |" in text
    assert "| +0.000 [+0.000, +0.000] (n = 20) | 1.000 |" in text


def test_output_is_the_same_on_a_second_run(tree, monkeypatch):
    run_report(monkeypatch)
    first = {p.relative_to(tree): p.read_bytes() for p in (tree / "metrics/report").rglob("*") if p.is_file()}
    run_report(monkeypatch)
    second = {p.relative_to(tree): p.read_bytes() for p in (tree / "metrics/report").rglob("*") if p.is_file()}
    assert first == second


@pytest.mark.parametrize("relative, content, message", [
    ("metrics/countdown/sft_countdown.json", "{not json", "cannot read metrics"),
    ("metrics/countdown/sft_countdown.json", "[1, 2]", "must be a JSON object"),
    ("metrics/countdown/sweep/sft_countdown-t0.7.json", {"n": 20, "samples_per_prompt": 10, "temperature": 0.7,
                                                         "pass_at_1": "high"}, "key `pass_at_1`"),
    ("metrics/instruct/checker/dpo.json", {"n": 10, "samples_per_prompt": 1, "win_rate": 0.5}, "key `win_rate_ci`"),
    ("metrics/reward_model/reward_bt.json", {"n": 50, "pairwise_accuracy": None}, "key `pairwise_accuracy`"),
    ("metrics/countdown_outcomes/base.jsonl", "{\"prompt_id\": 0}\n", "field `value`"),
    ("metrics/countdown_outcomes/base.jsonl", [{"prompt_id": 0, "value": 1.0}] * 2, "prompt_id 0 appears twice"),
    ("metrics/instruct_outcomes/checker-dpo.jsonl", "oops\n", "not valid JSON"),
    ("metrics/train/sft_countdown/plots/metrics/loss.tsv", "step\tloss\n0\tnan?\n1\t2\n", "DVCLive TSV"),
])
def test_a_malformed_file_is_a_user_error_naming_it_and_the_last_report_stays(tree, monkeypatch, relative,
                                                                              content, message):
    _write(tree / "metrics/report/report.md", "the last report\n")
    _write(tree / relative, content)
    with pytest.raises(UserError, match=message) as err:
        run_report(monkeypatch)
    assert relative in str(err.value)
    assert (tree / "metrics/report/report.md").read_text() == "the last report\n"
    assert not (tree / "metrics/report.tmp").exists()


def test_a_model_without_files_is_absent_and_missing_rows_leave_no_test(tree, monkeypatch):
    for path in ("metrics/countdown/sft_synthetic.json", "metrics/countdown_outcomes/base.jsonl",
                 "metrics/instruct_outcomes/reward_bt-sft_instruct.jsonl"):
        (tree / path).unlink()
    shutil.rmtree(tree / "metrics/countdown/sweep")
    shutil.rmtree(tree / "metrics/reward_model")
    run_report(monkeypatch)
    out = tree / "metrics/report"
    text = (out / "report.md").read_text()
    assert "sft_synthetic" not in text and "No sweep." in text and "No reward models." in text
    assert read_csv(out / "countdown.csv")["base"].get("p_sign") in ("", None)  # no per-puzzle rows: no test
    assert read_csv(out / "instruct_reward_bt.csv")["dpo"].get("p_sign") in ("", None)
    assert not (out / "best_of_n.csv").exists() and not (out / "plots/best_of_n.png").exists()


def test_an_empty_tree_gives_a_report_of_empty_sections(tmp_path, monkeypatch):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    run_report(monkeypatch)
    text = (tmp_path / "metrics/report/report.md").read_text()
    assert "No Countdown metrics." in text and "No sweep." in text and "judges: none" in text


@pytest.mark.parametrize("model, expected", [("sft_countdown", "0.37 (001); 0.316 (003)"),
                                             ("distill_qwen_math_1_5b", "0.348 (1.5B teacher) / 0.338 (3B) (003)"),
                                             ("grpo_countdown", "none"), ("base", "—")])
def test_sources_beside_each_method(model, expected):
    assert tables.source(model, tables.SOURCES_COUNTDOWN) == expected


def test_paired_refuses_methods_scored_on_different_items():
    """Issue §3: a model scored on 1,000 puzzles against a baseline on 500 is no paired comparison."""
    a, b = {0: 1.0, 1: 1.0, 2: 0.0, 7: 1.0}, {0: 0.0, 1: 1.0, 2: 0.0}
    assert tables.paired(a, b) == {"refused": "items differ: 4 vs 3, 3 shared"}
    del a[7]
    result = tables.paired(a, b)
    assert result["n_paired"] == 3 and result["delta"] == pytest.approx(1 / 3) and result["p_sign"] == 1.0
    assert tables.paired(a, None) == {}
    assert markdown.delta({"refused": "items differ: 4 vs 3, 3 shared"}) == "refused (items differ: 4 vs 3, 3 shared)"
    assert markdown.delta(result).endswith("(n = 3)")


def test_the_report_refuses_a_delta_on_different_puzzles(tree, monkeypatch):
    rows = [json.loads(line) for line in (tree / "metrics/countdown_outcomes/sft_synthetic.jsonl").read_text().splitlines()]
    _write(tree / "metrics/countdown_outcomes/sft_synthetic.jsonl", rows[: len(rows) // 2])
    run_report(monkeypatch)
    text = (tree / "metrics/report/report.md").read_text()
    line = next(line for line in text.splitlines() if line.startswith("| sft_synthetic |"))
    assert f"refused (items differ: {len(rows) // 2} vs {len(rows)}" in line


def test_the_report_reads_outcomes_and_never_a_data_file(tree, monkeypatch):
    """Paired tests come from the outcome files, and nothing under data/ is opened or listed (a poisoned
    data/ tree beside it would otherwise break the run)."""
    _write(tree / "data/scores/countdown/base.jsonl", "poison\n")
    _write(tree / "data/judged/checker/reference.jsonl", "poison\n")
    touched: list[str] = []
    recording = [True]

    def audit(event: str, args: tuple) -> None:
        if recording[0] and event in ("open", "os.listdir", "os.scandir") and args and args[0] is not None:
            touched.append(str(Path(args[0]).resolve()) if isinstance(args[0], (str, Path)) else "")

    sys.addaudithook(audit)  # cannot be removed: `recording` turns it off after the run
    try:
        run_report(monkeypatch)
    finally:
        recording[0] = False
    assert not [t for t in touched if t.startswith(str(tree / "data"))]
    assert str(tree / "metrics/countdown_outcomes/base.jsonl") in touched
    assert str(tree / "metrics/instruct_outcomes/checker-dpo.jsonl") in touched
    # a changed outcome file changes the paired test: dpo now only ties sft_instruct
    _write(tree / "metrics/instruct_outcomes/checker-dpo.jsonl",
           [{"prompt_id": i, "value": 0.5} for i in range(N_PROMPTS)])
    run_report(monkeypatch)
    rows = read_csv(tree / "metrics/report/instruct_checker.csv")
    assert float(rows["dpo"]["delta"]) == 0 and float(rows["dpo"]["p_sign"]) == 1.0


def test_models_are_listed_in_the_order_of_params(tree, monkeypatch):
    params_yaml = tree / "params.yaml"
    listed = "  countdown_models:\n  - base\n  - sft_countdown\n  - sft_synthetic\n"
    assert listed in params_yaml.read_text()
    params_yaml.write_text(params_yaml.read_text().replace(
        listed, "  countdown_models:\n  - sft_synthetic\n  - base\n  - sft_countdown\n"))
    run_report(monkeypatch)
    assert list(read_csv(tree / "metrics/report/countdown.csv")) == ["sft_synthetic", "base", "sft_countdown"]


def test_the_instruction_tables_show_win_rate_metrics():
    assert set(tables.INSTRUCT_COLUMNS) <= set(schemas.WIN_RATE_METRICS)


@pytest.mark.parametrize("gold, verdict", [
    ([6.0, 6.5, 6.2, 5.9], "over-optimised: the proxy rose, the gold stalled or fell"),
    ([6.0, 6.8, 7.1, 6.9], "over-optimising: the proxy rose, the gold peaked at evaluation 3 of 4"),
    ([6.0, 6.2, 6.4, 6.6], "the proxy and the gold rose together"),
])
def test_the_report_shows_the_proxy_against_the_gold(gold, verdict, tree, monkeypatch):
    """Issue: reward over-optimisation made visible: proxy and gold held-out rewards against the KL, per run."""
    curves = tree / "metrics/train/rloo_instruct_reward_bt/plots/metrics/eval"
    steps = [0, 5, 10, 15]
    for name, values in (("rewards/reward_model_reward_bt/mean", [0.1, 0.4, 0.7, 1.0]),
                         ("rewards/gold_checker/mean", gold), ("kl", [0.0, 0.01, 0.03, 0.06])):
        _write(curves / f"{name}.tsv", f"step\t{name.split('/')[-1]}\n" + "".join(
            f"{s}\t{v}\n" for s, v in zip(steps, values)))
    run_report(monkeypatch)
    out = tree / "metrics/report"
    text = (out / "report.md").read_text()
    row = next(line for line in text.splitlines() if line.startswith("| rloo_instruct_reward_bt | `reward_model"))
    assert verdict in row and "`gold_checker`" in row and "0.0600" in row
    assert (out / "plots/overoptimisation.png").is_file() and "overoptimisation.csv" in text


def test_the_report_shows_each_method_across_training_seeds(tree, monkeypatch):
    """Issue: across training seeds. Each seed's number, their mean with a between-seed interval, and Δ vs SFT
    with seed and item variance both counted; the replicates stay out of the main table."""
    params_yaml = tree / "params.yaml"
    params_yaml.write_text(params_yaml.read_text().replace("train_seeds: []", "train_seeds:\n- 1\n- 2"))
    flips = {"sft_countdown": (0, 3), "sft_synthetic": (5, 9)}  # each seed: a few puzzles flipped
    for seed in (1, 2):
        for model, correct in CORRECT.items():
            if model not in flips:
                continue
            changed = [(not c) if i in range(*flips[model]) and (i + seed) % 2 else c for i, c in enumerate(correct)]
            rows = [{"prompt_id": i, "sample": 0, "decoding": "greedy", "correct": c, "reward": 1.0 if c else 0.1,
                     "reason": "correct" if c else "wrong_value", "completion_tokens": 12}
                    for i, c in enumerate(changed)]
            _write(tree / "metrics/countdown_outcomes" / f"{model}-s{seed}.jsonl", greedy_outcomes(rows))
            _write(tree / "metrics/countdown" / f"{model}-s{seed}.json", greedy_metrics(rows))
    run_report(monkeypatch)
    text = (tree / "metrics/report/report.md").read_text()
    assert "-s1" not in text.split("### Across training seeds")[0]  # not in the main table
    row = next(line for line in text.splitlines() if line.startswith("| sft_synthetic | main / s1 / s2 |"))
    assert "(seeds 3, n = 20, df" in row
    seeds = read_csv(tree / "metrics/report/countdown_seeds.csv")
    assert set(seeds) == {"sft_countdown", "sft_synthetic"} and float(seeds["sft_synthetic"]["p"]) <= 1
    assert float(seeds["sft_synthetic"]["mean_ci_lo"]) < float(seeds["sft_synthetic"]["mean"])
