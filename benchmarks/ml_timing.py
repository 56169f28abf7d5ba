"""Time per training epoch and per scored case for the default network on real 128^3 CT.

    .venv/bin/python -m benchmarks.ml_timing --cases 4 --epochs 2

Loads the first CASES labelled openkbp-ct5 volumes (../shared/data), trains EPOCHS epochs with the
default TrainParams (96^3 patches, channels 16-128, p=0.5), then scores one unlabelled 128^3 case
with each MC strategy (T=5). Prints figures; not a test.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import torch

from worker.ml.inference import default_device, predict_labels
from worker.ml.network import build_unet
from worker.ml.params import TrainParams
from worker.ml.scoring import score_case
from worker.ml.train import train_model
from worker.ml.transforms import normalise

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "openkbp-ct5"


def load(n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    meta = json.loads((DATA / "dataset.json").read_text())
    entries = meta["training"][:n]
    images = [sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / e["image"]))).astype(np.float32) for e in entries]
    labels = [sitk.GetArrayFromImage(sitk.ReadImage(str(DATA / e["label"]))).astype(np.int64) for e in entries]
    return images, labels


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--strategies", default="mc_dropout_variance,entropy,bald")
    args = parser.parse_args()
    images, labels = load(args.cases + 1)
    params = TrainParams(epochs=args.epochs)
    device = default_device()
    print(f"device {device}, torch threads {torch.get_num_threads()}, volume {images[0].shape}, "
          f"patch {params.patch_size}, channels {params.channels}, {args.cases} cases x "
          f"{params.samples_per_volume} patches per epoch")
    result = train_model(images[:-1], labels[:-1], 6, "CT", params, device=device)
    per_epoch = result.seconds / args.epochs
    print(f"training: {per_epoch:.1f} s per epoch ({per_epoch / args.cases:.1f} s per labelled case per epoch), "
          f"losses {[round(v, 3) for v in result.epoch_losses]}")
    model = build_unet(6, params)
    model.load_state_dict(result.state_dict)
    image = normalise(images[-1], "CT")
    start = time.perf_counter()
    predict_labels(model, image, params, device)
    print(f"prediction (1 pass, sliding window): {time.perf_counter() - start:.1f} s")
    for name in args.strategies.split(","):
        start = time.perf_counter()
        scored = score_case(model, image, name, params, case_key=0, device=device)
        print(f"scoring {name} (T={params.mc_passes}): {time.perf_counter() - start:.1f} s per 128^3 case, "
              f"score {scored.score:.4g}")


if __name__ == "__main__":
    main()
