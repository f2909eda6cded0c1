"""The experiment workflow keeps what the user chose: the profile, hand edits of params.yaml, `-S` values.

Each `dvc exp run` form the README shows (plus `--temp` and `--queue`) runs in a fresh git repo holding
the project's files with a one-stage `dvc.yaml` whose stage reads params.yaml through `pipeline.params`
and writes what it saw; the repo's own `.dvc/config` is what is under test (with DVC's Hydra integration
on, every form below ran the default profile). Also: `compose_params` checks before it writes, and the
committed `dvc.lock` names only stages of `dvc.yaml`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, copy_repo

SEEN = """\
import json
from pipeline import params
p = params.load()
json.dump({"n_eval": p.countdown.n_eval, "beta": p.dpo.beta, "train_seeds": p.train_seeds,
           "num_processes": p.launch.num_processes, "config_file": p.launch.config_file,
           "sft_lr": p.sft_countdown.trainer["learning_rate"]}, open("seen.json", "w"))
"""
DVC_YAML = """\
stages:
  seen:
    cmd: python seen.py
    deps: [seen.py]
    params:
    - params.yaml:
    metrics:
    - seen.json: {cache: false}
"""


def run(cmd: list[str], cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if check:
        assert result.returncode == 0, f"{' '.join(cmd)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def seen(p: dict) -> dict:
    """What the stage writes for params `p`."""
    return {"n_eval": p["countdown"]["n_eval"], "beta": p["dpo"]["beta"], "train_seeds": p["train_seeds"],
            "num_processes": p["launch"]["num_processes"], "config_file": p["launch"]["config_file"],
            "sft_lr": p["sft_countdown"]["trainer"]["learning_rate"]}


def test_dvc_hydra_integration_is_off():
    """With it on, DVC recomposes params.yaml from conf/ (default profile) on every `dvc exp run`."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        assert not repo.config.get("hydra", {}).get("enabled", False)


# --- compose_params checks the composition before writing it -------------------------------------------

@pytest.fixture
def conf_copy(tmp_path) -> Path:
    import shutil

    shutil.copytree(ROOT / "conf", tmp_path / "conf")
    shutil.copy2(ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def compose_cli(cwd: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "pipeline.compose_params", *overrides], cwd=cwd, env=env,
                          capture_output=True, text=True)


@pytest.mark.parametrize("override, message", [
    ("dpo.beta=abc", "`dpo.beta` must be float, got 'abc'"),
    ("countdown.n_eval=many", "`countdown.n_eval` must be int"),
    ("dpo.betaa=1", "Could not override 'dpo.betaa'"),
    ("profile=papr", "Could not find 'profile/papr'"),
])
def test_compose_refuses_a_bad_value_and_leaves_params_yaml_alone(conf_copy, override, message):
    before = (conf_copy / "params.yaml").read_bytes()
    result = compose_cli(conf_copy, "profile=smoke", override)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr and "left unchanged" in result.stderr
    assert (conf_copy / "params.yaml").read_bytes() == before
    assert sorted(p.name for p in conf_copy.iterdir()) == ["conf", "params.yaml"]  # no temporary file left


def test_compose_writes_the_chosen_profile(conf_copy):
    result = compose_cli(conf_copy, "profile=smoke", "dpo.beta=0.05")
    assert result.returncode == 0, result.stderr
    p = yaml.safe_load((conf_copy / "params.yaml").read_text())
    assert p["dpo"]["beta"] == 0.05 and p["countdown"]["n_eval"] != 1000  # smoke's, not the default's


# --- every `dvc exp run` form keeps the profile and the edits --------------------------------------------

@pytest.fixture
def repo(tmp_path) -> tuple[Path, dict]:
    """A committed repo (default profile) whose workspace then has the smoke profile and a hand edit.

    Returns the repo and the params the user chose (what every experiment must start from)."""
    dest = copy_repo(tmp_path / "repo")
    (dest / "dvc.lock").unlink(missing_ok=True)
    (dest / "dvc.yaml").write_text(DVC_YAML)
    (dest / "seen.py").write_text(SEEN)
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "default profile"], dest)
    run([sys.executable, "-m", "pipeline.compose_params", "profile=smoke"], dest)
    text = (dest / "params.yaml").read_text()
    chosen = yaml.safe_load(text)
    assert chosen["countdown"]["n_eval"] != 7
    chosen["countdown"]["n_eval"] = 7  # a hand edit, as a user makes one
    (dest / "params.yaml").write_text(yaml.safe_dump(chosen, sort_keys=False))
    return dest, chosen


def with_changes(p: dict, changes: dict[str, object]) -> dict:
    p = json.loads(json.dumps(p))
    for dotted, value in changes.items():
        *path, last = dotted.split(".")
        node = p
        for key in path:
            node = node[key]
        node[last] = value
    return p


README_FORMS = [  # the README's `dvc exp run` lines, each with what it changes
    (["-S", "dpo.beta=0.05", "-n", "dpo-beta-0.05"], {"dpo.beta": 0.05}),
    ([], {}),
    (["-S", "train_seeds=[1,2]"], {"train_seeds": [1, 2]}),
    (["-S", "launch.num_processes=4"], {"launch.num_processes": 4}),
    (["-S", "launch.num_processes=8", "-S", "launch.config_file=conf/accelerate/fsdp.yaml"],
     {"launch.num_processes": 8, "launch.config_file": "conf/accelerate/fsdp.yaml"}),
    (["-S", "sft_countdown.trainer.learning_rate=5e-4"], {"sft_countdown.trainer.learning_rate": 5e-4}),
    (["-S", "+sft_countdown.trainer.gradient_accumulation_steps=4"],
     {"sft_countdown.trainer.gradient_accumulation_steps": 4}),
]


@pytest.mark.slow
@pytest.mark.parametrize("args, changes", README_FORMS, ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_exp_run_in_the_workspace_keeps_the_profile_and_edits(repo, args, changes):
    dest, chosen = repo
    run(["dvc", "exp", "run", *args], dest)
    expected = with_changes(chosen, changes)
    assert yaml.safe_load((dest / "params.yaml").read_text()) == expected
    assert json.loads((dest / "seen.json").read_text()) == seen(expected)


def exp_file(dest: Path, name: str, path: str) -> str:
    """`path` as the experiment `name` committed it."""
    refs = run(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], dest).stdout.split()
    (ref,) = [r for r in refs if r.rsplit("/", 1)[-1] == name]
    return run(["git", "show", f"{ref}:{path}"], dest).stdout


@pytest.mark.slow
def test_temp_and_queued_experiments_keep_the_profile_and_edits(repo):
    dest, chosen = repo
    workspace = (dest / "params.yaml").read_text()
    run(["dvc", "exp", "run", "--temp", "-S", "dpo.beta=0.07", "-n", "temp-beta"], dest)
    run(["dvc", "exp", "run", "--queue", "-n", "queued-plain"], dest)
    run(["dvc", "exp", "run", "--queue", "-S", "dpo.beta=0.08", "-n", "queued-beta"], dest)
    run(["dvc", "exp", "run", "--run-all"], dest)
    for name, changes in [("temp-beta", {"dpo.beta": 0.07}), ("queued-plain", {}), ("queued-beta", {"dpo.beta": 0.08})]:
        expected = with_changes(chosen, changes)
        assert yaml.safe_load(exp_file(dest, name, "params.yaml")) == expected, name
        assert json.loads(exp_file(dest, name, "seen.json")) == seen(expected), name
    assert (dest / "params.yaml").read_text() == workspace  # a temp or queued run leaves the workspace alone


@pytest.mark.slow
def test_switching_the_profile_with_set_param_is_refused(repo):
    """`-S profile=paper` would change no value: DVC refuses it; the README switches with compose_params."""
    dest, _ = repo
    before = (dest / "params.yaml").read_bytes()
    result = run(["dvc", "exp", "run", "-S", "profile=paper"], dest, check=False)
    assert result.returncode != 0 and "Could not override 'profile'" in result.stderr
    assert (dest / "params.yaml").read_bytes() == before and not (dest / "seen.json").exists()


# --- the committed lock ----------------------------------------------------------------------------------

def test_committed_lock_names_only_stages_of_dvc_yaml():
    from dvc.repo import Repo

    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())
    with Repo(str(ROOT)) as repo:
        names = {stage.addressing for stage in repo.index.stages}
    stale = sorted(set(lock.get("stages", {})) - names)
    assert not stale, f"dvc.lock holds stages dvc.yaml no longer has: {stale}"
