"""Sliding-window prediction and Dice evaluation."""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from worker.ml.cancel import StopCheck, check_stop
from worker.ml.network import WindowGrid, bottleneck_module, consistent_dropout_modules, preserve_modes
from worker.ml.params import TrainParams
from worker.ml.transforms import normalise

__all__ = [
    "PaddedVolume",
    "blend_windows",
    "default_device",
    "dice_per_class",
    "evaluate",
    "logits_to_probabilities",
    "mean_foreground_dice",
    "native_bfloat16",
    "pad_volume",
    "predict_labels",
    "predict_probabilities",
    "score_autocast",
    "score_dtype",
    "sliding_window_passes",
    "sliding_window_probabilities",
    "window_starts",
]

logger = logging.getLogger(__name__)


def native_bfloat16(device: str) -> bool:
    """Whether ``device`` computes bfloat16 natively: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or AMX
    (elsewhere bfloat16 is emulated, and slower than float32). Asked at call time, never at import."""
    kind = torch.device(device).type
    if kind == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return kind == "cpu" and _cpu_has_bfloat16()


@functools.cache
def _cpu_has_bfloat16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:  # not Linux: no way to ask cheaply, so float32
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def score_dtype(device: str, precision: str) -> torch.dtype:
    """What the score phase's network passes compute in (``TrainParams.score_precision``): bfloat16 for "auto" on a
    device that has it natively, else float32."""
    return torch.bfloat16 if precision == "auto" and native_bfloat16(device) else torch.float32


def score_autocast(device: str, precision: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast to :func:`score_dtype` when that is bfloat16; no autocast (float32) otherwise."""
    if score_dtype(device, precision) == torch.bfloat16:
        return torch.autocast(device_type=torch.device(device).type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def default_device(device: str | None = None) -> str:
    """``device`` if given, else "cuda" when available, else "cpu" (decided at call time, not import)."""
    if device is not None:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


def window_starts(size: int, roi: int, overlap: float, align: int) -> list[int]:
    """Window origins along one axis of a volume of ``size`` (a multiple of ``align``, >= ``roi``).

    Origins are multiples of ``align`` (the UNet's total down-sampling), so every layer's dropout mask,
    defined on the volume, can be cropped exactly under each window.
    """
    if size <= roi:
        return [0]
    step = max(align, int(roi * (1.0 - overlap)) // align * align)
    starts = list(range(0, size - roi + 1, step))
    if starts[-1] != size - roi:
        starts.append(size - roi)
    return starts


@dataclass
class PaddedVolume:
    """One volume laid out for sliding-window inference.

    Args:
        x: (1, 1, *padded) image tensor on the inference device.
        grid: the padded shape, the ROI and (per network call) the window origins, shared with the frozen
            dropout layers.
        windows: every window origin, in the order they are run.
        crop: slices that cut the padded volume back to the input grid.
    """

    x: torch.Tensor
    grid: WindowGrid
    windows: list[tuple[int, ...]]
    crop: tuple[slice, ...]

    def boxes(self, chunk: Sequence[tuple[int, ...]]) -> list[tuple[slice, ...]]:
        """The (D, H, W) slices of each window origin in ``chunk``."""
        return [tuple(slice(o, o + r) for o, r in zip(origin, self.grid.roi, strict=True)) for origin in chunk]


def pad_volume(
    image_norm: np.ndarray, params: TrainParams, device: torch.device | str, whole_volume_voxels: int = 0
) -> PaddedVolume:
    """Pad a volume with its minimum (as in training) to at least the ROI and to a multiple of the UNet's
    down-sampling, and place the windows on that lattice (see :func:`window_starts`); a padded volume of at
    most ``whole_volume_voxels`` voxels gets one window, the whole volume."""
    if image_norm.ndim != 3:
        raise ValueError(f"image_norm must be 3D (D, H, W), got shape {image_norm.shape}")
    roi = tuple(int(r) for r in params.patch_size)
    align = math.prod(params.strides)
    target = tuple(max(r, -(-n // align) * align) for r, n in zip(roi, image_norm.shape, strict=True))
    pads = [t - n for t, n in zip(target, image_norm.shape, strict=True)]
    image = np.asarray(image_norm, dtype=np.float32)
    if any(pads):
        widths = [(p // 2, p - p // 2) for p in pads]
        image = np.pad(image, widths, mode="constant", constant_values=float(image.min()))
    x = torch.from_numpy(np.ascontiguousarray(image))[None, None].to(device)
    if 0 < math.prod(target) <= whole_volume_voxels:
        roi = target
    windows = list(itertools.product(*(window_starts(t, r, params.sw_overlap, align)
                                       for t, r in zip(target, roi, strict=True))))
    crop = tuple(slice(p // 2, p // 2 + n) for p, n in zip(pads, image_norm.shape, strict=True))
    return PaddedVolume(x, WindowGrid(target, roi), windows, crop)  # type: ignore[arg-type]


WindowRunner = Callable[[int, list[tuple[slice, ...]]], torch.Tensor]


def sliding_window_probabilities(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, embedding: list[torch.Tensor] | None = None,
    should_stop: StopCheck | None = None,
) -> torch.Tensor:
    """Softmax probabilities over the whole volume, leaving the model's train/eval modes as they are.

    This is the shared core of plain prediction (eval mode) and MC-dropout passes (dropout in train mode);
    the caller chooses the modes and the grad mode. The volume is padded (:func:`pad_volume`), window
    logits are averaged where windows overlap, and the result is cropped back, so the output grid is always
    the input grid. Frozen dropout layers get a :class:`WindowGrid`, so one MC pass is one sub-network for
    every voxel.

    Args:
        model: network on the target device mapping (B, 1, *roi) to logits (B, C, *roi).
        image_norm: (D, H, W) normalised image.
        params: patch_size, strides, sw_overlap and sw_batch_size are used.
        embedding: if given, the bottleneck features averaged over space and windows are appended, (F,).
        should_stop: polled before every batch of windows; returning True raises
            :class:`worker.ml.cancel.Cancelled` (one volume can take many seconds on a CPU).

    Returns:
        (C, D, H, W) float32 probabilities on the model's device.
    """
    volume = pad_volume(image_norm, params, next(model.parameters()).device)
    pooled: list[torch.Tensor] = []
    hook = None
    if embedding is not None:
        hook = bottleneck_module(model).register_forward_hook(
            lambda _m, _i, out: pooled.append(out.float().mean(dim=(2, 3, 4)).sum(dim=0)))
    try:
        probs = _window_passes(model, volume, params.sw_batch_size, 1, should_stop)[0]
    finally:
        if hook is not None:
            hook.remove()
    if embedding is not None:
        embedding.append(torch.stack(pooled).sum(dim=0) / len(volume.windows))
    return probs


def sliding_window_passes(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, passes: int, should_stop: StopCheck | None = None,
) -> torch.Tensor:
    """(passes, C, D, H, W) probabilities of ``passes`` MC passes run together, each window's batch once per pass.

    Frozen dropout layers must have been resampled with one generator per pass
    (:meth:`worker.ml.network.ConsistentDropout.resample`); pass k's result equals what
    :func:`sliding_window_probabilities` gives with pass k's masks alone.
    """
    volume = pad_volume(image_norm, params, next(model.parameters()).device)
    return _window_passes(model, volume, params.sw_batch_size, passes, should_stop)


def _window_passes(
    model: nn.Module, volume: PaddedVolume, batch: int, passes: int, should_stop: StopCheck | None
) -> torch.Tensor:
    def run(_batch: int, boxes: list[tuple[slice, ...]]) -> torch.Tensor:
        return model(torch.cat([volume.x[(slice(None), slice(None), *box)] for box in boxes] * passes))

    return logits_to_probabilities(blend_windows(model, volume, run, batch, should_stop, passes), volume)


def logits_to_probabilities(logits: torch.Tensor, volume: PaddedVolume) -> torch.Tensor:
    """Softmax over classes, cropped back to the input grid: (passes, C, D, H, W) from (passes, C, *padded)."""
    return torch.softmax(logits, dim=1)[(slice(None), slice(None), *volume.crop)].contiguous()


def blend_windows(
    model: nn.Module, volume: PaddedVolume, run: WindowRunner, batch: int, should_stop: StopCheck | None,
    passes: int = 1,
) -> torch.Tensor:
    """(passes, C, *padded) mean logits over the windows covering each voxel, one map per pass.

    ``run(i, boxes)`` returns the logits of the i-th batch of windows (the full network, or only its
    decoder on cached encoder features), once per pass, pass by pass: (passes x len(boxes), C, *roi). Frozen
    dropout layers see the batch's origins through the grid and apply each pass's own mask.
    """
    dropouts = consistent_dropout_modules(model)
    grid = volume.grid
    total: torch.Tensor | None = None
    count = torch.zeros(grid.volume_shape, device=volume.x.device)
    for module in dropouts:
        module.grid = grid
    try:
        for index, start in enumerate(range(0, len(volume.windows), batch)):
            check_stop(should_stop, "sliding-window inference")
            chunk = volume.windows[start: start + batch]
            grid.offsets = [tuple(o) for o in chunk]  # type: ignore[misc]
            boxes = volume.boxes(chunk)
            out = run(index, boxes)
            if out.shape[0] != passes * len(boxes):
                raise RuntimeError(f"{passes} pass(es) of {len(boxes)} window(s) gave a batch of {out.shape[0]}")
            if total is None:
                total = torch.zeros((passes, out.shape[1], *grid.volume_shape), device=volume.x.device)
            for i, window_logits in enumerate(out):
                total[i // len(boxes)][(slice(None), *boxes[i % len(boxes)])] += window_logits.float()
            for box in boxes:
                count[box] += 1
    finally:
        for module in dropouts:
            module.grid = None
    assert total is not None
    return total / count


def predict_probabilities(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, device: str | None = None,
    should_stop: StopCheck | None = None,
) -> torch.Tensor:
    """Eval-mode softmax probabilities of one volume by sliding-window inference.

    Args:
        model: segmentation network; moved to ``device``, its modes are restored afterwards.
        image_norm: (D, H, W) normalised image (see :func:`worker.ml.transforms.normalise`).
        params: patch_size (ROI), sw_overlap and sw_batch_size are used.
        device: "cpu", "cuda", ...; None picks CUDA when available.
        should_stop: see :func:`sliding_window_probabilities`.

    Returns:
        (C, D, H, W) float32 probabilities on the CPU.
    """
    model.to(default_device(device))
    with preserve_modes(model), torch.inference_mode():
        model.eval()
        return sliding_window_probabilities(model, image_norm, params, should_stop=should_stop).cpu()


def predict_labels(
    model: nn.Module, image_norm: np.ndarray, params: TrainParams, device: str | None = None
) -> np.ndarray:
    """Arg-max label map of one volume.

    Args:
        model: segmentation network with at most 256 output classes.
        image_norm: (D, H, W) normalised image.
        params: see :func:`predict_probabilities`.
        device: see :func:`predict_probabilities`.

    Returns:
        (D, H, W) uint8 label map on the input grid.
    """
    probs = predict_probabilities(model, image_norm, params, device)
    return probs.argmax(dim=0).numpy().astype(np.uint8)


def dice_per_class(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> list[float | None]:
    """Dice coefficient 2|P & T| / (|P| + |T|) for every class 0..num_classes-1.

    A class absent from both ``pred`` and ``truth`` has no defined Dice; it is reported as None (not 1.0 or
    NaN) so that averages can skip it instead of being inflated or poisoned.

    Args:
        pred: (D, H, W) integer label map.
        truth: (D, H, W) integer label map of the same shape.
        num_classes: number of classes, background included.

    Returns:
        ``num_classes`` entries, each a float in [0, 1] or None.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth shapes differ: {pred.shape} vs {truth.shape}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    scores: list[float | None] = []
    for c in range(num_classes):
        p, t = pred == c, truth == c
        total = int(p.sum()) + int(t.sum())
        scores.append(None if total == 0 else 2.0 * int(np.logical_and(p, t).sum()) / total)
    return scores


def mean_foreground_dice(per_class: Sequence[float | None]) -> float:
    """Mean Dice over classes 1.. (background excluded), skipping None entries.

    Returns 1.0 when every foreground class is None: nothing to segment and nothing predicted is perfect
    agreement, and a float keeps the result NaN-free.
    """
    values = [v for v in per_class[1:] if v is not None]
    return float(np.mean(values)) if values else 1.0


def evaluate(
    model: nn.Module,
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    modality: str,
    params: TrainParams,
    device: str | None = None,
    should_stop: StopCheck | None = None,
) -> dict[str, Any]:
    """Dice of the model's predictions on labelled cases.

    Args:
        model: segmentation network; the class count is read from its output.
        images: (D, H, W) raw images.
        labels: (D, H, W) integer label maps, one per image.
        modality: "CT" or "MR", for normalisation.
        params: inference settings.
        device: see :func:`predict_probabilities`.
        should_stop: see :func:`sliding_window_probabilities`.

    Returns:
        ``{"per_case": [{"per_class": [...], "mean_dice": float}, ...], "per_class": [...],
        "mean_dice": float}``. Aggregated per-class Dice is the mean over the cases where that class is not
        None (None if it is None everywhere); the aggregated ``mean_dice`` is
        :func:`mean_foreground_dice` of the aggregated per-class list.
    """
    if len(images) != len(labels):
        raise ValueError(f"got {len(images)} images but {len(labels)} labels")
    per_case: list[dict[str, Any]] = []
    num_classes = 0
    for image, label in zip(images, labels, strict=True):
        probs = predict_probabilities(model, normalise(image, modality), params, device, should_stop)
        num_classes = probs.shape[0]
        scores = dice_per_class(probs.argmax(dim=0).numpy(), np.asarray(label), num_classes)
        per_case.append({"per_class": scores, "mean_dice": mean_foreground_dice(scores)})
    aggregated: list[float | None] = []
    for c in range(num_classes):
        values = [case["per_class"][c] for case in per_case if case["per_class"][c] is not None]
        aggregated.append(float(np.mean(values)) if values else None)
    result = {"per_case": per_case, "per_class": aggregated, "mean_dice": mean_foreground_dice(aggregated)}
    logger.info("evaluated %d case(s): mean foreground Dice %.4f", len(per_case), result["mean_dice"])
    return result
