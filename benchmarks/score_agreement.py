"""Does the score phase's fast path keep the ranking on this device? Spearman's rho over a fixed synthetic set.

    .venv/bin/python -m benchmarks.score_agreement                 # the CPU
    python3 -m benchmarks.score_agreement --device cuda            # a GPU (benchmarks/gpu_scoring.sh)

Trains a small UNet with decoder-only dropout on synthetic cubes (STEPS steps, on the device), then scores a fixed
set of CASES synthetic cases with ``mc_dropout_variance`` (T = PASSES) twice: in float32 with one MC pass per
network call (the reference), and with the device's defaults (``score_precision`` and ``score_pass_batch`` auto:
bfloat16 where the device has it natively; on CUDA all T passes in one call). Prints both scores per case,
Spearman's rho between the two orders and the time each took; not a test (tests/ml/test_precision.py checks the
same computation on the CPU, bfloat16 forced).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

from tests.ml.synthetic import cube_case
from worker.ml.inference import score_dtype
from worker.ml.network import build_unet
from worker.ml.params import TrainParams
from worker.ml.scoring import pass_group_size, score_case
from worker.ml.train import train_model
from worker.ml.transforms import normalise


def spearman(a: list[float], b: list[float]) -> float:
    ra, rb = (np.argsort(np.argsort(np.asarray(x))).astype(np.float64) for x in (a, b))
    return float(np.corrcoef(ra, rb)[0, 1])


def timed_scores(model: torch.nn.Module, params: TrainParams, images: list[np.ndarray], device: str) -> tuple[
        list[float], float]:
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    scores = [score_case(model, image, "mc_dropout_variance", params, case_key=i, device=device,
                         with_prediction=False).score for i, image in enumerate(images)]
    if cuda:
        torch.cuda.synchronize()
    return scores, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--cases", type=int, default=16)
    parser.add_argument("--passes", type=int, default=5)
    args = parser.parse_args()
    params = TrainParams(steps=args.steps, augment=False, batch_size=2, patch_size=(32, 32, 32), val_every=0,
                         channels=(8, 16, 32), strides=(2, 2), dropout_position="decoder", mc_passes=args.passes,
                         learning_rate=1e-2)
    training = [cube_case(seed, shape=(32, 32, 32), side=8) for seed in range(8)]
    result = train_model([c[0] for c in training], [c[1] for c in training], 2, "CT", params, device=args.device)
    model = build_unet(2, params)
    model.load_state_dict(result.state_dict)
    # Cubes from small to large, so the model is sure of some cases and unsure of others.
    images = [normalise(cube_case(100 + i, shape=(48, 64, 48), side=3 + i % 8)[0].astype(np.float32), "CT")
              for i in range(args.cases)]
    reference = replace(params, score_precision="float32", score_pass_batch=1)
    fast = replace(params, score_precision="auto", score_pass_batch=0)
    timed_scores(model, reference, images[:1], args.device)  # warm-up: kernels chosen, memory pools filled
    ref_scores, ref_s = timed_scores(model, reference, images, args.device)
    fast_scores, fast_s = timed_scores(model, fast, images, args.device)
    print(f"device {args.device}; trained {args.steps} steps in {result.seconds:.0f} s; T = {args.passes}; fast path: "
          f"{str(score_dtype(args.device, 'auto')).removeprefix('torch.')}, "
          f"{pass_group_size(fast, args.device)} pass(es) per call")
    for i, (a, b) in enumerate(zip(ref_scores, fast_scores, strict=True)):
        print(f"case {i:2d}: float32, one pass per call {a:14.4f}   fast path {b:14.4f}   ({b / a - 1:+.3%})")
    print(f"Spearman rho of the two orders over {len(images)} cases: {spearman(ref_scores, fast_scores):.4f}; "
          f"time {ref_s:.2f} s vs {fast_s:.2f} s ({ref_s / fast_s:.2f}x)")


if __name__ == "__main__":
    main()
