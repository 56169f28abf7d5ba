"""`nextcase simulate` end to end: an oracle campaign through a real embedded NextCase service."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from app.phantom import LABELS, make_phantom, write_dataset
from app.simulation import Protocol, draw_splits, load_cases
from tests.test_cycles_e2e import hippocampus_subset

TINY = {"patch_size": [32, 32, 32], "channels": [4, 8, 16], "strides": [2, 2], "samples_per_volume": 1,
        "learning_rate": 0.01}


def test_simulate_tiny_protocol_on_hippocampus(tmp_path: Path) -> None:
    data = hippocampus_subset(tmp_path, 12, 12)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "app.cli", "simulate", str(data), "--out", str(out), "--initial", "3",
               "--per-cycle", "2", "--cycles", "2", "--val", "2", "--test", "2", "--seeds", "1",
               "--strategies", "mc_dropout_variance,random", "--epochs", "2", "--mc-passes", "2",
               "--params", json.dumps(TINY)]
    # Interrupt the first campaign after its first finished cycle, then rerun: it resumes from there.
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and first.poll() is None and not _some_cycle_saved(out):
        time.sleep(0.5)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    interrupted = json.loads((out / "runs.json").read_text())["runs"][0]
    assert interrupted["next_cycle"] >= 1 and not interrupted["done"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    resumed = json.loads((out / "runs.json").read_text())["runs"][0]
    assert resumed["project_id"] == interrupted["project_id"]  # the same campaign went on
    assert resumed["rows"][: len(interrupted["rows"])] == interrupted["rows"]

    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["strategy", "split_seed", "train_seed", "cycle", "labelled", "labelled_fraction",
                             "dice_anterior", "dice_posterior", "mean_dice", "spearman", "wall_time_s"]
    for strategy in ("mc_dropout_variance", "random"):
        mine = [r for r in rows if r["strategy"] == strategy]
        assert [int(r["labelled"]) for r in mine] == [3, 5, 7]  # grows by --per-cycle
        assert [float(r["labelled_fraction"]) for r in mine] == [0.375, 0.625, 0.875]  # of an 8-case pool
        assert all(0.0 <= float(r["mean_dice"]) <= 1.0 for r in mine)
        assert [int(r["cycle"]) for r in mine] == [0, 1, 2]  # resumed without repeating a cycle
    assert [int(r["labelled"]) for r in rows if r["strategy"] == "full_pool"] == [8]

    runs = {r["strategy"]: r for r in json.loads((out / "runs.json").read_text())["runs"]}
    assert runs["mc_dropout_variance"]["initial"] == runs["random"]["initial"]  # shared initial set
    for run in (runs["mc_dropout_variance"], runs["random"]):
        claimed = [name for batch in run["claimed"] for name in batch]
        assert len(claimed) == len(set(claimed)) == 4 and not set(claimed) & set(run["initial"])
    assert (out / "dice_vs_labelled.png").stat().st_size > 10_000
    summary = (out / "summary.md").read_text()
    assert "Full-pool ceiling" in summary and "mc_dropout_variance" in summary and "AUBC difference" in summary
    with (out / "per_case.csv").open() as fh:
        per_case = list(csv.DictReader(fh))
    assert len(per_case) == 2 * 3 * 2 + 2  # 2 test cases x 3 cycles x 2 arms + the full pool
    assert {r["case"] for r in per_case} <= set(runs["random"]["ids"])


def _some_cycle_saved(out: Path) -> bool:
    try:
        return any(r["next_cycle"] >= 1 for r in json.loads((out / "runs.json").read_text())["runs"])
    except (OSError, ValueError):
        return False


def test_direct_engine_reports_paired_statistics(tmp_path: Path) -> None:
    data = hippocampus_subset(tmp_path, 14, 14)
    out = tmp_path / "direct"
    params = {**TINY, "steps": 4, "val_every": 2, "mc_passes": 2, "query_size": 2}
    command = [sys.executable, "-m", "app.cli", "simulate", str(data), "--engine", "direct", "--out", str(out),
               "--initial", "3", "--per-cycle", "2", "--cycles", "1", "--val", "2", "--test", "3", "--seeds", "2",
               "--train-seeds", "1", "--strategies", "random,stratified_power,coreset", "--params",
               json.dumps(params), "--warm-steps", "2"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {(r["strategy"], r["split_seed"]) for r in rows} == {
        (a, s) for a in ("random", "stratified_power", "coreset", "full_pool") for s in ("0", "1")}
    initial = [r for r in rows if r["cycle"] == "0" and r["strategy"] != "full_pool"]
    assert len({(r["split_seed"], r["mean_dice"]) for r in initial}) == 2  # cycle 0 identical across arms
    summary = (out / "summary.md").read_text()
    for arm in ("stratified_power", "coreset"):
        assert f"**{arm} " in summary and "95 % CI" in summary
    assert (out / "scores.csv").stat().st_size > 0 and (out / "dice_vs_labelled.png").exists()

    before = (out / "results.csv").read_text()
    again = subprocess.run(command, capture_output=True, text=True, timeout=300)  # resume: nothing left to do
    assert again.returncode == 0 and (out / "results.csv").read_text() == before


def test_splits_depend_only_on_the_seed() -> None:
    names = [f"case{i:02d}" for i in range(20)]
    protocol = Protocol(initial=3, val=2, test=4)
    a, b = draw_splits(names, protocol, seed=7), draw_splits(list(reversed(names)), protocol, seed=7)
    assert a == draw_splits(names, protocol, seed=7) and a != draw_splits(names, protocol, seed=8)
    assert len(a.test) == 4 and len(a.val) == 2 and len(a.pool) == 14
    assert not set(a.test) & set(a.pool) and not set(a.val) & set(a.pool)
    assert sorted(a.test + a.val + a.pool) == sorted(b.test + b.val + b.pool) == names


def test_resample_makes_a_coarser_grid(tmp_path: Path) -> None:
    write_dataset(tmp_path / "ph", n=2, seed=1)
    full, coarse = load_cases(tmp_path / "ph", 1.0), load_cases(tmp_path / "ph", 2.0)
    (tmp_path / "a.nii.gz").write_bytes(full[0].image)
    (tmp_path / "b.nii.gz").write_bytes(coarse[0].label)
    big, small = sitk.ReadImage(str(tmp_path / "a.nii.gz")), sitk.ReadImage(str(tmp_path / "b.nii.gz"))
    assert small.GetSize() == tuple(n // 2 for n in big.GetSize())
    assert small.GetSpacing() == tuple(2 * s for s in big.GetSpacing())
    assert set(np.unique(sitk.GetArrayFromImage(small))) <= set(range(len(LABELS)))  # nearest: no new values


def test_phantoms_are_deterministic_and_vary_between_patients() -> None:
    a, b, c = make_phantom(1), make_phantom(1), make_phantom(2)
    np.testing.assert_array_equal(a.image, b.image)
    assert not np.array_equal(a.label, c.label)
    for phantom in (a, c):
        volumes = [int((phantom.label == i).sum()) for i in range(len(LABELS))]
        assert all(v > 0 for v in volumes)  # every organ present
        lungs = phantom.image[(phantom.label == 1) | (phantom.label == 2)]
        assert -950 < lungs.mean() < -750  # air-filled lung
        assert phantom.image[phantom.label == 3].mean() > 100  # contrast-enhanced heart
