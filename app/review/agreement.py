"""Reader agreement and consensus on label maps; plain arrays and images in, numbers and images out.

Agreement uses MONAI's metrics (Dice, 95th-percentile Hausdorff distance in mm) per foreground class;
consensus uses SimpleITK's multi-label STAPLE or label voting. Nothing here knows about the database.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
import torch

CONSENSUS_METHODS = ("staple", "majority_vote")


def _one_hot(mask: np.ndarray, num_classes: int) -> torch.Tensor:
    """(z, y, x) label values -> (1, C, z, y, x) float one-hot, the layout MONAI's metrics take."""
    values = torch.as_tensor(mask.astype(np.int64))
    return torch.nn.functional.one_hot(values, num_classes).permute(3, 0, 1, 2).unsqueeze(0).float()


def _finite(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else float(value)


def pair_metrics(
    a: np.ndarray, b: np.ndarray, num_classes: int, spacing_zyx: Sequence[float]
) -> tuple[list[float | None], list[float | None]]:
    """Dice and HD95 (in the units of ``spacing_zyx``) of two readers' masks, per foreground class 1..C-1.

    Args:
        a, b: label values on the same (z, y, x) grid.
        num_classes: number of labels including the background.
        spacing_zyx: voxel size along the array axes.

    Dice is null for a class absent from both masks; HD95 is null for a class absent from either (no
    surface to measure from).
    """
    from monai.metrics import DiceMetric, HausdorffDistanceMetric

    if a.shape != b.shape:
        raise ValueError(f"masks on different grids: {a.shape} and {b.shape}")
    ya, yb = _one_hot(a, num_classes), _one_hot(b, num_classes)
    # Both metrics return a (batch, class) tensor for tensor inputs; the first row is this pair.
    dice = torch.as_tensor(DiceMetric(include_background=False, reduction="none", ignore_empty=False)(ya, yb))[0]
    with warnings.catch_warnings():
        # A class absent from a mask is expected here (it becomes null below); MONAI warns about each, and about
        # its own deprecated argument that it passes itself.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", FutureWarning)
        hd95 = torch.as_tensor(HausdorffDistanceMetric(include_background=False, percentile=95, reduction="none")(
            ya, yb, spacing=[float(s) for s in spacing_zyx]))[0]
    present_a = [bool((a == c).any()) for c in range(1, num_classes)]
    present_b = [bool((b == c).any()) for c in range(1, num_classes)]
    dices = [None if not (pa or pb) else _finite(float(d))
             for d, pa, pb in zip(dice.tolist(), present_a, present_b, strict=True)]
    hds = [_finite(float(h)) if pa and pb else None
           for h, pa, pb in zip(hd95.tolist(), present_a, present_b, strict=True)]
    return dices, hds


def consensus(masks: Sequence[sitk.Image], method: str) -> sitk.Image:
    """Combine two or more readers' label maps on one grid into one label map.

    ``staple``: SimpleITK's MultiLabelSTAPLEImageFilter; ``majority_vote``: LabelVotingImageFilter.
    Label voting takes the label most readers gave (a plurality: with five readers voting 1, 1, 2, 3, 0 the voxel
    is 1 on two votes); voxels where the top labels tie become background 0.
    """
    if len(masks) < 2:
        raise ValueError("a consensus needs at least two readers")
    if method not in CONSENSUS_METHODS:
        raise ValueError(f"consensus method must be one of {', '.join(CONSENSUS_METHODS)}, got {method!r}")
    pixel = sitk.sitkUInt16 if max(_max_label(m) for m in masks) > 255 else sitk.sitkUInt8
    inputs = [sitk.Cast(m, pixel) for m in masks]
    flt: sitk.MultiLabelSTAPLEImageFilter | sitk.LabelVotingImageFilter
    flt = sitk.MultiLabelSTAPLEImageFilter() if method == "staple" else sitk.LabelVotingImageFilter()
    flt.SetLabelForUndecidedPixels(0)
    result = flt.Execute(inputs)
    result.CopyInformation(masks[0])
    return result


def _max_label(mask: sitk.Image) -> int:
    return int(sitk.GetArrayViewFromImage(mask).max(initial=0))
