"""Intensity normalisation by modality and foreground-weighted patch sampling."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["CT_WINDOW", "MODALITIES", "make_augmentation", "normalise", "pad_to_size", "sample_patches"]

MODALITIES: tuple[str, ...] = ("CT", "MR")

# HU window mapped linearly to [0, 1]. The CT data we use (openkbp-ct5) is int16 in plain HU: air is
# exactly -1000, soft tissue ~0-80, bone up to ~3000; so no offset is applied. [-1000, 1000] keeps air,
# fat, soft tissue and most bone (the mandible is a target) distinguishable; dense bone/metal saturates.
CT_WINDOW: tuple[float, float] = (-1000.0, 1000.0)


def normalise(image: np.ndarray, modality: str) -> np.ndarray:
    """Map raw intensities to a network-friendly range.

    "CT": clip to :data:`CT_WINDOW` (Hounsfield units) and scale linearly to [0, 1].
    "MR": z-score over the nonzero voxels (zero is background/padding in most MR exports); zeros stay 0.
    An all-zero MR image is returned as zeros, and a constant foreground maps to 0 rather than dividing by 0.

    Args:
        image: (D, H, W) raw intensities, any numeric dtype.
        modality: "CT" or "MR" (case-insensitive).

    Returns:
        float32 array of the same shape.
    """
    kind = modality.upper()
    data = np.asarray(image, dtype=np.float32)
    if kind == "CT":
        low, high = CT_WINDOW
        return ((np.clip(data, low, high) - low) / (high - low)).astype(np.float32)
    if kind == "MR":
        out = np.zeros_like(data)
        nonzero = data != 0
        if not nonzero.any():
            return out
        values = data[nonzero]
        std = float(values.std())
        out[nonzero] = (values - values.mean()) / (std if std > 0 else 1.0)
        return out
    raise ValueError(f"modality must be one of {', '.join(MODALITIES)}, got {modality!r}")


def pad_to_size(array: np.ndarray, size: Sequence[int], value: float) -> np.ndarray:
    """Pad each spatial dim of ``array`` (symmetrically) to at least ``size``.

    Args:
        array: (D, H, W) array.
        size: minimum (D, H, W).
        value: constant fill value.

    Returns:
        ``array`` itself if no padding is needed, else a padded copy.
    """
    pads = [max(0, int(s) - n) for s, n in zip(size, array.shape, strict=True)]
    if not any(pads):
        return array
    widths = [(p // 2, p - p // 2) for p in pads]
    return np.pad(array, widths, mode="constant", constant_values=value)


def sample_patches(
    image: np.ndarray,
    label: np.ndarray,
    patch_size: Sequence[int],
    n: int,
    foreground_ratio: float,
    rng: np.random.Generator,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Crop ``n`` training patches, each centred on foreground with probability ``foreground_ratio``.

    A foreground-centred patch has a uniformly chosen foreground (label > 0) voxel at its centre, shifted
    inwards at the borders so the patch stays inside the volume. Other patches are placed uniformly at
    random. Without any foreground every patch is random. Volumes smaller than the patch are padded first:
    the image with its minimum (the background of a normalised image), the label with 0.

    Args:
        image: (D, H, W) normalised image.
        label: (D, H, W) integer label map.
        patch_size: (D, H, W) patch shape.
        n: number of patches.
        foreground_ratio: probability in [0, 1] of a foreground-centred patch.
        rng: source of all randomness, so sampling is reproducible.

    Returns:
        ``n`` pairs (image patch float32 (D, H, W), label patch (D, H, W) with the label's dtype).
    """
    if image.shape != label.shape or image.ndim != 3:
        raise ValueError(f"image and label must be 3D with equal shapes, got {image.shape} and {label.shape}")
    if not 0.0 <= foreground_ratio <= 1.0:
        raise ValueError(f"foreground_ratio must be in [0, 1], got {foreground_ratio}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    size = tuple(int(s) for s in patch_size)
    image = pad_to_size(image.astype(np.float32, copy=False), size, float(image.min()))
    label = pad_to_size(label, size, 0)
    foreground = np.flatnonzero(label > 0) if foreground_ratio > 0 else np.empty(0, dtype=np.intp)
    patches = []
    for _ in range(n):
        if foreground.size and rng.random() < foreground_ratio:
            centre = np.unravel_index(foreground[rng.integers(foreground.size)], label.shape)
            bounds = zip(centre, size, label.shape, strict=True)
            start = [min(max(int(c) - s // 2, 0), dim - s) for c, s, dim in bounds]
        else:
            start = [int(rng.integers(dim - s + 1)) for s, dim in zip(size, label.shape, strict=True)]
        box = tuple(slice(b, b + s) for b, s in zip(start, size, strict=True))
        patches.append((np.ascontiguousarray(image[box]), np.ascontiguousarray(label[box])))
    return patches


def make_augmentation(params: Any) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """MONAI augmentation of a {"image": (1, D, H, W), "label": (1, D, H, W)} patch, seeded by ``params.seed``.

    Small rotations (up to 15 degrees) and scaling (up to 10 %), intensity scale and shift, Gaussian
    noise, and flips along ``params.flip_axes``: the usual nnU-Net-style set, kept mild because patches
    are small and labels must stay on their structures.
    """
    from monai.transforms import (
        Compose,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
    )

    keys = ["image", "label"]
    transforms: list[Any] = [
        RandAffined(keys, prob=0.3, rotate_range=(0.26, 0.26, 0.26), scale_range=(0.1, 0.1, 0.1),
                    mode=("bilinear", "nearest"), padding_mode="border"),
        RandScaleIntensityd("image", factors=0.1, prob=0.3),
        RandShiftIntensityd("image", offsets=0.1, prob=0.3),
        RandGaussianNoised("image", prob=0.15, std=0.05),
        *(RandFlipd(keys, prob=0.5, spatial_axis=axis) for axis in params.flip_axes),
    ]
    pipeline = Compose(transforms)
    pipeline.set_random_state(seed=params.seed)
    return pipeline
