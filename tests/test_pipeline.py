"""End to end: the repo copied into a fresh git repo runs `dvc repro` on the smoke profile.

Checks that the DAG holds every method, the metric files and the report, that a second `dvc repro`
does nothing, and that `dvc exp run -S dpo.beta=0.05` reruns only DPO and what depends on it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def repo(pipeline_runs) -> Path:
    """The project's files in a new git repo, on the smoke profile, after `dvc repro` (tests/pipeline_runs.py)."""
    return pipeline_runs.result("smoke")["repo"]


COUNTDOWN_MODELS = ["base", "sft_countdown", "sft_synthetic", "rloo_countdown", "grpo_countdown", "distill_synthetic"]
INSTRUCT_MODELS = ["base", "sft_instruct", "sft_instruct_lora", "sft_instruct_lp", "dpo", "dpo_lora",
                   "rloo_instruct_reward_pointwise", "rloo_instruct_reward_bt",
                   "grpo_instruct_reward_pointwise", "grpo_instruct_reward_bt"]


def test_dag_holds_every_method(repo):
    stages = run(["dvc", "stage", "list", "--name-only"], repo).split()
    for name in ["synthetic", "sft_countdown@sft_synthetic", "rl_countdown@rloo", "rl_countdown@grpo",
                 "sft_distill@synthetic", "reward_model@reward_pointwise", "reward_model@reward_bt",
                 "sft_instruct@sft_instruct", "sft_instruct@sft_instruct_lora", "sft_instruct@sft_instruct_lp",
                 "dpo@dpo", "dpo@dpo_lora", "rl_instruct@rloo-reward_bt", "rl_instruct@grpo-reward_pointwise",
                 "sweep_countdown@0.7", "judge_instruct@checker-dpo", "judge_instruct_rm@reward_bt-dpo", "report"]:
        assert name in stages


def test_repro_writes_metrics_and_report(repo):
    for model in COUNTDOWN_MODELS:
        m = json.loads((repo / "metrics" / "countdown" / f"{model}.json").read_text())
        assert m["n"] == 40 and 0.0 <= m["accuracy_ci"][0] <= m["accuracy"] <= m["accuracy_ci"][1] <= 1.0
    for t in ("0.7", "1.0"):
        m = json.loads((repo / "metrics" / "countdown" / "sweep" / f"sft_countdown-t{t}.json").read_text())
        assert m["samples_per_prompt"] == 4 and m["temperature"] == float(t) and m["n"] == 30  # sweep.prompts
        assert m["pass_at_1"] <= m["pass_at_2"] <= m["pass_at_4"] and m["best_of_1_score"] <= m["best_of_4_score"]
        rows = (repo / "data" / "generations" / "countdown" / "sweep" / f"sft_countdown-t{t}.jsonl").read_text()
        assert len(rows.splitlines()) == 30 * 4
    for stage in ("rloo_countdown", "grpo_countdown", "rloo_instruct_reward_bt"):  # held-out reward: steps 0 and 2
        curve = repo / "metrics" / "train" / stage / "plots" / "metrics" / "eval" / "reward.tsv"
        assert len(curve.read_text().splitlines()) == 1 + 2
    assert "| rloo_countdown | " in (repo / "metrics" / "report" / "report.md").read_text().split("held-out prompts")[1]
    gold = repo / "metrics/train/rloo_instruct_reward_bt/plots/metrics/eval/rewards/gold_checker/mean.tsv"
    assert len(gold.read_text().splitlines()) == 1 + 2  # the checker beside the proxy, at the same evaluations
    text = (repo / "metrics" / "report" / "report.md").read_text()
    assert "| rloo_instruct_reward_bt | `reward_model_reward_bt` | `gold_checker` |" in text
    for model in ("sft_countdown", "rloo_countdown", "distill_synthetic"):  # smoke: train_seeds [1]
        assert json.loads((repo / "metrics" / "countdown" / f"{model}-s1.json").read_text())["n"] == 40
        assert f"| {model} | main / s1 |" in text.split("### Across training seeds")[1]
    for judge in ("checker", "reward_bt"):
        for model in INSTRUCT_MODELS:
            m = json.loads((repo / "metrics" / "instruct" / judge / f"{model}.json").read_text())
            assert m["n"] == 20 and 0.0 <= m["win_rate_ci"][0] <= m["win_rate"] <= m["win_rate_ci"][1] <= 1.0
    # The reference is sft_instruct itself in the embedded profiles: it ties with itself on every prompt.
    same = json.loads((repo / "metrics" / "instruct" / "checker" / "sft_instruct.json").read_text())
    assert same["win_rate"] == 0.5 and same["ties"] == 20
    for model in INSTRUCT_MODELS:
        m = json.loads((repo / "metrics" / "instruct_text" / f"{model}.json").read_text())
        assert m["perplexity"] > 1.0 and 0.0 <= m["bleu_4"] <= 100.0
    for name in ("reward_pointwise", "reward_bt"):
        m = json.loads((repo / "metrics" / "reward_model" / f"{name}.json").read_text())
        assert m["n"] == 20 and 0.0 <= m["pairwise_accuracy"] <= 1.0
    for stage in ("sft_countdown", "rloo_countdown", "dpo", "sft_instruct_lp"):
        assert "loss" in (repo / "metrics" / "train" / stage / "metrics.json").read_text()
    report = (repo / "metrics" / "report" / "report.md").read_text()
    for model in COUNTDOWN_MODELS + INSTRUCT_MODELS:
        assert model in report
    assert list((repo / "metrics" / "report").glob("plots/*.png"))
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo))
    assert "metrics/countdown/rloo_countdown.json" in json.dumps(shown)


# Stages that read no model: they must not pay for importing torch (issue 13's fixed costs).
MODEL_FREE = ("prepare_countdown", "prepare_instruct", "synthetic", "distill_prompts", "distill_collect",
              "score_countdown", "score_sweep", "score_seed", "judge_reference", "judge_instruct", "report")


def test_model_free_stages_import_no_torch(pipeline_runs):
    imports = pipeline_runs.result("smoke")["imports"]
    kinds = {stage.split("@")[0] for stage in imports}
    assert set(MODEL_FREE) - {"score_seed"} <= kinds, sorted(kinds)  # score_seed runs only with train_seeds
    assert "torch" in imports["generate_countdown@sft_countdown"]  # the stages' imports are seen
    heavy = {stage: sorted(imports[stage] & {"torch", "transformers", "trl", "dvclive", "datasets"})
             for stage in imports if stage.split("@")[0] in MODEL_FREE}
    assert not any(heavy.values()), {stage: modules for stage, modules in heavy.items() if modules}


def test_second_repro_does_nothing(repo):
    out = run(["dvc", "repro"], repo)
    assert "Running stage" not in out
    assert "up to date" in run(["dvc", "status"], repo)


def test_remote_shares_the_results_with_a_fresh_clone(repo, tmp_path):
    """Push to a local-folder remote, clone elsewhere, pull: the clone has nothing to rerun."""
    run(["dvc", "remote", "add", "--default", "shared", str(tmp_path / "remote")], repo)
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "results and remote"], repo)
    run(["dvc", "push"], repo)
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    run(["dvc", "pull"], clone)
    assert (clone / "models" / "dpo" / "model.safetensors").is_file()
    assert "Running stage" not in run(["dvc", "repro"], clone)
    assert "up to date" in run(["dvc", "status"], clone)


def test_exp_run_reruns_only_what_depends_on_the_change(repo):
    run(["git", "add", "-A"], repo)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "--allow-empty", "-qm", "lock"], repo)
    out = run(["dvc", "exp", "run", "-S", "dpo.beta=0.05"], repo)  # on the smoke params.yaml the fixture chose
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert "dpo@dpo" in ran, out
    downstream = {"dpo@dpo", "generate_instruct@dpo", "judge_instruct@checker-dpo", "judge_instruct_rm@reward_bt-dpo",
                  "report"}
    # What reruns is DPO and what reads its model; a stage downstream is skipped when its inputs came out the same.
    assert ran <= downstream, out
