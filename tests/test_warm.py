"""pipeline.warm: a stage forked from a warm server behaves as `python -m <stage>` would.

Each test runs a small module of its own (in tmp_path, so it is "this project's code" to the server) through
`python -m pipeline.warm`, with a private TMPDIR (so a private server) and a short idle time.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = """\
import os, signal, sys, time
print("pid", os.getpid(), "parent", os.getppid(), flush=True)
print("argv", sys.argv[1:], "cwd", os.getcwd(), "env", os.environ.get("PROBE_VALUE"), flush=True)
print("version", VERSION, "torch imported", "torch" in sys.modules, flush=True)
print("to stderr", file=sys.stderr, flush=True)
if sys.argv[1:2] == ["wait"]:
    signal.signal(signal.SIGTERM, lambda *_: (print("got SIGTERM", flush=True), sys.exit(7)))
    open("waiting", "w").close()
    time.sleep(60)
if sys.argv[1:2] == ["fail"]:
    raise RuntimeError("a bug in the stage")
if sys.argv[1:2] == ["exit"]:
    sys.exit(int(sys.argv[2]))
"""


@pytest.fixture
def project(tmp_path):
    """A folder with the probe module, and the environment of a private warm server for it."""
    (tmp_path / "probe_stage.py").write_text("VERSION = 1\n" + PROBE)
    tmp = Path(tempfile.mkdtemp(prefix="warm"))  # short: a socket's path holds 107 bytes, pytest's are long
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp), "POSTTRAIN_WARM_IDLE": "20",
           "POSTTRAIN_WARM": "1", "PROBE_VALUE": "first"}
    yield tmp_path, env
    for log in tmp.glob("posttrain-warm-*/*.log"):  # stop its server: nothing may outlive a test
        for line in log.read_text().splitlines():
            if line.startswith("serving "):
                try:
                    os.kill(int(line.rsplit("(", 1)[1].rstrip(")")), signal.SIGTERM)
                except ProcessLookupError:
                    pass
    shutil.rmtree(tmp, ignore_errors=True)


def run(project, *args, env=None, **kwargs):
    folder, base_env = project
    return subprocess.run([sys.executable, "-m", "pipeline.warm", "probe_stage", *args], cwd=folder,
                          env=env or base_env, capture_output=True, text=True, timeout=300, **kwargs)


def field(output: str, name: str) -> str:
    return next(line for line in output.splitlines() if line.startswith(name + " ")).split(" ", 1)[1]


def test_a_stage_runs_in_a_fork_of_one_server_with_the_callers_argv_cwd_env_and_streams(project):
    first = run(project, "a", "b c")
    second = run(project, env={**project[1], "PROBE_VALUE": "first"})
    for done in (first, second):
        assert done.returncode == 0, done.stderr
        assert "to stderr" in done.stderr
        assert "torch imported True" in done.stdout  # the server's imports, inherited
    assert "argv ['a', 'b c'] cwd " + str(project[0]) + " env first" in first.stdout
    assert field(first.stdout, "pid").split()[2] == field(second.stdout, "pid").split()[2]  # the same server
    assert field(first.stdout, "pid").split()[0] != str(os.getpid())


def test_the_stage_code_is_read_fresh_each_run(project):
    folder, _ = project
    assert "version 1" in run(project).stdout
    (folder / "probe_stage.py").write_text("VERSION = 2\n" + PROBE)
    assert "version 2" in run(project).stdout  # the server dropped the module it had never imported itself


def test_exit_status_and_tracebacks_come_back_unchanged(project):
    assert run(project, "exit", "3").returncode == 3
    failed = run(project, "fail")
    assert failed.returncode == 1
    assert "RuntimeError: a bug in the stage" in failed.stderr


def test_a_signal_reaches_the_stage_and_a_killed_caller_takes_the_stage_with_it(project):
    folder, env = project
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.warm", "probe_stage", "wait"], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(folder / "waiting")
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 7 and "got SIGTERM" in out  # the stage's own handler ran, its status came back

    (folder / "waiting").unlink()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.warm", "probe_stage", "wait"], cwd=folder, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _wait_for(folder / "waiting")
    proc.kill()
    proc.wait(timeout=60)
    stage = int(field(proc.stdout.read(), "pid").split()[0])
    deadline = time.monotonic() + 10
    while _running(stage) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _running(stage), "the stage outlived the process that ran it"


def test_off_or_another_environment_runs_apart(project):
    folder, env = project
    here = run(project, env={**env, "POSTTRAIN_WARM": "0"})
    assert here.returncode == 0 and "torch imported False" in here.stdout  # run in the caller's own process
    first = run(project)
    other = run(project, env={**env, "PROBE_VALUE": "second"})
    assert "env second" in other.stdout
    assert field(first.stdout, "pid").split()[2] != field(other.stdout, "pid").split()[2]  # a server of its own


def _wait_for(path: Path) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False
