"""Does a faster way of scoring rank cases like the float32 sliding windows do? Spearman's rho over real CT.

    .venv/bin/python -m benchmarks.whole_volume_agreement --train 4 --score 8 --steps 150
    .venv/bin/python -m benchmarks.whole_volume_agreement --train 4 --score 8 --steps 150 --compare precision

Trains the default network with decoder-only dropout on the first TRAIN openkbp-ct5 cases (128^3 centre crops,
STEPS optimiser steps: a short run, not a converged model), then scores the next SCORE cases with
``mc_dropout_variance`` (T = 5) twice: with float32 sliding windows, and with ``score_whole_volume_voxels`` =
128^3 (``--compare whole-volume``) or with ``score_precision="auto"`` (``--compare precision``: bfloat16 where the
CPU has AVX512-BF16 or AMX). Prints both scores per case, Spearman's rho between the two orders, and the CPU time
of each; not a test.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch
from scipy.stats import spearmanr

from worker.ml.network import build_unet
from worker.ml.params import TrainParams
from worker.ml.scoring import score_case
from worker.ml.train import train_model
from worker.ml.transforms import normalise

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "openkbp-ct5"
SIZE = 128


def _crop(array: np.ndarray) -> np.ndarray:
    return array[tuple(slice(max(0, (n - SIZE) // 2), max(0, (n - SIZE) // 2) + SIZE) for n in array.shape)]


def load(first: int, n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    entries = json.loads((DATA / "dataset.json").read_text())["training"][first: first + n]
    read = lambda p: sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / p)))  # noqa: E731
    return ([_crop(read(e["image"])).astype(np.float32) for e in entries],
            [_crop(read(e["label"])).astype(np.int64) for e in entries])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=4)
    parser.add_argument("--score", type=int, default=8)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--compare", choices=("whole-volume", "precision"), default="whole-volume")
    args = parser.parse_args()
    images, labels = load(0, args.train)
    params = TrainParams(steps=args.steps, dropout_position="decoder", val_every=0, augment=False,
                         score_precision="float32")
    result = train_model(images, labels, 6, "CT", params, device="cpu")
    print(f"trained {args.steps} steps on {args.train} cases in {result.seconds:.0f} s; last loss "
          f"{result.epoch_losses[-1]:.3f}")
    model = build_unet(6, params)
    model.load_state_dict(result.state_dict)
    other = {"whole-volume": ("whole volume", replace(params, score_whole_volume_voxels=SIZE**3)),
             "precision": ("auto precision", replace(params, score_precision="auto"))}[args.compare]
    variants = (("float32 windows", params), other)
    rows = []
    cpu = {name: 0.0 for name, _ in variants}
    for i, image in enumerate(load(args.train, args.score)[0]):
        norm = normalise(image, "CT")
        scores = []
        for name, p in variants:
            start = time.process_time()
            scores.append(score_case(model, norm, "mc_dropout_variance", p, case_key=i, device="cpu").score)
            cpu[name] += time.process_time() - start
        rows.append(scores)
        print(f"case {args.train + i}: {variants[0][0]} {scores[0]:12.4f}   {other[0]} {scores[1]:12.4f}", flush=True)
    rho = spearmanr([r[0] for r in rows], [r[1] for r in rows]).statistic
    first, second = (cpu[name] for name, _ in variants)
    print(f"Spearman rho of the two orders over {len(rows)} cases: {rho:.3f}; CPU time {variants[0][0]} {first:.0f} s, "
          f"{other[0]} {second:.0f} s ({first / second:.2f}x); torch threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
