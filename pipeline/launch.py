"""Run a training stage under `accelerate launch`, with the `launch` settings of params.yaml.

    python -m pipeline.launch stages.sft --section sft_countdown --model models/base \
        --train data/countdown/warmstart_train.jsonl --out models/sft_countdown ...

Everything after the module name is the module's own command line. `launch.num_processes` processes
train data-parallel: one per GPU, or on a machine with no GPU, processes that share the CPU cores and
talk over gloo. `launch.config_file` is an accelerate config (DDP, FSDP or DeepSpeed; examples in
`conf/accelerate/`); `launch.num_processes` overrides the `num_processes` it holds, so the number of
processes, which sets the global batch size, lives in params.yaml only. With no config file, accelerate
applies its own defaults, including a default config that `accelerate config` wrote on this machine.

With one process and no config file the module runs as `python -m <module>` would run it, through
`pipeline.warm` (a fork of a server that has imported the libraries already, or this process): that is
all `accelerate launch` would start, and it leaves the default run untouched (accelerate's launcher sets
OMP_NUM_THREADS=1 on a CPU unless told `--cpu`, and reads a default config).

The module's exit status comes back unchanged, so a `UserError` still ends in one line and status 2
(once per process that hit it) and no traceback from the launcher.

Signals: Ctrl-C (SIGINT) and SIGTERM reach every process. torchrun, which `accelerate launch` runs, sends
the signal it gets on to each worker (they run in sessions of their own, out of the terminal's reach) and
kills any still running 30 s later; a training stage then stops (SIGTERM: after saving a checkpoint,
posttrain/training/checkpoints.py) and the launcher exits 128 + the signal, in one line. `dvc repro`
ignores SIGINT while a stage runs and dies on SIGTERM without passing it on, which would leave the stage
training on as an orphan: the launcher stops as on SIGTERM when the dvc that runs it dies (die_with_dvc).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from pipeline import params
from posttrain.errors import UserError, run_main


def check(settings: params.Launch, module: str) -> None:
    """Refuse settings `accelerate launch` would fail on late or obscurely."""
    if settings.num_processes < 1:
        raise UserError(f"params: `launch.num_processes` must be at least 1, got {settings.num_processes}")
    if settings.config_file is not None:
        path = Path(settings.config_file)
        if not path.is_file():
            raise UserError(f"params: `launch.config_file`: {path} not found")
        from accelerate.commands.config.config_args import load_config_from_file

        try:
            config = load_config_from_file(str(path))
        except Exception as err:  # noqa: BLE001 - yaml, json and accelerate's own checks raise several kinds
            raise UserError(f"params: `launch.config_file`: {path} is not an accelerate config: {err}") from None
        if config.distributed_type == "DEEPSPEED" and importlib.util.find_spec("deepspeed") is None:
            raise UserError(f"params: `launch.config_file`: {path} asks for DeepSpeed, which is not installed "
                            "(pip install deepspeed)")
    if module == __spec__.name or not re.fullmatch(r"stages\.\w+", module) or importlib.util.find_spec(module) is None:
        raise UserError(f"{module}: not a stage module (stages.<name>, e.g. stages.sft)")


def accelerate_argv(settings: params.Launch, module: str, module_args: list[str]) -> list[str]:
    """The arguments of `accelerate launch` that run `module` with these settings."""
    argv = ["--num_processes", str(settings.num_processes)]
    if settings.config_file is not None:
        argv += ["--config_file", settings.config_file]
    else:
        # `--multi_gpu` is accelerate's name for torchrun starting N workers; it needs no GPU. Not `--cpu`:
        # with it accelerate starts one process whatever `--num_processes` says (its multi-CPU mode is
        # mpirun). The workers still train on the CPU there: the trainer config has `use_cpu`
        # (train_utils.device_precision). Port 0 takes a free port, so parallel runs do not collide.
        if settings.num_processes > 1:
            argv += ["--multi_gpu", "--main_process_port", "0"]
        # The defaults accelerate would otherwise warn about; precision comes from the trainer config.
        argv += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*argv, "--module", module, *module_args]


def worker_env(settings: params.Launch, cuda: bool) -> dict[str, str]:
    """Environment for the workers: a share of the cores each, and the CPU where there is no GPU."""
    env = {}
    if "OMP_NUM_THREADS" not in os.environ:
        # torchrun would set 1 thread per worker, which leaves cores idle on a CPU-only machine.
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        env["OMP_NUM_THREADS"] = str(max(1, cores // settings.num_processes))
    if not cuda:
        env["ACCELERATE_USE_CPU"] = "true"
    return env


def worker_status(err: subprocess.CalledProcessError | Exception) -> int:
    """The status of the worker that failed first: its exit code, or minus the signal that killed it."""
    if isinstance(err, subprocess.CalledProcessError):
        return err.returncode
    # A torchrun ChildFailedError. Timestamps are whole seconds: of failures in the same second, prefer
    # one that exited on its own over one that torchrun stopped because another had failed.
    return min(err.failures.values(), key=lambda f: (f.timestamp, f.exitcode < 0)).exitcode


def die_with_dvc() -> None:
    """Stop, as on SIGTERM, when the `dvc` process that runs this stage dies; elsewhere than Linux, nothing.

    Linux sends this process SIGTERM when its parent dies (PR_SET_PDEATHSIG). The parent is `dvc repro`
    only where the shell dvc runs the command with ($SHELL, or /bin/sh where SHELL is unset) replaces
    itself with a lone command: bash does, dash does not, and a dash left behind outlives dvc. So when a
    shell stands between, a daemon thread also watches every process up to dvc, once a second.
    """
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if "DVC_STAGE" not in os.environ:  # dvc sets it for every command it runs
        return
    import psutil

    chain = []
    for proc in psutil.Process().parents():
        chain.append(proc)
        if _is_dvc(proc):
            break
    else:
        return  # no dvc above this process (a queued `dvc exp run` worker): nothing more to watch
    if len(chain) == 1:
        return  # dvc is the parent: the kernel's signal covers it

    def watch() -> None:
        while all(_alive(proc) for proc in chain):
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="die-with-dvc", daemon=True).start()


def _is_dvc(proc) -> bool:
    """Whether `proc` runs dvc: `dvc ...` (an interpreter running the `dvc` script) or `python -m dvc ...`."""
    import psutil

    try:
        return "dvc" in [Path(arg).name for arg in proc.cmdline()[:3]]
    except psutil.Error:
        return False


def _alive(proc) -> bool:
    """Whether `proc` still runs: a process that exited but was not waited for yet (a zombie) does not."""
    import psutil

    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def launch(module: str, module_args: list[str]) -> None:
    """Run `module` with `module_args` in `params.launch.num_processes` processes through accelerate."""
    die_with_dvc()
    settings = params.load().launch
    check(settings, module)
    if settings.num_processes == 1 and settings.config_file is None:
        from pipeline import warm

        warm.run(module, module_args)  # in a fork of the warm server (its imports done), or here
        return

    import logging

    import torch
    from accelerate.commands.launch import launch_command, launch_command_parser
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    os.environ.update(worker_env(settings, torch.cuda.is_available()))
    args = launch_command_parser().parse_args(accelerate_argv(settings, module, module_args))
    # A failed worker has already said why on stderr; torchrun's own report of it adds only noise.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        launch_command(args)
    except (subprocess.CalledProcessError, ChildFailedError) as err:
        status = worker_status(err)
        if status < 0:  # killed (out of memory, often): nothing else will say so
            print(f"error: {module}: a process was killed by signal {-status} ({signal.strsignal(-status)})",
                  file=sys.stderr)
        sys.exit(status if status > 0 else 128 - status)
    except SignalException as err:  # torchrun passed the signal on to the workers and waited for them
        print(f"error: {module}: stopped by {err.sigval.name}", file=sys.stderr)
        sys.exit(128 + err.sigval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("module", help="the stage to run, e.g. stages.sft")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="the stage's own arguments")
    args = parser.parse_args()
    launch(args.module, args.args)


if __name__ == "__main__":
    run_main(main)
