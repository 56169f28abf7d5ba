"""Synthetic thoracic CT phantoms: the demo's data and the test suite's when ../shared is absent.

Each phantom has a body (fat rim, soft tissue), two lungs, the heart, the spinal cord inside a
vertebra, and the esophagus with an air lumen, at CT-like Hounsfield units with noise. Sizes,
shapes and positions vary from patient to patient; everything is deterministic from the seed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

LABELS = ["background", "lung_left", "lung_right", "heart", "spinal_cord", "esophagus"]
SPACING_MM = (4.0, 4.0, 5.0)  # x, y, z


@dataclass(frozen=True)
class Phantom:
    image: np.ndarray  # (z, y, x) int16 HU
    label: np.ndarray  # (z, y, x) uint8, indices into LABELS


def _ellipsoid(grid: tuple[np.ndarray, ...], centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    distance = np.zeros(grid[0].shape, dtype=np.float32)
    for g, c, r in zip(grid, centre, radii, strict=True):
        distance += ((g - c) / r) ** 2
    return distance <= 1.0


def make_phantom(seed: int, shape: tuple[int, int, int] = (32, 64, 64)) -> Phantom:
    """One patient. ``shape`` is (z, y, x); the body fills most of the axial field of view."""
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    grid = tuple(np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij"))
    scale = rng.uniform(0.85, 1.1)
    cz, cy, cx = nz / 2, ny / 2 + rng.uniform(-2, 2), nx / 2 + rng.uniform(-3, 3)

    image = np.full(shape, -1000.0, dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    body_r = (nz * 4.0, ny * 0.36 * scale, nx * 0.45 * scale)  # a long cylinder-like trunk
    body = _ellipsoid(grid, (cz, cy, cx), body_r)
    image[body] = -90.0  # fat
    image[_ellipsoid(grid, (cz, cy, cx), tuple(r - 3 for r in body_r))] = 40.0  # muscle / soft tissue

    lung_r = (nz * 0.42 * rng.uniform(0.9, 1.1), ny * 0.24 * scale * rng.uniform(0.9, 1.1),
              nx * 0.15 * scale * rng.uniform(0.9, 1.15))
    for side, index in ((-1, 1), (1, 2)):
        centre = (cz + rng.uniform(-1.5, 1.5), cy - 1 + rng.uniform(-1.5, 1.5),
                  cx + side * nx * 0.2 * scale + rng.uniform(-1.5, 1.5))
        radii = tuple(r * rng.uniform(0.92, 1.08) for r in lung_r)
        lung = _ellipsoid(grid, centre, radii) & body
        image[lung], label[lung] = -850.0, index

    heart_centre = (cz + nz * 0.1 + rng.uniform(-1, 1), cy - ny * 0.1 + rng.uniform(-1.5, 1.5),
                    cx - nx * 0.06 + rng.uniform(-2, 2))
    heart_r = (nz * 0.22, ny * 0.15 * scale, nx * 0.13 * scale)
    heart = _ellipsoid(grid, heart_centre, tuple(r * rng.uniform(0.85, 1.15) for r in heart_r))
    image[heart], label[heart] = 150.0, 3  # contrast-enhanced blood pool

    spine_y, spine_x = cy + ny * 0.24 * scale, cx + rng.uniform(-1, 1)
    vertebra = _ellipsoid(grid, (cz, spine_y, spine_x), (nz * 4.0, ny * 0.075, nx * 0.06)) & body
    image[vertebra] = 650.0
    cord = _ellipsoid(grid, (cz, spine_y, spine_x), (nz * 4.0, ny * 0.03, nx * 0.025))
    image[cord], label[cord] = 30.0, 4

    eso_y, eso_x = spine_y - ny * 0.12, spine_x - nx * 0.03 + rng.uniform(-1, 1)
    esophagus = _ellipsoid(grid, (cz, eso_y, eso_x), (nz * 4.0, ny * 0.03 * rng.uniform(0.9, 1.2), nx * 0.035))
    image[esophagus], label[esophagus] = 20.0, 5
    lumen = _ellipsoid(grid, (cz, eso_y, eso_x), (nz * 4.0, ny * 0.01, nx * 0.012))
    image[lumen] = -900.0  # air in the lumen; still esophagus

    image += rng.normal(0.0, 18.0, shape).astype(np.float32)
    return Phantom(np.clip(image, -1024, 3071).astype(np.int16), label)


def to_image(array: np.ndarray) -> sitk.Image:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING_MM)
    image.SetOrigin((-128.0, -128.0, 0.0))
    return image


def write_dataset(root: Path, n: int, seed: int = 0, shape: tuple[int, int, int] = (32, 64, 64)) -> Path:
    """Write ``n`` phantoms as a Medical Segmentation Decathlon folder; returns ``root``."""
    (root / "imagesTr").mkdir(parents=True, exist_ok=True)
    (root / "labelsTr").mkdir(exist_ok=True)
    entries = []
    for i in range(n):
        phantom = make_phantom(seed * 10_000 + i, shape)
        name = f"phantom_{i:03d}.nii.gz"
        sitk.WriteImage(to_image(phantom.image), str(root / "imagesTr" / name), useCompression=True)
        sitk.WriteImage(to_image(phantom.label), str(root / "labelsTr" / name), useCompression=True)
        entries.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "NextCase thoracic CT phantoms", "modality": {"0": "CT"},
            "labels": {str(i): name for i, name in enumerate(LABELS)}, "numTraining": n, "training": entries}
    (root / "dataset.json").write_text(json.dumps(meta, indent=1))
    return root
