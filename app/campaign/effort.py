"""How far a submitted mask is from the prediction it started from: per-class Dice and voxel counts.

Plain numpy, no torch: the API process computes this after a label upload, and importing the worker's
ML code (worker.ml.inference.dice_per_class) would load torch into it. The Dice convention is the same:
2|P & T| / (|P| + |T|), and None for a class absent from both masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Voxels counted per bincount call: bounds the temporary int64 buffer to 32 MiB however large the volume.
CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Comparison:
    dice: list[float | None]  # per class, background included
    predicted: list[int]  # voxels per class in the prediction
    labelled: list[int]  # voxels per class in the submitted mask
    changed: int  # voxels whose class the annotator changed
    total: int


def confusion(prediction: np.ndarray, mask: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts: entry (p, m) = voxels predicted p and labelled m."""
    if prediction.shape != mask.shape:
        raise ValueError(f"prediction and mask shapes differ: {prediction.shape} vs {mask.shape}")
    pred, true = prediction.reshape(-1), mask.reshape(-1)
    counts = np.zeros(num_classes * num_classes, dtype=np.int64)
    for start in range(0, pred.size, CHUNK):
        p = pred[start:start + CHUNK].astype(np.int64)
        t = true[start:start + CHUNK].astype(np.int64)
        if p.size and (p.min() < 0 or t.min() < 0 or p.max() >= num_classes or t.max() >= num_classes):
            raise ValueError(f"a class value outside 0..{num_classes - 1}")
        counts += np.bincount(p * num_classes + t, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def compare(prediction: np.ndarray, mask: np.ndarray, num_classes: int) -> Comparison:
    matrix = confusion(prediction, mask, num_classes)
    predicted, labelled, overlap = matrix.sum(axis=1), matrix.sum(axis=0), np.diag(matrix)
    dice: list[float | None] = [
        None if predicted[c] + labelled[c] == 0 else 2.0 * float(overlap[c]) / float(predicted[c] + labelled[c])
        for c in range(num_classes)
    ]
    total = int(matrix.sum())
    return Comparison(dice, [int(v) for v in predicted], [int(v) for v in labelled], total - int(overlap.sum()),
                      total)


def mean_foreground(dice: list[float | None]) -> float | None:
    """Mean over the foreground classes that have a Dice (None when none has)."""
    values = [d for d in dice[1:] if d is not None]
    return sum(values) / len(values) if values else None
