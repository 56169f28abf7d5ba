"""Measure the unit costs of the paper's full-size protocol and project its GPU time (issue F).

    python -m benchmarks.paper_protocol_cost --device cuda [--steps 40] [--cases 2]

The paper's protocol on openkbp-ct5: native 128^3 grid, the default network (MONAI UNet 16-32-64-128,
96^3 patches, p = 0.5), 11 initial cases + 5 per cycle x 4 cycles (5 trainings per campaign), T = 5
MC passes over every unlabelled pool case after each of the first 4 trainings. This times one training
step and one scored 128^3 case on synthetic CT-like volumes of that size (no data needed), then prints
the projected wall time of the protocol for a given number of arms, seeds and steps per training, and
the largest protocol that fits a time budget. Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from worker.ml.network import build_unet
from worker.ml.params import TrainParams
from worker.ml.scoring import score_case
from worker.ml.train import train_model
from worker.ml.transforms import normalise

POOL = 99 - 22 - 6  # openkbp-ct5 minus test and validation cases
INITIAL, PER_CYCLE, CYCLES = 11, 5, 4


def _case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.normal(0, 40, (128, 128, 128)).astype(np.float32) - 1000
    label = np.zeros((128, 128, 128), np.uint8)
    for c in range(1, 6):
        lo = rng.integers(20, 90, 3)
        box = tuple(slice(int(a), int(a) + 16) for a in lo)
        label[box], image[box] = c, 40.0 * c
    return image, label


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(device: str, steps: int, cases: int) -> tuple[float, float]:
    """(seconds per training step, seconds per scored 128^3 case at T = 5)."""
    images, labels = zip(*[_case(i) for i in range(cases)], strict=True)
    warm = TrainParams(steps=3, val_every=0)
    train_model(list(images), list(labels), 6, "CT", warm, device=device)  # cuDNN autotuning, allocator
    params = TrainParams(steps=steps, val_every=0)
    _sync(device)
    start = time.perf_counter()
    result = train_model(list(images), list(labels), 6, "CT", params, device=device)
    _sync(device)
    per_step = (time.perf_counter() - start) / steps
    model = build_unet(6, params)
    model.load_state_dict(result.state_dict)
    image = normalise(images[0], "CT")
    score_case(model, image, "mc_dropout_variance", params, case_key=0, device=device)
    _sync(device)
    start = time.perf_counter()
    for key in range(cases):
        score_case(model, image, "mc_dropout_variance", params, case_key=key, device=device)
    _sync(device)
    return per_step, (time.perf_counter() - start) / cases


def projected_seconds(per_step: float, per_case: float, steps: int, arms: int, seeds: int) -> float:
    """Trainings x steps + scoring of the shrinking pool after every training but the last; plus one
    full-pool training per seed."""
    scored = sum(POOL - INITIAL - PER_CYCLE * c for c in range(CYCLES))
    campaign = (CYCLES + 1) * steps * per_step + scored * per_case
    return arms * seeds * campaign + seeds * steps * per_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=40, help="timed training steps")
    parser.add_argument("--cases", type=int, default=2, help="timed scored cases")
    parser.add_argument("--budget-s", type=float, default=600.0)
    args = parser.parse_args()
    per_step, per_case = measure(args.device, args.steps, args.cases)
    print(f"device {args.device}: {per_step * 1000:.1f} ms per training step (batch 2 of 96^3), "
          f"{per_case:.2f} s per scored 128^3 case (T = 5, sliding window)")
    for steps in (500, 1000, 2000):
        for arms, seeds in ((2, 1), (3, 3), (3, 5)):
            total = projected_seconds(per_step, per_case, steps, arms, seeds)
            print(f"  {arms} arms x {seeds} seeds, {steps} steps per training: {total / 60:.1f} min serial")
    fits = [(a, s, st) for st in (2000, 1000, 500) for s in (5, 3, 2, 1) for a in (3, 2)
            if projected_seconds(per_step, per_case, st, a, s) <= args.budget_s]
    if fits:
        arms, seeds, steps = fits[0]
        print(f"largest protocol within {args.budget_s:.0f} s (one process): {arms} arms x {seeds} seeds, "
              f"{steps} steps per training")
    else:
        print(f"no protocol of at least 2 arms x 1 seed x 500 steps fits {args.budget_s:.0f} s on this device")


if __name__ == "__main__":
    main()
