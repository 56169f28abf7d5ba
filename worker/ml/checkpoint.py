"""Self-describing model files: weights plus everything needed to rebuild the network."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from worker.ml.inference import default_device
from worker.ml.network import DEFAULT_NORM, NormSpec, build_unet
from worker.ml.params import TrainParams

__all__ = ["FORMAT_VERSION", "ModelMeta", "load_model", "save_model"]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelMeta:
    """Construction arguments stored next to the weights.

    Args:
        num_classes: output classes, background included.
        modality: "CT" or "MR"; images must be normalised accordingly before inference.
        params: hyperparameters the model was built (and trained) with.
        in_channels: image channels.
        norm: norm spec given to :func:`worker.ml.network.build_unet`.
        format_version: file layout version.
    """

    num_classes: int
    modality: str
    params: TrainParams
    in_channels: int = 1
    norm: NormSpec = DEFAULT_NORM
    format_version: int = FORMAT_VERSION


def save_model(
    path: str | os.PathLike[str],
    state_dict: dict[str, torch.Tensor],
    num_classes: int,
    modality: str,
    params: TrainParams,
    *,
    in_channels: int = 1,
    norm: NormSpec = DEFAULT_NORM,
) -> None:
    """Write weights and construction arguments as one plain dict (loadable with ``weights_only=True``).

    Args:
        path: destination file.
        state_dict: model weights (moved to the CPU before saving).
        num_classes: output classes, background included.
        modality: "CT" or "MR".
        params: hyperparameters, stored as a JSON-safe dict.
        in_channels: image channels.
        norm: norm spec the network was built with.
    """
    payload: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "num_classes": int(num_classes),
        "modality": modality,
        "params": params.to_dict(),
        "in_channels": int(in_channels),
        "norm": norm,
        "state_dict": {k: v.detach().cpu() for k, v in state_dict.items()},
    }
    torch.save(payload, path)


def load_model(path: str | os.PathLike[str], device: str | None = None) -> tuple[nn.Module, ModelMeta]:
    """Rebuild a network from a file written by :func:`save_model`.

    Args:
        path: model file.
        device: where to put the model; None picks CUDA when available.

    Returns:
        (model in eval mode on ``device``, its :class:`ModelMeta`).
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise ValueError(f"unsupported model file format version {version!r}, expected {FORMAT_VERSION}")
    norm = payload["norm"]
    meta = ModelMeta(
        num_classes=int(payload["num_classes"]),
        modality=str(payload["modality"]),
        params=TrainParams.from_dict(payload["params"]),
        in_channels=int(payload["in_channels"]),
        norm=tuple(norm) if isinstance(norm, list) else norm,
    )
    model = build_unet(meta.num_classes, meta.params, in_channels=meta.in_channels, norm=meta.norm)
    model.load_state_dict(payload["state_dict"])
    model.to(default_device(device)).eval()
    return model, meta
