"""The line that splits a model stage's time into start-up and work, for `benchmarks.stage_times`.

Where the work begins, `ready()` prints how long the process took to get there (Python, the imports,
reading the data, loading the model), counted from the start of the process DVC ran (which, under
`pipeline.warm`, forked the stage from a server that had imported the libraries already): training (`checkpoints.train`),
generation (both backends) and judging (`stages/judges.py`, once its judge is built). Only the first call
of a process prints, and `benchmarks.stage_times` reads the first such line of each stage.
"""

from __future__ import annotations

import os
import sys
import time

PREFIX = "start-up: "
# When the stage's process started, where that is not this process (pipeline.warm sets it in its forks).
started: tuple[str, float] | None = None
_printed = False


def process_start() -> tuple[str, float]:
    """When this process started: ("boot", seconds on CLOCK_BOOTTIME) from /proc on Linux, else ("wall", ...).

    Not psutil's create_time: that adds the boot time, which Linux gives in whole seconds, so its
    difference from time.time() is off by up to a second, the same for every process of a boot.
    """
    try:
        with open("/proc/self/stat") as stat:
            ticks = int(stat.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime: clock ticks since boot
        return "boot", ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        import psutil

        return "wall", psutil.Process().create_time()


def since(start: tuple[str, float]) -> float:
    clock, seconds = start
    return (time.clock_gettime(time.CLOCK_BOOTTIME) if clock == "boot" else time.time()) - seconds


def ready(what: str) -> None:
    """Print `start-up: <seconds> s before <what>` once per process, on stderr (stdout may be a stage's data)."""
    global _printed
    if _printed:
        return
    _printed = True
    seconds = since(tuple(started) if started is not None else process_start())
    print(f"{PREFIX}{seconds:.1f} s before {what}", file=sys.stderr, flush=True)
