"""The line that splits a model stage's time into start-up and work, for `benchmarks.stage_times`.

Where the work begins, `ready()` prints how long the process took to get there (Python, the imports,
reading the data, loading the model), counted from the start of the process DVC ran (which, under
`pipeline.warm`, forked the stage from a server that had imported the libraries already): training (`checkpoints.train`),
generation (both backends) and judging (`stages/judges.py`, once its judge is built). Only the first call
of a process prints, and `benchmarks.stage_times` reads the first such line of each stage.
"""

from __future__ import annotations

import sys
import time

PREFIX = "start-up: "
started: float | None = None  # when the stage's process started, where that is not this process (pipeline.warm)
_printed = False


def ready(what: str) -> None:
    """Print `start-up: <seconds> s before <what>` once per process, on stderr (stdout may be a stage's data)."""
    global _printed
    if _printed:
        return
    _printed = True
    if started is None:
        import psutil

        seconds = time.time() - psutil.Process().create_time()
    else:
        seconds = time.time() - started
    print(f"{PREFIX}{seconds:.1f} s before {what}", file=sys.stderr, flush=True)
