"""Training stages survive a kill: a rerun resumes from the newest complete checkpoint and ends where an
uninterrupted run ends; checkpoints of other params or half-written ones are never loaded; SIGTERM saves.

Each stage runs as a subprocess (`python -m stages.<name>` with its own params.yaml), slowed a little
per step (tests/run_slowly.py) so that the test can kill it once its first checkpoint is marked complete.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from posttrain.data_io import write_jsonl
from posttrain.training import checkpoints

ROOT = Path(__file__).resolve().parent.parent
# Adam, cross-entropy and the samplers are deterministic on one CPU thread: a resumed run must be bit-identical.
TOLERANCE = 0.0


def conversation(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Say {i}."},
                         {"role": "assistant", "content": " ".join(str(i) for _ in range(1 + i % 5))}]}


def pref_row(i: int) -> dict:
    prompt = f"Say hi {i} times."
    return {"prompt": prompt, "prompt_id": f"{i:064x}", "score_chosen": 9.0, "score_rejected": 2.0,
            "chosen": [{"role": "user", "content": prompt}, {"role": "assistant", "content": "HI"}],
            "rejected": [{"role": "user", "content": prompt}, {"role": "assistant", "content": "hi there friend"}],
            "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": "HI"}]}


def reward_model(tiny_model: Path, folder: Path) -> Path:
    """A randomly initialised one-output head over the tiny model: scores that differ within every group."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(tiny_model, num_labels=1)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(folder)
    return folder


STEPS = 12
STAGES = {  # stage -> (section, its trainer fields, command-line arguments past --out/--live)
    "sft": ("sft_instruct", {"max_steps": STEPS, "per_device_train_batch_size": 4, "learning_rate": 1e-2,
                             "logging_steps": 1, "max_length": 64, "seed": 0}, ["--train", "train.jsonl"]),
    "dpo": ("dpo", {"max_steps": STEPS, "per_device_train_batch_size": 2, "learning_rate": 1e-2, "logging_steps": 1,
                    "max_length": 64, "gradient_checkpointing": False, "seed": 0}, ["--train", "prefs.jsonl"]),
    "rl": ("rloo_instruct", {"num_generations": 2, "beta": 0.1, "learning_rate": 1e-2, "temperature": 1.0,
                             "max_completion_length": 8, "per_device_train_batch_size": 4, "max_steps": STEPS,
                             "logging_steps": 1, "gradient_checkpointing": False, "use_vllm": False, "seed": 0,
                             # held-out prompts evaluated every 4 steps and at the start: the schedule must survive
                             "eval_strategy": "steps", "eval_steps": 4, "eval_on_start": True,
                             "per_device_eval_batch_size": 4},
           ["--method", "rloo", "--task", "instruct", "--prompts", "prompts.jsonl", "--reward-model", "rm"]),
}


@pytest.fixture
def workspace(tmp_path: Path, tiny_model: Path) -> Path:
    """A folder with a params.yaml whose training sections are tiny, checkpointing every 3 steps, and data."""
    p = yaml.safe_load((ROOT / "params.yaml").read_text())
    p["checkpoints"] = {"steps": 3, "save_total_limit": 2}
    for name, (section, trainer, _) in STAGES.items():
        p[section]["trainer"] = trainer
        if name == "sft":
            p[section].update(lora=None, early_stopping_patience=None, length_penalty=None)
        if name == "dpo":
            p[section].update(lora=None, beta=0.1, loss_type="sigmoid")
        if name == "rl":
            p[section].update(held_out=4, gold_judge=None)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(p))
    write_jsonl(tmp_path / "train.jsonl", [conversation(i) for i in range(40)])
    write_jsonl(tmp_path / "prefs.jsonl", [pref_row(i) for i in range(24)])
    write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": f"Say {i}."} for i in range(20)])
    reward_model(tiny_model, tmp_path / "rm")
    return tmp_path


def command(stage: str, workspace: Path, model: Path, out: str) -> list[str]:
    section, _, extra = STAGES[stage]
    return [sys.executable, str(ROOT / "tests" / "run_slowly.py"), f"stages.{stage}", "--section", section,
            "--model", str(model), *extra, "--out", out, "--live", f"live_{out}"]


def marked(workdir: Path) -> list[Path]:
    """The checkpoints marked complete so far. transformers' `Trainer` creates the folder when it is built and
    the stage deletes and remakes it when it holds no fingerprint, so it may vanish while being listed."""
    try:
        return list(workdir.glob(f"checkpoint-*/{checkpoints.MARKER}"))
    except FileNotFoundError:
        return []


def run(cmd: list[str], cwd: Path, stop: signal.Signals | None = None, sleep: float = 0.0) -> tuple[int, str]:
    """Run `cmd`; with `stop`, send that signal once a checkpoint is marked complete. (status, output)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STEP_SLEEP": str(sleep), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if stop is not None:
        workdir = cwd / (cmd[cmd.index("--out") + 1] + ".checkpoints")
        deadline = time.monotonic() + 300
        while not marked(workdir):
            assert proc.poll() is None, f"the run ended before its first checkpoint:\n{proc.communicate()[0]}"
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.02)
        proc.send_signal(stop)
    output = proc.communicate(timeout=600)[0]
    return proc.returncode, output


def weights(out: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(out / "model.safetensors")


# Wall-clock measures differ between any two runs. Two counters live outside the trainer state, so a resumed
# run restarts them (library limitations; every per-step curve is restored): TRL's SFT `num_tokens`, and
# transformers' end-of-run `train/loss`, the mean training loss, which sums only the resumed steps.
NOT_REPRODUCIBLE = ("runtime", "samples_per_second", "steps_per_second", "step_time", "num_tokens", "train/loss")


def curves(live: Path) -> dict[str, list[list[str]]]:
    """DVCLive's logged rows by metric, without the wall-clock column or metrics."""
    result = {}
    for tsv in sorted((live / "plots" / "metrics").rglob("*.tsv")):
        if str(tsv.with_suffix("")).endswith(NOT_REPRODUCIBLE):
            continue
        rows = [line.split("\t") for line in tsv.read_text().splitlines()]
        keep = [i for i, name in enumerate(rows[0]) if name != "timestamp"]
        result[str(tsv.relative_to(live))] = [[row[i] for i in keep] for row in rows]
    return result


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["sft", "dpo", "rl"])
def test_a_killed_stage_resumes_and_ends_as_an_uninterrupted_run(stage, workspace, tiny_model):
    status, output = run(command(stage, workspace, tiny_model, "whole"), workspace)
    assert status == 0, output

    status, output = run(command(stage, workspace, tiny_model, "killed"), workspace, signal.SIGKILL, sleep=0.3)
    assert status == -signal.SIGKILL
    assert not (workspace / "killed").exists()
    status, output = run(command(stage, workspace, tiny_model, "killed"), workspace)
    assert status == 0, output
    resumed = [line for line in output.splitlines() if "resuming from" in line]
    assert len(resumed) == 1 and f"killed.checkpoints{os.sep}checkpoint-" in resumed[0], output
    step = int(resumed[0].rpartition("(step ")[2].rstrip(")"))
    assert 0 < step < STEPS and step % 3 == 0

    whole, killed = weights(workspace / "whole"), weights(workspace / "killed")
    assert whole.keys() == killed.keys()
    assert any(not torch.equal(whole[k], weights(tiny_model)[k]) for k in whole if k in weights(tiny_model))
    worst = max((whole[k] - killed[k]).abs().max().item() for k in whole)
    assert worst <= TOLERANCE, f"resumed weights differ from the uninterrupted run's by up to {worst}"
    # The curves continue where the checkpoint left them: the same rows, steps and values as the whole run
    assert curves(workspace / "live_killed") == curves(workspace / "live_whole")
    assert json.loads((workspace / "live_killed" / "metrics.json").read_text())["step"] == \
        json.loads((workspace / "live_whole" / "metrics.json").read_text())["step"]
    assert not (workspace / "killed.checkpoints").exists() and not (workspace / "whole.checkpoints").exists()


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_and_exits_without_outputs(workspace, tiny_model):
    status, output = run(command("sft", workspace, tiny_model, "out"), workspace, signal.SIGTERM, sleep=0.3)
    assert status == 128 + signal.SIGTERM, output
    assert "stopped by SIGTERM" in output and "Traceback" not in output
    assert not (workspace / "out").exists() and not (workspace / "live_out").exists()
    marks = (workspace / "out.checkpoints").glob(f"*/{checkpoints.MARKER}")
    marked = sorted(checkpoints._step(p.parent) for p in marks)
    assert marked, output
    status, output = run(command("sft", workspace, tiny_model, "out"), workspace)
    assert status == 0 and f"(step {marked[-1]})" in output, output


# --- which checkpoint a rerun takes (no training) ------------------------------------------------------

def checkpoint(workdir: Path, step: int, complete: bool = True) -> Path:
    folder = workdir / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if complete:
        (folder / checkpoints.MARKER).write_text(f"{step}\n")
    return folder


def test_the_newest_complete_checkpoint_is_resumed_and_a_half_written_one_skipped(tmp_path):
    workdir = tmp_path / "out.checkpoints"
    (tmp_path / "out.checkpoints").mkdir()
    (workdir / checkpoints.FINGERPRINT).write_text("abc\n")
    checkpoint(workdir, 3), checkpoint(workdir, 6), checkpoint(workdir, 9, complete=False)
    resume, delete, note = checkpoints._choose(workdir, "sft", "abc")
    assert resume == workdir / "checkpoint-6" and delete == [workdir / "checkpoint-9"]
    assert note == f"sft: skipping checkpoint-9 in {workdir}: not completely written"


def test_a_checkpoint_of_other_params_or_inputs_is_discarded_with_a_line(tmp_path):
    workdir = tmp_path / "out.checkpoints"
    workdir.mkdir()
    (workdir / checkpoints.FINGERPRINT).write_text("abc\n")
    checkpoint(workdir, 3)
    resume, delete, note = checkpoints._choose(workdir, "sft", "xyz")
    assert resume is None and delete == [workdir]
    assert note == f"sft: discarding 1 checkpoint(s) in {workdir}: written by other params, arguments or inputs"
    assert checkpoints._choose(tmp_path / "none", "sft", "xyz") == (None, [], None)


def test_the_fingerprint_follows_settings_and_input_content_not_times(tmp_path):
    data = tmp_path / "model"
    data.mkdir()
    (data / "weights").write_bytes(b"1234")
    first = checkpoints.fingerprint({"lr": 1e-2}, [data])
    os.utime(data / "weights", (0, 0))
    assert checkpoints.fingerprint({"lr": 1e-2}, [data]) == first
    assert checkpoints.fingerprint({"lr": 2e-2}, [data]) != first
    (data / "weights").write_bytes(b"1235")
    assert checkpoints.fingerprint({"lr": 1e-2}, [data]) != first


def test_sft_discards_a_checkpoint_of_other_params_and_removes_checkpoints_after_success(tiny_model, tmp_path,
                                                                                          capsys, monkeypatch):
    """In process: SIGTERM at step 4 leaves checkpoint-4 and exit status 143; other params discard it; a
    checkpoint without its marker is skipped; after success no checkpoint is left."""
    from transformers.trainer_callback import CallbackHandler

    from pipeline import params
    from stages import sft

    write_jsonl(tmp_path / "train.jsonl", [conversation(i) for i in range(40)])
    fields = dict(STAGES["sft"][1], max_steps=6)
    saving = params.Checkpoints(steps=100, save_total_limit=2)

    def go(**changes):
        sft.train("sft_instruct", {**fields, **changes}, tiny_model, tmp_path / "train.jsonl", None,
                  tmp_path / "out", tmp_path / "live", saving=saving)

    on_step_end = CallbackHandler.on_step_end

    def terminate_at_4(self, args, state, control):
        if state.global_step == 4:
            os.kill(os.getpid(), signal.SIGTERM)
        return on_step_end(self, args, state, control)

    monkeypatch.setattr(CallbackHandler, "on_step_end", terminate_at_4)
    with pytest.raises(SystemExit) as stopped:
        go()
    assert stopped.value.code == 128 + signal.SIGTERM
    assert (tmp_path / "out.checkpoints" / "checkpoint-4" / checkpoints.MARKER).is_file()
    assert not (tmp_path / "out").exists() and not (tmp_path / "live").exists()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # the handler is put back
    monkeypatch.setattr(CallbackHandler, "on_step_end", on_step_end)

    with pytest.raises(SystemExit):  # other params: the checkpoint is discarded; stop again to keep the test short
        monkeypatch.setattr(CallbackHandler, "on_step_end", terminate_at_4)
        go(learning_rate=2e-2)
    assert "sft_instruct: discarding 1 checkpoint(s)" in capsys.readouterr().out
    monkeypatch.setattr(CallbackHandler, "on_step_end", on_step_end)
    (tmp_path / "out.checkpoints" / "checkpoint-4" / checkpoints.MARKER).unlink()  # as if killed while saving
    go(learning_rate=2e-2)
    printed = capsys.readouterr().out
    assert "skipping checkpoint-4" in printed and "resuming" not in printed
    assert (tmp_path / "out" / "model.safetensors").is_file() and not (tmp_path / "out.checkpoints").exists()
