"""Gather every model's metrics into one comparison table, as Markdown and CSV.

    python -m stages.report --countdown metrics/countdown/base.json metrics/countdown/sft_countdown.json \
        --out metrics/report

The metrics JSON files are the numbers of record (`dvc metrics show`/`diff` read them); this stage
only lays them side by side: `<out>/countdown.md` and `<out>/countdown.csv`, one row per model.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
from pathlib import Path

from stages.data_io import write_text
from stages.errors import UserError, run_main

# Columns in reading order; pass@k and best-of-k columns follow for every k the metrics hold.
LEADING = ["model", "n", "accuracy", "score", "format_rate", "completion_tokens", "samples_per_prompt"]


def load_metrics(paths: list[Path]) -> list[dict]:
    rows = []
    for path in paths:
        try:
            rows.append({"model": path.stem, **json.loads(path.read_text())})
        except (OSError, json.JSONDecodeError) as err:
            raise UserError(f"{path}: cannot read metrics: {err}") from None
    return rows


def columns(rows: list[dict]) -> list[str]:
    extra = sorted({k for row in rows for k in row} - set(LEADING),
                   key=lambda k: (k.split("_")[0], int("".join(c for c in k if c.isdigit()) or 0), k))
    return [c for c in LEADING if any(c in row for row in rows)] + extra


def fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict], cols: list[str], title: str) -> str:
    lines = [f"# {title}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(row.get(c, "")) for c in cols) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def csv_text(rows: list[dict], cols: list[str]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--countdown", type=Path, nargs="+", required=True, help="per-model metrics JSON files")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    rows = load_metrics(args.countdown)
    cols = columns(rows)
    title = "Countdown: greedy accuracy, reference score, and best-of-N with the verifier (pass@k)"
    write_text(args.out / "countdown.md", markdown(rows, cols, title))
    write_text(args.out / "countdown.csv", csv_text(rows, cols))
    print(markdown(rows, cols, title))


if __name__ == "__main__":
    run_main(main)
