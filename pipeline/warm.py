"""Run a stage in a warm Python: the libraries it uses are imported once per run, not once per stage.

    python -m pipeline.warm stages.generate --model models/sft_countdown ...

runs `python -m stages.generate ...` as a fork of a server that has already imported torch,
transformers, TRL, PEFT, datasets, accelerate and DVCLive; `pipeline.launch` starts its one-process
runs the same way. Those imports cost 3-5 s on this 2-core machine (README, "Time"), which every one of
the ~50 model stages of a run paid again; a fork costs milliseconds. What runs in the fork is what
`python -m` would run:
- the stage's own code is imported fresh in the fork: the server holds only modules of the interpreter's
  standard library and site-packages, and a fork drops any other module before it runs the stage, so an
  edited stage or library file of this project is always the one that runs;
- the fork gets this process's command line, working directory, environment, stdin, stdout and stderr
  (the descriptors themselves, passed over the socket: a terminal stays a terminal), and its exit status
  comes back here unchanged, a signal's death included;
- a signal this process gets (Ctrl-C, SIGTERM, SIGHUP) is passed on to the fork, and if this process is
  killed outright (SIGKILL), the server kills the fork too: it never outlives the process DVC started.

One server serves one interpreter, one set of installed packages and one environment (the variables
that differ between DVC's stages aside): libraries read some variables when they are imported (for
example `HF_HUB_OFFLINE`, `TRANSFORMERS_VERBOSITY`), so a different environment gets a server of its
own. It listens on a socket in a folder only this user can read (`$TMPDIR/posttrain-warm-<uid>/`), has
started no Python thread and no CUDA context when it forks (else it does not serve), and exits when it has
been idle for `POSTTRAIN_WARM_IDLE` seconds (default 60). `POSTTRAIN_WARM=0`, or a platform without
fork or Unix sockets, runs the stage in this process instead, as before.

Why by hand: Python's `multiprocessing` forkserver serves the one program that started it, and no
maintained package forks a warm interpreter for separate command-line processes.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import os
import runpy
import selectors
import signal
import socket
import struct
import subprocess
import sys
import sysconfig
import tempfile
import time
import traceback
from pathlib import Path

# What the model stages import, warmed in the server (a missing one is skipped: vLLM is left out on
# purpose, as it starts processes and CUDA of its own).
WARM = {
    "torch": [],
    "transformers": ["AutoModelForCausalLM", "AutoModelForSequenceClassification", "AutoTokenizer",
                     "Trainer", "TrainingArguments"],
    "trl": ["SFTTrainer", "SFTConfig", "DPOTrainer", "DPOConfig", "RLOOTrainer", "RLOOConfig",
            "GRPOTrainer", "GRPOConfig", "RewardTrainer", "RewardConfig"],
    "peft": ["LoraConfig", "get_peft_model", "PeftModel"],
    "datasets": ["Dataset"],
    "accelerate": [],
    "dvclive": ["Live"],
}
VOLATILE = {"PWD", "OLDPWD", "SHLVL", "_", "DVC_STAGE"}  # differ between DVC's stages of one run
SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)
START_TIMEOUT = 300  # seconds the first stage waits for a server to import (a busy machine takes long)


def enabled() -> bool:
    return (os.environ.get("POSTTRAIN_WARM", "1") != "0" and hasattr(os, "fork") and hasattr(socket, "AF_UNIX")
            and hasattr(socket, "send_fds"))


def key() -> str:
    """What a server must share with its clients: interpreter, installed packages, environment."""
    packages = sysconfig.get_paths()["purelib"]
    state = {
        "python": [sys.executable, sys.version, sys.prefix],
        "packages": [packages, os.stat(packages).st_mtime_ns if os.path.isdir(packages) else None],
        "env": sorted((k, v) for k, v in os.environ.items() if k not in VOLATILE),
    }
    return hashlib.sha256(json.dumps(state).encode()).hexdigest()[:24]


def home() -> Path | None:
    """This user's private socket folder, or None where it is not private (then nothing is served)."""
    folder = Path(tempfile.gettempdir()) / f"posttrain-warm-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(folder)
    except OSError:
        return None
    if not os.path.isdir(folder) or os.path.islink(folder) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        return None
    if len(os.fsencode(folder)) > 60:  # a Unix socket's path holds at most 107 bytes (with the key's 40)
        return None
    return folder


def run(module: str, args: list[str]) -> None:
    """Run `module` as `python -m module *args` would, in a fork of the warm server where there can be one."""
    folder = home() if enabled() else None
    conn = connect(folder / f"{key()}.sock") if folder is not None else None
    if conn is None:
        sys.argv[:] = [module, *args]
        runpy.run_module(module, run_name="__main__", alter_sys=True)
        return
    sys.exit(client(conn, module, args))


def connect(path: Path) -> socket.socket | None:
    """A connection to the server at `path`, started here if none runs; None if none could start."""
    conn = _try_connect(path)
    if conn is not None or path.with_suffix(".refused").exists():
        return conn
    import fcntl

    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one server per key, however many stages start at once
        conn = _try_connect(path)
        if conn is not None:
            return conn
        with open(path.with_suffix(".log"), "ab") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", __spec__.name, "--serve", str(path)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                cwd=Path(__file__).resolve().parents[1])
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            conn = _try_connect(path)
            if conn is not None or server.poll() is not None:
                return conn  # None: the server would not serve (its log says why); run here instead
            time.sleep(0.05)
        server.kill()
        return None


def _try_connect(path: Path) -> socket.socket | None:
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(str(path))
    except OSError:
        conn.close()
        return None
    return conn


def client(conn: socket.socket, module: str, args: list[str]) -> int:
    """Have the server run the stage; pass signals on; return its exit status (or die of its signal)."""
    from posttrain import startup

    fds, spare = [], []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            fds.append(fd)
        except OSError:  # closed: the fork gets /dev/null there, as a closed descriptor would refuse I/O
            spare.append(os.open(os.devnull, os.O_RDWR))
            fds.append(spare[-1])
    request = {"module": module, "args": args, "cwd": os.getcwd(), "path0": sys.path[0],
               "env": dict(os.environ), "started": startup.process_start()}
    _send(conn, request, fds)
    for fd in spare:
        os.close(fd)
    reader = conn.makefile("rb")
    pid = json.loads(reader.readline())["pid"]
    for sig in SIGNALS:
        signal.signal(sig, lambda sig, frame: _forward(pid, sig))
    line = reader.readline()
    if not line:
        print(f"error: {module}: the warm server (pipeline.warm) stopped before the stage ended", file=sys.stderr)
        return 1
    status = json.loads(line)["status"]
    if status < 0:  # the fork died of a signal: so does this process, so that its caller sees the same
        signal.signal(-status, signal.SIG_DFL)
        os.kill(os.getpid(), -status)
        time.sleep(1)
        return 128 - status
    return status


def _forward(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _send(conn: socket.socket, message: dict, fds: list[int]) -> None:
    body = json.dumps(message).encode()
    socket.send_fds(conn, [struct.pack("!I", len(body))], fds)
    conn.sendall(body)


def _receive(conn: socket.socket) -> tuple[dict, list[int]]:
    head, fds, _, _ = socket.recv_fds(conn, 4, 3)
    (size,) = struct.unpack("!I", head)
    body = b""
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ConnectionError("client went away")
        body += chunk
    return json.loads(body), fds


# --- the server -------------------------------------------------------------------------------------

def serve(path: Path) -> None:
    """Import WARM, then fork a stage for each connection until idle for POSTTRAIN_WARM_IDLE seconds."""
    import importlib
    import threading

    for name, attributes in WARM.items():
        try:
            library = importlib.import_module(name)
            for attribute in attributes:
                getattr(library, attribute)
        except Exception as err:  # noqa: BLE001 - an optional library, or one that fails to import: not warmed
            print(f"not warmed: {name}: {err}", file=sys.stderr)
    # Native threads are allowed: torch's OpenMP pool (idle: no parallel region runs while importing) and
    # pyarrow's jemalloc thread, which both survive a fork (measured: a fork's matmuls run as fast, on as
    # many threads, as a fresh process's); Python threads and a CUDA context do not.
    torch = sys.modules.get("torch")
    if threading.active_count() != 1 or (torch is not None and torch.cuda.is_initialized()):
        print(f"not serving: {threading.active_count()} Python threads, or CUDA started, while importing: a fork "
              "of it is unsafe", file=sys.stderr)
        path.with_suffix(".refused").touch()  # the stages of this key run in their own process from now on
        return
    idle = float(os.environ.get("POSTTRAIN_WARM_IDLE", "60"))

    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    staging = path.with_name(f"{path.stem}.{os.getpid()}.tmp")
    listener.bind(str(staging))
    listener.listen(16)
    os.replace(staging, path)  # clients connect only once it listens
    inode = os.stat(path).st_ino
    print(f"serving {path} ({os.getpid()})", file=sys.stderr, flush=True)

    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    wake_read, wake_write = socket.socketpair()  # SIGCHLD wakes the loop: a stage's status goes back at once
    wake_read.setblocking(False)
    wake_write.setblocking(False)
    signal.set_wakeup_fd(wake_write.fileno())
    signal.signal(signal.SIGCHLD, lambda sig, frame: None)
    selector.register(wake_read, selectors.EVENT_READ)
    children: dict[int, socket.socket] = {}  # pid: its client's connection
    last = time.monotonic()
    while True:
        for selected, _ in selector.select(timeout=1.0):
            if selected.fileobj is wake_read:
                while True:
                    try:
                        if not wake_read.recv(512):
                            break
                    except BlockingIOError:
                        break
            elif selected.fileobj is listener:
                conn, _ = listener.accept()
                try:
                    request, fds = _receive(conn)
                except (OSError, ValueError, ConnectionError):
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    signal.set_wakeup_fd(-1)
                    selector.close()
                    for own in (listener, conn, wake_read, wake_write):
                        own.close()
                    _stage(request, fds)  # never returns
                for fd in fds:
                    os.close(fd)
                children[pid] = conn
                conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
                selector.register(conn, selectors.EVENT_READ, pid)
            else:  # a client hung up before its stage ended: it was killed, so the stage is too
                conn = selected.fileobj
                if not conn.recv(1):
                    selector.unregister(conn)
                    _forward(selected.data, signal.SIGKILL)
        while children:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            conn = children.pop(pid)
            try:
                selector.unregister(conn)
            except (KeyError, ValueError):
                pass
            try:
                conn.sendall(json.dumps({"status": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
            except OSError:
                pass
            conn.close()
        if children:
            last = time.monotonic()
        elif time.monotonic() - last > idle:
            break
    try:
        if os.stat(path).st_ino == inode:  # still this server's socket, not a successor's
            os.unlink(path)
    except FileNotFoundError:
        pass


def _stage(request: dict, fds: list[int]) -> None:
    """In the fork: become `python -m <module> <args>` of the client, run it, exit as it would."""
    status = 1
    try:
        os.setpgid(0, 0)  # a group of its own, apart from the server's: signals reach it alone
        for target, fd in zip((0, 1, 2), fds):
            os.dup2(fd, target)
            os.close(fd)
        sys.stdin = open(0, closefd=False)
        sys.stdout = open(1, "w", buffering=1 if os.isatty(1) else -1, closefd=False)
        sys.stderr = open(2, "w", buffering=1, errors="backslashreplace", closefd=False)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
            signal.signal(sig, signal.SIG_DFL)
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        kept = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix, *sysconfig.get_paths().values()})
        for name, module in list(sys.modules.items()):
            file = getattr(module, "__file__", None)
            if file and not os.path.abspath(file).startswith(kept):
                del sys.modules[name]  # this project's code: imported fresh from the client's checkout
        sys.path[0] = request["path0"]
        sys.argv[:] = [request["module"], *request["args"]]
        import importlib

        importlib.import_module("posttrain.startup").started = request["started"]
        status = 0
        runpy.run_module(request["module"], run_name="__main__", alter_sys=True)
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            status = stop.code or 0
        else:
            print(stop.code, file=sys.stderr)
            status = 1
    except KeyboardInterrupt:
        traceback.print_exc()
        status = -signal.SIGINT
    except BaseException:  # noqa: BLE001 - as the interpreter does: the traceback, then status 1
        traceback.print_exc()
        status = 1
    try:
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        if status < 0:  # as Python does on an unhandled Ctrl-C: die of the signal
            signal.signal(-status, signal.SIG_DFL)
            os.kill(os.getpid(), -status)
        os._exit(status & 0xFF)


def main() -> None:
    if sys.argv[1:2] == ["--serve"]:
        serve(Path(sys.argv[2]))
        return
    if len(sys.argv) < 2:
        print("usage: python -m pipeline.warm <module> [args ...]", file=sys.stderr)
        sys.exit(2)
    run(sys.argv[1], sys.argv[2:])


if __name__ == "__main__":
    main()
