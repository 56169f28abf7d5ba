"""Reading stored images and masks as arrays, and writing maps back on a case's grid."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from app.cases.imaging import read_nifti, write_nifti
from app.cases.service import case_geometry
from app.core.storage import BlobStore
from app.models import Case


def load_array(store: BlobStore, key: str) -> np.ndarray:
    """A stored NIfTI as a (D, H, W) array (numpy order: z, y, x)."""
    return sitk.GetArrayFromImage(read_nifti(store.read(key)))


def encode_on_case_grid(array: np.ndarray, case: Case) -> bytes:
    """Wrap a (D, H, W) array in the case's geometry as gzipped NIfTI."""
    geo = case_geometry(case)
    image = sitk.GetImageFromArray(np.ascontiguousarray(array))
    image.SetSpacing(geo.spacing)
    image.SetOrigin(geo.origin)
    image.SetDirection(geo.direction)
    return write_nifti(image)
