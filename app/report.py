"""Plot and summary of a ``nextcase simulate`` run, from its results.csv."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

FULL_POOL = "full_pool"


def read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        for key, value in row.items():
            if key not in ("strategy",):
                row[key] = float(value) if value not in ("", "None") else float("nan")
    return rows


def curves(rows: list[dict[str, Any]], column: str) -> dict[str, dict[float, list[float]]]:
    """strategy -> cycle -> values over seeds."""
    out: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        out[row["strategy"]][row["cycle"]].append(row[column])
    return out


def fractions(rows: list[dict[str, Any]]) -> dict[str, dict[float, float]]:
    out: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        out[row["strategy"]][row["cycle"]].append(row["labelled_fraction"])
    return {s: {c: float(np.mean(v)) for c, v in cyc.items()} for s, cyc in out.items()}


def write_report(out: Path) -> None:
    rows = read_rows(out / "results.csv")
    classes = [k for k in rows[0] if k.startswith("dice_")]
    _plot(rows, classes, out / "dice_vs_labelled.png")
    (out / "summary.md").write_text(summary(rows))


def _plot(rows: list[dict[str, Any]], classes: list[str], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["mean_dice", *classes]
    cols = min(3, len(panels))
    nrows = -(-len(panels) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    frac = fractions(rows)
    for ax, column in zip(axes.flat, panels, strict=False):
        for strategy, by_cycle in sorted(curves(rows, column).items()):
            cycles = sorted(by_cycle)
            mean = np.array([np.nanmean(by_cycle[c]) for c in cycles])
            std = np.array([np.nanstd(by_cycle[c]) for c in cycles])
            if strategy == FULL_POOL:
                ax.axhline(mean[0], color="black", linestyle="--", linewidth=1, label="full pool (ceiling)")
                continue
            x = [frac[strategy][c] for c in cycles]
            ax.plot(x, mean, marker="o", label=strategy)
            ax.fill_between(x, mean - std, mean + std, alpha=0.2)
        ax.set_title("mean test Dice" if column == "mean_dice" else column.removeprefix("dice_"))
        ax.set_xlabel("labelled fraction of the pool")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(rows: list[dict[str, Any]]) -> str:
    mean = {s: {c: float(np.nanmean(v)) for c, v in by.items()} for s, by in curves(rows, "mean_dice").items()}
    frac = fractions(rows)
    seeds = len({row["seed"] for row in rows})
    lines = ["# Simulated annotation campaign", "",
             f"Mean test Dice (foreground classes) over {seeds} seed(s); the same splits and initial labelled set "
             "for every strategy of a seed.", ""]
    ceiling = mean.get(FULL_POOL, {}).get(0.0)
    strategies = sorted(s for s in mean if s != FULL_POOL)
    if ceiling is not None:
        lines += [f"Full-pool baseline (every pool case labelled): **{ceiling:.3f}**; "
                  f"95 % of it: {0.95 * ceiling:.3f}.", "",
                  "| strategy | first labelled fraction reaching 95 % of full-pool Dice |", "|---|---|"]
        for strategy in strategies:
            reached = [frac[strategy][c] for c in sorted(mean[strategy]) if mean[strategy][c] >= 0.95 * ceiling]
            lines.append(f"| {strategy} | {f'{reached[0]:.2f}' if reached else 'not reached'} |")
        lines.append("")
    cycles = sorted({c for s in strategies for c in mean[s]})
    reference = "random" if "random" in strategies else (strategies[-1] if strategies else None)
    header = "| cycle | " + " | ".join(f"{s} (fraction)" for s in strategies)
    if reference is not None:
        header += "".join(f" | {s} - {reference}" for s in strategies if s != reference)
    lines += ["## Mean test Dice per cycle", "", header + " |", "|" + "---|" * (header.count("|"))]
    for c in cycles:
        cells = [f"{mean[s].get(c, float('nan')):.3f} ({frac[s].get(c, float('nan')):.2f})" for s in strategies]
        if reference is not None:
            cells += [f"{mean[s].get(c, float('nan')) - mean[reference].get(c, float('nan')):+.3f}"
                      for s in strategies if s != reference]
        lines.append(f"| {int(c)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
