"""Active selection against random at equal label budget, with the ML code the cycle phases run.

``nextcase simulate`` replays a campaign through the REST service (import, cycles, queue claims,
uploads); this module loops the same functions the worker's phases call (:func:`train_model` with
checkpoint selection on validation Dice, :func:`evaluate`, :func:`score_case`, :func:`rank_cases`) in
one process per campaign, without a database, so that many campaigns fit on one GPU or a CPU in the
background. It imports nothing from ``app`` and needs only torch, MONAI and numpy (plus SimpleITK to read
an MSD folder, or an ``.npz`` written by :func:`save_npz`).

Run: ``python -m worker.experiment DATA --out DIR --arms random,mc_dropout_variance ...`` (``--help``).
Every finished cycle is saved, so a rerun of the same command resumes each campaign from its last
finished cycle. Outputs: ``results.csv`` (one row per campaign and cycle), ``per_case.csv`` (test Dice of
every test case at every cycle) and ``scores.csv`` (every scored case's score and true error).
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import multiprocessing
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("nextcase.experiment")
FULL_POOL = "full_pool"


@dataclass
class Dataset:
    names: list[str]
    images: list[np.ndarray]
    labels: list[np.ndarray]
    modality: str
    label_names: list[str]


def load_msd(root: Path) -> Dataset:
    """Every labelled case of a Medical Segmentation Decathlon folder, as (D, H, W) arrays."""
    import SimpleITK as sitk

    meta = json.loads((root / "dataset.json").read_text())
    labels = {int(k): str(v) for k, v in meta["labels"].items()}
    modality = "CT" if str(meta.get("modality", {}).get("0", "")).upper() == "CT" else "MR"
    names, images, masks = [], [], []
    for entry in meta["training"]:
        if not entry.get("label"):
            continue
        names.append(Path(entry["image"]).name.split(".")[0])
        images.append(sitk.GetArrayFromImage(sitk.ReadImage(str(root / entry["image"]))))  # native dtype
        masks.append(sitk.GetArrayFromImage(sitk.ReadImage(str(root / entry["label"]))).astype(np.uint8))
    return Dataset(names, images, masks, modality, [labels[i] for i in range(len(labels))])


def save_npz(dataset: Dataset, path: Path) -> None:
    arrays = {f"image_{i}": a for i, a in enumerate(dataset.images)}
    arrays.update({f"label_{i}": a for i, a in enumerate(dataset.labels)})
    meta = {"names": dataset.names, "modality": dataset.modality, "label_names": dataset.label_names}
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez_compressed(path, **arrays)  # type: ignore[arg-type]


def load_dataset(path: Path) -> Dataset:
    """An MSD folder or an ``.npz`` written by :func:`save_npz`."""
    if path.is_dir():
        return load_msd(path)
    with np.load(path) as data:
        meta = json.loads(str(data["meta"]))
        n = len(meta["names"])
        return Dataset(meta["names"], [data[f"image_{i}"] for i in range(n)], [data[f"label_{i}"] for i in range(n)],
                       meta["modality"], meta["label_names"])


@dataclass(frozen=True)
class Splits:
    test: list[str]
    val: list[str]
    pool: list[str]  # in the split seed's order; the first `initial` are the initial labelled set


def draw_splits(names: list[str], test: int, val: int, initial: int, seed: int) -> Splits:
    """Splits and initial set from the seed alone (sorted names, one permutation): identical across arms."""
    needed = test + val + initial
    if len(names) < needed + 1:
        raise ValueError(f"the dataset has {len(names)} labelled cases; the protocol needs more than {needed}")
    ordered = sorted(names)
    order = [ordered[i] for i in np.random.default_rng(seed).permutation(len(ordered))]
    return Splits(order[:test], order[test: test + val], order[test + val:])


@dataclass
class Protocol:
    """One experiment: arms x split seeds x training seeds, each a campaign of cycles.

    Args:
        initial: labelled pool cases before the first cycle.
        per_cycle: cases the oracle labels after each cycle (the top of the arm's ranking).
        cycles: acquisition rounds; a campaign trains ``cycles + 1`` models.
        test: held-out test cases (never selected, never trained on).
        val: validation cases (checkpoint selection).
        arms: strategy names; ``full_pool`` trains once on the whole pool (the ceiling).
        split_seeds: seeds of the splits and initial set.
        train_seeds: seeds of training and MC masks; every split seed runs with every training seed.
        params: TrainParams overrides for every model.
        warm_steps: optimiser steps when warm-starting from the previous cycle's model (None: cold
            start every cycle with ``params.steps``).
        full_pool: also train once on the whole pool per seed (the ceiling).
    """

    initial: int = 10
    per_cycle: int = 10
    cycles: int = 9
    test: int = 50
    val: int = 20
    arms: list[str] = field(default_factory=lambda: ["random", "mc_dropout_variance"])
    split_seeds: list[int] = field(default_factory=lambda: [0])
    train_seeds: list[int] = field(default_factory=lambda: [0])
    params: dict[str, Any] = field(default_factory=dict)
    warm_steps: int | None = None
    full_pool: bool = True

    def campaigns(self) -> list[tuple[str, int, int]]:
        """(arm, split seed, train seed), seeds outermost so that paired results finish together."""
        arms = [*self.arms, *([FULL_POOL] if self.full_pool else [])]
        return [(arm, s, t) for s in self.split_seeds for t in self.train_seeds for arm in arms]


def _params(protocol: Protocol, train_seed: int, cycle: int, warm: bool) -> Any:
    from worker.ml.params import TrainParams

    overrides: dict[str, Any] = {**protocol.params, "seed": train_seed * 1000 + cycle}
    if warm and protocol.warm_steps is not None:
        overrides["steps"] = protocol.warm_steps
    return TrainParams.from_dict(overrides)


class Campaign:
    """One (arm, split seed, train seed) campaign, resumable from its last finished cycle."""

    def __init__(self, data: Dataset, protocol: Protocol, arm: str, split_seed: int, train_seed: int, out: Path,
                 device: str) -> None:
        self.data, self.protocol, self.arm, self.device = data, protocol, arm, device
        self.split_seed, self.train_seed = split_seed, train_seed
        self.index = {name: i for i, name in enumerate(data.names)}
        self.splits = draw_splits(data.names, protocol.test, protocol.val, protocol.initial, split_seed)
        self.dir = out / "campaigns" / f"{arm}-split{split_seed}-train{train_seed}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_path = self.dir / "state.json"

    def _load_state(self) -> dict[str, Any]:
        if self.state_path.exists():
            return dict(json.loads(self.state_path.read_text()))
        first = list(self.splits.pool) if self.arm == FULL_POOL else self.splits.pool[: self.protocol.initial]
        return {"next_cycle": 0, "labelled": first, "rows": [], "per_case": [], "scores": []}

    def run(self, deadline: float) -> dict[str, Any]:
        state = self._load_state()
        last = 0 if self.arm == FULL_POOL else self.protocol.cycles
        while state["next_cycle"] <= last and time.time() < deadline:
            self._cycle(state, state["next_cycle"], last)
            state["next_cycle"] += 1
            tmp = self.state_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(state))
            tmp.replace(self.state_path)  # a cycle counts once its state is on disk
            (self.dir / f"model-{state['next_cycle'] - 2}.pt").unlink(missing_ok=True)
        return state

    def _arrays(self, names: list[str]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        idx = [self.index[n] for n in names]
        return [self.data.images[i] for i in idx], [self.data.labels[i] for i in idx]

    def _cycle(self, state: dict[str, Any], cycle: int, last: int) -> None:
        import torch

        from worker.ml.network import build_unet
        from worker.ml.train import train_model

        started = time.perf_counter()
        labelled = len(state["labelled"])
        previous = self.dir / f"model-{cycle - 1}.pt"  # per cycle, so a rerun of cycle c never starts from c
        warm = cycle > 0 and self.protocol.warm_steps is not None and previous.exists()
        if cycle > 0 and self.protocol.warm_steps is not None and not warm:
            # Resumed where the previous weights are missing (another machine): a cold start breaks the
            # pairing with arms that warm-started, so it is logged and recorded in the row.
            log.warning("%s: no weights to warm-start cycle %d from; training from scratch", self.dir.name, cycle)
        params = _params(self.protocol, self.train_seed, cycle, warm)
        images, labels = self._arrays(state["labelled"])
        val_images, val_labels = self._arrays(self.splits.val)
        init = torch.load(previous, weights_only=True) if warm else None
        num_classes = len(self.data.label_names)
        result = train_model(images, labels, num_classes, self.data.modality, params, init_state=init,
                             device=self.device, val_images=val_images, val_labels=val_labels)
        torch.save(result.state_dict, self.dir / f"model-{cycle}.pt")
        model = build_unet(num_classes, params)
        model.load_state_dict(result.state_dict)
        test = self._test(model, params, cycle, state)
        spearman = None
        if cycle < last:
            spearman = self._select(model, params, cycle, state)
        state["rows"].append({
            "strategy": self.arm, "split_seed": self.split_seed, "train_seed": self.train_seed, "cycle": cycle,
            "labelled": labelled, "labelled_fraction": round(labelled / len(self.splits.pool), 4), **test,
            "spearman": spearman, "warm_start": warm, "train_steps": result.steps,
            "best_step": result.best_step, "wall_time_s": round(time.perf_counter() - started, 1)})
        row = state["rows"][-1]
        log.info("%s split %d train %d cycle %d: %d labelled, test Dice %.3f, %.0f s", self.arm, self.split_seed,
                 self.train_seed, cycle, row["labelled"], row["mean_dice"], row["wall_time_s"])

    def _test(self, model: Any, params: Any, cycle: int, state: dict[str, Any]) -> dict[str, Any]:
        from worker.ml.inference import evaluate

        images, labels = self._arrays(self.splits.test)
        result = evaluate(model, images, labels, self.data.modality, params, self.device)
        for name, case in zip(self.splits.test, result["per_case"], strict=True):
            state["per_case"].append({
                "strategy": self.arm, "split_seed": self.split_seed, "train_seed": self.train_seed, "cycle": cycle,
                "labelled": len(state["labelled"]), "case": name, "mean_dice": case["mean_dice"],
                **{f"dice_{n}": d for n, d in zip(self.data.label_names[1:], case["per_class"][1:], strict=True)}})
        names = self.data.label_names[1:]
        return {**{f"dice_{n}": d for n, d in zip(names, result["per_class"][1:], strict=True)},
                "mean_dice": result["mean_dice"]}

    def _select(self, model: Any, params: Any, cycle: int, state: dict[str, Any]) -> float | None:
        """Score the unlabelled pool, record each case's true error, label the top of the ranking."""
        from worker.ml.inference import dice_per_class, mean_foreground_dice
        from worker.ml.scoring import rank_cases, score_case
        from worker.ml.transforms import normalise

        labelled = set(state["labelled"])
        unlabelled = [n for n in self.splits.pool if n not in labelled]
        strategy = self.arm
        results, errors = [], []
        for name in unlabelled:
            i = self.index[name]
            scored = score_case(model, normalise(self.data.images[i], self.data.modality), strategy, params,
                                case_key=i, device=self.device)
            assert scored.prediction is not None
            dice = mean_foreground_dice(dice_per_class(scored.prediction, self.data.labels[i],
                                                       len(self.data.label_names)))
            scored.voxel_map = None  # not needed here; frees memory
            results.append((i, scored))
            errors.append(1.0 - dice)
            state["scores"].append({"strategy": self.arm, "split_seed": self.split_seed,
                                    "train_seed": self.train_seed, "cycle": cycle, "case": name,
                                    "score": scored.score, "error": 1.0 - dice})
        order = rank_cases(strategy, results, params, round_index=cycle)
        picked = [self.data.names[i] for i in order[: self.protocol.per_cycle]]
        state["labelled"] = [*state["labelled"], *picked]
        if strategy == "random":
            return None
        return spearman([r.score for _, r in results], errors)


def spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman rank correlation (average ranks for ties); None when either side is constant."""
    if len(x) < 3:
        return None
    rx, ry = _ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float))
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


# --- running many campaigns ------------------------------------------------------------------------


def _run_one(job: tuple[Path, dict[str, Any], str, int, int, str, str, float, int, int | None]) -> str:
    data_path, protocol_dict, arm, split_seed, train_seed, out, device, deadline, threads, limit = job
    import torch

    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        torch.backends.cudnn.benchmark = True  # fixed patch and volume shapes: let cuDNN pick its kernels
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    data = _limited(load_dataset(data_path), limit)
    protocol = Protocol(**protocol_dict)
    Campaign(data, protocol, arm, split_seed, train_seed, Path(out), device).run(deadline)
    return f"{arm}-split{split_seed}-train{train_seed}"


def _limited(data: Dataset, limit: int | None) -> Dataset:
    if limit is None:
        return data
    return Dataset(data.names[:limit], data.images[:limit], data.labels[:limit], data.modality, data.label_names)


def run_experiment(data_path: Path, protocol: Protocol, out: Path, *, workers: int = 1, device: str = "cpu",
                   deadline_s: float = math.inf, threads: int = 1, limit: int | None = None) -> None:
    """Run (or resume) every campaign, ``workers`` at a time, then write the CSV files."""
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "protocol.json"
    if meta_path.exists() and json.loads(meta_path.read_text()) != asdict(protocol):
        raise ValueError(f"{out} holds results of another protocol; choose another --out")
    meta_path.write_text(json.dumps(asdict(protocol), indent=1))
    deadline = time.time() + deadline_s
    jobs = [(data_path, asdict(protocol), arm, s, t, str(out), device, deadline, threads, limit)
            for arm, s, t in protocol.campaigns()]
    if workers <= 1:
        for job in jobs:
            _run_one(job)
    else:
        with multiprocessing.get_context("spawn").Pool(workers, maxtasksperchild=1) as pool:
            for name in pool.imap_unordered(_run_one, jobs):
                log.info("campaign %s finished or paused", name)
    collect(out)


def collect(out: Path) -> None:
    """Gather every campaign's state into results.csv, per_case.csv and scores.csv."""
    states = [json.loads(p.read_text()) for p in sorted((out / "campaigns").glob("*/state.json"))]
    for name, key in (("results.csv", "rows"), ("per_case.csv", "per_case"), ("scores.csv", "scores")):
        rows = [row for state in states for row in state[key]]
        if rows:
            _write_csv(out / name, rows)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m worker.experiment", description=__doc__.split("\n\n")[0])
    parser.add_argument("data", type=Path, help="an MSD folder or an .npz written by --save-npz")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--arms", default="random,mc_dropout_variance")
    parser.add_argument("--split-seeds", default="0", help="comma-separated")
    parser.add_argument("--train-seeds", default="0", help="comma-separated")
    parser.add_argument("--initial", type=int, default=10)
    parser.add_argument("--per-cycle", type=int, default=10)
    parser.add_argument("--cycles", type=int, default=9)
    parser.add_argument("--test", type=int, default=50)
    parser.add_argument("--val", type=int, default=20)
    parser.add_argument("--params", default="{}", help="TrainParams overrides as JSON")
    parser.add_argument("--warm-steps", type=int, default=None)
    parser.add_argument("--no-full-pool", action="store_true", help="skip the full-pool ceiling")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per worker")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--deadline-s", type=float, default=math.inf, help="pause campaigns after this long")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N cases (smoke runs)")
    parser.add_argument("--save-npz", type=Path, default=None, help="only convert DATA to this .npz")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.save_npz:
        save_npz(load_dataset(args.data), args.save_npz)
        return
    protocol = Protocol(initial=args.initial, per_cycle=args.per_cycle, cycles=args.cycles, test=args.test,
                        val=args.val, arms=[a for a in args.arms.split(",") if a],
                        split_seeds=[int(s) for s in args.split_seeds.split(",")],
                        train_seeds=[int(s) for s in args.train_seeds.split(",")],
                        params=json.loads(args.params), warm_steps=args.warm_steps,
                        full_pool=not args.no_full_pool)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    run_experiment(args.data, protocol, args.out, workers=args.workers, device=args.device,
                   deadline_s=args.deadline_s, threads=args.threads, limit=args.limit)


if __name__ == "__main__":
    main()
