"""How far a submitted mask is from the prediction it started from: per-class Dice and voxel counts.

Plain numpy, no torch: the API process computes this after a label upload, and importing the worker's
ML code (worker.ml.inference.dice_per_class) would load torch into it. The Dice convention is the same:
2|P & T| / (|P| + |T|), and None for a class absent from both masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Voxels counted per bincount call: bounds its temporary int64 copy to 32 MiB however large the volume.
CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Comparison:
    dice: list[float | None]  # per class, background included
    predicted: list[int]  # voxels per class in the prediction
    labelled: list[int]  # voxels per class in the submitted mask
    changed: int  # voxels whose class the annotator changed
    total: int


def confusion(prediction: np.ndarray, mask: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes, num_classes) counts: entry (p, m) = voxels predicted p and labelled m.

    One bincount of the pair code p * K + m, computed in the smallest unsigned type that holds it (uint8 up to
    16 classes): five times faster than in int64, which matters because the comparison shares the API's CPUs.
    """
    if prediction.shape != mask.shape:
        raise ValueError(f"prediction and mask shapes differ: {prediction.shape} vs {mask.shape}")
    for name, array in (("prediction", prediction), ("mask", mask)):
        _check_classes(name, array, num_classes)
    code_type = np.dtype(np.uint8 if num_classes <= 16 else np.uint16)
    pred, true = prediction.reshape(-1), mask.reshape(-1)
    counts = np.zeros(num_classes * num_classes, dtype=np.int64)
    for start in range(0, pred.size, CHUNK):
        code = pred[start:start + CHUNK].astype(code_type)
        code *= code_type.type(num_classes)
        code += true[start:start + CHUNK].astype(code_type)
        counts += np.bincount(code, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def _check_classes(name: str, array: np.ndarray, num_classes: int) -> None:
    if array.dtype.kind not in "ui":
        raise ValueError(f"the {name} is not an integer label map ({array.dtype})")
    if array.size and (int(array.max()) >= num_classes or (array.dtype.kind == "i" and int(array.min()) < 0)):
        raise ValueError(f"the {name} has a class value outside 0..{num_classes - 1}")


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

