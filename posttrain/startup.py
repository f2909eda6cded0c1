"""The line that splits a model stage's time into start-up and work, for `benchmarks.stage_times`.

A stage that loads a model calls `ready()` once the model is loaded and the work is about to begin: it
prints how long the process took to get there (Python, the imports, reading the data, loading the model),
counted from the process's start. `benchmarks.stage_times` reads the first such line of each stage.
"""

from __future__ import annotations

import sys
import time

PREFIX = "start-up: "
_printed = False


def ready(what: str) -> None:
    """Print `start-up: <seconds> s before <what>` once per process, on stderr (stdout may be a stage's data)."""
    global _printed
    if _printed:
        return
    _printed = True
    import psutil

    seconds = time.time() - psutil.Process().create_time()
    print(f"{PREFIX}{seconds:.1f} s before {what}", file=sys.stderr, flush=True)
