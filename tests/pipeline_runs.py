"""The two end-to-end runs, side by side: `dvc repro` on the smoke profile (tests/test_pipeline.py) and on
the paper profile at stand-in size (tests/test_paper_pipeline.py).

Each is a fresh git repo holding a copy of the project. Their stages are short and mostly single-threaded
(imports, model loads, a few optimizer steps), so the two `dvc repro` runs go at once, one thread each
(OMP_NUM_THREADS=1), while the test session waits: on two cores that takes about the time of the longer
one, not of both. Nothing else runs meanwhile, so no timed test shares the cores with them.

The smoke run's processes report every module they import (PYTHONPROFILEIMPORTTIME, on stderr): `result`
gives each stage's imports apart from the rest of the output, which keeps DVC's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import copy_repo
from tests.fake_openai_server import FakeRewardServer
from tests.hub_standins import write_standins

# Only sizes and step counts: every other setting stays the paper profile's.
SIZES = [
    "countdown.train_rows=[0,300]", "countdown.eval_rows=[300,400]", "countdown.n_eval=12",
    "instruct.sft_train=40", "instruct.sft_test=10", "instruct.prefs_train=40", "instruct.prefs_test=10",
    "instruct.gen_train=24", "instruct.gen_test=10",
    "synthetic.n=12", "distill.prompts=12",
    "sft_countdown.trainer.num_train_epochs=1", "sft_synthetic.trainer.num_train_epochs=1",
    "sft_distill.trainer.num_train_epochs=1",
    # one optimizer step of 32 x 8, evaluated and saved at it: the early-stopping path runs
    "sft_instruct.trainer.eval_steps=1", "sft_instruct.trainer.save_steps=1",
    "sft_instruct_lora.trainer.num_train_epochs=1", "sft_instruct_lora.trainer.eval_steps=2",
    "sft_instruct_lora.trainer.save_steps=2",
    "sft_instruct_lp.trainer.num_train_epochs=1", "sft_instruct_lp.trainer.eval_steps=5",
    "sft_instruct_lp.trainer.save_steps=5", "sft_instruct_lp.length_penalty.every=2",
    "sft_instruct_lp.length_penalty.max_new_tokens=16",
    "dpo_lora.trainer.num_train_epochs=1",
    *[f"{section}.trainer.{field}" for section in ("rloo_countdown", "grpo_countdown")
      for field in ("max_steps=2", "eval_steps=2", "max_completion_length=16", "per_device_eval_batch_size=16")],
    "rloo_countdown.held_out=2", "grpo_countdown.held_out=2",
    *[f"{section}.trainer.{field}" for section in ("rloo_instruct", "grpo_instruct")
      for field in ("max_steps=2", "eval_steps=2", "max_completion_length=16")],
    "rloo_instruct.held_out=4", "grpo_instruct.held_out=4",
    "reward_pointwise.trainer.num_train_epochs=1", "reward_bt.trainer.num_train_epochs=1",
    "generate.greedy.max_new_tokens=16", "generate.teacher.max_new_tokens=16", "generate.instruct.max_new_tokens=16",
    "generate.sweep.n=2", "generate.sweep.max_new_tokens=16", "generate.sweep.temperatures=[0.7,1.0]",
    "generate.sweep.prompts=6", "score.best_of=[1,2]", "evaluation.text_rows=6",
    # Random teachers solve no puzzle: the student learns from every answer they give
    "distill.verified_only=false",
]


def sources(standins: dict[str, Path], base_url: str) -> list[str]:
    """The paper profile's hub ids replaced by the stand-ins' folders, and the API judge by the fake server."""
    return [
        f"base_model.source={standins['base']}",
        f"hub_models.qwen_instruct.id={standins['instruct']}",
        f"hub_models.qwen_math_1_5b.id={standins['math_1_5b']}",
        f"hub_models.qwen_3b.id={standins['qwen_3b']}",
        f"hub_models.deberta_rm.id={standins['deberta_rm']}",
        f"hub_models.distilbert.id={standins['distilbert']}",
        f"countdown.tasks_source={standins['countdown']}",
        f"countdown.warmstart_source={standins['warmstart']}",
        f"instruct.smoltalk_source={standins['smoltalk']}",
        f"instruct.ultrafeedback_source={standins['ultrafeedback']}",
        f"evaluation.judges.nemotron.base_url={base_url}",
    ]


def environment(api_key: str | None = None) -> dict[str, str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("NVIDIA_API_KEY", None)
    return {**env, "NVIDIA_API_KEY": api_key} if api_key else env


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run(cmd, cwd=cwd, env=env or environment(), capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def new_repo(dest: Path, compose: list[str]) -> Path:
    """The project copied into a new git repo at `dest`, params composed with `compose`, committed."""
    copy_repo(dest)
    run(["git", "init", "-q"], dest)
    run([sys.executable, "-m", "pipeline.compose_params", *compose], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", " ".join(compose)], dest)
    return dest


def split_imports(log: str) -> tuple[str, dict[str, set[str]]]:
    """(the log without `import time:` lines, {stage: the top-level modules imported while it ran})."""
    kept, imports, stage = [], {}, None
    for line in log.splitlines(keepends=True):
        if line.startswith("import time:"):
            module = line.rsplit("|", 1)[1].strip()
            if stage is not None and module != "imported package":
                imports[stage].add(module.split(".")[0])
            continue
        if line.startswith("Running stage '"):
            stage = line.split("'")[1]
            imports[stage] = set()
        kept.append(line)
    return "".join(kept), imports


class PipelineRuns:
    """Both repos set up, both `dvc repro` started at once; `result(name)` waits for both."""

    def __init__(self, tmp: Path) -> None:
        self.server = FakeRewardServer().__enter__()
        self.standins = write_standins(tmp / "hub")
        self.repos = {
            "smoke": new_repo(tmp / "smoke" / "repo", ["profile=smoke"]),
            "paper": new_repo(tmp / "paper" / "repo", ["profile=paper", *sources(self.standins, self.server.base_url),
                                                       *SIZES]),
        }
        self.logs = {name: (repo.parent / "repro.log").open("w+") for name, repo in self.repos.items()}
        envs = {"smoke": {**environment(), "PYTHONPROFILEIMPORTTIME": "1"},
                "paper": environment(api_key="nvapi-test-key")}  # for the fake server
        self.procs = {name: subprocess.Popen(["dvc", "repro"], cwd=repo, env=envs[name], stdout=self.logs[name],
                                             stderr=subprocess.STDOUT, text=True)
                      for name, repo in self.repos.items()}
        self.results: dict[str, dict] | None = None

    def result(self, name: str) -> dict:
        """{"repo", "repro" (its output), "imports" ({stage: top-level modules}), "server", "standins"}."""
        if self.results is None:
            self.results = {}
            for key, proc in self.procs.items():
                proc.wait()
                self.logs[key].seek(0)
                output, imports = split_imports(self.logs[key].read())
                self.results[key] = {"returncode": proc.returncode, "repro": output, "imports": imports}
            self.server.__exit__(None, None, None)  # it keeps what it saw (`authorization`) for the tests
        out = self.results[name]
        assert out["returncode"] == 0, f"dvc repro ({name}) failed:\n{out['repro'][-6000:]}"
        repo = self.repos[name]
        return {"repo": repo, "repro": out["repro"], "imports": out["imports"], "server": self.server,
                "standins": self.standins}

    def close(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in self.logs.values():
            log.close()
        if self.results is None:
            self.server.__exit__(None, None, None)
