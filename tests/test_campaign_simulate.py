"""`nextcase simulate` records the oracle's effort like an annotator's and writes the live control-arm estimate."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from app.live_estimate import COLUMNS, rows_for
from app.simulation import RunResult
from tests.test_cycles_e2e import hippocampus_subset
from tests.test_simulate import TINY


def test_live_rows_pair_each_cycles_test_dice_with_its_models_control_estimate() -> None:
    run = RunResult("mc_dropout_variance", 0, 0, rows=[
        {"strategy": "mc_dropout_variance", "split_seed": 0, "train_seed": 0, "cycle": 0, "labelled": 3},
        {"strategy": "mc_dropout_variance", "split_seed": 0, "train_seed": 0, "cycle": 1, "labelled": 5}],
        initial=[], claimed=[], model_versions=[11, 12],
        per_case=[{"cycle": 0, "mean_dice": 0.6}, {"cycle": 0, "mean_dice": 0.8}, {"cycle": 1, "mean_dice": 0.9}])
    estimate = {"n": 2, "mean": 0.7, "ci_low": 0.1, "ci_high": 1.0}
    report = {"arms": [{"model_version_id": 11, "arm": "control", "mean_foreground_dice": estimate},
                       {"model_version_id": 11, "arm": "ranked", "mean_foreground_dice": {"n": 3, "mean": 0.5}}],
              "ranked_vs_control": [{"model_version_id": 11,
                                     "ranked_minus_control": {"mean": -0.2, "ci_low": -0.9, "ci_high": 0.5}}]}
    first, last = rows_for(run, report)
    # test: per-case 0.6 and 0.8 -> 0.7 +- 12.706 * 0.14142 / sqrt(2) = 0.7 +- 1.2706 (not cut: a test figure)
    assert (first["test_cases"], first["test_dice"]) == (2, pytest.approx(0.7))
    assert (first["test_ci_low"], first["test_ci_high"]) == (pytest.approx(-0.5706), pytest.approx(1.9706))
    assert (first["control_n"], first["control_dice"], first["control_ci_low"]) == (2, 0.7, 0.1)
    assert (first["ranked_n"], first["ranked_dice"], first["ranked_minus_control"]) == (3, 0.5, -0.2)
    # the last model labelled nothing yet: no control estimate
    assert (last["model_version_id"], last["test_dice"], last["control_n"], last["control_dice"]) == (12, 0.9, 0, None)
    assert list(first) == COLUMNS


def test_simulate_writes_the_live_estimate_from_control_claims(tmp_path: Path) -> None:
    data = hippocampus_subset(tmp_path, 10, 10)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "app.cli", "simulate", str(data), "--out", str(out), "--initial", "2",
               "--per-cycle", "3", "--cycles", "1", "--val", "1", "--test", "2", "--seeds", "1",
               "--strategies", "mc_dropout_variance", "--no-full-pool", "--epochs", "2", "--mc-passes", "2",
               "--control-fraction", "1.0", "--params", json.dumps(TINY)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with (out / "live.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["cycle"]) for r in rows] == [0, 1]
    first = rows[0]
    # Every oracle claim after cycle 0 was a control claim (fraction 1): 3 cases, none ranked.
    assert (int(first["control_n"]), int(first["ranked_n"]), int(first["test_cases"])) == (3, 0, 2)
    assert 0.0 <= float(first["control_dice"]) <= 1.0
    assert int(rows[1]["control_n"]) == 0  # nothing labelled after the last cycle
    with (out / "per_case.csv").open() as fh:
        tests = [float(r["mean_dice"]) for r in csv.DictReader(fh) if r["cycle"] == "0"]
    assert float(first["test_dice"]) == pytest.approx(sum(tests) / len(tests))
    assert (out / "live_estimate.png").stat().st_size > 10_000
