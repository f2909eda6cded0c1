"""Each stage's wall time in a `dvc repro`, from DVC's own output, timed as it arrives.

    python -m benchmarks.stage_times                    # runs `dvc repro` here and times it
    python -m benchmarks.stage_times -- --glob 'score_*'   # arguments after -- go to `dvc repro`
    python -m benchmarks.stage_times --log repro.log    # or read a log written by `--save`

A stage's time runs from DVC's "Running stage 'X'" line to the next stage's (the last one's to the
end), so it includes what DVC does around the command: hashing the outputs, caching them and
rewriting `dvc.lock`. The table lists the stages by kind (the name before `@`), slowest first, with
the total; `--save FILE` keeps the timed log (one `<seconds since start>\\t<line>` per line).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

MARK = "Running stage '"


def timed_lines(argv: list[str]):
    """Yield (seconds since start, line) for each line `dvc repro argv` prints, and ("end", code) last."""
    start = time.monotonic()
    with subprocess.Popen(["dvc", "repro", *argv], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          bufsize=1) as proc:
        for line in proc.stdout:
            yield time.monotonic() - start, line.rstrip("\n")
    yield time.monotonic() - start, f"# exit {proc.returncode}"


def stage_times(lines) -> tuple[dict[str, float], float]:
    """{stage: seconds} and the total, from (seconds, line) pairs."""
    times, current, began, end = {}, None, 0.0, 0.0
    for t, line in lines:
        end = t
        if line.startswith(MARK):
            if current is not None:
                times[current] = t - began
            current, began = line[len(MARK):].split("'")[0], t
    if current is not None:
        times[current] = end - began
    return times, end


def table(times: dict[str, float], total: float) -> str:
    kinds: dict[str, list[float]] = defaultdict(list)
    for name, seconds in times.items():
        kinds[name.split("@")[0]].append(seconds)
    rows = sorted(kinds.items(), key=lambda kv: -sum(kv[1]))
    out = ["| stage kind | stages | total (s) | mean (s) | slowest (s) |", "|---|---|---|---|---|"]
    out += [f"| {k} | {len(v)} | {sum(v):.1f} | {sum(v) / len(v):.1f} | {max(v):.1f} |" for k, v in rows]
    out.append(f"| all | {len(times)} | {total:.1f} | | |")
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
    times, total = stage_times(lines)
    print(table(times, total))
    if lines and lines[-1][1].startswith("# exit") and lines[-1][1] != "# exit 0":
        sys.exit(1)


if __name__ == "__main__":
    main()
