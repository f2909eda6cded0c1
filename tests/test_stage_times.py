"""The stage-time benchmark reads DVC's output: each stage from its "Running stage" line to the next, and
its start-up from the first line `posttrain.startup` printed in it."""

from __future__ import annotations

import subprocess
import sys

from benchmarks.stage_times import stage_times, table
from posttrain import startup


def test_stage_times_from_dvc_output():
    lines = [(0.0, "Verifying data sources"), (1.0, "Running stage 'prepare':"), (1.1, "> python -m stages.x"),
             (4.0, "Running stage 'generate@a':"), (5.0, "start-up: 3.5 s before generating"),
             (6.0, "start-up: 9.0 s before generating"),  # a second process of the same stage: the first counts
             (10.5, "Running stage 'generate@b':"), (11.0, "start-up: 0.5 s before generating"),
             (12.0, "Updating lock file 'dvc.lock'"), (12.5, "# exit 0")]
    times, total, startups = stage_times(lines)
    assert times == {"prepare": 3.0, "generate@a": 6.5, "generate@b": 2.0} and total == 12.5
    assert startups == {"generate@a": 3.5, "generate@b": 0.5}
    text = table(times, total, startups)
    assert "| generate | 2 | 8.5 | 4.2 | 6.5 | 2.0 |" in text and text.splitlines()[2].startswith("| generate |")
    assert "| prepare | 1 | 3.0 | 3.0 | 3.0 |  |" in text and text.splitlines()[-1] == "| all | 3 | 12.5 | | | 4.0 in all |"
    assert stage_times([]) == ({}, 0.0, {})
    assert table(times, total).splitlines()[-1] == "| all | 3 | 12.5 | | |  |"  # a log without start-up lines


def test_the_start_up_line_is_printed_once_and_counts_from_the_process_start():
    code = ("import time; time.sleep(0.5); from posttrain import startup; "
            "startup.ready('working'); startup.ready('working again')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(startup.PREFIX) and lines[0].endswith(" s before working")
    assert float(lines[0][len(startup.PREFIX):].split()[0]) >= 0.5 and result.stdout == ""
