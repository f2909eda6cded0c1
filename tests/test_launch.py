"""`pipeline.launch`: the accelerate command it builds, its checks, and the SFT stage run in 2 CPU processes."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import launch
from pipeline import params
from posttrain.data_io import write_jsonl
from posttrain.errors import UserError
from tests.conftest import ROOT

ROWS = 16  # 16 rows, 4 a process, 2 processes: 2 optimizer steps an epoch (4 in one process)
TRAINER = {"learning_rate": 1e-2, "num_train_epochs": 1, "per_device_train_batch_size": 4, "max_length": 64,
           "logging_steps": 1, "lr_scheduler_type": "constant", "seed": 0}


def settings(num_processes: int = 1, config_file: str | None = None) -> params.Launch:
    return params.Launch(num_processes=num_processes, config_file=config_file)


@pytest.mark.parametrize("num_processes, config_file, expected", [
    (1, None, ["--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]),
    (2, None, ["--num_processes", "2", "--multi_gpu", "--main_process_port", "0",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]),
    (4, "conf/accelerate/fsdp.yaml", ["--num_processes", "4", "--config_file", "conf/accelerate/fsdp.yaml"]),
])
def test_accelerate_argv(num_processes, config_file, expected):
    argv = launch.accelerate_argv(settings(num_processes, config_file), "stages.sft", ["--section", "s", "--out", "o"])
    assert argv == [*expected, "--module", "stages.sft", "--section", "s", "--out", "o"]


def test_accelerate_argv_parses_as_accelerate_runs_it():
    """On a CPU, 2 processes go to torchrun (`--multi_gpu`), not `--cpu`, which would start one process."""
    from accelerate.commands.launch import launch_command_parser

    args = launch_command_parser().parse_args(launch.accelerate_argv(settings(2), "stages.sft", ["--model", "m"]))
    assert (args.num_processes, args.multi_gpu, args.cpu, args.module) == (2, True, False, True)
    assert (args.training_script, args.training_script_args) == ("stages.sft", ["--model", "m"])


@pytest.mark.parametrize("launch_settings, module, message", [
    (settings(0), "stages.sft", "`launch.num_processes` must be at least 1"),
    (settings(2, "conf/accelerate/missing.yaml"), "stages.sft", "`launch.config_file`: conf/accelerate/missing.yaml"),
    (settings(2), "os", "os: not a stage module"),
    (settings(2), "stages.nonexistent", "stages.nonexistent: not a stage module"),
    (settings(2), "pipeline.launch", "pipeline.launch: not a stage module"),
])
def test_check_refuses(launch_settings, module, message, monkeypatch):
    monkeypatch.chdir(ROOT)
    with pytest.raises(UserError, match=re.escape(message)):
        launch.check(launch_settings, module)


def test_check_refuses_a_file_that_is_not_an_accelerate_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("distributed_type: MULTI_GPU\nnot_a_key: 1\n")
    with pytest.raises(UserError, match="`launch.config_file`: .*bad.yaml is not an accelerate config"):
        launch.check(settings(2, str(bad)), "stages.sft")


def test_check_refuses_deepspeed_where_it_is_not_installed(monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *rest: None if name == "deepspeed" else find_spec(name, *rest))
    with pytest.raises(UserError, match="deepspeed.yaml asks for DeepSpeed, which is not installed"):
        launch.check(settings(2, str(ROOT / "conf" / "accelerate" / "deepspeed.yaml")), "stages.sft")


@pytest.mark.parametrize("name, distributed_type", [
    ("ddp.yaml", "MULTI_GPU"), ("fsdp.yaml", "FSDP"), ("deepspeed.yaml", "DEEPSPEED")])
def test_example_configs_are_accelerate_configs(name, distributed_type):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(ROOT / "conf" / "accelerate" / name))
    assert config.distributed_type == distributed_type and config.num_machines == 1


def test_workers_share_the_cores_unless_told(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    cores = len(os.sched_getaffinity(0))
    assert launch.worker_env(settings(2), cuda=False) == {
        "OMP_NUM_THREADS": str(max(1, cores // 2)), "ACCELERATE_USE_CPU": "true"}
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert launch.worker_env(settings(2), cuda=True) == {}


def test_status_is_the_first_failed_worker():
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError, ProcessFailure

    def failure(rank: int, code: int, timestamp: int) -> ProcessFailure:
        f = ProcessFailure(local_rank=rank, pid=100 + rank, exitcode=code, error_file="")
        f.timestamp = timestamp
        return f

    assert launch.worker_status(subprocess.CalledProcessError(2, ["python"])) == 2
    # rank 1 exited with 2, and torchrun stopped rank 0 with SIGTERM in the same second
    assert launch.worker_status(ChildFailedError("stages.sft", {0: failure(0, -15, 7), 1: failure(1, 2, 7)})) == 2
    assert launch.worker_status(ChildFailedError("stages.sft", {0: failure(0, 3, 8), 1: failure(1, 2, 9)})) == 3
    assert launch.worker_status(ChildFailedError("stages.sft", {0: failure(0, -9, 5)})) == -9


# --- the launcher run as a stage is run: in a folder with its own params.yaml ---------------------------


def workdir(tmp_path: Path, num_processes: int, config_file: str | None = None) -> Path:
    """A folder with the repo's params.yaml, set to `num_processes` and a tiny `sft_countdown` run."""
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    data["launch"] = {"num_processes": num_processes, "config_file": config_file}
    data["sft_countdown"]["trainer"] = TRAINER
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    write_jsonl(tmp_path / "train.jsonl", [
        {"query": f"Numbers: [{i}, 2, 3]\nTarget: {i + 5}\n", "completion": f"<answer>{i} + 2 + 3</answer>"}
        for i in range(1, ROWS + 1)])
    return tmp_path


def run_launch(cwd: Path, *args: str | Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "pipeline.launch", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def sft_args(model: Path, section: str = "sft_countdown") -> list[str | Path]:
    return ["stages.sft", "--section", section, "--model", model, "--train", "train.jsonl",
            "--out", "models/sft", "--live", "live"]


def test_bad_config_file_stops_before_launching(tmp_path, tiny_model):
    result = run_launch(workdir(tmp_path, 2, "conf/accelerate/nope.yaml"), *sft_args(tiny_model))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: params: `launch.config_file`: conf/accelerate/nope.yaml not found"


def test_one_process_passes_a_user_error_through(tmp_path, tiny_model):
    result = run_launch(workdir(tmp_path, 1), *sft_args(tiny_model, section="nonexistent"))
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --section nonexistent: not an SFT section of params.yaml"


@pytest.mark.slow
def test_two_processes_pass_a_user_error_through(tmp_path, tiny_model):
    result = run_launch(workdir(tmp_path, 2), *sft_args(tiny_model, section="nonexistent"))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors and set(errors) == {"error: --section nonexistent: not an SFT section of params.yaml"}


@pytest.mark.slow
def test_sft_in_two_cpu_processes(tmp_path, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cwd = workdir(tmp_path, 2)
    result = run_launch(cwd, *sft_args(tiny_model))
    assert result.returncode == 0, result.stderr[-5000:]
    out = cwd / "models" / "sft"
    assert [p.name for p in (cwd / "models").iterdir()] == ["sft"]  # no `sft.tmp`, no checkpoints left
    trained = AutoModelForCausalLM.from_pretrained(out)
    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert any(not torch.equal(a, b) for a, b in zip(trained.state_dict().values(), base.state_dict().values()))
    assert AutoTokenizer.from_pretrained(out).eos_token == "<|im_end|>"
    # Data-parallel for real: each process took its half of every global batch of 8, so one epoch of 16
    # rows took 2 optimizer steps (one process would take 4: epoch 0.25 at the first), and only the main
    # process wrote the curves (one row a step).
    curve = (cwd / "live" / "plots" / "metrics" / "epoch.tsv").read_text().splitlines()
    assert curve[:3] == ["step\tepoch", "0\t0.5", "1\t1.0"]
    assert len((cwd / "live" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()) == 1 + 2
