"""What a reviewer needs from an active-learning experiment, computed from its CSV files.

Input: ``results.csv`` (one row per campaign and cycle: strategy, split_seed or seed, train_seed,
cycle, labelled, labelled_fraction, dice_<class>..., mean_dice, optionally spearman), and when present
``per_case.csv`` (test Dice of every test case at every cycle), written by ``nextcase simulate`` and by
``python -m worker.experiment``. Output: ``summary.md`` and ``dice_vs_labelled.png``.

Every comparison is paired: arms of one split seed share the splits and the initial labelled set.
- AUBC: area under the mean-foreground test Dice vs labelled-fraction curve (trapezoids), divided by
  the fraction range, so it reads as the Dice averaged over the label budget.
- Difference to random: per seed and test case, the AUBC difference; a bootstrap over seeds and, within
  each seed, over test cases gives the 95 % CI and a two-sided p-value; p-values are Holm-corrected
  across arms.
- Penalty matrix (after Ash et al., BADGE): entry (row, column) is the fraction of budget points at which
  the row arm beats the column arm in a paired t-test over seeds (two-sided, 5 %).
- Labels to 95 % of the full-pool Dice; Spearman correlation of a case's score with its true error;
  spreads are sample SDs (ddof = 1).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from worker.experiment import FULL_POOL

REFERENCE = "random"
BOOTSTRAP = 4000
# Two-sided 5 % critical values of Student's t for 1..30 degrees of freedom (1.96 beyond).
T_CRITICAL = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
              2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
              2.045, 2.042]

Seed = tuple[int, int]  # (split seed, train seed)


def read_rows(path: Path) -> list[dict[str, Any]]:
    with path.open() as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row.setdefault("split_seed", row.get("seed", "0"))
        row.setdefault("train_seed", row.get("seed", "0") if "seed" in row else "0")
        for key, value in list(row.items()):
            if key not in ("strategy", "case"):
                row[key] = _number(value)
    return rows


def _number(value: str | None) -> float:
    if value in ("", "None", None):
        return float("nan")
    if value in ("True", "False"):
        return float(value == "True")
    return float(value)


def _seed(row: dict[str, Any]) -> Seed:
    return int(row["split_seed"]), int(row["train_seed"])


@dataclass
class Comparison:
    arm: str
    aubc_diff: float
    low: float
    high: float
    p: float
    p_holm: float = 1.0
    per_seed: list[float] = field(default_factory=list)

    def verdict(self, reference: str = REFERENCE) -> str:
        ci = f"AUBC difference {self.aubc_diff:+.4f} (95 % CI {self.low:+.4f} to {self.high:+.4f}, " \
             f"Holm-adjusted p = {self.p_holm:.3g})"
        if self.p_holm < 0.05 and self.low > 0:
            return f"**{self.arm} beats {reference}**: {ci}."
        if self.p_holm < 0.05 and self.high < 0:
            return f"**{self.arm} is worse than {reference}**: {ci}."
        return f"**{self.arm} does not beat {reference}**: {ci}; the difference is not significant."


@dataclass
class Analysis:
    arms: list[str]
    cycles: list[int]
    fractions: list[float]
    labelled: list[float]
    curves: dict[str, dict[Seed, np.ndarray]]
    aubc: dict[str, dict[Seed, float]]
    comparisons: list[Comparison]
    penalty: np.ndarray
    ceiling: float | None
    to_95: dict[str, float | None]
    spearman: dict[str, tuple[float, float, int]]


def analyse(rows: list[dict[str, Any]], per_case: list[dict[str, Any]] | None = None,
            max_cycle: int | None = None) -> Analysis:
    arms = sorted({r["strategy"] for r in rows} - {FULL_POOL}, key=lambda a: (a != REFERENCE, a))
    cycles = _common_cycles(rows, arms, max_cycle)
    table: dict[str, dict[Seed, dict[int, dict[str, Any]]]] = defaultdict(lambda: defaultdict(dict))
    for row in rows:
        table[row["strategy"]][_seed(row)][int(row["cycle"])] = row
    seeds = sorted(set.intersection(*(set(table[a]) for a in arms))) if arms else []
    curves = {a: {s: np.array([table[a][s][c]["mean_dice"] for c in cycles]) for s in seeds} for a in arms}
    fractions = [float(np.mean([table[a][s][c]["labelled_fraction"] for a in arms for s in seeds])) for c in cycles]
    labelled = [float(np.mean([table[a][s][c]["labelled"] for a in arms for s in seeds])) for c in cycles]
    weights = _trapezoid_weights(fractions)
    aubc = {a: {s: float(weights @ curves[a][s]) for s in seeds} for a in arms}
    comparisons = _compare(arms, seeds, cycles, weights, aubc, per_case)
    full = [r["mean_dice"] for r in rows if r["strategy"] == FULL_POOL]
    ceiling = float(np.mean(full)) if full else None
    return Analysis(arms, cycles, fractions, labelled, curves, aubc, comparisons,
                    _penalty(arms, seeds, curves), ceiling, _labels_to(arms, curves, labelled, ceiling),
                    _spearman(rows, arms, cycles))


def _common_cycles(rows: list[dict[str, Any]], arms: list[str], max_cycle: int | None) -> list[int]:
    by_campaign: dict[tuple[str, Seed], set[int]] = defaultdict(set)
    for row in rows:
        if row["strategy"] in arms:
            by_campaign[(row["strategy"], _seed(row))].add(int(row["cycle"]))
    common = set.intersection(*by_campaign.values()) if by_campaign else set()
    return sorted(c for c in common if max_cycle is None or c <= max_cycle)


def _trapezoid_weights(x: list[float]) -> np.ndarray:
    """w such that w @ y is the trapezoid area under y(x) divided by the x range (the mean for no range)."""
    if len(x) < 2 or x[-1] == x[0]:
        return np.full(len(x), 1.0 / max(len(x), 1))
    w = np.zeros(len(x))
    for i in range(len(x) - 1):
        half = (x[i + 1] - x[i]) / 2
        w[i] += half
        w[i + 1] += half
    return w / (x[-1] - x[0])


def _compare(arms: list[str], seeds: list[Seed], cycles: list[int], weights: np.ndarray,
             aubc: dict[str, dict[Seed, float]], per_case: list[dict[str, Any]] | None) -> list[Comparison]:
    if REFERENCE not in arms or not seeds:
        return []
    cases = _case_matrices(per_case, cycles) if per_case else {}
    rng = np.random.default_rng(0)
    out = []
    for arm in arms:
        if arm == REFERENCE:
            continue
        per_seed = [aubc[arm][s] - aubc[REFERENCE][s] for s in seeds]
        if all((a, s) in cases for a in (arm, REFERENCE) for s in seeds):
            reps = _bootstrap([_case_diffs(cases, arm, s, weights) for s in seeds], rng)
            p = max(1.0 / BOOTSTRAP, min(1.0, 2 * min(float(np.mean(reps <= 0)), float(np.mean(reps >= 0)))))
            low, high = (float(v) for v in np.percentile(reps, [2.5, 97.5]))
        else:
            # Without per-case Dice only the seeds vary: a bootstrap over 2-5 values is overconfident.
            low, high, p = _t_interval(per_seed)
        out.append(Comparison(arm, float(np.mean(per_seed)), low, high, p, per_seed=per_seed))
    _holm(out)
    return out


def _t_interval(values: list[float]) -> tuple[float, float, float]:
    """95 % t-interval of the mean and its two-sided p (nan interval and p = 1 for a single value)."""
    n = len(values)
    if n < 2:
        return float("nan"), float("nan"), 1.0
    mean, sd = float(np.mean(values)), float(np.std(values, ddof=1))
    critical = T_CRITICAL[n - 2] if n - 1 <= len(T_CRITICAL) else 1.96
    half = critical * sd / math.sqrt(n)
    p = 1.0 if sd == 0 else _t_p_value(mean / (sd / math.sqrt(n)), n - 1)
    return mean - half, mean + half, p


def _t_p_value(t: float, df: int) -> float:
    """Two-sided p of Student's t (Simpson's rule on the density; scipy is not a dependency)."""
    x = np.linspace(0.0, abs(t), 2001)
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    density = np.exp(log_norm - (df + 1) / 2 * np.log1p(x**2 / df))
    h = x[1] - x[0]
    area = h / 3 * (density[0] + density[-1] + 4 * density[1:-1:2].sum() + 2 * density[2:-1:2].sum())
    return float(min(1.0, max(0.0, 1.0 - 2.0 * area)))


def _case_matrices(per_case: list[dict[str, Any]], cycles: list[int]) -> dict[tuple[str, Seed], np.ndarray]:
    """(arm, seed) -> (cycles, test cases) Dice, cases in a fixed order."""
    grouped: dict[tuple[str, Seed], dict[str, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for row in per_case:
        grouped[(row["strategy"], _seed(row))][row["case"]][int(row["cycle"])] = row["mean_dice"]
    out = {}
    for key, by_case in grouped.items():
        names = sorted(by_case)
        if all(c in by_case[n] for n in names for c in cycles):
            out[key] = np.array([[by_case[n][c] for n in names] for c in cycles])
    return out


def _case_diffs(cases: dict[tuple[str, Seed], np.ndarray], arm: str, seed: Seed, weights: np.ndarray) -> np.ndarray:
    """Per test case, the AUBC of ``arm`` minus that of random (same seed, so the same test cases)."""
    return np.asarray(weights @ (cases[(arm, seed)] - cases[(REFERENCE, seed)]))


def _bootstrap(diffs: list[np.ndarray], rng: np.random.Generator) -> np.ndarray:
    """Mean AUBC difference resampling seeds, then test cases within each seed (the AUBC is linear in the
    per-case Dice, so a resampled AUBC difference is the mean of resampled per-case differences)."""
    reps = np.empty(BOOTSTRAP)
    for b in range(BOOTSTRAP):
        chosen = rng.integers(len(diffs), size=len(diffs))
        reps[b] = np.mean([diffs[i][rng.integers(len(diffs[i]), size=len(diffs[i]))].mean() for i in chosen])
    return reps


def _holm(comparisons: list[Comparison]) -> None:
    ordered = sorted(comparisons, key=lambda c: c.p)
    running = 0.0
    for rank, comparison in enumerate(ordered):
        running = max(running, min(1.0, comparison.p * (len(ordered) - rank)))
        comparison.p_holm = running


def _penalty(arms: list[str], seeds: list[Seed], curves: dict[str, dict[Seed, np.ndarray]]) -> np.ndarray:
    matrix = np.zeros((len(arms), len(arms)))
    if len(seeds) < 2:
        return matrix
    critical = T_CRITICAL[len(seeds) - 2] if len(seeds) - 1 <= len(T_CRITICAL) else 1.96
    points = len(next(iter(curves[arms[0]].values())))
    if points == 0:
        return matrix
    for i, a in enumerate(arms):
        for j, b in enumerate(arms):
            if i == j:
                continue
            diff = np.array([curves[a][s] - curves[b][s] for s in seeds])  # (seeds, cycles)
            sd = diff.std(axis=0, ddof=1)
            t = np.where(sd > 0, diff.mean(axis=0) / np.maximum(sd, 1e-12) * math.sqrt(len(seeds)), 0.0)
            matrix[i, j] = float(np.sum(t > critical)) / points
    return matrix


def _labels_to(arms: list[str], curves: dict[str, dict[Seed, np.ndarray]], labelled: list[float],
               ceiling: float | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for arm in arms:
        mean = np.mean(list(curves[arm].values()), axis=0)
        hit = [labelled[i] for i, v in enumerate(mean) if ceiling is not None and v >= 0.95 * ceiling]
        out[arm] = hit[0] if hit else None
    return out


def _spearman(rows: list[dict[str, Any]], arms: list[str], cycles: list[int]) -> dict[str, tuple[float, float, int]]:
    out = {}
    for arm in arms:
        values = [r["spearman"] for r in rows if r["strategy"] == arm and int(r["cycle"]) in cycles
                  and "spearman" in r and not math.isnan(r["spearman"])]
        if values:
            out[arm] = (float(np.mean(values)), float(np.std(values, ddof=1)) if len(values) > 1 else 0.0, len(values))
    return out


# --- output --------------------------------------------------------------------------------------


def write_report(out: Path, max_cycle: int | None = None, name: str = "summary.md",
                 plot_name: str = "dice_vs_labelled.png") -> Analysis:
    rows = read_rows(out / "results.csv")
    per_case = read_rows(out / "per_case.csv") if (out / "per_case.csv").exists() else None
    analysis = analyse(rows, per_case, max_cycle)
    classes = [k for k in rows[0] if k.startswith("dice_")]
    _plot(rows, classes, analysis, out / plot_name)
    (out / name).write_text(render(analysis, rows))
    return analysis


def render(a: Analysis, rows: list[dict[str, Any]]) -> str:
    if not a.cycles or not a.aubc:
        return ("# Simulated annotation campaigns\n\nNot enough data to compare: no active-learning arm has a "
                "cycle that every arm finished.\n")
    seeds = len(next(iter(a.aubc.values())))
    lines = ["# Simulated annotation campaigns", "",
             f"Mean foreground test Dice; {seeds} paired seed(s) (same splits and initial labelled set for every "
             f"arm of a seed); cycles {a.cycles[0]}-{a.cycles[-1]} ({a.labelled[0]:.0f} to {a.labelled[-1]:.0f} "
             f"labelled, fraction {a.fractions[0]:.2f} to {a.fractions[-1]:.2f} of the pool).", "",
             "## Verdicts", ""]
    lines += [f"- {c.verdict()}" for c in a.comparisons] or ["- (no random arm to compare with)"]
    if a.ceiling is not None:
        lines += ["", f"Full-pool ceiling (every pool case labelled): **{a.ceiling:.4f}**; 95 % of it: "
                  f"{0.95 * a.ceiling:.4f}."]
    lines += ["", "## Per arm", "", "| arm | AUBC mean (sd) | labels to 95 % of full pool | Spearman(score, error) "
              "mean (sd, n) |", "|---|---|---|---|"]
    for arm in a.arms:
        values = list(a.aubc[arm].values())
        sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
        reached = a.to_95.get(arm)
        rho = a.spearman.get(arm)
        rho_text = f"{rho[0]:+.3f} ({rho[1]:.3f}, {rho[2]})" if rho else "-"
        lines.append(f"| {arm} | {np.mean(values):.4f} ({sd:.4f}) | "
                     f"{f'{reached:.0f}' if reached is not None else 'not reached'} | {rho_text} |")
    if a.comparisons:
        lines += ["", "## Paired AUBC difference to random, per seed", "",
                  "| arm | " + " | ".join(f"seed {s[0]}/{s[1]}" for s in next(iter(a.aubc.values()))) + " |",
                  "|---|" + "---|" * seeds]
        lines += [f"| {c.arm} | " + " | ".join(f"{d:+.4f}" for d in c.per_seed) + " |" for c in a.comparisons]
    lines += ["", "## Penalty matrix", "",
              "Fraction of budget points where the row arm beats the column arm (paired t-test over seeds, 5 %).",
              "", "| | " + " | ".join(a.arms) + " |", "|---|" + "---|" * len(a.arms)]
    lines += [f"| {arm} | " + " | ".join(f"{v:.2f}" for v in a.penalty[i]) + " |" for i, arm in enumerate(a.arms)]
    lines += ["", "## Mean test Dice per cycle (sd over seeds, ddof = 1)", "",
              "| cycle | labelled | " + " | ".join(a.arms) + " |", "|---|---|" + "---|" * len(a.arms)]
    for k, cycle in enumerate(a.cycles):
        cells = []
        for arm in a.arms:
            values = [curve[k] for curve in a.curves[arm].values()]
            sd = np.std(values, ddof=1) if len(values) > 1 else 0.0
            cells.append(f"{np.mean(values):.4f} ({sd:.4f})")
        lines.append(f"| {cycle} | {a.labelled[k]:.0f} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _plot(rows: list[dict[str, Any]], classes: list[str], a: Analysis, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = ["mean_dice", *classes]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.8), squeeze=False)
    for ax, column in zip(axes.flat, panels, strict=True):
        for arm in a.arms:
            values = np.array([[_value(rows, arm, s, c, column) for c in a.cycles] for s in a.curves[arm]])
            mean = values.mean(axis=0)
            sd = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
            ax.plot(a.fractions, mean, marker="o", markersize=3, label=arm)
            ax.fill_between(a.fractions, mean - sd, mean + sd, alpha=0.15)
        full = [r[column] for r in rows if r["strategy"] == FULL_POOL]
        if full:
            ax.axhline(float(np.mean(full)), color="black", linestyle="--", linewidth=1, label="full pool")
        ax.set_title("mean foreground test Dice" if column == "mean_dice" else column.removeprefix("dice_"))
        ax.set_xlabel("labelled fraction of the pool")
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _value(rows: list[dict[str, Any]], arm: str, seed: Seed, cycle: int, column: str) -> float:
    for row in rows:
        if row["strategy"] == arm and _seed(row) == seed and int(row["cycle"]) == cycle:
            return float(row[column])
    return float("nan")
