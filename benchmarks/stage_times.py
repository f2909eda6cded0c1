"""Each stage's wall time in a `dvc repro`, from DVC's own output, timed as it arrives.

    python -m benchmarks.stage_times                    # runs `dvc repro` here and times it
    python -m benchmarks.stage_times -- --glob 'score_*'   # arguments after -- go to `dvc repro`
    python -m benchmarks.stage_times --log repro.log    # or read a log written by `--save`

A stage's time runs from DVC's "Running stage 'X'" line to the next stage's (the last one's to the
end), so it includes what DVC does around the command: hashing the outputs, caching them and
rewriting `dvc.lock`. A stage that loads a model prints how long its process took to be ready to
work (`posttrain.startup`: Python, imports, data, the model load); that is its start-up, the rest of its
command is work. The table lists the stages by kind (the name before `@`), slowest first, with the
total; `--save FILE` keeps the timed log (one `<seconds since start>\\t<line>` per line).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from posttrain import startup

MARK = "Running stage '"


def timed_lines(argv: list[str]):
    """Yield (seconds since start, line) for each line `dvc repro argv` prints, and ("end", code) last."""
    start = time.monotonic()
    with subprocess.Popen(["dvc", "repro", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        for line in proc.stdout:
            yield time.monotonic() - start, line.rstrip("\n")
    yield time.monotonic() - start, f"# exit {proc.returncode}"


def startup_seconds(line: str) -> float | None:
    """The seconds of a `start-up: <s> s before <what>` line (posttrain.startup), or None for any other line."""
    return float(line[len(startup.PREFIX):].split()[0]) if line.startswith(startup.PREFIX) else None


def stage_times(lines) -> tuple[dict[str, float], float, dict[str, float]]:
    """{stage: seconds}, the total and {stage: start-up seconds} (stages that print it), from (seconds, line)."""
    times, startups, current, began, end = {}, {}, None, 0.0, 0.0
    for t, line in lines:
        end = t
        if line.startswith(MARK):
            if current is not None:
                times[current] = t - began
            current, began = line[len(MARK):].split("'")[0], t
        elif current is not None and current not in startups and startup_seconds(line) is not None:
            startups[current] = startup_seconds(line)
    if current is not None:
        times[current] = end - began
    return times, end, startups


def table(times: dict[str, float], total: float, startups: dict[str, float] | None = None) -> str:
    """Markdown: per stage kind, the stages' total, mean and slowest time, and their mean start-up where printed."""
    startups = startups or {}
    kinds: dict[str, list[str]] = defaultdict(list)
    for name in times:
        kinds[name.split("@")[0]].append(name)
    rows = sorted(kinds.items(), key=lambda kv: -sum(times[n] for n in kv[1]))
    out = ["| stage kind | stages | total (s) | mean (s) | slowest (s) | start-up, mean (s) |", "|---|---|---|---|---|---|"]
    for kind, names in rows:
        spent = [times[n] for n in names]
        ready = [startups[n] for n in names if n in startups]
        up = f"{sum(ready) / len(ready):.1f}" if ready else ""
        out.append(f"| {kind} | {len(spent)} | {sum(spent):.1f} | {sum(spent) / len(spent):.1f} | {max(spent):.1f} | {up} |")
    up = f"{sum(startups.values()):.1f} in all" if startups else ""
    out.append(f"| all | {len(times)} | {total:.1f} | | | {up} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--log", type=Path, help="read a log saved by --save instead of running dvc repro")
    parser.add_argument("--save", type=Path, help="write the timed log here")
    parser.add_argument("repro_args", nargs="*", help="after --: arguments of `dvc repro`")
    args = parser.parse_args()
    if args.log:
        lines = [(float(t), line) for t, _, line in (row.partition("\t") for row in args.log.read_text().splitlines())]
    else:
        lines = []
        for t, line in timed_lines(args.repro_args):
            print(line, flush=True)
            lines.append((t, line))
        if args.save:
            args.save.write_text("".join(f"{t:.2f}\t{line}\n" for t, line in lines))
    times, total, startups = stage_times(lines)
    print(table(times, total, startups))
    if lines and lines[-1][1].startswith("# exit") and lines[-1][1] != "# exit 0":
        sys.exit(1)


if __name__ == "__main__":
    main()
