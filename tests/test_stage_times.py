"""The stage-time benchmark reads DVC's output: each stage from its "Running stage" line to the next."""

from __future__ import annotations

from benchmarks.stage_times import stage_times, table


def test_stage_times_from_dvc_output():
    lines = [(0.0, "Verifying data sources"), (1.0, "Running stage 'prepare':"), (1.1, "> python -m stages.x"),
             (4.0, "Running stage 'generate@a':"), (10.5, "Running stage 'generate@b':"),
             (12.0, "Updating lock file 'dvc.lock'"), (12.5, "# exit 0")]
    times, total = stage_times(lines)
    assert times == {"prepare": 3.0, "generate@a": 6.5, "generate@b": 2.0} and total == 12.5
    text = table(times, total)
    assert "| generate | 2 | 8.5 | 4.2 | 6.5 |" in text and text.splitlines()[2].startswith("| generate |")
    assert stage_times([]) == ({}, 0.0)
