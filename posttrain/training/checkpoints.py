"""Training that survives a kill: checkpoints a rerun resumes from, and a clean stop on SIGINT or SIGTERM.

transformers' `Trainer` already saves and restores everything a resumed run needs: weights,
optimizer, scheduler, gradient scaler, every process's RNG states, the position in the data
(`skip_first_batches` over a seeded sampler), the trainer state (global step, best metric) and, with
`restore_callback_states_from_checkpoint`, the early-stopping counter. `train` below calls
`trainer.train(resume_from_checkpoint=...)` and adds only what transformers leaves to the caller:

- Which checkpoint is safe to resume. The folder holds a fingerprint of what the run was asked to do
  (its params, command, process count, and the content of its input files and model folders); a
  mismatch discards every checkpoint with one line saying so. transformers writes `checkpoint-N/`
  in place, so a kill while saving leaves a folder that looks whole: a callback marks each checkpoint
  after every process has written its part (`MARKER`), and only a marked one is resumed.
- The DVCLive curves. DVC deletes a stage's metrics and plots before rerunning it, so each
  checkpoint keeps a copy of the DVCLive folder as it was at that step; a resumed run puts it back and
  DVCLive continues its step count (`resume=True`), so the curves read as one uninterrupted run.
- SIGTERM (a scheduler, a preempted cloud machine): the step under way finishes, a checkpoint is
  saved, and the stage exits with status 143 and no outputs. If the step has not finished within
  `SIGTERM_GRACE` seconds, the stage exits without saving (the newest checkpoint stays).
  SIGINT (Ctrl-C) stops at once with status 130. Either way the stage's DVCLive folder is removed,
  so that no partial metrics look like a result (the checkpoint holds its copy).

Checkpoints live in `<out>.checkpoints`, beside the stage's output and outside it: DVC deletes a
stage's outs before rerunning it, and would delete checkpoints kept there. `remove` deletes the folder
once the outputs are saved.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from posttrain import startup

MARKER = "checkpoint_complete"
FINGERPRINT = "fingerprint.json"
LIVE_COPY = "dvclive"
SIGTERM_GRACE = 10  # seconds: a scheduler's kill usually follows SIGTERM after 30 s (Kubernetes, GCE preemption)


def checkpoint_dir(out: Path) -> Path:
    """Where the checkpoints of the run writing `out` live: a sibling folder, which DVC does not delete."""
    return out.with_name(out.name + ".checkpoints")


def _hash_path(digest, path: Path) -> None:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)


def fingerprint(settings: dict[str, Any], inputs: list[Path]) -> str:
    """A hash of a run's settings (params, command-line arguments) and of the content of its inputs.

    Content, not modification times: `dvc checkout` and copies change the times of identical files.
    A 0.5B model folder (1-2 GB) hashes in a few seconds, against hours of training.
    """
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in inputs:
        if path is not None and Path(path).exists():
            _hash_path(digest, Path(path))
    return digest.hexdigest()


def _step(folder: Path) -> int:
    return int(folder.name.rpartition("-")[2])


def _checkpoints(workdir: Path) -> list[Path]:
    return sorted((p for p in workdir.glob("checkpoint-*") if p.name.rpartition("-")[2].isdigit()), key=_step)


def _choose(workdir: Path, print_name: str, wanted: str) -> tuple[Path | None, list[Path], str | None]:
    """(checkpoint to resume, folders to delete, a line to print); reads only, so every process may call it."""
    if not workdir.is_dir():
        return None, [], None
    stored = workdir / FINGERPRINT
    found = stored.read_text().strip() if stored.is_file() else None
    folders = _checkpoints(workdir)
    if found != wanted:
        if not folders:
            return None, [workdir], None
        return None, [workdir], (f"{print_name}: discarding {len(folders)} checkpoint(s) in {workdir}: written by "
                                 "other params, arguments or inputs")
    complete = [p for p in folders if (p / MARKER).is_file()]
    partial = [p for p in folders if not (p / MARKER).is_file()]
    note = (f"{print_name}: skipping {', '.join(p.name for p in partial)} in {workdir}: not completely written"
            if partial else None)
    return (complete[-1] if complete else None), partial, note


class _Checkpointing:
    """Trainer callback: marks complete checkpoints (with a copy of the DVCLive folder) and stops on SIGTERM."""

    def __init__(self, live: Path | None):
        self.live = live
        self.terminated = False
        self.saved_on_signal: Path | None = None
        self._previous = None

    # --- signal handling, on the main thread only (Python runs handlers there)
    def _on_sigterm(self, signum, frame) -> None:
        self.terminated = True
        signal.alarm(SIGTERM_GRACE)  # cancelled once the step ends and the save begins

    def _on_alarm(self, signum, frame) -> None:
        print(f"error: no step ended within {SIGTERM_GRACE} s of SIGTERM: stopped without a new checkpoint",
              file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM)

    def on_train_begin(self, args, state, control, **kwargs):
        # A checkpoint saved on SIGTERM may record the stop; a resumed run must not obey it.
        control.should_training_stop = False
        if threading.current_thread() is threading.main_thread():
            self._previous = (signal.signal(signal.SIGTERM, self._on_sigterm),
                              signal.signal(signal.SIGALRM, self._on_alarm))

    def on_train_end(self, args, state, control, **kwargs):
        if self._previous is not None:
            signal.alarm(0)
            signal.signal(signal.SIGTERM, self._previous[0])
            signal.signal(signal.SIGALRM, self._previous[1])
            self._previous = None

    def on_step_end(self, args, state, control, **kwargs):
        terminated = self.terminated
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # every process stops at the same step, or saving hangs
            import torch

            flag = torch.tensor([int(terminated)], device=args.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            terminated = bool(flag.item())
        if terminated:
            signal.alarm(0)
            self.terminated = True
            control.should_save = True

    def on_save(self, args, state, control, **kwargs):
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():  # each process has written its RNG state
            dist.barrier()
        folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if state.is_world_process_zero and folder.is_dir():
            if self.live is not None and self.live.is_dir():
                shutil.rmtree(folder / LIVE_COPY, ignore_errors=True)
                shutil.copytree(self.live, folder / LIVE_COPY)
            (folder / MARKER).write_text(f"{state.global_step}\n")
        if self.terminated:
            self.saved_on_signal = folder
            control.should_training_stop = True  # after the state was saved: a resumed run does not stop
        return control


def callback(live: Path | None):
    """The checkpointing callback, as a `TrainerCallback` (imported late: transformers is slow to import)."""
    from transformers import TrainerCallback

    cls = type("CheckpointCallback", (_Checkpointing, TrainerCallback), {})
    return cls(live)


# Trainer arguments that say where and how often to save, not what is trained: a change keeps the checkpoints.
NOT_FINGERPRINTED = ("output_dir", "logging_dir", "save_strategy", "save_steps", "save_total_limit", "disable_tqdm",
                     "restore_callback_states_from_checkpoint", "resume_from_checkpoint")


def train(trainer, name: str, settings: Any, inputs: list[Path | None], live: Path | None = None) -> None:
    """`trainer.train()`, resumed from the newest complete checkpoint of the same run, if there is one.

    Every process calls it. The trainer's arguments (but `NOT_FINGERPRINTED`), the process count (it
    sets the global batch), `settings` (whatever else the run depends on: params the trainer's
    arguments do not hold) and the content of `inputs` (files and folders read) make the fingerprint.
    Exits with status 143 after a SIGTERM (a checkpoint saved) and 130 after a SIGINT, leaving no outputs.
    """
    from transformers.integrations import DVCLiveCallback

    workdir = Path(trainer.args.output_dir)
    main = trainer.is_world_process_zero()
    args = {k: v for k, v in trainer.args.to_dict().items() if k not in NOT_FINGERPRINTED}
    wanted = fingerprint({"args": args, "world_size": trainer.args.world_size, "settings": settings}, inputs)
    resume, delete, note = _choose(workdir, name, wanted)
    trainer.accelerator.wait_for_everyone()  # every process has read the folder before the main one changes it
    if main:
        if note:
            print(note)
        for folder in delete:
            shutil.rmtree(folder, ignore_errors=True)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / FINGERPRINT).write_text(wanted + "\n")
        if resume is not None and live is not None:
            shutil.rmtree(live, ignore_errors=True)
            if (resume / LIVE_COPY).is_dir():
                shutil.copytree(resume / LIVE_COPY, live)
    trainer.accelerator.wait_for_everyone()
    if resume is not None:
        print(f"{name}: resuming from {resume} (step {_step(resume)})")
        trainer.args.eval_on_start = False  # the resumed step was evaluated before the checkpoint was saved
        if trainer.args.world_size > 1 and trainer.args.device.type == "cpu":
            # transformers 5 loads the optimizer with map_location=args.device, and several CPU processes have
            # the device "cpu:0", which torch.load cannot map to: the same device, without the index.
            import torch

            trainer.args.__dict__["_setup_devices"] = torch.device("cpu")
        for cb in trainer.callback_handler.callbacks:
            if isinstance(cb, DVCLiveCallback):
                cb.resume = True
    trainer.args.restore_callback_states_from_checkpoint = True  # the early-stopping counter
    checkpointing = callback(live)
    trainer.add_callback(checkpointing)
    startup.ready("training")
    try:
        trainer.train(resume_from_checkpoint=str(resume) if resume is not None else None)
    except KeyboardInterrupt:
        _discard_live(trainer, live)
        print(f"error: {name}: interrupted (SIGINT); no outputs written. Rerun to resume from the newest "
              f"checkpoint in {workdir}", file=sys.stderr)
        raise SystemExit(128 + signal.SIGINT) from None
    except SystemExit:
        _discard_live(trainer, live)
        raise
    if checkpointing.terminated:
        _discard_live(trainer, live)
        print(f"error: {name}: stopped by SIGTERM; saved {checkpointing.saved_on_signal}, no outputs written. "
              "Rerun to resume", file=sys.stderr)
        raise SystemExit(128 + signal.SIGTERM)


def _discard_live(trainer, live: Path | None) -> None:
    if live is not None and trainer.is_world_process_zero():
        shutil.rmtree(live, ignore_errors=True)


def remove(trainer) -> None:
    """Delete the run's checkpoints once its outputs are saved (main process; the others wait)."""
    trainer.accelerator.wait_for_everyone()
    if trainer.is_world_process_zero():
        shutil.rmtree(trainer.args.output_dir, ignore_errors=True)
