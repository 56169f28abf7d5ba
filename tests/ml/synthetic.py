"""Tiny networks and synthetic volumes so the ML suite runs in seconds on 2 CPU cores."""

from __future__ import annotations

import numpy as np

from worker.ml.params import TrainParams


def tiny_params(**overrides: object) -> TrainParams:
    """A 3-level UNet on 16^3 patches: big enough to learn a cube, small enough for milliseconds per step."""
    base: dict[str, object] = {
        "steps": 4,
        "augment": False,
        "learning_rate": 1e-2,
        "batch_size": 2,
        "patch_size": (16, 16, 16),
        "mc_passes": 3,
        "channels": (4, 8, 16),
        "strides": (2, 2),
        "samples_per_volume": 2,
    }
    base.update(overrides)
    return TrainParams.from_dict(base)


def cube_case(
    seed: int, shape: tuple[int, int, int] = (16, 16, 16), side: int = 6
) -> tuple[np.ndarray, np.ndarray]:
    """A noisy CT-like int16 volume (HU) with one bright cube labelled 1 at a random position."""
    rng = np.random.default_rng(seed)
    image = (rng.normal(0.0, 50.0, shape) - 500.0).astype(np.int16)
    label = np.zeros(shape, dtype=np.uint8)
    corner = [int(rng.integers(1, s - side)) for s in shape]
    box = tuple(slice(c, c + side) for c in corner)
    label[box] = 1
    image[box] += 800
    return image, label
