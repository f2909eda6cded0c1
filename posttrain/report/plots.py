"""The report's figures (matplotlib, Agg): bars with 95% intervals, pass@N by temperature, training curves."""

from __future__ import annotations

from pathlib import Path

from posttrain.report.inputs import read_curve

TRAIN_PANELS = [("loss", ["loss", "train/loss", "eval/loss"]), ("reward", ["reward", "eval/reward"]),
                ("KL", ["kl"]), ("mean completion tokens", ["completions/mean_length"]),
                ("DPO reward margin", ["rewards/margins", "eval/rewards/margins"]), ("accuracy", ["eval/accuracy"])]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})  # no version stamp: the same bytes on every run
    _pyplot().close(fig)


def _errors(rows: list[dict], key: str) -> list[list[float]]:
    """Below and above each value, to its 95% interval (none drawn where the row has no interval)."""
    bounds = [r.get(f"{key}_ci") or [r[key], r[key]] for r in rows]
    return [[max(0.0, r[key] - b[0]) for r, b in zip(rows, bounds)],
            [max(0.0, b[1] - r[key]) for r, b in zip(rows, bounds)]]


def plot_bars(path: Path, rows: list[dict], key: str, xlabel: str, chance: float | None = None) -> None:
    """Horizontal bars of `key` per model, with its 95% interval."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.4 * len(rows)))
    ax.barh(range(len(rows)), [r[key] for r in rows], xerr=_errors(rows, key), capsize=3, color="tab:blue")
    ax.set_yticks(range(len(rows)), [r["model"] for r in rows])
    ax.invert_yaxis()
    if chance is not None:
        ax.axvline(chance, color="grey", linestyle="--", linewidth=1)
    ax.set(xlabel=xlabel, xlim=(0, 1))
    _save(fig, path)


def plot_best_of_n(path: Path, rows: list[dict]) -> None:
    """pass@N against temperature, one line per (model, N), with 95% intervals."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for (model, k) in sorted({(r["model"], r["N"]) for r in rows}):
        line = [r for r in rows if (r["model"], r["N"]) == (model, k)]
        ax.errorbar([r["temperature"] for r in line], [r["pass_at_n"] for r in line],
                    yerr=_errors(line, "pass_at_n"), marker="o", capsize=3, label=f"{model} N={k}")
    ax.set(xlabel="temperature", ylabel="pass@N (best-of-N accuracy)", ylim=(0, 1.03))
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_training(path: Path, folder: Path) -> bool:
    """One panel per TRAIN_PANELS entry that the stage logged in `folder` (curves of at least two points)."""
    panels = []
    for title, names in TRAIN_PANELS:
        curves = [(n, read_curve(folder / f"{n}.tsv")) for n in names if (folder / f"{n}.tsv").is_file()]
        curves = [(n, c) for n, c in curves if len(c[0]) >= 2]  # `train/loss` is one summary point
        if curves:
            panels.append((title, curves))
    if not panels:
        return False
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), squeeze=False)
    for ax, (title, curves) in zip(axes[0], panels):
        for name, (steps, values) in curves:
            ax.plot(steps, values, marker="." if len(steps) < 30 else None, label=name)
        ax.set(title=title, xlabel="step")
        ax.legend(fontsize=7)
    fig.suptitle(path.stem.removeprefix("training_"))
    _save(fig, path)
    return True


def plot_overoptimisation(path: Path, curves: list[dict]) -> None:
    """Per RL run, the proxy's (left axis) and the gold's (right axis) held-out reward against the KL from
    the starting policy: Gao et al.'s over-optimisation picture."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 3.4), squeeze=False)
    for ax, c in zip(axes[0], curves):
        ax.plot(c["kl"], c["proxy"], marker="o", color="tab:blue")
        ax.set_xlabel("KL from the starting policy")
        ax.set_ylabel(c["proxy_name"], color="tab:blue")
        gold = ax.twinx()
        gold.plot(c["kl"], c["gold"], marker="s", color="tab:red")
        gold.set_ylabel(c["gold_name"], color="tab:red")
        ax.set_title(c["stage"], fontsize=9)
    _save(fig, path)
