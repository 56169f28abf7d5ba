"""On-demand prediction for one case with a stored model (for cases no scoring run has covered)."""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import Any

import numpy as np

from app.core.storage import BlobStore
from app.models import Case
from worker.data import load_array

_lock = threading.Lock()


@lru_cache(maxsize=2)
def _model(weights_path: str) -> tuple[Any, Any]:
    from worker.ml.checkpoint import load_model

    return load_model(weights_path)


def predict_case(store: BlobStore, case: Case, modality: str, weights_key: str) -> np.ndarray:
    """The model's (D, H, W) uint8 label map for a case; one forward pass at a time per process."""
    from worker.ml.inference import predict_labels
    from worker.ml.transforms import normalise

    image = normalise(load_array(store, case.blob_key).astype(np.float32), modality)
    with _lock:
        model, meta = _model(str(store.path(weights_key)))
        return predict_labels(model, image, meta.params).astype(np.uint8)
