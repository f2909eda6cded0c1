"""params.yaml: the committed file is the default profile's composition, and bad parameters fail loudly."""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import params
from pipeline.compose_params import compose
from posttrain.errors import UserError
from tests.conftest import ROOT


@pytest.fixture
def in_root(monkeypatch):
    monkeypatch.chdir(ROOT)


def test_committed_params_are_the_default_composition(in_root, tmp_path):
    compose(tmp_path / "params.yaml", [])
    assert yaml.safe_load((tmp_path / "params.yaml").read_text()) == yaml.safe_load(Path("params.yaml").read_text())


@pytest.mark.parametrize("profile", ["embedded", "paper"])
def test_each_profile_composes_to_valid_params(in_root, tmp_path, profile):
    compose(tmp_path / "params.yaml", [f"profile={profile}"])
    p = params.load(tmp_path / "params.yaml")
    assert p.generate.sweep.n >= max(p.score.best_of)


def test_paper_profile_uses_the_sources(in_root, tmp_path):
    compose(tmp_path / "params.yaml", ["profile=paper"])
    p = params.load(tmp_path / "params.yaml")
    assert p.base_model.source == "Qwen/Qwen2.5-0.5B"
    assert p.countdown.tasks_source == "Jiayi-Pan/Countdown-Tasks-3to4"
    assert p.countdown.train_rows == [0, 327680] and p.countdown.eval_rows == [327680, 328704]
    assert p.countdown.prompt_template.endswith("Assistant: Let me solve this step by step.")
    assert p.sft_countdown.trainer["learning_rate"] == 5e-6
    assert p.generate.instruct.repetition_penalty == 1.1  # 001's evaluation sampling
    assert p.generate.teacher.chat_template and not p.generate.greedy.chat_template  # Instruct teachers: their chat
    assert p.distill.student == "models/sft_countdown"  # 003: the student starts from the Countdown SFT model
    assert {run.reward for run in p.rl_instruct_runs.values() if run.method == "rloo"} >= {"deberta_rm"}  # 001's arm
    assert "rloo_instruct_deberta_rm" in p.evaluation.instruct_models


def test_paper_instruction_sft_decays_linearly_to_7e7(in_root, tmp_path):
    """003: 7e-6 decaying to 7e-7, a straight line; the schedule the stage's own config builds."""
    import torch
    from transformers import get_scheduler
    from trl import SFTConfig

    from posttrain.training.config import trainer_args

    compose(tmp_path / "params.yaml", ["profile=paper"])
    fields = params.load(tmp_path / "params.yaml").sft_instruct.trainer
    args = trainer_args(SFTConfig, fields, "sft_instruct.trainer", tmp_path / "out")
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=args.learning_rate)
    schedule = get_scheduler(args.lr_scheduler_type, optimizer, num_warmup_steps=args.get_warmup_steps(100),
                             num_training_steps=100, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
    lrs = []
    for _ in range(101):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(7e-6) and lrs[100] == pytest.approx(7e-7)
    assert lrs[25] == pytest.approx(7e-6 - 0.25 * (7e-6 - 7e-7))  # linear (cosine would be 6.08e-6 here)


@pytest.mark.parametrize("override", ["sft_countdown.trainer.lr=1", "countdown.n_evl=3", "profile=papr"])
def test_unknown_override_fails(in_root, tmp_path, override):
    with pytest.raises(UserError):
        compose(tmp_path / "params.yaml", [override])


def _default() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["countdown"].update(n_evl=3), "unknown parameter `countdown.n_evl`"),
    (lambda d: d.update(sftt={}), "unknown parameter `sftt`"),
    (lambda d: d["countdown"].pop("n_eval"), "missing parameter `countdown.n_eval`"),
    (lambda d: d["countdown"].update(n_eval="many"), "`countdown.n_eval` must be int"),
    (lambda d: d["generate"]["sweep"].update(top_p=[1]), "`generate.sweep.top_p` must be float"),
    (lambda d: d["countdown"]["generator"].update(num_count=[3, "x"]), "`countdown.generator.num_count[1]`"),
    (lambda d: d["dpo"].update(loss_type=["sigmoid", 3]), "`dpo.loss_type[1]` must be str"),
])
def test_bad_params_name_the_parameter(edit, message):
    data = copy.deepcopy(_default())
    edit(data)
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        params.parse(data)


def test_a_union_takes_the_first_type_that_fits():
    data = copy.deepcopy(_default())
    data["dpo"]["loss_type"] = ["sigmoid", "sft"]
    assert params.parse(data).dpo.loss_type == ["sigmoid", "sft"]
    data["dpo"]["loss_type"] = "ipo"
    assert params.parse(data).dpo.loss_type == "ipo"


def test_unknown_trainer_field_names_the_parameter(tmp_path):
    from trl import SFTConfig

    from posttrain.training.config import trainer_args

    with pytest.raises(UserError, match="sft_countdown.trainer.learning_rat"):
        trainer_args(SFTConfig, {"learning_rat": 1.0}, "sft_countdown.trainer", tmp_path)


def test_stage_reports_user_error_without_traceback(tmp_path):
    """A user's mistake ends with one line naming it and exit status 2, not a traceback."""
    bad = _default()
    bad["countdown"]["n_evl"] = 3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    result = subprocess.run([sys.executable, "-m", "stages.prepare_countdown", "--out", "d", "--summary", "s.json"],
                            cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 2
    assert "countdown.n_evl" in result.stderr and "Traceback" not in result.stderr
