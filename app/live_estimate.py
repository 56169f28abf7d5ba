"""The live learning curve of a simulated campaign: control-arm pre-segmentation Dice next to the test-set Dice.

The oracle of ``nextcase simulate`` claims and uploads through the REST API like an annotator, so every
upload gets an effort record (app.campaign) and the campaign report groups them per model version and arm.
For the oracle the submitted mask is the true mask, so a control case's pre-segmentation Dice is the model's
true Dice on a case drawn uniformly from the unlabelled pool; the test-set Dice of the same model (the mean over
test cases of each case's mean foreground Dice, the same per-case figure) estimates the same quantity from the
test split. The two should agree within their intervals; how far apart they are is in the README. The oracle's
working time is meaningless (it is a program) and is not reported.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from app.campaign.stats import mean_ci

COLUMNS = ["strategy", "split_seed", "train_seed", "cycle", "labelled", "model_version_id", "test_cases",
           "test_dice", "test_ci_low", "test_ci_high", "control_n", "control_dice", "control_ci_low",
           "control_ci_high", "ranked_n", "ranked_dice", "ranked_minus_control", "ranked_minus_control_ci_low",
           "ranked_minus_control_ci_high"]


def rows_for(run: Any, report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per finished cycle of a run (app.simulation.RunResult) from its project's campaign report."""
    arms = {(a["model_version_id"], a["arm"]): a for a in report["arms"]}
    differences = {d["model_version_id"]: d["ranked_minus_control"] for d in report["ranked_vs_control"]}
    out = []
    for row, version in zip(run.rows, run.model_versions, strict=False):
        test = mean_ci([float(c["mean_dice"]) for c in run.per_case
                        if c["cycle"] == row["cycle"] and c["mean_dice"] is not None])
        control = (arms.get((version, "control")) or {}).get("mean_foreground_dice") or {}
        ranked = (arms.get((version, "ranked")) or {}).get("mean_foreground_dice") or {}
        diff = differences.get(version) or {}
        out.append({
            "strategy": row["strategy"], "split_seed": row["split_seed"], "train_seed": row["train_seed"],
            "cycle": row["cycle"], "labelled": row["labelled"], "model_version_id": version,
            "test_cases": test.n, "test_dice": test.mean, "test_ci_low": test.low, "test_ci_high": test.high,
            "control_n": control.get("n", 0), "control_dice": control.get("mean"),
            "control_ci_low": control.get("ci_low"), "control_ci_high": control.get("ci_high"),
            "ranked_n": ranked.get("n", 0), "ranked_dice": ranked.get("mean"),
            "ranked_minus_control": diff.get("mean"), "ranked_minus_control_ci_low": diff.get("ci_low"),
            "ranked_minus_control_ci_high": diff.get("ci_high"),
        })
    return out


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    """One panel per strategy: test Dice per cycle (line) and the control-arm estimate (points, 95 % CI bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    strategies = sorted({r["strategy"] for r in rows})
    if not strategies:
        return
    fig, axes = plt.subplots(1, len(strategies), figsize=(5 * len(strategies), 3.8), squeeze=False)
    for ax, strategy in zip(axes.flat, strategies, strict=True):
        runs = sorted({(r["split_seed"], r["train_seed"]) for r in rows if r["strategy"] == strategy})
        for i, run in enumerate(runs):
            mine = [r for r in rows if r["strategy"] == strategy and (r["split_seed"], r["train_seed"]) == run]
            color = f"C{i}"
            ax.plot([r["labelled"] for r in mine], [r["test_dice"] for r in mine], color=color, marker="o",
                    markersize=3, label=f"test set, seed {run[0]}/{run[1]}")
            _control_points(ax, [r for r in mine if r["control_dice"] is not None], color, i)
        ax.set_title(f"{strategy}: test set vs control arm")
        ax.set_xlabel("labelled pool cases when the model was trained")
        ax.set_ylabel("mean foreground Dice per case")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _control_points(ax: Any, rows: list[dict[str, Any]], color: str, index: int) -> None:
    if not rows:
        return
    x = [r["labelled"] + 0.15 * (index + 1) for r in rows]  # offset so runs' bars do not hide each other
    y = [r["control_dice"] for r in rows]
    low = [r["control_dice"] - (r["control_ci_low"] if r["control_ci_low"] is not None else r["control_dice"])
           for r in rows]
    high = [(r["control_ci_high"] if r["control_ci_high"] is not None else r["control_dice"]) - r["control_dice"]
            for r in rows]
    ax.errorbar(x, y, yerr=[low, high], fmt="s", color=color, markersize=4, capsize=2, linestyle="none",
                label=f"control arm (n = {sum(r['control_n'] for r in rows)} cases)")
