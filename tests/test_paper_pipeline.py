"""End to end: the paper profile, its sources pointed at hub stand-ins, runs `dvc repro` to the report.

The repo is copied into a fresh git repo; `params.yaml` is composed from `conf/profile/paper.yaml` with
only its sources pointed at the stand-ins of `tests/hub_standins.py` (the hub's own file layouts: a
`pytorch_model.bin`-only reward model, DistilBERT without a head, Qwen2.5's real chat template, parquet
datasets under `data/<split>-*.parquet`) and its sizes and step counts shrunk. The Nemotron judge is the
local fake server. Everything else is the paper profile's: its prompts, system prompt, decoding settings,
schedules, judges and DAG. Every stage runs; afterwards `dvc status` has nothing to do.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.pipeline_runs import run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def paper(pipeline_runs):
    """The repo copy after `dvc repro` on the paper profile at stand-in size (tests/pipeline_runs.py), and
    `dvc status` after it."""
    out = pipeline_runs.result("paper")
    return {**out, "status": run(["dvc", "status"], out["repo"])}


def test_every_stage_of_the_paper_dag_ran(paper):
    repo = paper["repo"]
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    stages = set(run(["dvc", "stage", "list", "--name-only"], repo, env).split())
    ran = {line.split("'")[1] for line in paper["repro"].splitlines() if line.startswith("Running stage")}
    assert stages == ran, sorted(stages ^ ran)
    for name in ["pull_model@deberta_rm", "pull_model@distilbert", "rl_instruct@rloo-deberta_rm",
                 "judge_instruct_rm@deberta_rm-rloo_instruct_deberta_rm", "judge_instruct@nemotron-dpo",
                 "sft_distill@qwen_3b", "generate_countdown@distill_qwen_math_1_5b", "report"]:
        assert name in stages
    assert "up to date" in paper["status"], paper["status"]


def test_hub_layouts_were_pulled_as_the_stages_need(paper):
    models = paper["repo"] / "models"
    rm = models / "deberta_rm"
    assert (rm / "model.safetensors").is_file() and not list(rm.glob("*.bin"))  # converted, the pickle not kept
    assert (models / "distilbert" / "model.safetensors").is_file()
    record = json.loads((rm / "source.json").read_text())
    assert record["id"] == str(paper["standins"]["deberta_rm"])


def test_report_has_every_paper_method(paper):
    repo = paper["repo"]
    report = (repo / "metrics" / "report" / "report.md").read_text()
    for model in ["sft_countdown", "sft_synthetic", "rloo_countdown", "grpo_countdown", "distill_qwen_math_1_5b",
                  "distill_qwen_3b", "sft_instruct_lora", "sft_instruct_lp", "dpo_lora", "rloo_instruct_deberta_rm",
                  "rloo_instruct_reward_pointwise", "grpo_instruct_reward_bt"]:
        assert f"| {model} |" in report, model
    for judge in ("nemotron", "deberta_rm"):
        m = json.loads((repo / "metrics" / "instruct" / judge / "rloo_instruct_deberta_rm.json").read_text())
        assert m["n"] == 10 and 0.0 <= m["win_rate"] <= 1.0
    # The Nemotron judge's rewards are the fake server's, for exactly the pairs it was sent
    judged = [json.loads(line) for line in (repo / "data" / "judged" / "nemotron" / "dpo.jsonl").read_text().splitlines()]
    assert len(judged) == 10 and all(isinstance(r["reward"], float) for r in judged)
    assert paper["server"].authorization == {"Bearer nvapi-test-key"}
    for path in (repo / "cache").rglob("*"):
        assert b"nvapi-test-key" not in path.read_bytes()


def test_the_paper_settings_reached_the_stages(paper):
    import yaml

    repo = paper["repo"]
    stages = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    # 003: the student starts from the Countdown SFT checkpoint; 001's headline arm reads the DeBERTa reward model
    assert any(d["path"] == "models/sft_countdown" for d in stages["sft_distill@qwen_3b"]["deps"])
    assert any(d["path"] == "models/deberta_rm" for d in stages["rl_instruct@rloo-deberta_rm"]["deps"])
    # the reference samples with exactly the params' settings (001: repetition penalty 1.1), not its own defaults
    row = json.loads((repo / "data" / "generations" / "instruct" / "reference.jsonl").read_text().splitlines()[0])
    assert (row["temperature"], row["top_p"], row["repetition_penalty"]) == (0.2, 0.9, 1.1)
    teacher = json.loads((repo / "data" / "distill" / "qwen_3b-generations.jsonl").read_text().splitlines()[0])
    assert teacher["chat_template"] is True


def test_pulled_models_render_single_turn_and_sample_with_only_the_params_settings(paper, tmp_path, monkeypatch):
    """On the folders the DAG pulled and trained: no default system turn, no inherited sampling defaults."""

    from stages import generate
    from pipeline import params
    from posttrain.prompts import chat_prompt, load_chat_tokenizer

    repo = paper["repo"]
    monkeypatch.chdir(repo)
    for name in ("qwen_instruct", "qwen_3b", "sft_instruct", "dpo"):
        tokenizer = load_chat_tokenizer(repo / "models" / name)
        prompt = chat_prompt(tokenizer, "", "Name a colour.")  # 003's single-turn prompt
        assert prompt == "<|im_start|>user\nName a colour.<|im_end|>\n<|im_start|>assistant\n", (name, prompt)
    # The reference's generation_config.json carries top_k 20 and repetition penalty 1.1 of its own: a copy
    # without that file samples the same answers with the same seed
    p = params.load()
    bare = tmp_path / "qwen_instruct"
    shutil.copytree(repo / "models" / "qwen_instruct", bare)
    (bare / "generation_config.json").unlink()
    rows = [{"prompt": f"Question {i}?"} for i in range(4)]
    texts = [[r["text"] for r in generate.generate(folder, "instruct", rows, p, "instruct")]
             for folder in (repo / "models" / "qwen_instruct", bare)]
    assert texts[0] == texts[1]
