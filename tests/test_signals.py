"""Interruption: SIGTERM and Ctrl-C stop a training stage on every process of an `accelerate launch`, and
under `dvc repro`, within seconds, leaving a checkpoint (SIGTERM) and no output that looks finished."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from posttrain.data_io import write_jsonl
from posttrain.training import checkpoints

ROOT = Path(__file__).resolve().parent.parent
TRAINER = {"max_steps": 100000, "per_device_train_batch_size": 2, "learning_rate": 1e-3, "logging_steps": 1,
           "max_length": 64, "seed": 0}
ARGS = ["stages.sft", "--section", "sft_instruct", "--train", "train.jsonl", "--out", "out", "--live", "live"]


def workspace(tmp_path: Path, tiny_model: Path, num_processes: int) -> Path:
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["launch"] = {"num_processes": num_processes, "config_file": None}
    p["checkpoints"] = {"steps": 3, "save_total_limit": 2}
    p["sft_instruct"].update(trainer=TRAINER, lora=None, early_stopping_patience=None, length_penalty=None)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    write_jsonl(tmp_path / "train.jsonl", [{"messages": [{"role": "user", "content": f"Say {i}."},
                                                         {"role": "assistant", "content": f"{i} {i}"}]}
                                           for i in range(64)])
    return tmp_path


def start(cmd: list[str], cwd: Path, **env_vars: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "",
           "OMP_NUM_THREADS": "1", **env_vars}
    # a session of its own: the test plays the terminal, whose Ctrl-C goes to the whole foreground group
    return subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def wait_for_checkpoint(proc: subprocess.Popen, workdir: Path, after: int = 0) -> None:
    deadline = time.monotonic() + 300
    while not [p for p in workdir.glob(f"checkpoint-*/{checkpoints.MARKER}") if checkpoints._step(p.parent) > after]:
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)


def stop(proc: subprocess.Popen, send) -> tuple[int, str, float]:
    """Send a signal (`send(proc)`); (status, output, seconds until every process of the group had exited)."""
    began = time.monotonic()
    send(proc)
    output = proc.communicate(timeout=120)[0]
    while True:  # the workers too: nothing left in the group
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() - began < 60, "processes of the stage still running"
        time.sleep(0.05)
    return proc.returncode, output, time.monotonic() - began


def newest(workdir: Path) -> int:
    return max(checkpoints._step(p.parent) for p in workdir.glob(f"checkpoint-*/{checkpoints.MARKER}"))


@pytest.mark.slow
def test_sigterm_then_ctrl_c_stop_every_process_of_a_two_process_launch(tmp_path, tiny_model):
    ws = workspace(tmp_path, tiny_model, num_processes=2)
    cmd = [sys.executable, "-m", "pipeline.launch", ARGS[0], "--model", str(tiny_model), *ARGS[1:]]
    proc = start(cmd, ws)
    wait_for_checkpoint(proc, ws / "out.checkpoints")
    status, output, took = stop(proc, lambda p: p.send_signal(signal.SIGTERM))  # the launcher only: it passes it on
    assert status == 128 + signal.SIGTERM and took < 30, output
    assert "stopped by SIGTERM" in output and "Traceback" not in output, output
    assert not (ws / "out").exists() and not (ws / "live").exists()
    saved = newest(ws / "out.checkpoints")

    proc = start(cmd, ws)  # resumes, then Ctrl-C: SIGINT to the whole foreground group
    wait_for_checkpoint(proc, ws / "out.checkpoints", after=saved)
    status, output, took = stop(proc, lambda p: os.killpg(p.pid, signal.SIGINT))
    assert f"resuming from out.checkpoints/checkpoint-{saved} (step {saved})" in output
    assert status == 128 + signal.SIGINT and took < 30, output
    assert not (ws / "out").exists() and not (ws / "live").exists()


@pytest.mark.slow
@pytest.mark.parametrize("shell", ["/bin/sh", "/bin/bash"])
def test_sigterm_to_dvc_repro_stops_the_stage_with_a_checkpoint(tmp_path, tiny_model, shell):
    """`dvc repro` dies on SIGTERM without passing it on; the stage stops when dvc is gone. dvc runs the
    command through $SHELL: bash replaces itself with the command, dash (/bin/sh here) stays between."""
    if not Path(shell).exists():
        pytest.skip(f"{shell} not installed")
    ws = workspace(tmp_path, tiny_model, num_processes=1)
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=ws, check=True)
    stage = {"cmd": f"{sys.executable} -m pipeline.launch {ARGS[0]} --model {tiny_model} {' '.join(ARGS[1:])}",
             "deps": ["train.jsonl"], "outs": ["out"]}
    (ws / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"sft": stage}}))
    proc = start([sys.executable, "-m", "dvc", "repro", "-q"], ws, SHELL=shell)
    wait_for_checkpoint(proc, ws / "out.checkpoints")
    stop(proc, lambda p: p.send_signal(signal.SIGTERM))
    deadline = time.monotonic() + 60
    stopped = False
    while time.monotonic() < deadline and not stopped:  # the stage, an orphan now, saves and exits
        stopped = subprocess.run(["pgrep", "-f", f"pipeline.launch {ARGS[0]} --model {tiny_model}"],
                                 check=False, capture_output=True).returncode == 1
        time.sleep(0.1)
    assert stopped, "the stage kept running after dvc repro was terminated"
    assert not (ws / "out").exists() and newest(ws / "out.checkpoints") >= 3
